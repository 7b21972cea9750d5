"""Shared fixtures: baking the template, finding tools, the option matrix."""

import atexit
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
IN_CI = os.environ.get("CI", "").lower() == "true"
OVERLAYS = ("development", "production")

# Every choice and yes/no variable (cookiecutter.json lists their values); all
# combinations of them make the bake matrix.
CHOICE_VARIABLES = {k: v for k, v in TEMPLATE.items() if isinstance(v, list)}
MATRIX = [
    dict(zip(CHOICE_VARIABLES, values))
    for values in itertools.product(*CHOICE_VARIABLES.values())
]


# One folder per authenticator (CONTRIBUTING.md, "Adding an authenticator").
AUTHENTICATORS = ROOT / "{{cookiecutter.project}}" / "authenticators"


def needs_secrets(authenticator, authenticators=AUTHENTICATORS):
    """The rule the template applies: the folder comes with a hub-secrets.env.example."""
    return (authenticators / authenticator / "hub-secrets.env.example").exists()


def authenticator_packages(authenticator, authenticators=AUTHENTICATORS):
    """The pinned packages of the authenticator's requirements.txt."""
    text = (authenticators / authenticator / "requirements.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def combo_id(combo):
    return "-".join(f"{k}={v}" for k, v in combo.items())


@functools.lru_cache(maxsize=None)
def clean_template():
    """A copy of just the template (no .venv, no build/): what a user's clone holds.

    cookiecutter copies the whole template directory for the pre_prompt hook, so
    baking from the checkout itself would copy the virtual environment every time.
    """
    dest = Path(tempfile.mkdtemp(prefix="template-")) / "template"
    dest.mkdir()
    shutil.copy2(ROOT / "cookiecutter.json", dest)
    for name in ("hooks", "templates", "{{cookiecutter.project}}"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    atexit.register(shutil.rmtree, dest.parent, True)
    return dest


def need_tool(name):
    """The path of a system tool; skip where it is missing, fail in CI (which installs it)."""
    path = shutil.which(name) or (
        str(Path(sys.executable).parent / name)
        if (Path(sys.executable).parent / name).exists()
        else None
    )
    if path:
        return path
    message = f"{name} is not installed (.ci/run installs it)"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def bake(cookies_session):
    """bake(**extra_context) -> path of the baked project; each context is baked once."""
    cache = {}

    def _bake(**extra_context):
        key = json.dumps(extra_context, sort_keys=True)
        if key not in cache:
            result = cookies_session.bake(extra_context=extra_context, template=str(clean_template()))
            if result.exception is not None:
                raise result.exception
            assert result.exit_code == 0
            cache[key] = Path(result.project_path)
        return cache[key]

    return _bake


def kustomize(project, overlay):
    """The overlay rendered by `kubectl kustomize`, as a list of objects (a fresh copy)."""
    import copy

    return copy.deepcopy(_kustomize(str(project), overlay))


@functools.lru_cache(maxsize=None)
def _kustomize(project, overlay):
    import yaml

    project = Path(project)
    kubectl = need_tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(project / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def run_cookiecutter(*args, cwd, env=None, template=None):
    """cookiecutter's own command line, as a user runs it."""
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    template = template or clean_template()
    return subprocess.run(
        [str(cookiecutter), "--no-input", str(template), *args],
        cwd=cwd,
        env=env if env is not None else os.environ.copy(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
