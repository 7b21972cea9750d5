"""This repository keeps its promises: CI runs the README's commands, the README knows every variable."""

import re
import subprocess

from conftest import ROOT, TEMPLATE


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
