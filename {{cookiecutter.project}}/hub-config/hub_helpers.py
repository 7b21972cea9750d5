"""What jupyterhub_config.py and authenticator_config.py share.

It is part of the hub's ConfigMap with them (hub-config/kustomization.yaml), mounted in
/usr/local/etc/jupyterhub/, and jupyterhub_config.py puts that directory on the module
path (as Zero to JupyterHub does for its own helper). Importing it changes nothing in
JupyterHub's configuration.

Nothing here names a host, a namespace or an overlay: one ConfigMap serves every overlay,
and each overlay's Deployment tells the hub who it is (k8s/overlays/*/).
"""

import json
import os
import re
import shutil
import sys


def require_env(name, why):
    """The value of the environment variable `name`; stops the hub with one line naming it if unset or empty."""
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"{name} is not set: {why}")
    return value


def public_url():
    """The address users open (OAuth providers send them back to it): the overlay's Ingress
    host, which its kustomization copies into the Deployment's JUPYTERHUB_PUBLIC_URL."""
    return require_env(
        "JUPYTERHUB_PUBLIC_URL", "the overlay's Deployment sets it from its Ingress host (k8s/overlays/*/kustomization.yaml)"
    ).rstrip("/")


# scripts/hub-db restore stages a backup in this folder of the hub's volume; the next hub
# to start installs it (install_staged_restore).
STAGED_RESTORE = "restore-staged"
DATABASE = "jupyterhub.sqlite"
COOKIE_SECRET = "jupyterhub_cookie_secret"


def install_staged_restore(state_dir):
    """Put the database and cookie secret that `scripts/hub-db restore` staged in
    <state_dir>/restore-staged/ in place of the hub's; the path of the folder that keeps the
    files they replaced, or None when nothing is staged.

    jupyterhub_config.py calls this before JupyterHub opens its database, in a pod started
    after the staging (the Deployment's Recreate strategy stops the old hub first): no
    process has the database open while it is replaced. The replaced files go to
    <state_dir>/before-restore-<when staged>/, the database's journal files with them (a
    journal left by the old database would be played into the restored one). Each step can
    be repeated: a hub killed halfway finishes the job at its next start. The staging
    folder appears whole (scripts/hub-db renames it into place), so a half-staged backup is
    never installed."""
    staged = os.path.join(state_dir, STAGED_RESTORE)
    staging_file = os.path.join(staged, "staging.json")
    if not os.path.isfile(staging_file):
        return None
    with open(staging_file, encoding="utf-8") as f:
        staging = json.load(f)
    kept = os.path.join(state_dir, f"before-restore-{staging['staged_at']}")
    os.makedirs(kept, mode=0o700, exist_ok=True)
    moved_aside = os.path.join(kept, ".moved-aside")
    if not os.path.exists(moved_aside):
        for name in (DATABASE, f"{DATABASE}-journal", f"{DATABASE}-wal", f"{DATABASE}-shm", COOKIE_SECRET):
            if os.path.exists(os.path.join(state_dir, name)):
                os.replace(os.path.join(state_dir, name), os.path.join(kept, name))
        open(moved_aside, "w").close()
    for name in (COOKIE_SECRET, DATABASE):
        if os.path.exists(os.path.join(staged, name)):
            os.replace(os.path.join(staged, name), os.path.join(state_dir, name))
    # The receipt scripts/hub-db reads after the restart: this staging, installed.
    shutil.copy2(staging_file, os.path.join(kept, "restore-receipt.json"))
    os.replace(staging_file, os.path.join(state_dir, "restore-receipt.json"))
    shutil.rmtree(staged)
    print(
        f"Installed the backup that scripts/hub-db restore staged at {staging['staged_at']} "
        f"(database sha256 {staging['database_sha256'][:16]}...); the files it replaced are in {kept}",
        file=sys.stderr,
        flush=True,
    )
    return kept


# --- Users' resources and profiles ------------------------------------------------------

# A limit is at most this many times its guarantee, for memory and for CPU. The scheduler
# places servers by their guarantees (requests), so a node full of servers that all reach
# their limits holds at most this many times what it has: beyond it, memory runs out and
# the kernel kills servers (a pandas job, typically) at random. jupyterhub_config.py's
# resources and every profile in profiles.yaml are held to it when the hub starts.
OVERCOMMIT_RATIO = 4

# Memory as KubeSpawner reads it (JupyterHub's ByteSpecification): bytes, or a number with
# K, M, G or T, in units of 1024.
MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
RESOURCES = ("cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit")


def memory_bytes(value):
    """Bytes of a memory amount as KubeSpawner reads it ("4G", "512M", 1073741824); ValueError if it is none."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of memory")
    if isinstance(value, (int, float)):
        number, unit = value, 1
    elif isinstance(value, str) and value[-1:] in MEMORY_UNITS:
        number, unit = value[:-1], MEMORY_UNITS[value[-1]]
    else:
        raise ValueError(f"{value!r} is not an amount of memory (a number with K, M, G or T, such as 4G)")
    try:
        number = float(number)
    except ValueError:
        raise ValueError(f"{value!r} is not an amount of memory (a number with K, M, G or T, such as 4G)") from None
    if not number > 0:
        raise ValueError(f"{value!r} is not a positive amount of memory")
    return int(number * unit)


def cpu_cores(value):
    """Cores as KubeSpawner reads them (0.5, 2); ValueError if the value is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{value!r} is not a positive number of cores (such as 0.5 or 2)")
    return float(value)


