"""No login at all: every visitor gets a new, throw-away user and server.

Anyone who can reach the hub's address can start a server and run code in your
cluster. Use it only for short, private demos.
"""

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "tmp"
# JupyterHub 5 lets nobody in unless an allow rule says so, and tmpauthenticator
# 1.0.0 does not allow its own random user names: without this, /hub/tmplogin
# fails with "User '<uuid>' not allowed" (HTTP 500).
c.TmpAuthenticator.allow_all = True
