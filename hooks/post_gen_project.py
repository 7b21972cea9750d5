"""Finish the generated repository: keep the files the chosen options need,
create the git-ignored secrets file every overlay reads, and say what to do next.

Runs in the new project's directory. Standard library and PyYAML (which
cookiecutter itself depends on) only.
"""

import contextlib
import io
import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import yaml

AUTHENTICATOR = {{ cookiecutter.authenticator | tojson }}
ADMIN_USER = {{ cookiecutter.admin_user | tojson }}
NAMESPACE = {{ cookiecutter.namespace | tojson }}
IMAGE = {{ (cookiecutter.registry ~ "/" ~ cookiecutter.image_name) | tojson }}
HUB_SECRETS = {{ cookiecutter.hub_secrets | tojson }}
TLS = {{ cookiecutter.tls | tojson }}
CERT_MANAGER_ISSUER = {{ cookiecutter.__cert_manager_issuer | tojson }}
KANIKO_CREDENTIALS = {{ cookiecutter.kaniko_credentials | tojson }}
KANIKO_SECRET_NAME = {{ cookiecutter.__kaniko_secret_name | tojson }}
CREATE_NAMESPACE = {{ cookiecutter.create_namespace | tojson }}
PROXY = {{ cookiecutter.proxy | tojson }}
PROFILES = {{ cookiecutter.profiles | tojson }}
# The line of hub-config/kustomization.yaml after which profiles.yaml joins the ConfigMap.
CONFIG_MAP_LAST_FILE = "      - hub_helpers.py\n"
# proxy=separate: the Component, and the bytes of randomness of the token it shares with the hub.
PROXY_COMPONENT = Path("k8s", "components", "separate-proxy")
PROXY_TOKEN_BYTES = 32
PRE_PULLER = {{ cookiecutter.pre_puller | tojson }}
# pre_puller=yes: the Component, its DaemonSet, and the profiles whose images it pulls too.
PRE_PULLER_COMPONENT = Path("k8s", "components", "pre-puller")
PRE_PULLER_DAEMONSET = PRE_PULLER_COMPONENT / "pre-puller-daemonset.yaml"
PROFILES_FILE = Path("hub-config", "profiles.yaml")
BUILD_USER_IMAGE = {{ cookiecutter.build_user_image | tojson }}
# build_user_image=yes: the users' image's build context, and the Component that tells the hub its name.
USER_IMAGE_CONTEXT = Path("user-image")
USER_IMAGE_COMPONENT = Path("k8s", "components", "user-image")
COMPONENTS = Path("k8s", "components")
# The two hubs' addresses (templates/derived.jinja's public_url and development_url; hooks
# are rendered without the template's loader): `skaffold run` deploys the development one.
SCHEME = "https" if TLS == "yes" else "http"
PUBLIC_URL = f"{SCHEME}://" + {{ cookiecutter.hostname | tojson }}
DEVELOPMENT_URL = f"{SCHEME}://" + {{ cookiecutter.__development_hostname | tojson }}
# The line of scripts/init-secrets that says which variables get random values.
RANDOM_BYTES_LINE = "RANDOM_BYTES = {}"


def keep_chosen_authenticator(project):
    """Keep authenticator_config.py from authenticators/<choice>/ (in hub-config/), and its
    hub-secrets.env.example if the hub needs secrets; the folders go.

    Returns the folder's authenticator.yaml (CONTRIBUTING.md describes the folder).
    """
    choices = project / "authenticators"
    chosen = choices / AUTHENTICATOR
    about = yaml.safe_load((chosen / "authenticator.yaml").read_text(encoding="utf-8"))
    (chosen / "authenticator_config.py").replace(project / "hub-config" / "authenticator_config.py")
    if (chosen / "hub-secrets.env.example").exists():
        (chosen / "hub-secrets.env.example").replace(project / "hub-secrets.env.example")
    shutil.rmtree(choices)
    return about


def keep_chosen_proxy(project, generated):
    """in-hub: the hub starts the proxy; the Component goes (main removes k8s/components when
    no Component stays).

    separate: the Component stays, and the proxy's token joins the hub's secrets: its lines
    go at the end of hub-secrets.env.example (made if the authenticator has none), and
    scripts/init-secrets makes it random. Returns the variables to make random.
    """
    fragment = project / PROXY_COMPONENT / "hub-secrets.env.example"
    if PROXY != "separate":
        shutil.rmtree(project / PROXY_COMPONENT)
        return generated
    example = project / "hub-secrets.env.example"
    before = example.read_text(encoding="utf-8") if example.exists() else ""
    example.write_text(before + ("\n" if before else "") + fragment.read_text(encoding="utf-8"), encoding="utf-8")
    fragment.unlink()
    return {**generated, "CONFIGPROXY_AUTH_TOKEN": PROXY_TOKEN_BYTES}


