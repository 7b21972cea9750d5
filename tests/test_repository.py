"""This repository keeps its promises: CI runs the README's commands, the README knows every variable."""

import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, TEMPLATE, ci_is_on
from support import rewrite_cache, scratch
from support.tools import TOOLS


def readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def quick_start_commands():
    block = readme().split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    generate, test = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), f".ci/run must run {test!r}"
    assert "cookiecutter --no-input ." in generate


def test_readme_lists_every_variable():
    documented = set(re.findall(r"^\| `([a-z_]+)`", readme(), re.M)) | set(
        re.findall(r"`(oauth_[a-z_]+)`", readme())
    )
    variables = {name for name in TEMPLATE if not name.startswith("_")}
    assert variables <= documented, variables - documented


def test_every_variable_has_a_prompt():
    prompts = TEMPLATE["__prompts__"]
    for name, value in TEMPLATE.items():
        if name.startswith("_"):
            continue
        assert name in prompts, name
        if isinstance(prompts[name], dict):  # a prompt per choice: one for each
            assert set(prompts[name]) - {"__prompt__"} == set(value), name


def test_default_authenticator_needs_a_login():
    """An anonymous visitor must not get a server from a default deployment."""
    assert TEMPLATE["authenticator"][0] != "tmp"


def test_line_endings_are_lf_and_files_are_text():
    assert "eol=lf" in (ROOT / ".gitattributes").read_text()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        path = ROOT / name
        if path.is_file():
            assert b"\r\n" not in path.read_bytes(), name


def test_licence_and_dev_requirements_are_pinned():
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", line), line


# --- The CI rule of tests/conftest.py: under CI, a skip is a failure ----------------------

SKIPPING_TESTS = '''
import pytest

def test_skips():
    pytest.skip("no such tool")

def test_imports_or_skips():
    pytest.importorskip("no_such_module_anywhere")

@pytest.mark.skip(reason="marked")
def test_marked():
    pass

def test_passes():
    pass

@pytest.mark.xfail(reason="a known failure stays one", strict=True)
def test_known_failure():
    assert False
'''
SKIPPING_MODULE = 'import pytest\npytest.importorskip("no_such_module_anywhere")\n\ndef test_never_runs():\n    pass\n'


def run_tiny_suite(tmp_path, ci):
    """A small suite under this repository's conftest.py (as a plugin), in a subprocess."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TESTS)
    (tmp_path / "test_skipping_module.py").write_text(SKIPPING_MODULE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env.update(PYTHONPATH=str(ROOT / "tests"), PYTHONDONTWRITEBYTECODE="1", **({"CI": ci} if ci is not None else {}))
    (tmp_path / "scratch").mkdir()
    env[scratch.VARIABLE] = str(tmp_path / "scratch")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "--continue-on-collection-errors", "-q", "-rfsx", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1]
    return result, dict((word, int(n)) for n, word in re.findall(r"(\d+) (\w+)", summary))


def test_a_skip_fails_under_ci(tmp_path):
    result, counts = run_tiny_suite(tmp_path, "1")
    # pytest.skip and importorskip in a test fail; a skip mark (at setup) and a module
    # that skips at import time are errors; none passes for a skip.
    assert counts == {"failed": 2, "errors": 2, "passed": 1, "xfailed": 1}, result.stdout
    assert result.returncode != 0
    assert "CI=1: a skip is a failure here" in result.stdout
    assert "no_such_module_anywhere" in result.stdout  # the reason is kept
    # A failed run keeps its temporary files, and says where.
    (kept,) = (tmp_path / "scratch").iterdir()
    assert f"temporary files of this run kept in {kept}" in result.stdout


def test_outside_ci_a_skip_stays_a_skip(tmp_path):
    result, counts = run_tiny_suite(tmp_path, None)
    assert counts == {"passed": 1, "skipped": 4, "xfailed": 1}, result.stdout
    assert result.returncode == 0
    assert list((tmp_path / "scratch").iterdir()) == [], "a run that passed left its temporary files"


def test_pytest_keeps_what_it_rewrites_in_the_tools_directory(tmp_path):
    """Under PYTHONDONTWRITEBYTECODE=1, as on this machine, a pytest run still keeps the
    modules it rewrote (support/rewrite_cache.py): under the tools' directory, not next to
    the sources. Python's own imports keep the environment's rule."""
    import hypothesis

    result, _ = run_tiny_suite(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert not list(tmp_path.rglob("__pycache__")), "a __pycache__ next to the sources"
    for source in (tmp_path / "test_skipping.py", Path(hypothesis.__file__)):
        kept = list(rewrite_cache.cache_dir(source).glob(f"{source.stem}.*-pytest-*.pyc"))
        assert kept, f"no rewritten {source.name} in {rewrite_cache.cache_dir(source)}"
        assert Path(rewrite_cache.cache_dir(source)).is_relative_to(TOOLS / "pytest-rewrites")
    assert sys.dont_write_bytecode == bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    assert sys.pycache_prefix == (os.environ.get("PYTHONPYCACHEPREFIX") or None)


def test_what_collection_made_is_out_of_the_garbage_collectors_sight():
    """conftest.py freezes the objects alive after collection (the modules, the items)."""
    import gc

    assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on", "woodpecker"])
def test_truthy_ci_values(value):
    assert ci_is_on({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "FALSE", "no", "off", None])
def test_false_ci_values(value):
    assert not ci_is_on({} if value is None else {"CI": value})


def test_readme_counts_the_combinations():
    """The README's count of combinations is the product of the choices in cookiecutter.json."""
    choices = [len(value) for name, value in TEMPLATE.items() if isinstance(value, list) and not name.startswith("_")]
    stated = re.findall(r"every combination of the choice variables \((\d+)\)", readme())
    assert stated == [str(math.prod(choices))], f"README.md says {stated}; cookiecutter.json makes {math.prod(choices)}"


