"""Shared fixtures: baking the template, finding tools, the option matrix."""

import itertools
import json
import os
import shutil
import subprocess
import sys
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


def combo_id(combo):
    return "-".join(f"{k}={v}" for k, v in combo.items())


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
            result = cookies_session.bake(extra_context=extra_context)
            if result.exception is not None:
                raise result.exception
            assert result.exit_code == 0
            cache[key] = Path(result.project_path)
        return cache[key]

    return _bake


def kustomize(project, overlay):
    """The overlay rendered by `kubectl kustomize`, as a list of objects."""
    import yaml

    kubectl = need_tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(project / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def run_cookiecutter(*args, cwd, env=None, template=ROOT):
    """cookiecutter's own command line, as a user runs it."""
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
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
