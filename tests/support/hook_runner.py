"""The template's Python hooks run in the test process for the bakes that must succeed.

cookiecutter runs each hook as `python <rendered hook>` in the hook's working directory
(cookiecutter.hooks.run_script): three Python starts a bake, some 0.4 s of processor time
here, most of a matrix bake's cost, and the bake matrix bakes hundreds of times a run.
in_process_hooks() runs the same rendered file as that command would: as `__main__`, with
the hook's directory first on sys.path, in the same working directory and environment; a
non-zero `sys.exit` or an exception that escapes fails the hook as a non-zero exit status
does (FailedHookException, the message printed to stderr as the interpreter prints it).

Only support/bakery.py uses it, for the shared bakes whose answers are valid. Everything
that checks how a hook fails (test_hooks, test_hostile_input, the README's commands) runs
the hooks as separate processes, as cookiecutter does; test_bake_matrix compares baked
projects with the real `cookiecutter` command's.
"""

import contextlib
import os
import runpy
import sys
import traceback

from cookiecutter import hooks
from cookiecutter.exceptions import FailedHookException

ORIGINAL_RUN_SCRIPT = hooks.run_script
_RUNS = {"in_process": 0}


def _exit_status(code):
    """What `python script` exits with after SystemExit(code), printing as it would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_script_in_process(script_path, cwd="."):
    if not str(script_path).endswith(".py"):
        return ORIGINAL_RUN_SCRIPT(script_path, cwd)
    script_path = os.path.abspath(script_path)
    saved_cwd, saved_path, saved_argv = os.getcwd(), list(sys.path), list(sys.argv)
    status = 0
    try:
        os.chdir(cwd)
        sys.path.insert(0, os.path.dirname(script_path))
        sys.argv[:] = [script_path]
        try:
            runpy.run_path(script_path, run_name="__main__")
        except SystemExit as exit_:
            status = _exit_status(exit_.code)
        except Exception:  # noqa: BLE001  (the interpreter prints it and exits 1)
            traceback.print_exc()
            status = 1
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        sys.argv[:] = saved_argv
        sys.stdout.flush()
        sys.stderr.flush()
    _RUNS["in_process"] += 1
    if status != 0:
        raise FailedHookException(f"Hook script failed (exit status: {status})")
    return None


@contextlib.contextmanager
def in_process_hooks():
    """cookiecutter's hooks run in this process while the block runs."""
    hooks.run_script = run_script_in_process
    try:
        yield
    finally:
        hooks.run_script = ORIGINAL_RUN_SCRIPT


def in_process_runs():
    """How many hook scripts ran in this process (for the test that they did)."""
    return _RUNS["in_process"]
