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
