"""A generated project follows the template with cruft: create, change the template, update."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import clean_template, need_tool

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}


def run(*args, cwd):
    result = subprocess.run(
        args, cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


@pytest.mark.parametrize("authenticator", ["dummy", "native"])
def test_cruft_update_applies_template_changes_and_keeps_secrets(tmp_path, authenticator):
    git = need_tool("git")
    cruft = str(Path(sys.executable).parent / "cruft")
    template = tmp_path / "template"
    shutil.copytree(clean_template(), template)
    run(git, "init", "-q", cwd=template)
    run(git, "add", "-A", cwd=template)
    run(git, "commit", "-qm", "v1", cwd=template)

    run(cruft, "create", "--no-input", "--extra-context", f'{{"authenticator": "{authenticator}"}}', str(template), cwd=tmp_path)
    project = tmp_path / "jupyterhub-deploy"
    run(git, "init", "-q", cwd=project)
    run(git, "add", "-A", cwd=project)
    run(git, "commit", "-qm", "generated", cwd=project)
    secrets = sorted(project.glob("k8s/overlays/*/hub-secrets.env"))
    before = {p: p.read_bytes() for p in secrets}
    assert run(git, "status", "--porcelain", cwd=project).stdout == "", "secrets files are git-ignored"
    run(cruft, "check", cwd=project)

    dockerfile = template / "{{cookiecutter.project}}" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("# The hub and its proxy in one image", "# The hub and its proxy: one image"))
    run(git, "commit", "-qam", "v2", cwd=template)
    update = run(cruft, "update", "--skip-apply-ask", "--allow-untracked-files", cwd=project)

    assert "# The hub and its proxy: one image" in (project / "Dockerfile").read_text()
    assert not list(project.rglob("*.rej")), update.stdout + update.stderr
    assert {p: p.read_bytes() for p in secrets} == before
    changed = run(git, "status", "--porcelain", cwd=project).stdout.split()
    assert set(changed) - {"M"} == {".cruft.json", "Dockerfile"}
