"""The generated README is a product surface: its commands carry the project's values and work."""

import re
import subprocess

import pytest

from conftest import kustomize
from support.bakery import NAMED_ADMIN


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
        # The admin the bake named, and why it had to be named.
        "github": ["Sign in with GitHub", "GITHUB_ALLOWED_ORGANIZATIONS", f"GitHub user\n`{NAMED_ADMIN}`",
                   "whoever owns that login is the hub's admin"],  # fmt: skip
        "generic-oauth": ["Sign in with your identity provider", "openid-connect/auth", "OAUTH_ALLOW_ALL",
                          f"is `{NAMED_ADMIN}`", "whoever holds that name there is the hub's admin"],  # fmt: skip
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


@pytest.mark.parametrize("create", ["yes", "no"])
def test_first_deploy_goes_in_order_from_an_empty_cluster(bake, create):
    """Every prerequisite of the first deploy, numbered, in the order they are needed, then the
    deploy and the address to open."""
    readme = (bake(create_namespace=create, namespace="lab-ns-1") / "README.md").read_text()
    section = readme.split("## What you need: the first deploy", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^(\d+)\. \*\*([^*]+)\*\*", section, re.M)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)), steps
    order = ["kubectl", "namespace", "registry", "kaniko", "Pull credentials", "ingress controller", "secrets"]
    titles = [title for _, title in steps]
    assert len(titles) == len(order) and all(w.lower() in t.lower() for w, t in zip(order, titles)), titles
    if create == "yes":
        # Before the first skaffold run: Skaffold's cluster builder creates kaniko's credentials
        # Secret in it (PreBuild) before any artifact's build hook (its builder_mux.go).
        assert "create it once, before anything else" in section and "kubectl apply -f k8s/namespace.yaml" in section
        assert "before any build hook runs" in section
    else:
        assert "exists: a platform made it" in section and "namespace.yaml" not in section
    # The registry must be reachable from pods and nodes, with recipes for the common cases.
    for text in ("from inside a pod and from every node", "REGISTRY_HOST", "ghcr.io", "kind", "registry_insecure=yes"):
        assert text in section, text
    # kaniko's credentials: a file of this registry only; credential stores say why.
    assert "credential store" in section and "401 UNAUTHORIZED" in section
    after = readme.split("## What you need: the first deploy", 1)[1].split("\n## ", 1)[1]
    assert after.startswith("Build, deploy, open") and "skaffold run" in after
    assert "http://dev-lab-ns-1-jupyterhub.127.0.0.1.nip.io/" in after


@pytest.mark.parametrize("build", ["no", "yes"])
def test_users_image_section_names_what_exists(bake, build):
    """build_user_image: the README's files table, the users' servers, the release and Renovate
    name the users' image where it is built (user-image/, how to add a package, how the hub
    learns it) and name USER_IMAGE in jupyterhub_config.py where it is not."""
    project = bake(build_user_image=build)
    readme = (project / "README.md").read_text()
    users = readme.split("## Users' servers", 1)[1].split("\n## ", 1)[0]
    for path in ("user-image/", "k8s/components/user-image/"):
        assert (f"| `{path}` |" in readme) == (build == "yes") == (project / path).is_dir(), path
    if build == "yes":
        adding = users.split("### Adding a package for users", 1)[1]
        for text in ("`user-image/requirements.txt`", "`skaffold run`", "`scripts/release`", "`USER_IMAGE`",
                     "`jupyterhub-user`", "`resourceSelector`", "jupyterhub-registry.127.0.0.1.nip.io/jupyterhub-user"):
            assert text in adding, text
        assert "--user-digest" in readme and "changes two lines" in readme
        assert "`FROM` line of `user-image/Dockerfile`" in readme
        assert "`USER_IMAGE` in `hub-config/jupyterhub_config.py`" not in readme
        # The README's example pin is a line the requirements file's own comment shows too.
        assert "pandas==2.3.3" in (project / "user-image" / "requirements.txt").read_text()
    else:
        assert "### Adding a package" not in readme and "user-image" not in readme
        assert "`quay.io/jupyterhub/k8s-singleuser-sample:4.4.0` as uid 1000" in users
        assert "`USER_IMAGE` in `hub-config/jupyterhub_config.py`" in readme and "changes one line" in readme
