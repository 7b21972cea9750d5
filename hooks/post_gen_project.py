"""Finish the generated repository: keep the files the chosen options need,
create the git-ignored secrets file every overlay reads, and say what to do next.

Runs in the new project's directory. Standard library and PyYAML (which
cookiecutter itself depends on) only.
"""

import runpy
import secrets
import shutil
import sys
from pathlib import Path

import yaml

AUTHENTICATOR = {{ cookiecutter.authenticator | tojson }}
ADMIN_USER = {{ cookiecutter.admin_user | tojson }}
NAMESPACE = {{ cookiecutter.namespace | tojson }}
IMAGE = {{ (cookiecutter.registry ~ "/" ~ cookiecutter.image_name) | tojson }}
TLS = {{ cookiecutter.tls | tojson }}
CERT_MANAGER_ISSUER = {{ cookiecutter.__cert_manager_issuer | tojson }}
KANIKO_CREDENTIALS = {{ cookiecutter.kaniko_credentials | tojson }}
KANIKO_SECRET_NAME = {{ cookiecutter.__kaniko_secret_name | tojson }}
OVERLAYS = ("development", "production")


def keep_chosen_authenticator(project):
    """Keep authenticator_config.py from authenticators/<choice>/, and its
    hub-secrets.env.example if the hub needs secrets; the folders go.

    Returns the folder's authenticator.yaml (CONTRIBUTING.md describes the folder).
    """
    choices = project / "authenticators"
    chosen = choices / AUTHENTICATOR
    about = yaml.safe_load((chosen / "authenticator.yaml").read_text(encoding="utf-8"))
    (chosen / "authenticator_config.py").replace(project / "authenticator_config.py")
    if (chosen / "hub-secrets.env.example").exists():
        (chosen / "hub-secrets.env.example").replace(project / "hub-secrets.env.example")
    shutil.rmtree(choices)
    return about


def secrets_file_text(example, generated):
    """The example with random values for the variables in `generated` (name: bytes
    of randomness, from authenticator.yaml), such as shared passwords.

    Others, such as OAuth client credentials, stay as the example has them: the hub
    refuses to start until they are filled in, with a message naming the variable.
    """
    values = {name: secrets.token_urlsafe(size) for name, size in generated.items()}
    lines = []
    for line in example.splitlines():
        name, sep, _ = line.partition("=")
        if sep and name in values:
            line = f"{name}={values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def create_secrets_files(project, generated):
    """One per overlay, if the authenticator needs secrets (it came with an example)."""
    example = project / "hub-secrets.env.example"
    if not example.exists():
        return []
    created = []
    for overlay in OVERLAYS:
        target = project / "k8s" / "overlays" / overlay / "hub-secrets.env"
        if target.exists():  # regenerating over an existing project: keep its secrets
            continue
        target.write_text(secrets_file_text(example.read_text(encoding="utf-8"), generated), encoding="utf-8")
        target.chmod(0o600)
        created.append(target.relative_to(project))
    return created


def next_steps(created, public_url, last_step):
    lines = [
        "",
        f"Generated {Path.cwd().name}/: JupyterHub at {public_url}/ in namespace {NAMESPACE}.",
        "Next steps (the README has the whole story):",
        f"  cd {Path.cwd().name}",
        "  git init && git add . && git commit -m 'JupyterHub from the template'",
        f"  skaffold run    # kaniko builds {IMAGE} in the cluster, pushes it, kubectl deploys it",
        f"  open {public_url}/",
    ]
    if created:
        lines.insert(3, "Secrets (git-ignored, mode 600): " + ", ".join(str(p) for p in created))
    lines.append(last_step.format(admin_user=ADMIN_USER, public_url=public_url))
    # The settings of these options are not asked (README: "Not asked"); say where they went.
    if KANIKO_CREDENTIALS == "secret":
        lines.append(
            f"kaniko reads the registry credentials from the Secret {KANIKO_SECRET_NAME} in"
            f" {NAMESPACE}: create it before the first build (README, 'What you need')."
        )
    if TLS == "yes" and not CERT_MANAGER_ISSUER:
        lines.append(
            f"HTTPS: put the certificate into the Secret hub-tls in {NAMESPACE}, or generate with"
            " __cert_manager_issuer=<ClusterIssuer> to have cert-manager issue it."
        )
    return "\n".join(lines)


def main():
    project = Path.cwd()
    about = keep_chosen_authenticator(project)
    created = create_secrets_files(project, about.get("generated_secrets") or {})
    # The public URL as the hub has it; importing hub_helpers.py only defines names.
    public_url = runpy.run_path(str(project / "hub_helpers.py"))["PUBLIC_URL"]
    print(next_steps(created, public_url, about["next_step"]), file=sys.stderr)


if __name__ == "__main__":
    main()
