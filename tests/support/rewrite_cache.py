"""Let pytest keep the modules it rewrites, where this machine forbids Python to keep any.

pytest rewrites the `assert` statements of every test module, and of every module of a
plugin's distribution (hypothesis is one: its ~80 modules), and keeps the result as a
.pyc file, unless Python may not write bytecode. Machines of this kind run with
PYTHONDONTWRITEBYTECODE=1, so every pytest process rewrote them all again: each of the
xdist workers, the controller (hypothesis's summary imports hypothesis), and every nested
pytest run, some 3 to 4 s of CPU each.

install(directory) lets pytest's rewriter, and nothing else, write and read its .pyc
files under `directory`. Python's own imports keep the environment's rules, the files
go to the cache directory (never next to a source, so no __pycache__ appears in the
checkout or in a baked project), and the processes the tests start are untouched. pytest
writes each file atomically (a temporary file and a rename), so concurrent workers are safe,
and it checks the source's mtime and size before it uses one.
"""

import sys

from _pytest.assertion import rewrite


class _SysForTheRewriter:
    """The `sys` pytest's rewriter reads: writing allowed, under the cache directory."""

    dont_write_bytecode = False

    def __init__(self, directory):
        self.pycache_prefix = str(directory)

    def __getattr__(self, name):
        return getattr(sys, name)


def install(directory):
    if rewrite.sys is sys:
        rewrite.sys = _SysForTheRewriter(directory)


def cache_dir(path):
    """Where pytest keeps the rewritten form of the module at path (a Path)."""
    return rewrite.get_cache_dir(path)