def resource_problem(resources, ratio=OVERCOMMIT_RATIO):
    """What is wrong with {cpu_guarantee, cpu_limit, mem_guarantee, mem_limit}, or None: each
    limit at least its guarantee and at most `ratio` times it."""
    for kind, parse in (("cpu", cpu_cores), ("mem", memory_bytes)):
        guarantee, limit = resources.get(f"{kind}_guarantee"), resources.get(f"{kind}_limit")
        try:
            low, high = parse(guarantee), parse(limit)
        except ValueError as error:
            return f"{kind}_guarantee/{kind}_limit: {error}"
        if high < low:
            return f"{kind}_limit {limit} is below {kind}_guarantee {guarantee}"
        if high > ratio * low:
            return (
                f"{kind}_limit {limit} is more than {ratio} times {kind}_guarantee {guarantee}"
                f" (OVERCOMMIT_RATIO in hub_helpers.py): raise the guarantee or lower the limit"
            )
    return None


SLUG = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
IMAGE_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def image_problem(image):
    """What keeps an image reference from being pinned (a tag other than latest, or a digest), or None."""
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        return f"image {image!r} is not an image reference"
    name, at, digest = image.partition("@")
    if at:
        return None if IMAGE_DIGEST.fullmatch(digest) else f"image {image} has a malformed digest (sha256: and 64 hex digits)"
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    if not tag:
        return f"image {image} has no tag: pin it (name:tag or name@sha256:...), or the nodes run whatever was pushed last"
    if tag == "latest":
        return f"image {image} is :latest, which changes under you: pin a version tag or a digest"
    if not IMAGE_TAG.fullmatch(tag):
        return f"image {image} has a malformed tag"
    return None


def profile_problems(document, defaults, ratio=OVERCOMMIT_RATIO):
    """One line per problem of profiles.yaml's content (parsed): each names the profile and the
    rule. defaults: the hub's own resources, which a profile without its own keeps."""
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), list) or not document["profiles"]:
        return ["the file must hold `profiles:`, a list of at least one profile"]
    problems, slugs, defaults_found = [], {}, []
    for number, profile in enumerate(document["profiles"], 1):
        if not isinstance(profile, dict):
            problems.append(f"profile #{number} is not a mapping (display_name, slug, kubespawner_override, ...)")
            continue
        slug = profile.get("slug")
        who = f"profile {slug!r}" if isinstance(slug, str) and slug else f"profile #{number}"
        if not isinstance(slug, str) or not SLUG.fullmatch(slug):
            problems.append(
                f"{who} needs a slug: lower-case letters, digits and '-', at most 63 (users and the API choose a profile by it)"
            )
        elif slug in slugs:
            problems.append(f"{who} has the slug of profile #{slugs[slug]}: slugs must differ")
        else:
            slugs[slug] = number
        if not isinstance(profile.get("display_name"), str) or not profile["display_name"].strip():
            problems.append(f"{who} needs a display_name (what the spawn form shows)")
        if profile.get("default") is True:
            defaults_found.append(who)
        elif profile.get("default") not in (None, False):
            problems.append(f"{who} has default: {profile['default']!r}; it is true or left out")
        override = profile.get("kubespawner_override", {})
        if not isinstance(override, dict):
            problems.append(f"{who}: kubespawner_override is not a mapping")
            continue
        if "image" in override:
            problem = image_problem(override["image"])
            if problem:
                problems.append(f"{who}: {problem}")
        problem = resource_problem({name: override.get(name, defaults.get(name)) for name in RESOURCES}, ratio)
        if problem:
            problems.append(f"{who}: {problem}")
    if not defaults_found:
        problems.append("no profile is the default: give exactly one `default: true` (the spawn form preselects it, the API uses it)")
    elif len(defaults_found) > 1:
        problems.append(f"{' and '.join(defaults_found)} are both the default: give exactly one `default: true`")
    return problems


def load_profiles(path, defaults, ratio=OVERCOMMIT_RATIO):
    """KubeSpawner's profile_list from the YAML file at path (hub-config/profiles.yaml), checked
    against profile_problems; ValueError with one line naming the file, the profile and the rule."""
    import yaml  # PyYAML: in k8s-hub's image (kubernetes_asyncio and jupyter_events need it)

    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except OSError as error:
        raise ValueError(f"{name}: cannot be read ({error.strerror}); the hub's ConfigMap lists it (hub-config/kustomization.yaml)") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ValueError(f"{name}: not valid YAML{at}: {getattr(error, 'problem', None) or error}") from None
    problems = profile_problems(document, defaults, ratio)
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
    return document["profiles"]
