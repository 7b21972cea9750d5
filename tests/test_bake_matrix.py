"""Every combination of the choice and yes/no variables bakes into a clean project."""

import hashlib
import re

import pytest
import yaml

from conftest import MATRIX, OVERLAYS, clean_template, combo_id

# Jinja that survived rendering: an expression, a statement or a comment
# (`${{ ... }}` is a GitHub Actions expression, meant to be there).
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%|%\}|\{#|cookiecutter\.[a-z_]")

# What each authenticator needs beyond what every project has.
SECRETS_NEEDED = {"dummy", "github", "generic-oauth"}


def project_files(project):
    return sorted(p for p in project.rglob("*") if p.is_file())


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_bakes_clean(bake, combo):
    project = bake(**combo)
    files = {str(p.relative_to(project)): p for p in project_files(project)}

    # The chosen authenticator became authenticator_config.py; the others are gone.
    assert "authenticator_config.py" in files
    assert not (project / "authenticators").exists()
    assert f'authenticator_class = "{combo["authenticator"].replace("dummy", "shared-password")}"' in files[
        "authenticator_config.py"
    ].read_text()

    for name, path in files.items():
        text = path.read_text(encoding="utf-8")
        assert not UNRENDERED.search(text), f"{name}: unrendered template text {UNRENDERED.search(text)[0]!r}"
        assert "\r" not in text, f"{name}: CR line ending"
        if name.endswith((".yaml", ".yml")):
            assert list(yaml.safe_load_all(text)), f"{name} is empty"
        if name.endswith(".py"):
            compile(text, name, "exec")

    # Every overlay has the secrets file its kustomization reads, and only then:
    # with hub_secrets=existing-secret the Secret lives in the cluster, not here.
    from_files = combo["authenticator"] in SECRETS_NEEDED and combo["hub_secrets"] == "env-file"
    for overlay in OVERLAYS:
        secrets = project / "k8s" / "overlays" / overlay / "hub-secrets.env"
        kustomization = yaml.safe_load((project / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        assert secrets.exists() == from_files
        assert ("secretGenerator" in kustomization) == from_files
    assert (project / "scripts" / "init-secrets").exists() == from_files
    assert (project / "hub-secrets.env.example").exists() == (combo["authenticator"] in SECRETS_NEEDED)


def test_matrix_covers_every_choice():
    from conftest import CHOICE_VARIABLES

    assert len(MATRIX) == 5 * 2 * 2 * 3 * 2 * 2 * 2
    for name, values in CHOICE_VARIABLES.items():
        assert {combo[name] for combo in MATRIX} == set(values)


def test_requirements_follow_the_options(bake):
    lines = lambda project: [  # noqa: E731
        line for line in (project / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines(bake(authenticator="dummy", idle_culling="no")) == []
    assert lines(bake(authenticator="native", idle_culling="yes")) == [
        "jupyterhub-nativeauthenticator==1.3.0",
        "jupyterhub-idle-culler==1.4.0",
    ]
    assert lines(bake(authenticator="github", idle_culling="no")) == ["oauthenticator==17.4.0"]
    for project in (bake(authenticator="generic-oauth"), bake(authenticator="tmp", idle_culling="no")):
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", line) for line in lines(project))


def test_dummy_secrets_are_random_and_long_enough(bake, cookies):
    """Two projects never share a password; JupyterHub's minimum lengths hold."""
    first = (bake(authenticator="dummy") / "k8s/overlays/development/hub-secrets.env").read_text()
    again = cookies.bake(extra_context={"authenticator": "dummy"}, template=str(clean_template()))
    second = (again.project_path / "k8s/overlays/development/hub-secrets.env").read_text()
    assert first != second
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line and not line.startswith("#"))
    assert len(values["JUPYTERHUB_USER_PASSWORD"]) >= 8
    assert len(values["JUPYTERHUB_ADMIN_PASSWORD"]) >= 32
    assert values["JUPYTERHUB_USER_PASSWORD"] != values["JUPYTERHUB_ADMIN_PASSWORD"]
    mode = (again.project_path / "k8s/overlays/development/hub-secrets.env").stat().st_mode & 0o777
    assert mode == 0o600


def digest_tree(project):
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in project_files(project)
        if p.name != "hub-secrets.env"  # git-ignored, random by design
    }


@pytest.mark.parametrize("authenticator", ["dummy", "native", "github", "generic-oauth", "tmp"])
def test_same_context_bakes_identical_bytes(cookies, authenticator):
    """cruft update regenerates old and new template versions and diffs them."""
    context = {"authenticator": authenticator, "namespace": "lab-ns-1", "ingress_domain": "apps.example.org"}
    first = cookies.bake(extra_context=context, template=str(clean_template()))
    second = cookies.bake(extra_context=context, template=str(clean_template()))
    assert first.exit_code == second.exit_code == 0
    assert digest_tree(first.project_path) == digest_tree(second.project_path)
