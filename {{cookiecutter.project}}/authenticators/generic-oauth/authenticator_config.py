"""Log in with an OAuth 2 / OpenID Connect provider (OAuthenticator's GenericOAuthenticator).

Register a client with your provider with the callback URL
<public URL>/hub/oauth_callback (each overlay's host: k8s/overlays/*/); its client ID
and secret come from the Secret `hub-secrets` (OAUTH_CLIENT_ID,
OAUTH_CLIENT_SECRET), never from this repository.
Who may log in: the admin, users the admin adds in the admin panel, and everyone
the provider authenticates if OAUTH_ALLOW_ALL is "true". Whoever has logged in once
stays a user (allow_existing_users), also after OAUTH_ALLOW_ALL is no longer "true",
until the admin deletes them.
"""

import os

from hub_helpers import public_url, require_env

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.oauth_callback_url = f"{public_url()}/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = {{ cookiecutter.__oauth_authorize_url | tojson }}
c.GenericOAuthenticator.token_url = {{ cookiecutter.__oauth_token_url | tojson }}
c.GenericOAuthenticator.userdata_url = {{ cookiecutter.__oauth_userdata_url | tojson }}
c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.login_service = "your identity provider"
c.GenericOAuthenticator.client_id = require_env(
    "OAUTH_CLIENT_ID", "the client ID registered with your OAuth provider"
)
c.GenericOAuthenticator.client_secret = require_env(
    "OAUTH_CLIENT_SECRET", "the client secret registered with your OAuth provider"
)
c.GenericOAuthenticator.allow_existing_users = True
c.GenericOAuthenticator.allow_all = os.environ.get("OAUTH_ALLOW_ALL", "").lower() == "true"