def keep_chosen_user_image(project):
    """no: users run the chosen image as it is; the build context and the Component go.
    yes: both stay (skaffold.yaml builds user-image/, the overlays include the Component)."""
    if BUILD_USER_IMAGE != "yes":
        shutil.rmtree(project / USER_IMAGE_CONTEXT)
        shutil.rmtree(project / USER_IMAGE_COMPONENT)


def profile_images(profiles_text):
    """[(slug, image)] of the profiles that name an image of their own (kubespawner_override.image),
    in their order (hub-config/profiles.yaml: `profiles:`, KubeSpawner's profile_list form).
    A profile without one runs the users' image."""
    found = []
    for index, profile in enumerate((yaml.safe_load(profiles_text) or {}).get("profiles") or []):
        image = (profile.get("kubespawner_override") or {}).get("image")
        if image:
            found.append((str(profile.get("slug") or profile.get("display_name") or index), image))
    return found


def profile_tolerations(profiles_text):
    """The tolerations the profiles give their pods (kubespawner_override.tolerations), in order."""
    found = []
    for profile in (yaml.safe_load(profiles_text) or {}).get("profiles") or []:
        found += (profile.get("kubespawner_override") or {}).get("tolerations") or []
    return found


def covers(toleration, other):
    """Whether a pod with `toleration` goes wherever one with `other` may: it tolerates every taint
    `other` tolerates (the same key or every key, the same effect or every effect, Exists or the same value)."""
    if toleration.get("key") and toleration.get("key") != other.get("key"):
        return False
    if not toleration.get("key") and toleration.get("operator") != "Exists":
        return False
    if toleration.get("effect") and toleration.get("effect") != other.get("effect"):
        return False
    return toleration.get("operator") == "Exists" or (
        other.get("operator", "Equal") == "Equal" and toleration.get("value") == other.get("value")
    )


def add_tolerations(daemonset_text, tolerations):
    """The DaemonSet with each of these tolerations that its own do not cover, at the end of its list:
    it must reach every node a profile's pods may go to."""
    own = yaml.safe_load(daemonset_text)["spec"]["template"]["spec"].get("tolerations") or []
    lines = daemonset_text.splitlines(keepends=True)
    start = lines.index("      tolerations:\n") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("        "))
    added = []
    for toleration in tolerations:
        if not any(covers(mine, toleration) for mine in own):
            own.append(toleration)
            added.append(f"        - {json.dumps(toleration, sort_keys=True)}\n")
    return "".join(lines[:end] + added + lines[end:])


