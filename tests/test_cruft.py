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


def committed_template(tmp_path):
    """(git, cruft, a copy of the template committed as v1 in a repository of its own)."""
    git = need_tool("git")
    cruft = str(Path(sys.executable).parent / "cruft")
    template = tmp_path / "template"
    shutil.copytree(clean_template(), template)
    run(git, "init", "-q", cwd=template)
    run(git, "add", "-A", cwd=template)
    run(git, "commit", "-qm", "v1", cwd=template)
    return git, cruft, template


@pytest.mark.parametrize("authenticator", ["dummy", "native"])
def test_cruft_update_applies_template_changes_and_keeps_secrets(tmp_path, authenticator):
    git, cruft, template = committed_template(tmp_path)

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


def test_cruft_create_refuses_a_placeholder_admin_with_github(tmp_path):
    """cruft gives the hooks no template directory, so the pre_gen hook cannot read the
    authenticators' folders: the admin rule reads cookiecutter.json's _external_user_names,
    which cruft hands over like any answer, and refuses "admin" there too."""
    git, cruft, template = committed_template(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    refused = subprocess.run(
        [cruft, "create", "--no-input", "--extra-context", '{"authenticator": "github"}', str(template)],
        cwd=out, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'error: admin_user="admin" is a placeholder, and with authenticator=github' in refused.stderr, refused.stderr
    assert list(out.iterdir()) == []
    context = '{"authenticator": "github", "admin_user": "ada-lovelace"}'
    run(cruft, "create", "--no-input", "--extra-context", context, str(template), cwd=out)
    assert 'ADMIN_USER = "ada-lovelace"' in (out / "jupyterhub-deploy/hub-config/jupyterhub_config.py").read_text()


# --- A project generated before the overlays became separate hubs keeps its users' volumes ------

DEVELOPMENT_KUSTOMIZATION = "{{cookiecutter.project}}/k8s/overlays/development/kustomization.yaml"


def template_before_the_split(git, dest):
    """The template as it was in the newest commit whose development overlay still shared the
    production hub's names (no nameSuffix), exported from this repository's history."""
    from conftest import ROOT

    log = subprocess.run([git, "-C", str(ROOT), "log", "--format=%H", "--", DEVELOPMENT_KUSTOMIZATION],
                         capture_output=True, text=True, check=False)  # fmt: skip
    for commit in log.stdout.split():
        text = subprocess.run([git, "-C", str(ROOT), "show", f"{commit}:{DEVELOPMENT_KUSTOMIZATION}"],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
        if text and "nameSuffix" not in text:
            dest.mkdir(parents=True)
            archive = subprocess.run([git, "-C", str(ROOT), "archive", commit, "cookiecutter.json", "hooks", "templates",
                                      "{{cookiecutter.project}}"], capture_output=True, check=True)  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
            return commit
    pytest.skip("this checkout has no history before the overlays became separate hubs (a clone has)")


@pytest.mark.slow
def test_cruft_update_keeps_the_users_of_a_hub_generated_before_the_split(tmp_path):
    """v1 (before): the development overlay deployed as the live hub, alice's claim holds her
    work. cruft update to this template; the README's upgrade note (delete the Deployment, whose
    selector changed; release production); alice logs in to production and gets the same claim."""
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")
    need_tool("tini")
    from emulated_cluster import ImmutableField
    from hubrunner import HubDeployment, read_env_file, render
    from journey import form_login, singleuser_standin_image, start_server, stop_server, user_image_of

    git = need_tool("git")
    cruft = str(Path(sys.executable).parent / "cruft")
    template = tmp_path / "template"
    template_before_the_split(git, template)
    run(git, "init", "-q", cwd=template)
    run(git, "add", "-A", cwd=template)
    run(git, "commit", "-qm", "before the split", cwd=template)
    context = '{"authenticator": "dummy", "user_storage": "yes", "idle_culling": "no"}'
    run(cruft, "create", "--no-input", "--extra-context", context, str(template), cwd=tmp_path)
    project = tmp_path / "jupyterhub-deploy"
    run(git, "init", "-q", cwd=project)
    run(git, "add", "-A", cwd=project)
    run(git, "commit", "-qm", "generated", cwd=project)

    old = render(project, "development")
    assert {o["metadata"]["name"] for o in old if o["kind"] == "Deployment"} == {"hub"}, "not the template before the split"
    image = user_image_of(project)
    # The template before the split set no KubeSpawner.cmd: its users ran their image's own
    # command, as with a Jupyter Docker Stacks image, whose start script runs
    # jupyterhub-singleuser under a hub (k8s-singleuser-sample's `jupyter lab` never answered).
    v1_image = singleuser_standin_image(image, tmp_path / "v1", cmd=["jupyterhub-singleuser"])
    with HubDeployment(project, tmp_path / "v1", objects=old, extra_images=[v1_image]) as hub:
        cluster, namespace = hub.cluster, hub.namespace
        password = read_env_file(project / "k8s" / "overlays" / "development" / "hub-secrets.env")["JUPYTERHUB_USER_PASSWORD"]
        session = form_login(hub, "alice", password)
        start_server(session, hub, "alice")
        stop_server(session, hub, "alice")
        assert sorted(cluster.claims(namespace)) == ["claim-alice", "hub-db-dir"]
        work = cluster.volume_path(namespace, "claim-alice") / "thesis.ipynb"
        work.write_text("{}")  # what alice wrote in her home directory

        # The template moves on: the overlays are separate hubs now.
        shutil.rmtree(template / "{{cookiecutter.project}}")
        for part in ("cookiecutter.json", "hooks", "templates"):
            (shutil.rmtree if (template / part).is_dir() else os.unlink)(template / part)
        shutil.copytree(clean_template(), template, dirs_exist_ok=True)
        run(git, "add", "-A", cwd=template)
        run(git, "commit", "-qm", "separate hubs", cwd=template)
        update = run(cruft, "update", "--skip-apply-ask", "--allow-untracked-files", cwd=project)
        assert not list(project.rglob("*.rej")), update.stdout + update.stderr
        # The configuration moved into hub-config/, a ConfigMap: none is left at the top.
        assert sorted(p.name for p in project.glob("*.py")) == [], sorted(project.glob("*.py"))
        assert (project / "hub-config" / "jupyterhub_config.py").exists()

        # The README's upgrade note, step by step: a Deployment's selector cannot change...
        new = render(project, "production")
        with pytest.raises(ImmutableField, match="field is immutable"):
            cluster.apply(new)
        # ...so delete it once (the claims stay), then deploy production.
        cluster.delete("deployments", namespace, "hub")
        cluster.wait_for(lambda: not [p for p in cluster.pods(namespace).values()
                                      if p["metadata"]["labels"].get("app.kubernetes.io/component") == "hub"],
                         120, "the old hub's pod gone")  # fmt: skip
        with HubDeployment(project, tmp_path / "v2", objects=new, cluster=cluster,
                           extra_images=[singleuser_standin_image(image, tmp_path / "v2")]) as production:  # fmt: skip
            password = read_env_file(project / "k8s" / "overlays" / "production" / "hub-secrets.env")["JUPYTERHUB_USER_PASSWORD"]
            session = form_login(production, "alice", password)
            start_server(session, production, "alice")
            assert sorted(cluster.claims(namespace)) == ["claim-alice", "hub-db-dir"], "a claim was added or lost"
            pods = cluster.pods(namespace)
            [pod] = [p for name, p in pods.items() if name == "jupyter-alice"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
            assert claims == ["claim-alice"], claims
            assert work.read_text() == "{}", "alice's work is gone"
