"""Finish the generated repository: keep the files the chosen options need,
create the git-ignored secrets file every overlay reads, and say what to do next.

Runs in the new project's directory. Standard library only.
"""

import secrets
import shutil
import sys
from pathlib import Path

AUTHENTICATOR = {{ cookiecutter.authenticator | tojson }}
ADMIN_USER = {{ cookiecutter.admin_user | tojson }}
NAMESPACE = {{ cookiecutter.namespace | tojson }}
IMAGE = {{ (cookiecutter.registry ~ "/" ~ cookiecutter.image_name) | tojson }}
PUBLIC_URL = {{ (("https" if cookiecutter.tls == "yes" else "http") ~ "://" ~ cookiecutter.hostname) | tojson }}
NEEDS_SECRETS = AUTHENTICATOR in ("dummy", "native", "github", "generic-oauth")
OVERLAYS = ("development", "production")


def keep_chosen_authenticator(project):
    """authenticators/<choice>.py becomes authenticator_config.py; the others go."""
    choices = project / "authenticators"
    (choices / f"{AUTHENTICATOR}.py").replace(project / "authenticator_config.py")
    shutil.rmtree(choices)


def secrets_file_text(example):
    """The example with real values where the hub can generate them itself.

    Shared passwords are random (the admin's is longer, as JupyterHub requires);
    OAuth client credentials stay empty: the hub refuses to start until they are
    filled in, with a message that names the missing variable.
    """
    values = {
        "JUPYTERHUB_USER_PASSWORD": secrets.token_urlsafe(12),
        "JUPYTERHUB_ADMIN_PASSWORD": secrets.token_urlsafe(32),
    }
    lines = []
    for line in example.splitlines():
        name, sep, _ = line.partition("=")
        if sep and name in values:
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def create_secrets_files(project):
    example = project / "hub-secrets.env.example"
    if not NEEDS_SECRETS:
        example.unlink()
        return []
    created = []
    for overlay in OVERLAYS:
        target = project / "k8s" / "overlays" / overlay / "hub-secrets.env"
        if target.exists():  # regenerating over an existing project: keep its secrets
            continue
        target.write_text(secrets_file_text(example.read_text(encoding="utf-8")), encoding="utf-8")
        target.chmod(0o600)
        created.append(target.relative_to(project))
    return created


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
        lines.insert(3, "Secrets (git-ignored, mode 600): " + ", ".join(str(p) for p in created))
    if AUTHENTICATOR == "dummy":
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
        lines.append(
            f"Log in as {ADMIN_USER} with JUPYTERHUB_ADMIN_PASSWORD from"
            " k8s/overlays/development/hub-secrets.env; others sign up at"
            f" {PUBLIC_URL}/hub/signup and you approve them at {PUBLIC_URL}/hub/authorize."
        )
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
