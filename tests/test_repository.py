"""This repository keeps its promises: CI runs the README's commands, the README knows every variable."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TEMPLATE, ci_is_on


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


def test_outside_ci_a_skip_stays_a_skip(tmp_path):
    result, counts = run_tiny_suite(tmp_path, None)
    assert counts == {"passed": 1, "skipped": 4, "xfailed": 1}, result.stdout
    assert result.returncode == 0


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
