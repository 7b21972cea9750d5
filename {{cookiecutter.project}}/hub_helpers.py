{%- from "derived.jinja" import public_url with context -%}
"""What jupyterhub_config.py and authenticator_config.py share.

The Dockerfile copies this file next to them, into /usr/local/etc/jupyterhub/, and
jupyterhub_config.py puts that directory on the module path (as Zero to JupyterHub
does for its own helper). Importing it changes nothing in JupyterHub's configuration.
"""

import os
import sys

# The address users open (OAuth providers send them back to it).
PUBLIC_URL = {{ public_url | tojson }}


def require_env(name, why):
    """The value of the environment variable `name`; stops the hub with one line naming it if unset or empty."""
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"{name} is not set: {why}")
    return value
