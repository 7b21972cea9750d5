"""Finish the generated repository: keep the files the chosen options need,
create the git-ignored secrets file every overlay reads, and say what to do next.

Runs in the new project's directory. Standard library only.
"""

import shutil
import subprocess
import sys
from pathlib import Path

AUTHENTICATOR = {{ cookiecutter.authenticator | tojson }}
ADMIN_USER = {{ cookiecutter.admin_user | tojson }}
NAMESPACE = {{ cookiecutter.namespace | tojson }}
IMAGE = {{ (cookiecutter.registry ~ "/" ~ cookiecutter.image_name) | tojson }}
PUBLIC_URL = {{ (("https" if cookiecutter.tls == "yes" else "http") ~ "://" ~ cookiecutter.hostname) | tojson }}
HUB_SECRETS = {{ cookiecutter.hub_secrets | tojson }}
NEEDS_SECRETS = AUTHENTICATOR in ("dummy", "github", "generic-oauth")


def keep_chosen_authenticator(project):
    """authenticators/<choice>.py becomes authenticator_config.py; the others go."""
    choices = project / "authenticators"
    (choices / f"{AUTHENTICATOR}.py").replace(project / "authenticator_config.py")
    shutil.rmtree(choices)


def create_secrets_files(project):
    """env-file: run scripts/init-secrets, as a teammate does in a fresh clone.

    existing-secret: the Secret lives in the cluster; the repository keeps only the
    example, which lists its keys. Authenticators without secrets need neither.
    """
    example = project / "hub-secrets.env.example"
    init_secrets = project / "scripts" / "init-secrets"
    if not NEEDS_SECRETS:
        example.unlink()
    if not NEEDS_SECRETS or HUB_SECRETS != "env-file":
        init_secrets.unlink()
        return ""
    # The same script, so what the template creates and what a clone gets never differ.
    result = subprocess.run(
        [sys.executable, str(init_secrets)], cwd=project, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"post_gen_project: scripts/init-secrets failed: {result.stderr.strip()}")
    return result.stdout.strip()


def next_steps(created):
    lines = [
        "",
        f"Generated {Path.cwd().name}/: JupyterHub at {PUBLIC_URL}/ in namespace {NAMESPACE}.",
        "Next steps (the README has the whole story):",
        f"  cd {Path.cwd().name}",
        "  git init && git add . && git commit -m 'JupyterHub from the template'",
        f"  skaffold run    # kaniko builds {IMAGE} in the cluster, pushes it, kubectl deploys it",
        f"  open {PUBLIC_URL}/",
    ]
    if created:
        lines.insert(2, created)
    if NEEDS_SECRETS and HUB_SECRETS == "existing-secret":
        lines.insert(
            -2,
            f"  kubectl -n {NAMESPACE} create secret generic hub-secrets --from-env-file=hub-secrets.env"
            "    # first: the README, Secrets",
        )
    if AUTHENTICATOR == "dummy" and HUB_SECRETS == "existing-secret":
        lines.append(
            f"Log in as any user with JUPYTERHUB_USER_PASSWORD, or as {ADMIN_USER} with"
            " JUPYTERHUB_ADMIN_PASSWORD, both in the Secret hub-secrets."
        )
    elif AUTHENTICATOR in ("github", "generic-oauth") and HUB_SECRETS == "existing-secret":
        lines.append("The Secret hub-secrets holds your OAuth client ID and secret (the README says how).")
    elif AUTHENTICATOR == "dummy":
        lines.append(
            f"Log in as any user with JUPYTERHUB_USER_PASSWORD, or as {ADMIN_USER} with"
            " JUPYTERHUB_ADMIN_PASSWORD, both in k8s/overlays/development/hub-secrets.env."
        )
    elif AUTHENTICATOR in ("github", "generic-oauth"):
        lines.append(
            "Before the first deploy: put your OAuth client ID and secret into"
            " k8s/overlays/*/hub-secrets.env (the hub will not start without them)."
        )
    elif AUTHENTICATOR == "native":
        lines.append(f"Sign up first as {ADMIN_USER} at {PUBLIC_URL}/hub/signup, then approve others.")
    else:
        lines.append("Warning: the tmp authenticator lets anyone who reaches the hub start a server.")
    return "\n".join(lines)


def main():
    project = Path.cwd()
    keep_chosen_authenticator(project)
    created = create_secrets_files(project)
    print(next_steps(created), file=sys.stderr)


if __name__ == "__main__":
    main()
