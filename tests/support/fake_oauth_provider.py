"""An OAuth 2 / OpenID Connect provider, and GitHub's part of one, as a real HTTPS server.

`FakeOAuthProvider` listens on a host address (the emulated cluster's node: a hub's pod
reaches it through its default route, and the test process, the "browser", directly) with a
certificate from a CA of its own (`ca_file`: what the hub's image and the browser must
trust). It knows one client (its ID, secret and the callback URLs registered for it), its
users and which organizations each belongs to, and it answers as the providers the
generated project is made for:

- **Signing in at the provider**: `POST /session` (form `login=<name>`) sets the browser's
  cookie there, as a user who is signed in at GitHub or at the identity provider.
- **Authorization** (`GET /oauth2/authorize`, GitHub's `/login/oauth/authorize`): the
  client's ID, `response_type=code`, a registered `redirect_uri` (exact match), PKCE S256
  if a challenge is sent; no signed-in user: 401. Then 302 to the `redirect_uri` with a
  fresh `code` and the `state` given.
- **Token** (`POST /oauth2/token`, GitHub's `/login/oauth/access_token`): form-encoded,
  the client authenticated by its secret (form fields or HTTP Basic), `grant_type
  authorization_code`, a code issued to this client, not used before, for the same
  `redirect_uri`, and the PKCE verifier matching the challenge; then a bearer token for
  the user the code was issued to. Anything else: 400 with an OAuth error.
- **User info** (`GET /oauth2/userinfo`: `sub`, `preferred_username`, `email`, `name`;
  GitHub's `GET /api/v3/user`: `login`, `id`, `name`, `email`), for the token's user;
  without a token it issued: 401.
- **GitHub's organization membership** (`GET /api/v3/orgs/<org>/members/<user>`): 204 if
  the user is a member, 404 if not (what GitHub answers a member of the organization, or a
  token with `read:org` that can see the membership); with a token it did not issue: 401.

The GitHub paths are GitHub Enterprise Server's (the web flow at the root, the REST API
under `/api/v3`): GitHubOAuthenticator uses them for any `GITHUB_URL` but github.com.

Every request is recorded (`requests`: method, path, the user its code or token stood for,
status), so a test can tell a login the hub refused after reading who the user is from one
that failed on the way, and see which endpoints the hub asked. A path it does not know gets
404 and is recorded like the others.
"""

import base64
import hashlib
import http.server
import json
import secrets
import ssl
import threading
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

from support import tls

SESSION_COOKIE = "provider_session"

# path -> (kind, flavour)
ENDPOINTS = {
    "/oauth2/authorize": ("authorize", "oidc"),
    "/oauth2/token": ("token", "oidc"),
    "/oauth2/userinfo": ("userinfo", "oidc"),
    "/login/oauth/authorize": ("authorize", "github"),
    "/login/oauth/access_token": ("token", "github"),
    "/api/v3/user": ("userinfo", "github"),
}
GITHUB_MEMBERSHIP_PREFIX = "/api/v3/orgs/"


def make_ca_and_certificate(directory, address):
    """A CA and a serving certificate for one IP address; paths of ca.crt, tls.crt, tls.key."""
    return tls.ca_and_certificate(directory, "fake-oauth-provider-ca", address, addresses=[address], days=1)


