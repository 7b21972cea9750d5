"""Users sign up with a user name and password; the admin approves them.

The admin (c.Authenticator.admin_users, set in jupyterhub_config.py) is approved
on sign-up: sign up as the admin first, at /hub/signup, then approve others at
/hub/authorize. Passwords are stored hashed (bcrypt) in the hub's database.
"""

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "native"
c.NativeAuthenticator.open_signup = False
# JupyterHub 5 lets nobody in unless an allow rule says so, and admin_users is not
# one: without this even the approved admin gets "User 'admin' not allowed".
# NativeAuthenticator checks the approval itself (users not yet approved at
# /hub/authorize cannot log in), so allowing every user it authenticates is safe.
c.NativeAuthenticator.allow_all = True
c.NativeAuthenticator.minimum_password_length = 10
c.NativeAuthenticator.check_common_password = True
# Slow down password guessing: lock a user name for 10 minutes after 5 failures.
c.NativeAuthenticator.allowed_failed_logins = 5
c.NativeAuthenticator.seconds_before_next_try = 600
