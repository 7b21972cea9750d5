"""No login at all: every visitor gets a new, throw-away user and server.

Anyone who can reach the hub's address can start a server and run code in your
cluster. Use it only for short, private demos.
"""

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "tmp"
