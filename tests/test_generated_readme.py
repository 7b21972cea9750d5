"""The generated README is a product surface: its commands carry the project's values and work."""

import re
import subprocess

import pytest

from conftest import kustomize


def test_workflow_commands_carry_the_real_values(bake):
    project = bake(namespace="lab-ns-1", ingress_domain="apps.example.org")
    readme = (project / "README.md").read_text()
    image = "lab-ns-1-registry.apps.example.org/jupyterhub"
    for command in (
        "skaffold run",
        f"skaffold build                                  # kaniko builds {image}:development",
        f"skopeo inspect docker://{image}:development",
        "kubectl apply -k k8s/overlays/development",
        "kubectl -n lab-ns-1 rollout status deployment/hub",
        "**http://lab-ns-1-jupyterhub.apps.example.org/**",
    ):
        assert command in readme, command
    # Every overlay and file the README names exists.
    for path in set(re.findall(r"`(k8s/[a-z/-]+|[a-z_-]+\.(?:py|yaml|txt|example))`", readme)):
        assert (project / path.rstrip("/")).exists() or path.endswith("hub-secrets.env"), path


@pytest.mark.parametrize("authenticator", ["dummy", "github", "generic-oauth", "native", "tmp"])
def test_log_in_section_matches_the_authenticator(bake, authenticator):
    readme = (bake(authenticator=authenticator) / "README.md").read_text()
    section = readme.split("## Log in", 1)[1].split("\n## ", 1)[0]
    expected = {
        "dummy": ["JUPYTERHUB_USER_PASSWORD", "JUPYTERHUB_ADMIN_PASSWORD", "/hub/login"],
        "native": ["/hub/signup", "/hub/authorize", "`admin`", "JUPYTERHUB_ADMIN_PASSWORD", "/hub/login"],
        "github": ["Sign in with GitHub", "GITHUB_ALLOWED_ORGANIZATIONS"],
        "generic-oauth": ["Sign in with your identity provider", "openid-connect/auth", "OAUTH_ALLOW_ALL"],
        "tmp": ["no login"],
    }[authenticator]
    for text in expected:
        assert text in section, text


@pytest.mark.parametrize("authenticator", ["dummy", "native"])
def test_fresh_clone_secrets_command_works(bake, tmp_path, authenticator):
    """The README's command recreates the git-ignored secrets files; the overlays render again."""
    project = bake(authenticator=authenticator)
    readme = (project / "README.md").read_text()
    section = readme.split("## Secrets", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M).group(1)
    assert command.strip() == "scripts/init-secrets"
    clone = tmp_path / "clone"
    subprocess.run(["cp", "-a", str(project), str(clone)], check=True)
    for secrets in clone.glob("k8s/overlays/*/hub-secrets.env"):
        secrets.unlink()
    subprocess.run(["bash", "-c", command], cwd=clone, check=True)
    for overlay in ("development", "production"):
        secrets = clone / "k8s" / "overlays" / overlay / "hub-secrets.env"
        assert secrets.stat().st_mode & 0o077 == 0
        values = dict(line.split("=", 1) for line in secrets.read_text().splitlines() if "=" in line and not line.startswith("#"))
        if authenticator == "dummy":
            assert len(values["JUPYTERHUB_USER_PASSWORD"]) >= 8
        assert len(values["JUPYTERHUB_ADMIN_PASSWORD"]) >= 32
        assert any(o["kind"] == "Secret" for o in kustomize(clone, overlay))
