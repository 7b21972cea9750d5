"""Log in with a shared password: JupyterHub's SharedPasswordAuthenticator.

Anyone who knows JUPYTERHUB_USER_PASSWORD can log in, under any user name except
the admin's; the admin logs in with JUPYTERHUB_ADMIN_PASSWORD. Both come from the
Secret `hub-secrets` (see the README), never from this repository.
Good for workshops and trials; use OAuth for anything that lasts.
"""

from hub_helpers import require_env

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = require_env(
    "JUPYTERHUB_USER_PASSWORD", "the shared password of the users, at least 8 characters"
)
c.SharedPasswordAuthenticator.admin_password = require_env(
    "JUPYTERHUB_ADMIN_PASSWORD", "the admin's password, at least 32 characters"
)
# Any user name may log in with the shared password.
c.Authenticator.allow_all = True