def test_readme_says_where_the_test_tools_live():
    """README.md and tests/support/tools.py (which the scripts ask) name the same place."""
    from support.tools import VARIABLE, tools_dir

    default = tools_dir({"HOME": "/home/someone"})
    assert default == Path("/home/someone/.cache") / default.name
    assert tools_dir({"HOME": "/home/someone", "XDG_CACHE_HOME": "/cache"}) == Path("/cache") / default.name
    assert tools_dir({"HOME": "/home/someone", VARIABLE: "/opt/tools"}) == Path("/opt/tools")
    assert f"`${VARIABLE}`" in readme()
    assert f"`${{XDG_CACHE_HOME:-~/.cache}}/{default.name}`" in readme()
    for script in ("scripts/install-test-tools", "scripts/pytest"):
        assert "$(python3 tests/support/tools.py)" in (ROOT / script).read_text(), script


# --- Where the run keeps its temporary files (support/scratch.py) ------------------------

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
tmpfs /run/with\\040space tmpfs rw 0 0
/dev/vdb /dev/shm/disk ext4 rw 0 0
"""


class FakeStatvfs:
    def __init__(self, free_gib, noexec=False):
        self.f_bavail, self.f_frsize = free_gib << 30, 1
        self.f_flag = os.ST_NOEXEC if noexec else 0


def test_mount_type_takes_the_innermost_mount():
    assert scratch.mount_type("/dev/shm", MOUNTS) == "tmpfs"
    assert scratch.mount_type("/dev/shm/x/y", MOUNTS) == "tmpfs"
    assert scratch.mount_type("/dev/shm/disk/x", MOUNTS) == "ext4"
    assert scratch.mount_type("/dev/shmem", MOUNTS) == "ext4"  # a prefix of the name is not inside
    assert scratch.mount_type("/run/with space/x", MOUNTS) == "tmpfs"


@pytest.mark.parametrize(
    "statvfs, mounts, expected",
    [
        (FakeStatvfs(8), MOUNTS, "/dev/shm"),
        (FakeStatvfs(1), MOUNTS, None),  # too little room
        (FakeStatvfs(8, noexec=True), MOUNTS, None),  # the tests run scripts they write
        (FakeStatvfs(8), MOUNTS.replace("tmpfs /dev/shm tmpfs", "/dev/vdc /dev/shm ext4"), None),
        (FakeStatvfs(8), "", None),  # no /proc/self/mounts
    ],
    ids=["tmpfs with room", "small", "noexec", "not tmpfs", "unknown"],
)
def test_the_run_uses_a_tmpfs_only_where_it_fits(statvfs, mounts, expected, tmp_path):
    shm = tmp_path / "dev" / "shm"
    shm.mkdir(parents=True)
    mounts = mounts.replace(" /dev/shm ", f" {shm} ")
    found = scratch.scratch_root({}, mounts, statvfs=lambda _path: statvfs, candidates=(str(shm),))
    assert found == (str(shm) if expected else None)
    assert scratch.scratch_root({scratch.VARIABLE: "/chosen"}, mounts, candidates=(str(shm),)) == "/chosen"


def test_this_run_keeps_its_files_where_scratch_says():
    """The run's TMPDIR (tmp_path, the bakes, the tools' temporary files) is a directory of
    its own under the root support/scratch.py picks (the system's if none), open to every
    user like /tmp."""
    run_dir = Path(tempfile.gettempdir())
    assert os.environ["TMPDIR"] == str(run_dir)
    assert run_dir.name.startswith("template-tests-run-")
    assert run_dir.stat().st_mode & 0o7777 == 0o1777
    assert os.environ[scratch.VARIABLE] == str(run_dir)  # nested runs make theirs inside
    if Path("/dev/shm").is_dir() and scratch.usable_tmpfs("/dev/shm", scratch.read_mounts()) is None:
        assert scratch.mount_type(run_dir, scratch.read_mounts()) == "tmpfs"
