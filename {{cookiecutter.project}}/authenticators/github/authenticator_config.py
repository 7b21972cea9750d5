"""Log in with GitHub (OAuthenticator's GitHubOAuthenticator).

Create an OAuth app at https://github.com/settings/developers with the callback
URL <public URL>/hub/oauth_callback (each overlay's host: k8s/overlays/*/); its client ID and secret come from the Secret `hub-secrets`
(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET), never from this repository.
Who may log in: the admin, users the admin adds in the admin panel, and members
of the organizations listed in GITHUB_ALLOWED_ORGANIZATIONS (comma-separated). Whoever
has logged in once stays a user (allow_existing_users), also after leaving the
organization, until the admin deletes them.
"""

import os

from hub_helpers import public_url, require_env

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "github"
c.GitHubOAuthenticator.oauth_callback_url = f"{public_url()}/hub/oauth_callback"
c.GitHubOAuthenticator.client_id = require_env(
    "OAUTH_CLIENT_ID", "the client ID of your GitHub OAuth app"
)
c.GitHubOAuthenticator.client_secret = require_env(
    "OAUTH_CLIENT_SECRET", "the client secret of your GitHub OAuth app"
)
c.GitHubOAuthenticator.allow_existing_users = True
organizations = os.environ.get("GITHUB_ALLOWED_ORGANIZATIONS", "").split(",")
organizations = {name.strip() for name in organizations if name.strip()}
if organizations:
    c.GitHubOAuthenticator.allowed_organizations = organizations
    c.GitHubOAuthenticator.scope = ["read:org"]  # to see private memberships
