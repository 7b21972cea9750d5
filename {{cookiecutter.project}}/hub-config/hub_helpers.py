"""What jupyterhub_config.py and authenticator_config.py share.

The Dockerfile copies this file next to them, into /usr/local/etc/jupyterhub/, and
jupyterhub_config.py puts that directory on the module path (as Zero to JupyterHub
does for its own helper). Importing it changes nothing in JupyterHub's configuration.

Nothing here names a host, a namespace or an overlay: one image serves every overlay,
and each overlay's Deployment tells the hub who it is (k8s/overlays/*/).
"""

import os
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