def pull_container_name(slug, taken):
    """A container name (a DNS label, 63 characters at most) for a profile's image, not yet taken."""
    base = ("pull-profile-" + re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-"))[:60].rstrip("-")
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def add_pulls(daemonset_text, images):
    """The DaemonSet with one initContainer more per image, each a copy of the first (the users'
    image's, which the template wrote) under another name and image. images: [(slug, image)];
    an image already pulled is not pulled twice."""
    lines = daemonset_text.splitlines(keepends=True)
    start = lines.index("      initContainers:\n") + 1
    end = lines.index("      containers:\n")
    items = [i for i in range(start, end) if lines[i].startswith("        - name: ")]
    first = [line for line in lines[items[0]:items[1] if len(items) > 1 else end] if not line.lstrip().startswith("#")]
    image_lines = [i for i, line in enumerate(first) if line.startswith("          image: ")]
    assert len(image_lines) == 1 and first[0].startswith("        - name: "), "the pre-puller's first initContainer changed its form"
    pulled = {yaml.safe_load(first[image_lines[0]].split(":", 1)[1])}
    taken = {yaml.safe_load(lines[i].split(":", 1)[1]) for i in items}
    added = []
    for slug, image in images:
        if image in pulled:
            continue
        pulled.add(image)
        name = pull_container_name(slug, taken)
        taken.add(name)
        copy = list(first)
        copy[0] = f"        - name: {name}\n"
        copy[image_lines[0]] = f"          image: {json.dumps(image)}\n"
        added += copy
    return "".join(lines[:end] + added + lines[end:])


def keep_chosen_pre_puller(project):
    """no: the Component goes. yes: it stays, and its DaemonSet pulls each profile's own image
    too (hub-config/profiles.yaml, when the project has profiles), after the users' image, and
    tolerates what the profiles' pods tolerate."""
    if PRE_PULLER != "yes":
        shutil.rmtree(project / PRE_PULLER_COMPONENT)
        return
    profiles = project / PROFILES_FILE
    if profiles.exists():
        daemonset = project / PRE_PULLER_DAEMONSET
        text, profiles_text = daemonset.read_text(encoding="utf-8"), profiles.read_text(encoding="utf-8")
        text = add_pulls(text, profile_images(profiles_text))
        daemonset.write_text(add_tolerations(text, profile_tolerations(profiles_text)), encoding="utf-8")


def keep_chosen_profiles(project):
    """profile_list: hub-config/profiles.yaml joins the hub's ConfigMap (its kustomization
    lists it; jupyterhub_config.py loads it). none: the file goes."""
    hub_config = project / "hub-config"
    if PROFILES != "profile_list":
        (project / PROFILES_FILE).unlink()
        return
    kustomization = hub_config / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    assert text.count(CONFIG_MAP_LAST_FILE) == 1, f"hub-config/kustomization.yaml lost its line {CONFIG_MAP_LAST_FILE!r}"
    kustomization.write_text(text.replace(CONFIG_MAP_LAST_FILE, CONFIG_MAP_LAST_FILE + "      - profiles.yaml\n"), encoding="utf-8")


def create_secrets_files(project, generated):
    """env-file: scripts/init-secrets, told which variables the authenticator can have
    random (authenticator.yaml's generated_secrets), runs as a teammate runs it in a
    fresh clone, so what the template creates and what a clone gets never differ.

    existing-secret: the Secret lives in the cluster; the repository keeps only the
    example, which lists its keys. Authenticators without secrets need neither.
    """
    init_secrets = project / "scripts" / "init-secrets"
    if not (project / "hub-secrets.env.example").exists() or HUB_SECRETS != "env-file":
        init_secrets.unlink()
        return ""
    text = init_secrets.read_text(encoding="utf-8")
    assert text.count(RANDOM_BYTES_LINE) == 1, f"scripts/init-secrets lost its line {RANDOM_BYTES_LINE!r}"
    init_secrets.write_text(
        text.replace(RANDOM_BYTES_LINE, f"RANDOM_BYTES = {json.dumps(generated, sort_keys=True)}"), encoding="utf-8"
    )
    # In this process (runpy, as `__main__`): the script itself, without a second Python start.
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(str(init_secrets), run_name="__main__")
            status = 0
        except SystemExit as exit_:
            status = exit_.code
    if status:
        sys.exit(f"post_gen_project: scripts/init-secrets failed: {(err.getvalue() or str(status)).strip()}")
    return out.getvalue().strip()


def next_steps(created, public_url, last_step, needs_secrets):
    built_here = [IMAGE, f"{IMAGE}-user"] if BUILD_USER_IMAGE == "yes" else [IMAGE]
    built, pushed = " and ".join(built_here), ("them" if len(built_here) > 1 else "it")
    lines = [
        "",
        f"Generated {Path.cwd().name}/: JupyterHub at {PUBLIC_URL}/ (production) and {DEVELOPMENT_URL}/"
        f" (development), in namespace {NAMESPACE}.",
        "Next steps (the README has the whole story):",
        f"  cd {Path.cwd().name}",
        "  git init && git add . && git commit -m 'JupyterHub from the template'",
        f"  skaffold run    # kaniko builds {built} in the cluster, pushes {pushed}, kubectl deploys the development hub",
        f"  open {public_url}/",
    ]
    if created:
        lines.insert(2, created)
    last_step = last_step.format(admin_user=ADMIN_USER, public_url=public_url)
    if needs_secrets and HUB_SECRETS == "existing-secret":
        lines.insert(
            -2,
            f"  kubectl -n {NAMESPACE} create secret generic hub-secrets-dev --from-env-file=hub-secrets.env"
            "    # first: the development hub's Secret (production's: hub-secrets; the README, Secrets)",
        )
        # The authenticator's words name the env files; here the Secret holds the values.
        for path in ("k8s/overlays/development/hub-secrets.env", "k8s/overlays/*/hub-secrets.env"):
            last_step = last_step.replace(path, "the Secret hub-secrets-dev")
    if CREATE_NAMESPACE == "yes":
        # Before anything goes into it: Skaffold creates kaniko's credentials Secret there
        # before any build hook runs (so the hook that applies it comes too late the first time).
        after_git = next(i for i, line in enumerate(lines) if line.startswith("  git init")) + 1
        lines.insert(after_git, "  kubectl apply -f k8s/namespace.yaml    # once, first: the namespace (README, 'What you need')")
    lines.append(last_step)
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
    if CREATE_NAMESPACE != "yes":
        # The namespace exists (a platform made it): nothing here creates it.
        (project / "k8s" / "namespace.yaml").unlink()
    about = keep_chosen_authenticator(project)
    keep_chosen_profiles(project)
    generated = keep_chosen_proxy(project, about.get("generated_secrets") or {})
    keep_chosen_user_image(project)
    keep_chosen_pre_puller(project)
    if not any((project / COMPONENTS).iterdir()):
        (project / COMPONENTS).rmdir()  # no optional Component chosen
    needs_secrets = (project / "hub-secrets.env.example").exists()
    created = create_secrets_files(project, generated)
    if not needs_secrets or HUB_SECRETS != "existing-secret":
        # env-file: kustomize names the Secret after its content, so a changed file rolls the
        # hub by itself; no Secret: nothing to reload.
        (project / "scripts" / "reload-secrets").unlink()
    # The development hub's address: the one the first `skaffold run` deploys.
    print(next_steps(created, DEVELOPMENT_URL, about["next_step"], needs_secrets), file=sys.stderr)


if __name__ == "__main__":
    main()