def pkce_challenge(verifier):
    """RFC 7636's S256: BASE64URL(SHA256(verifier)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode("ascii").rstrip("=")


class FakeOAuthProvider:
    """The provider; `with FakeOAuthProvider(...) as provider:` serves it on host:port."""

    def __init__(self, host, workdir, client_id, client_secret, redirect_uris, port=443):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris)
        self.tls = make_ca_and_certificate(workdir, host)
        self.users = {}  # login -> {"id": n, "orgs": set()}
        self.requests = []  # {"method", "path", "user", "status"}
        self._sessions = {}  # cookie value -> login
        self._codes = {}  # code -> {"user", "redirect_uri", "challenge", "scope", "used"}
        self._tokens = {}  # access token -> login
        self._lock = threading.Lock()
        self._server = None

    # --- what the test sets up ---
    @property
    def url(self):
        return f"https://{self.host}" if self.port == 443 else f"https://{self.host}:{self.port}"

    @property
    def ca_file(self):
        return self.tls["ca.crt"]

    def add_user(self, login, orgs=()):
        self.users[login] = {"id": 1000 + len(self.users), "orgs": set(orgs)}

    def leave_organization(self, login, org):
        with self._lock:
            self.users[login]["orgs"].discard(org)

    def asked(self, kind=None, user=None):
        """The recorded requests of one kind of endpoint (authorize, token, userinfo,
        membership, session, unknown), for one user (None: anyone)."""
        return [r for r in self.requests if kind in (None, r["kind"]) and user in (None, r["user"])]

    # --- life cycle ---
    def __enter__(self):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls["tls.crt"], self.tls["tls.key"])
        provider = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = self.socket.accept()
                # The handshake in the handler's thread, not in the one that accepts.
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        class Handler(_Handler):
            owner = provider

        self._server = Server((self.host, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-oauth-provider")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    # --- the endpoints: (status, headers, body) ---
    def sign_in(self, form):
        login = (form.get("login") or [""])[0]
        if login not in self.users:
            return 401, {}, {"error": "unknown user"}
        cookie = secrets.token_urlsafe(16)
        self._sessions[cookie] = login
        return 204, {"Set-Cookie": f"{SESSION_COOKIE}={cookie}; Path=/; Secure; HttpOnly"}, None

    def authorize(self, query, cookies):
        def one(name):
            values = query.get(name) or [""]
            return values[0]

        if one("client_id") != self.client_id:
            return 400, {}, {"error": "invalid_client"}
        if one("redirect_uri") not in self.redirect_uris:
            return 400, {}, {"error": "invalid_request", "error_description": f"redirect_uri {one('redirect_uri')!r} is not registered"}
        if one("response_type") != "code":
            return 400, {}, {"error": "unsupported_response_type"}
        if one("code_challenge") and one("code_challenge_method") != "S256":
            return 400, {}, {"error": "invalid_request", "error_description": "only S256"}
        user = self._sessions.get(cookies.get(SESSION_COOKIE, ""))
        if user is None:
            return 401, {}, {"error": "login_required"}
        code = secrets.token_urlsafe(24)
        self._codes[code] = {"user": user, "redirect_uri": one("redirect_uri"), "challenge": one("code_challenge"),
                             "scope": one("scope"), "used": False}  # fmt: skip
        location = one("redirect_uri") + ("&" if "?" in one("redirect_uri") else "?") + urlencode({"code": code, "state": one("state")})
        return 302, {"Location": location}, None, user

    def token(self, form, authorization):
        def one(name):
            values = form.get(name) or [""]
            return values[0]

        client_id, client_secret = one("client_id"), one("client_secret")
        if authorization.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return 401, {}, {"error": "invalid_client"}
        if one("grant_type") != "authorization_code":
            return 400, {}, {"error": "unsupported_grant_type"}
        grant = self._codes.get(one("code"))
        if grant is None or grant["used"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "unknown or used code"}
        grant["used"] = True  # one exchange per code, whatever comes next
        if one("redirect_uri") != grant["redirect_uri"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "redirect_uri differs"}, grant["user"]
        if grant["challenge"] and pkce_challenge(one("code_verifier")) != grant["challenge"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "PKCE verifier does not match"}, grant["user"]
        token = secrets.token_urlsafe(24)
        self._tokens[token] = grant["user"]
        body = {"access_token": token, "token_type": "bearer", "scope": grant["scope"], "expires_in": 3600}
        return 200, {}, body, grant["user"]

    def bearer_user(self, authorization):
        scheme, _, token = authorization.partition(" ")
        return self._tokens.get(token) if scheme.lower() in ("bearer", "token") else None

    def userinfo(self, flavour, authorization):
        user = self.bearer_user(authorization)
        if user is None:
            return 401, {}, {"message": "Bad credentials"}
        number = self.users[user]["id"]
        if flavour == "github":
            body = {"login": user, "id": number, "name": user.title(), "email": f"{user}@example.org"}
        else:
            body = {"sub": f"user-{number}", "preferred_username": user, "name": user.title(), "email": f"{user}@example.org"}
        return 200, {}, body, user

    def membership(self, path, authorization):
        user = self.bearer_user(authorization)
        if user is None:
            return 401, {}, {"message": "Bad credentials"}
        parts = path[len(GITHUB_MEMBERSHIP_PREFIX):].split("/")
        if len(parts) != 3 or parts[1] != "members":
            return 404, {}, {"message": "Not Found"}, user
        org, _, member = parts
        if member in self.users and org in self.users[member]["orgs"]:
            return 204, {}, None, user
        return 404, {}, {"message": "User does not exist or is not a member of the organization"}, user


class _Handler(http.server.BaseHTTPRequestHandler):
    owner = None  # the FakeOAuthProvider, set by a subclass
    protocol_version = "HTTP/1.1"
    timeout = 20

    def setup(self):
        self.request.do_handshake()
        super().setup()

    def log_message(self, *args):  # the record is FakeOAuthProvider.requests
        pass

    def _form(self):
        length = int(self.headers.get("Content-Length") or 0)
        return parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)

    def _answer(self, kind, outcome):
        status, headers, body, *user = outcome
        with self.owner._lock:
            self.owner.requests.append({"method": self.command, "path": urlsplit(self.path).path, "kind": kind,
                                        "user": user[0] if user else None, "status": status})  # fmt: skip
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self):
        provider = self.owner
        parts = urlsplit(self.path)
        authorization = self.headers.get("Authorization", "")
        kind, flavour = ENDPOINTS.get(parts.path, (None, None))
        with provider._lock:
            if self.command == "POST" and parts.path == "/session":
                return "session", provider.sign_in(self._form())
            if self.command == "GET" and kind == "authorize":
                cookies = {k: m.value for k, m in SimpleCookie(self.headers.get("Cookie", "")).items()}
                return kind, provider.authorize(parse_qs(parts.query), cookies)
            if self.command == "POST" and kind == "token":
                return kind, provider.token(self._form(), authorization)
            if self.command == "GET" and kind == "userinfo":
                return kind, provider.userinfo(flavour, authorization)
            if self.command == "GET" and parts.path.startswith(GITHUB_MEMBERSHIP_PREFIX):
                return "membership", provider.membership(parts.path, authorization)
        return "unknown", (404, {}, {"message": "Not Found"})

    def do_GET(self):
        self._answer(*self._dispatch())

    do_POST = do_GET
