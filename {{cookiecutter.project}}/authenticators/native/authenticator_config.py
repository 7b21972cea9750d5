"""Users sign up with a user name and password; the admin approves them.

The admin's account is not signed up for: the hub creates it at every start,
before it serves a request, with the password JUPYTERHUB_ADMIN_PASSWORD from the
Secret `hub-secrets` (see the README). Whoever opens /hub/signup first can no
longer claim the admin's name, as NativeAuthenticator alone would allow: it is
taken. Other users sign up at /hub/signup and wait until the admin approves them
at /hub/authorize. Passwords are stored hashed (bcrypt) in the hub's database.
"""

import os
import sys

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo

from hub_helpers import require_env


MINIMUM_PASSWORD_LENGTH = 10
ADMIN_PASSWORD = require_env(
    "JUPYTERHUB_ADMIN_PASSWORD", f"the admin's password, at least {MINIMUM_PASSWORD_LENGTH} characters"
)
if len(ADMIN_PASSWORD) < MINIMUM_PASSWORD_LENGTH:
    sys.exit(
        f"authenticator_config.py: JUPYTERHUB_ADMIN_PASSWORD has {len(ADMIN_PASSWORD)} characters;"
        f" the admin's password needs at least {MINIMUM_PASSWORD_LENGTH}"
    )


class SecretAdminNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator whose admin accounts come from the Secret, not from sign-up.

    JupyterHub creates its authenticator while it starts, before it listens, so
    the accounts exist before anyone can reach /hub/signup. At every start they
    are set again: the password is the Secret's (change it there, then restart
    the hub), approved, without two-factor authentication.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in sorted(self.admin_users):
            username = self.normalize_username(name)
            account = UserInfo.find(self.db, username)
            if account is None:
                account = UserInfo(username=username)
                self.db.add(account)
            account.password = bcrypt.hashpw(ADMIN_PASSWORD.encode(), bcrypt.gensalt())
            account.is_authorized = True
            account.has_2fa = False
            self.db.commit()
            self.log.info("Admin account %s: password from JUPYTERHUB_ADMIN_PASSWORD", username)


c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = SecretAdminNativeAuthenticator
c.NativeAuthenticator.open_signup = False
# JupyterHub 5 lets nobody in unless an allow rule says so, and admin_users is not
# one: without this even the admin gets "User 'admin' not allowed".
# NativeAuthenticator checks the approval itself (users not yet approved at
# /hub/authorize cannot log in), so allowing every user it authenticates is safe.
c.NativeAuthenticator.allow_all = True
c.NativeAuthenticator.minimum_password_length = MINIMUM_PASSWORD_LENGTH
c.NativeAuthenticator.check_common_password = True
# Slow down password guessing: lock a user name for 10 minutes after 5 failures.
c.NativeAuthenticator.allowed_failed_logins = 5
c.NativeAuthenticator.seconds_before_next_try = 600
