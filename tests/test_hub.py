"""Boot the generated jupyterhub_config.py for real, in the hub's pod as the rendered overlay
describes it, on the emulated cluster (tests/hubrunner.py, tests/emulated_cluster.py): the
test tools' JupyterHub, KubeSpawner and authenticators (the versions k8s-hub 4.4.0 pins) and
the configurable-http-proxy the Dockerfile pins, under the Deployment's user, groups,
volumes, environment and read-only root file system.

For every authenticator: the hub starts CHP itself and becomes ready through the proxy;
the proxy's route to the hub is loopback; logging in works the way the generated README's
"Log in" section says; the idle culler runs (or not) with exactly its scopes; a rollout
restart keeps the sessions, the cookie secret and the database on the claim. Plus: the
pod KubeSpawner would create for a user; the one-line refusal when the Secret's variables
are missing; the namespace the hub spawns into; and faults planted in the Deployment
(the downward API's field, the volumes, fsGroup), each of which stops the hub or its
spawns, as on a cluster.
"""

import asyncio
import contextlib
import copy
import hashlib
import itertools
import os
import shutil
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from conftest import need_tool
from hubrunner import (
    CHP_BIN,
    LOOPBACK_HOSTS,
    HubDeployment,
    config_volume,
    hub_container,
    hub_deployment,
    install_config,
    load_config,
    local_environment,
    loopback_problems,
    pod_environment,
    process_environ,
    read_env_file,
    render,
    run_until_exit,
    url_port,
    xsrf_form,
)
from support import pod_security

# No xdist group: every hub has random ports and directories of its own.
pytestmark = pytest.mark.slow

CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
ADMIN = "hubadmin"  # not the template's default, so that the test sees it is used
NATIVE_PASSWORD = "Correct-Horse-Battery-42"  # >= 10 characters, not a common password
STRANGER_PASSWORD = "Strangers-Own-Password-9"
OAUTH_CLIENT = {"OAUTH_CLIENT_ID": "test-client-id", "OAUTH_CLIENT_SECRET": "test-client-secret"}
USER_IMAGE = "registry.example.org/team/notebook:2026.1"

# One hub per authenticator; user_storage and idle_culling vary across them so that
# both values of each are booted (the culler's "no" case where an admin can ask the API).
CASES = {
    "tmp": dict(authenticator="tmp", user_storage="yes", idle_culling="yes", user_image=USER_IMAGE),
    "dummy": dict(authenticator="dummy", user_storage="no", idle_culling="no", user_image=USER_IMAGE),
    # Profiles and named servers (conftest.CONFINED) booted too: the hub loads profiles.yaml.
    "native": dict(authenticator="native", user_storage="yes", idle_culling="yes", profiles="profile_list", named_servers="yes"),
    "github": dict(authenticator="github", idle_culling="no", hostname="hub.example.org"),
    "generic-oauth": dict(
        authenticator="generic-oauth",
        idle_culling="yes",
        tls="yes",
        hostname="hub.example.org",
        __oauth_authorize_url="https://idp.example.org/oauth2/authorize",
    ),
}


def bake_case(bake, name):
    return bake(admin_user=ADMIN, **CASES[name])


# Where the hub's pod keeps the proxy's pid file; on the machine running the tests the
# same path may belong to some other hub, so the tests must leave it alone.
def host_pid_file(project):
    return Path(pod_environment(render(project))["JUPYTERHUB_PROXY_PID_FILE"])


def host_file_state(path):
    """Enough to tell whether anyone touched path: None if absent."""
    try:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size, digest)


@contextlib.contextmanager
def planted(path, text):
    """A file at path for the duration, unless one is there already (someone else's: left
    exactly as it is). Yields the state the file must still have at the end."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        yield host_file_state(path)
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)
    ours = host_file_state(path)
    try:
        yield ours
    finally:
        if host_file_state(path) == ours:
            path.unlink()


@pytest.fixture(scope="module")
def chp():
    """The configurable-http-proxy that scripts/install-test-tools put into the tools' chp/."""
    need_tool("node")
    need_tool("tini")
    path = CHP_BIN / "configurable-http-proxy"
    if not path.exists():
        pytest.skip(f"{path} is missing: run scripts/install-test-tools")
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")
    return path


@pytest.fixture
def hubs(chp, tmp_path):
    """hubs(project, secrets) -> a started HubDeployment; every cluster stops at teardown."""
    with contextlib.ExitStack() as stack:
        count = itertools.count()

        def make(project, secrets=None, **kwargs):
            return stack.enter_context(HubDeployment(project, tmp_path / f"hub{next(count)}", secrets=secrets, **kwargs))

        yield make


def secrets_env(project, authenticator):
    """The variables the Secret hub-secrets would give the hub: for dummy and native exactly
    what post_gen_project generated into the development overlay; for OAuth, a client."""
    if authenticator in ("dummy", "native"):
        return read_env_file(project / "k8s" / "overlays" / "development" / "hub-secrets.env")
    if authenticator in ("github", "generic-oauth"):
        return dict(OAUTH_CLIENT)
    return {}


def option(argv, name):
    """The value of a command-line option given as `name value` or `name=value`."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@contextlib.contextmanager
def hub_log_on_failure(hub):
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n{hub.log_tail(60)}") from None


# --- Logging in, as the README says ------------------------------------------------


def logged_in_user(session, hub):
    """The hub's model of the session's user, or None when the session is not logged in."""
    resp = session.get(f"{hub.url}/hub/api/user", timeout=10, allow_redirects=False)
    if resp.status_code == 200:
        return resp.json()
    assert resp.status_code in (401, 403), f"/hub/api/user: {resp.status_code} {resp.text[:200]}"
    return None


def form_login(hub, username, password, session=None):
    """The login form, as a browser submits it; the session (logged in or not)."""
    session = session or requests.Session()
    form = xsrf_form(session, f"{hub.url}/hub/login", username=username, password=password)
    # Not following the redirect: it goes to /hub/spawn, which would try to create a pod.
    resp = session.post(f"{hub.url}/hub/login", data=form, timeout=30, allow_redirects=False)
    assert resp.status_code in (200, 302, 403), f"POST /hub/login: {resp.status_code}"
    return session


def follow(session, url, stop_paths=("/hub/spawn", "/user/"), hops=10):
    """Follow redirects by hand, stopping before anything that would start a server."""
    visited = []
    for _ in range(hops):
        resp = session.get(url, timeout=10, allow_redirects=False)
        visited.append((urlparse(url).path, resp.status_code))
        location = resp.headers.get("Location")
        if resp.status_code not in (301, 302, 303, 307) or not location:
            break
        url = requests.compat.urljoin(url, location)
        if urlparse(url).path.startswith(stop_paths):
            visited.append((urlparse(url).path, "not followed"))
            break
    return visited


def login_tmp(hub, context):
    """README: opening / gives every visitor a new, temporary user (no password)."""
    session = requests.Session()
    visited = follow(session, f"{hub.url}/")
    user = logged_in_user(session, hub)
    assert user is not None, f"opening / did not log in a temporary user; visited {visited}"
    assert ("/hub/tmplogin", 302) in visited, visited
    other = requests.Session()
    follow(other, f"{hub.url}/hub/tmplogin")
    other_user = logged_in_user(other, hub)
    assert other_user and other_user["name"] != user["name"], "a second visitor must get a user of their own"
    return session, user["name"], None


def login_dummy(hub, context, secrets):
    """README: any user name with JUPYTERHUB_USER_PASSWORD; the admin with JUPYTERHUB_ADMIN_PASSWORD."""
    user_password = secrets["JUPYTERHUB_USER_PASSWORD"]
    admin_password = secrets["JUPYTERHUB_ADMIN_PASSWORD"]

    alice = form_login(hub, "alice", user_password)
    model = logged_in_user(alice, hub)
    assert model and model["name"] == "alice" and not model["admin"], f"alice with the user password: {model}"

    assert logged_in_user(form_login(hub, "mallory", "wrong-password"), hub) is None, "a wrong password logged in"
    assert logged_in_user(form_login(hub, ADMIN, user_password), hub) is None, (
        "the admin must not log in with the users' shared password"
    )

    admin = form_login(hub, ADMIN, admin_password)
    model = logged_in_user(admin, hub)
    assert model and model["name"] == ADMIN and model["admin"], f"{ADMIN} with the admin password: {model}"
    check_admin_page(hub, admin, alice)
    return alice, "alice", admin


def check_admin_page(hub, admin, user):
    """README: the admin manages users at /hub/admin; other users may not."""
    resp = admin.get(f"{hub.url}/hub/admin", timeout=10, allow_redirects=False)
    assert resp.status_code == 200, f"/hub/admin as the admin: {resp.status_code}"
    resp = user.get(f"{hub.url}/hub/admin", timeout=10, allow_redirects=False)
    assert resp.status_code == 403, f"/hub/admin as a user: {resp.status_code}"


def native_signup(hub, username, password):
    """The sign-up form, as a browser submits it: (page shown, is_authorized of the new account or None)."""
    session = requests.Session()
    form = xsrf_form(
        session,
        f"{hub.url}/hub/signup",
        username=username,
        signup_password=password,
        signup_password_confirmation=password,
    )
    resp = session.post(f"{hub.url}/hub/signup", data=form, timeout=30, allow_redirects=False)
    assert resp.status_code == 200, f"POST /hub/signup as {username}: {resp.status_code}"
    rows = hub.db_rows("select is_authorized, password from users_info where username = ?", username.lower())
    return resp.text, rows


def check_stranger_cannot_claim_the_admin(hub):
    """A stranger who opens /hub/signup before the admin ever logged in gets no admin."""
    before = hub.db_rows("select password from users_info where username = ?", ADMIN)
    assert before, "the hub did not create the admin's account before serving requests"
    for name in (ADMIN, ADMIN.upper()):  # JupyterHub lower-cases user names
        page, rows = native_signup(hub, name, STRANGER_PASSWORD)
        assert "already in use" in page, f"signing up as {name!r} was not refused: {page[-600:]}"
        assert [row[1] for row in rows] == [before[0][0]], f"signing up as {name!r} changed the admin's account"
        assert logged_in_user(form_login(hub, name, STRANGER_PASSWORD), hub) is None, (
            f"the stranger logged in as {name!r} with the password they chose"
        )
    assert logged_in_user(form_login(hub, ADMIN, NATIVE_PASSWORD), hub) is None, "a made-up password logged in"


def login_native(hub, context, secrets):
    """README: the admin logs in with the Secret's password (a stranger's sign-up first gets
    nothing); others sign up and wait for the admin's approval."""
    check_stranger_cannot_claim_the_admin(hub)
    admin = form_login(hub, ADMIN, secrets["JUPYTERHUB_ADMIN_PASSWORD"])
    model = logged_in_user(admin, hub)
    assert model and model["name"] == ADMIN and model["admin"], f"the admin could not log in with the Secret's password: {model}"

    page, rows = native_signup(hub, "bob", "Bobs-Own-Password-7")
    assert rows and not rows[0][0], f"bob must be signed up, not approved: {rows} {page[-600:]}"
    assert logged_in_user(form_login(hub, "bob", "Bobs-Own-Password-7"), hub) is None, (
        "bob logged in before the admin approved him"
    )
    # README step 3: the admin approves bob at /hub/authorize; then bob can log in.
    page = admin.get(f"{hub.url}/hub/authorize", timeout=10)
    assert page.status_code == 200 and "bob" in page.text, f"/hub/authorize: {page.status_code}"
    admin.get(f"{hub.url}/hub/authorize/bob", timeout=10, allow_redirects=False)
    bob = form_login(hub, "bob", "Bobs-Own-Password-7")
    model = logged_in_user(bob, hub)
    assert model and model["name"] == "bob" and not model["admin"], f"bob after approval: {model}"
    check_admin_page(hub, admin, bob)
    return bob, "bob", admin


def check_oauth_redirect(hub, context, authorize_url, button):
    """README: the login page's button sends the user to the provider, with our callback."""
    session = requests.Session()
    page = session.get(f"{hub.url}/hub/login", timeout=10)
    assert page.status_code == 200, f"/hub/login: {page.status_code}"
    assert "/hub/oauth_login" in page.text, "the login page has no link to /hub/oauth_login"
    assert button in page.text, f"the README says to click {button!r}; the login page does not show it"

    resp = session.get(f"{hub.url}/hub/oauth_login", timeout=10, allow_redirects=False)
    assert resp.status_code == 302, f"/hub/oauth_login: {resp.status_code}"
    location = resp.headers["Location"]
    assert location.startswith(authorize_url + "?"), f"redirected to {location}, not to {authorize_url}"
    query = parse_qs(urlparse(location).query)
    # The overlay's own address (development: its own host), which the Deployment gives the hub.
    scheme = "https" if context.get("tls") == "yes" else "http"
    host = pod_environment(hub.objects, secrets={})["JUPYTERHUB_PUBLIC_URL"].split("://", 1)[1]
    assert host == "dev-" + context["hostname"], host
    assert query["redirect_uri"] == [f"{scheme}://{host}/hub/oauth_callback"], query
    assert query["client_id"] == [OAUTH_CLIENT["OAUTH_CLIENT_ID"]], query
    assert query["response_type"] == ["code"] and query.get("state"), query
    return None, None, None


def log_in(hub, context, secrets):
    """(session of a logged-in user or None, that user's name, an admin's session or None)."""
    authenticator = context["authenticator"]
    if authenticator == "tmp":
        return login_tmp(hub, context)
    if authenticator == "dummy":
        return login_dummy(hub, context, secrets)
    if authenticator == "native":
        return login_native(hub, context, secrets)
    if authenticator == "github":
        return check_oauth_redirect(hub, context, "https://github.com/login/oauth/authorize", "Sign in with GitHub")
    return check_oauth_redirect(
        hub, context, context["__oauth_authorize_url"], "Sign in with your identity provider"
    )


# --- The idle culler ------------------------------------------------------------------


def check_culler(hub, context, admin):
    from jupyterhub.scopes import expand_scopes

    # JupyterHub starts its managed services before it logs "now running": from then
    # on, a culler that is not among the hub's processes is not coming.
    hub.wait_running()
    found = hub.find_process("jupyterhub_idle_culler", timeout=0)
    roles = dict(hub.db_rows("select name, scopes from roles"))
    services = [row[0] for row in hub.db_rows("select name from services")]
    api_services = None
    if admin is not None:
        resp = admin.get(f"{hub.url}/hub/api/services", timeout=10)
        assert resp.status_code == 200, f"/hub/api/services as admin: {resp.status_code}"
        api_services = resp.json()

    if context["idle_culling"] == "no":
        assert found is None, f"idle_culling=no, yet the culler runs: {found}"
        assert services == [] and "idle-culler" not in roles, (services, roles)
        assert api_services in (None, {}), api_services
        assert "idle-culler" not in hub.log_text()
        return

    assert found, "the hub did not start jupyterhub_idle_culler"
    pid, argv = found
    assert f"--timeout={context.get('idle_timeout', '3600')}" in argv, argv
    assert "Starting managed service idle-culler" in hub.log_text()
    # Its role holds exactly these scopes, and the service holds only that role.
    assert services == ["idle-culler"], services
    assert roles.get("idle-culler") == '["' + '", "'.join(CULLER_SCOPES) + '"]', roles.get("idle-culler")
    if api_services is not None:
        assert list(api_services) == ["idle-culler"], api_services
        assert api_services["idle-culler"]["roles"] == ["idle-culler"], api_services
        assert not api_services["idle-culler"]["admin"], api_services
    # The token the running culler really holds: the hub says whose it is and what it may do.
    token = process_environ(pid)["JUPYTERHUB_API_TOKEN"]
    resp = requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
    assert resp.status_code == 200, f"the culler's token: {resp.status_code}"
    model = resp.json()
    assert (model["kind"], model["name"], model["admin"]) == ("service", "idle-culler", False), model
    assert set(model["scopes"]) == set(expand_scopes(set(CULLER_SCOPES))), model["scopes"]
    # And with them it can list the users (its first request), through the loopback hub URL.
    hub.wait_for_log("200 GET /hub/api/users")
    assert re.search(r"200 GET /hub/api/users\S* \(idle-culler@127\.0\.0\.1\)", hub.log_text()), (
        "the culler never listed the users successfully"
    )


# --- The tests ----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_hub_starts_logs_in_and_restarts(bake, hubs, case, record_property):
    context = CASES[case]
    project = bake_case(bake, case)
    secrets = secrets_env(project, context["authenticator"])
    host_pid_state = host_file_state(host_pid_file(project))
    # dummy and native: the Secret the overlay generates; OAuth: one with a client in it.
    hub = hubs(project, secrets if context["authenticator"] in ("github", "generic-oauth") else None)
    config = hub.config()

    # The generated configuration, as the hub loads it, keeps the proxy and the hub on loopback.
    assert loopback_problems(config) == []
    ready = hub.wait_ready()
    print(f"\n[{case}] pod created to ready (its readiness probe through CHP): {ready:.2f}s")
    record_property("start_to_ready_seconds", round(ready, 2))

    with hub_log_on_failure(hub):
        # The hub started CHP itself, as its child, with the API on loopback.
        chp = hub.find_process("configurable-http-proxy", timeout=0)
        assert chp, "no configurable-http-proxy among the hub's child processes"
        assert option(chp[1], "--api-port") == str(hub.proxy_api_port(config)), chp[1]
        assert option(chp[1], "--api-ip") in LOOPBACK_HOSTS, chp[1]

        # The route the hub gave the proxy: to the configured hub_connect_url, a loopback
        # address (no hairpin through the Service).
        routes = hub.routes(config)
        hub_routes = {spec: r for spec, r in routes.items() if r.get("hub")}
        assert list(hub_routes) in (["/"], ["/hub/"]), f"routes: {routes}"
        target = urlparse(next(iter(hub_routes.values()))["target"])
        configured = urlparse(config.JupyterHub.hub_connect_url)
        assert (target.hostname, target.port) == (configured.hostname, configured.port), f"hub route target: {routes}"
        assert target.hostname in LOOPBACK_HOSTS, f"hub route target: {routes}"
        # The proxy's pid file is where the Deployment's variable says: on the emptyDir.
        pid_file = pod_environment(hub.objects)["JUPYTERHUB_PROXY_PID_FILE"]
        assert hub.host_path(pid_file).is_file(), f"no {pid_file} on the pod's volume"

        session, username, admin = log_in(hub, context, secrets)
        check_culler(hub, context, admin)

        secret_file = hub.host_path("/srv/jupyterhub/jupyterhub_cookie_secret")
        database = hub.host_path("/srv/jupyterhub/jupyterhub.sqlite")
        cookie_secret = secret_file.read_bytes()
        assert cookie_secret.strip(), "empty cookie secret"

        # `kubectl rollout restart`: SIGTERM to the pod, as Kubernetes stops it; the hub stops
        # CHP and its services itself and exits 0 within the grace period (no SIGKILL).
        old_pod = hub.pod
        again = hub.restart()
        [run] = [c for ns, name, c in hub.cluster.container_runs if name == old_pod]
        assert run.proc.returncode == 0 and not run.killed, (
            f"the old hub exited with {run.proc.returncode}{' after SIGKILL' if run.killed else ''}, not 0 by itself"
        )
    print(f"[{case}] rollout restart to the new pod ready: {again:.2f}s")
    record_property("restart_to_ready_seconds", round(again, 2))

    with hub_log_on_failure(hub):
        assert hub.host_path("/srv/jupyterhub/jupyterhub_cookie_secret").read_bytes() == cookie_secret, "the cookie secret was regenerated"
        assert database.is_file(), "the sqlite database is gone after a restart"
        assert "Writing cookie_secret" not in hub.log_text(hub.pod)
        if session is not None:
            model = logged_in_user(session, hub)
            assert model and model["name"] == username, f"{username}'s session did not survive the restart: {model}"
            home = session.get(f"{hub.url}/hub/home", timeout=10, allow_redirects=False)
            assert home.status_code == 200, f"/hub/home after restart: {home.status_code} {home.headers.get('Location')}"
        hub.wait_running()
        if context["idle_culling"] == "yes":
            assert hub.find_process("jupyterhub_idle_culler", timeout=0), "no culler after the restart"
        routes = hub.routes(config)
        assert any(r.get("hub") for r in routes.values()), f"no route to the hub after restart: {routes}"
    assert host_file_state(host_pid_file(project)) == host_pid_state, f"the hub changed this machine's {host_pid_file(project)}"


def use_kube_config(monkeypatch, path):
    """KubeSpawner's client reads $KUBECONFIG when it is first imported
    (KUBE_CONFIG_DEFAULT_LOCATION): in a test process that imported it before, set it there too."""
    from kubernetes_asyncio.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def write_kube_config(path):
    """A kube config KubeSpawner can load; its API server is a closed port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    Path(path).write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: closed, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: nobody, user: {token: not-a-token}}]\n"
        "contexts: [{name: closed, context: {cluster: closed, user: nobody, namespace: not-the-pod-namespace}}]\n"
        "current-context: closed\n",
        encoding="utf-8",
    )
    return Path(path)


class MockUser:
    """The parts of jupyterhub.user.User that KubeSpawner reads (as in kubespawner's tests)."""

    def __init__(self, name):
        from jupyterhub.objects import Server

        self.name = self.escaped_name = name
        self.id = 1
        self.server = Server(base_url=f"/user/{name}/")
        self.url = self.server.url
        self.groups = []
        self.spawners = {}

    def progress_url(self, server_name=""):
        return f"/hub/api/users/{self.name}/server/progress"


class MockOrmSpawner:
    name = ""  # the user's default server
    server = None
    state = None
    user_options = None


@contextlib.contextmanager
def pod_config_loaded(project, workdir, monkeypatch, objects=None, secrets=None):
    """The hub's configuration loaded in this process as its pod loads it: with the rendered
    Deployment's environment, which stays in place inside the block; yields (env, config)."""
    from traitlets.config import PyFileConfigLoader

    workdir.mkdir(parents=True, exist_ok=True)
    config_file = install_config(project, workdir / "installed", objects)
    env = local_environment(project, workdir, objects, secrets)
    # KubeSpawner loads a kube config even when it only builds the manifest: one whose API
    # server is a closed port (nothing is sent).
    env["KUBECONFIG"] = str(write_kube_config(workdir / "kubeconfig"))
    with monkeypatch.context() as patch:
        use_kube_config(patch, env["KUBECONFIG"])
        for name in [n for n in os.environ if n not in env]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield env, PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()


def built_user_pod(project, workdir, monkeypatch, objects=None, secrets=None, username="alice", server="", user_options=None):
    """The hub's environment (from the rendered Deployment) and (namespace, pod) that
    KubeSpawner builds for username's server (a named one, or "" for the default) under it,
    with the user's options (a profile), with the config loaded in this process."""
    with pod_config_loaded(project, workdir, monkeypatch, objects, secrets) as (env, config):
        return env, asyncio.run(pod_manifest(config, username, server, user_options))


async def pod_manifest(config, username, server="", user_options=None):
    """The pod KubeSpawner would create, built by KubeSpawner itself (no API calls)."""
    from jupyterhub.app import JupyterHub
    from kubespawner import KubeSpawner
    from kubernetes_asyncio.client import ApiClient

    # The Hub object exactly as the hub builds it from this config (URLs, prefix).
    app = JupyterHub(config=config)
    app.init_hub()
    orm_spawner = MockOrmSpawner()
    orm_spawner.name = server
    spawner = KubeSpawner(
        _mock=True, config=config, user=MockUser(username), hub=app.hub, orm_spawner=orm_spawner
    )
    if user_options is not None:
        # What the spawn form or the REST API gives: KubeSpawner applies the chosen profile.
        spawner.user_options = user_options
        await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    # The namespace is not in the manifest: KubeSpawner creates the pod in spawner.namespace.
    return spawner.namespace, ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize("case", ["tmp", "dummy"])  # user_storage yes, no
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing jupyterhub.app in-process
def test_user_pod(bake, case, tmp_path, monkeypatch):
    context = CASES[case]
    project = bake_case(bake, case)
    objects = render(project)
    env, (namespace, pod) = built_user_pod(
        project, tmp_path, monkeypatch, objects, secrets_env(project, context["authenticator"])
    )
    spec = pod["spec"]
    [container] = spec["containers"]
    envs = {e["name"]: e.get("value") for e in container["env"]}
    summary = f"pod manifest: {pod}"
    hub_namespace = hub_deployment(objects)["metadata"]["namespace"]

    assert namespace == hub_namespace, f"pods go to {namespace!r}, not the hub's namespace {hub_namespace!r}"
    assert container["image"] == context["user_image"] and not container["image"].endswith(":latest"), summary
    # User pods reach the hub through its Service, never through loopback.
    service = env["HUB_SERVICE_NAME"]  # the overlay's Service: hub-dev here
    assert envs["JUPYTERHUB_API_URL"] == f"http://{service}.{hub_namespace}.svc:8081/hub/api", envs
    assert envs["JUPYTERHUB_ACTIVITY_URL"].startswith(f"http://{service}.{hub_namespace}.svc:8081/hub/api/"), envs
    assert labels_of(pod).get("app.kubernetes.io/instance") == env["HUB_INSTANCE"], "the label this hub's NetworkPolicies select by"

    claims = [v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
    if context["user_storage"] == "yes":
        assert [v["persistentVolumeClaim"]["claimName"] for v in claims] == [env["HUB_USER_OBJECT_PREFIX"] + "claim-alice"], spec.get("volumes")
        [home] = claims
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        assert mounts.get(home["name"]) == "/home/jovyan", container.get("volumeMounts")
    else:
        assert claims == [], f"user_storage=no, yet a claim is mounted: {spec.get('volumes')}"

    assert user_pod_security_problems(pod) == [], summary
    # The NetworkPolicies select user pods by these labels.
    labels = pod["metadata"]["labels"]
    assert labels.get("app.kubernetes.io/name") == "jupyterhub", labels
    assert labels.get("app.kubernetes.io/component") == "singleuser-server", labels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing jupyterhub.app in-process
def test_user_pod_of_a_profile_on_a_named_server(bake, tmp_path, monkeypatch):
    """profiles=profile_list, named_servers=yes: each profile as a user chooses it, on a named
    server: the pod has the profile's image (the users' image where it names none), its
    resources, extra resource limits and tolerations (read from the generated profiles.yaml),
    the named server's pod and claim names, and stays what the restricted profile admits."""
    import yaml
    from jupyterhub.traitlets import ByteSpecification

    case = dict(CASES["native"], admin_user=ADMIN)
    assert case["profiles"] == "profile_list" and case["named_servers"] == "yes" and case["user_storage"] == "yes"
    project = bake(**case)
    objects = render(project)
    profiles = yaml.safe_load((project / "hub-config/profiles.yaml").read_text(encoding="utf-8"))["profiles"]
    user_image = re.search(r'^USER_IMAGE = "([^"]+)"', (project / "hub-config/jupyterhub_config.py").read_text(), re.M)[1]
    memory = ByteSpecification()
    for profile in profiles:
        override = profile["kubespawner_override"]
        env, (_, pod) = built_user_pod(project, tmp_path / profile["slug"], monkeypatch, objects, secrets_env(project, "native"),
                                       server="lab-2", user_options={"profile": profile["slug"]})  # fmt: skip
        summary = f"{profile['slug']}: {pod}"
        [container] = pod["spec"]["containers"]
        assert container["image"] == override.get("image", user_image), summary
        resources = container["resources"]
        assert float(resources["requests"]["cpu"]) == override["cpu_guarantee"], summary
        assert float(resources["limits"]["cpu"]) == override["cpu_limit"], summary
        assert int(resources["requests"]["memory"]) == memory.validate(None, override["mem_guarantee"]), summary
        assert int(resources["limits"]["memory"]) == memory.validate(None, override["mem_limit"]), summary
        for name, value in override.get("extra_resource_limits", {}).items():
            assert resources["limits"][name] == value, summary
        for toleration in override.get("tolerations", []):
            assert toleration in pod["spec"].get("tolerations", []), summary
        # The named server: a pod and a claim of its own, <user>--<server>, with this hub's prefix.
        prefix = env["HUB_USER_OBJECT_PREFIX"]
        assert pod["metadata"]["name"] == f"{prefix}jupyter-alice--lab-2", summary
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [f"{prefix}claim-alice--lab-2"], summary
        assert labels_of(pod).get("hub.jupyter.org/servername") == "lab-2", summary
        assert labels_of(pod).get("app.kubernetes.io/instance") == env["HUB_INSTANCE"], summary
        assert user_pod_security_problems(pod) == [], summary
    assert any("nvidia.com/gpu" in p["kubespawner_override"].get("extra_resource_limits", {}) for p in profiles)
    # Without a choice (the REST API without user_options), the default profile, on the default server.
    env, (_, pod) = built_user_pod(project, tmp_path / "none", monkeypatch, objects, secrets_env(project, "native"), user_options={})
    [default] = [p for p in profiles if p.get("default")]
    assert pod["spec"]["containers"][0]["image"] == default["kubespawner_override"].get("image", user_image)
    assert float(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]) == default["kubespawner_override"]["cpu_limit"]
    assert pod["metadata"]["name"] == f"{env['HUB_USER_OBJECT_PREFIX']}jupyter-alice"
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v] == [
        f"{env['HUB_USER_OBJECT_PREFIX']}claim-alice"
    ], "the default server's claim is named as without named servers"
    # Whatever the user name (escaped, long): the default server's claim keeps its name when
    # named servers are turned on, and a named server's differs from it.
    plain = bake(**dict(case, named_servers="no"))
    for username in ("ada.lovelace@example.org", "Ünïcode-Üser", "x" * 46):
        names = {}
        for which, source in (("no", plain), ("yes", project)):
            _, (_, built) = built_user_pod(source, tmp_path / f"{which}-{len(names)}-{username[:3]}", monkeypatch, None,
                                           secrets_env(source, "native"), username=username, user_options={})  # fmt: skip
            names[which] = [v["persistentVolumeClaim"]["claimName"] for v in built["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert names["yes"] == names["no"] and len(names["no"]) == 1, (username, names)


def labels_of(pod):
    return pod["metadata"].get("labels") or {}


def user_pod_security_problems(pod):
    """What keeps a user's pod from being the unprivileged, restricted pod the README promises."""
    spec = pod["spec"]
    [container] = spec["containers"]
    security = container.get("securityContext") or {}
    pod_context = spec.get("securityContext") or {}
    problems = []
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if security.get("privileged"):
        problems.append("privileged")
    if security.get("runAsUser", pod_context.get("runAsUser")) != 1000 or security.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        problems.append("not runAsNonRoot as uid 1000")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities not dropped")
    if (security.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("no RuntimeDefault seccomp profile")
    # The users' group (100) owns the claim through fsGroup; without it a new volume is root's.
    if pod_context.get("fsGroup") != 100:
        problems.append(f"fsGroup {pod_context.get('fsGroup')}, not the users' group 100")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("a service account token is mounted")
    # What a namespace enforcing the restricted Pod Security profile admits.
    problems += [f"{check} ({why})" for check, why in pod_security.violations(pod, "restricted")]
    return problems


USER_POD_FAULTS = {
    "privileged": "c.KubeSpawner.privileged = True",
    "no seccomp profile": 'c.KubeSpawner.container_security_context = {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}',
    "no fsGroup": "c.KubeSpawner.fs_gid = None",
    "privilege escalation": "c.KubeSpawner.allow_privilege_escalation = None",
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_pod_checks_catch_planted_faults(bake, tmp_path, monkeypatch):
    """The checks of test_user_pod, on pods KubeSpawner builds from configs changed the wrong way."""
    source = bake_case(bake, "tmp")
    for fault, line in USER_POD_FAULTS.items():
        project = tmp_path / fault.replace(" ", "-")
        shutil.copytree(source, project)
        with open(project / "hub-config/jupyterhub_config.py", "a", encoding="utf-8") as config:
            config.write(f"\n{line}  # planted by test_hub.py\n")
        _, (_, pod) = built_user_pod(project, project / "work", monkeypatch)
        assert user_pod_security_problems(pod), f"not caught: {fault}"


@pytest.mark.parametrize(
    "authenticator, given, missing",
    [
        ("dummy", {}, "JUPYTERHUB_USER_PASSWORD"),
        ("dummy", {"JUPYTERHUB_USER_PASSWORD": "a-user-password"}, "JUPYTERHUB_ADMIN_PASSWORD"),
        ("native", {}, "JUPYTERHUB_ADMIN_PASSWORD"),
        ("native", {"JUPYTERHUB_ADMIN_PASSWORD": "too-short"}, "JUPYTERHUB_ADMIN_PASSWORD"),
        # As post_gen_project leaves hub-secrets.env: the OAuth variables present but empty.
        ("github", None, "OAUTH_CLIENT_ID"),
        ("generic-oauth", {"OAUTH_CLIENT_ID": "an-id", "OAUTH_CLIENT_SECRET": ""}, "OAUTH_CLIENT_SECRET"),
    ],
)
def test_missing_secret_stops_the_hub(bake, chp, tmp_path, authenticator, given, missing):
    """The Secret the pod gets (None: the one the overlay generates) lacks a variable: the hub's
    container exits at once, with one line naming it (`kubectl logs`)."""
    project = bake_case(bake, authenticator)
    code, output = run_until_exit(project, tmp_path, secrets=given)
    output = output.split("=====\n", 1)[-1].strip()
    assert code != 0, f"the hub started without {missing}:\n{output[-2000:]}"
    assert "Traceback" not in output, output[-2000:]
    assert len(output.splitlines()) == 1 and missing in output, output[-2000:]


def test_a_broken_profiles_file_stops_the_hub(bake, chp, tmp_path):
    """profiles=profile_list: a profile two times over the overcommit ratio, as a teammate might
    edit hub-config/profiles.yaml; the ConfigMap holds it, the hub's container exits at once with
    one line naming the file, the profile and the rule (`kubectl logs`)."""
    import yaml

    project = tmp_path / "project"
    shutil.copytree(bake_case(bake, "native"), project)
    path = project / "hub-config" / "profiles.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile = next(p for p in document["profiles"] if not p.get("default"))
    profile["kubespawner_override"].update(mem_guarantee="1G", mem_limit="8G")
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    code, output = run_until_exit(project, tmp_path / "hub")
    output = output.split("=====\n", 1)[-1].strip()
    assert code != 0 and "Traceback" not in output, output[-2000:]
    assert len(output.splitlines()) == 1, output[-2000:]
    assert f"profiles.yaml: profile '{profile['slug']}': mem_limit 8G is more than 4 times mem_guarantee 1G" in output, output


def without_env(objects, name):
    """The render with one variable taken out of the hub container's env."""
    objects = copy.deepcopy(objects)
    container = hub_container(objects)
    before = len(container["env"])
    container["env"] = [e for e in container["env"] if e["name"] != name]
    assert len(container["env"]) == before - 1, f"the Deployment no longer sets {name}"
    return objects


def test_missing_namespace_stops_the_hub(bake, chp, tmp_path):
    project = bake_case(bake, "tmp")
    code, output = run_until_exit(project, tmp_path, objects=without_env(render(project), "POD_NAMESPACE"))
    output = output.split("=====\n", 1)[-1].strip()
    assert code != 0 and "Traceback" not in output, output[-2000:]
    assert len(output.splitlines()) == 1 and "POD_NAMESPACE" in output, output


def test_missing_pid_file_variable_stops_the_hub(bake, chp, tmp_path):
    """Without the Deployment's JUPYTERHUB_PROXY_PID_FILE the config refuses, rather than
    guess a path (the old guess, /tmp/jupyterhub-proxy.pid, was deleted wherever it was loaded)."""
    project = bake_case(bake, "tmp")
    code, output = run_until_exit(project, tmp_path, objects=without_env(render(project), "JUPYTERHUB_PROXY_PID_FILE"))
    output = output.split("=====\n", 1)[-1].strip()
    assert code != 0 and "Traceback" not in output, output[-2000:]
    assert len(output.splitlines()) == 1 and "JUPYTERHUB_PROXY_PID_FILE" in output, output


def test_loading_the_config_deletes_only_the_stale_pid_file_in_the_pods_volume(bake, tmp_path, monkeypatch):
    """The config removes a stale pid file, at the path the Deployment gives, and nothing
    else: the same path on the machine that loads it (another hub's file) stays."""
    project = bake_case(bake, "tmp")
    env = local_environment(project, tmp_path)
    stale = Path(env["JUPYTERHUB_PROXY_PID_FILE"])
    host_path = host_pid_file(project)
    assert stale.is_relative_to(tmp_path) and host_path.is_absolute() and not host_path.is_relative_to(tmp_path)
    stale.write_text("12345\n")  # left in the emptyDir by the container's previous run
    removed = []
    real_unlink, real_remove = os.unlink, os.remove

    def recording(real):
        def call(path, *args, **kwargs):
            removed.append(Path(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "unlink", recording(real_unlink))
    monkeypatch.setattr(os, "remove", recording(real_remove))
    with planted(host_path, "not a pid: planted by test_hub.py, which removes it\n") as before:
        config = load_config(install_config(project, tmp_path), env)
        after = host_file_state(host_path)
        monkeypatch.undo()
    assert after == before, f"loading the config changed this machine's {host_path}"
    assert removed == [stale] and not stale.exists(), removed
    assert config.ConfigurableHTTPProxy.pid_file == str(stale)


# --- What the pod is given, not what a test supplies: faults planted in the Deployment ----------


def test_the_hub_spawns_in_the_namespace_the_deployment_gives_it(bake, hubs):
    """POD_NAMESPACE comes from the downward API, resolved by the kubelet: the user's pod is
    created in the hub's namespace. Planted: the pod's name instead (fieldPath
    metadata.name): the hub asks for a pod in a namespace that is not its own, and is refused."""
    project = bake_case(bake, "dummy")
    secrets = secrets_env(project, "dummy")
    objects = render(project)
    planted_objects = copy.deepcopy(objects)
    [variable] = [e for e in hub_container(planted_objects)["env"] if e["name"] == "POD_NAMESPACE"]
    assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", variable
    variable["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name"
    for given, expect_refused in ((objects, False), (planted_objects, True)):
        hub = hubs(project, objects=given)
        session = form_login(hub, "alice", secrets["JUPYTERHUB_USER_PASSWORD"])
        session.get(f"{hub.url}/hub/spawn", timeout=60, allow_redirects=False)
        cluster = hub.cluster
        if expect_refused:
            # Its reflectors list pods and events in the pod's name, and are refused.
            cluster.wait_for(lambda: any(r["resource"] == "pods" for r in cluster.requests), 60, "a request for pods")
            asked = {(r["namespace"], r["status"]) for r in cluster.requests if r["resource"] in ("pods", "events") and r["status"]}
            assert asked == {(hub.pod, 403)}, asked
        else:
            cluster.wait_for(lambda: any(r["verb"] == "create" and r["resource"] == "pods" for r in cluster.requests), 60, "a spawn")
            asked = {(r["namespace"], r["status"]) for r in cluster.requests if r["resource"] in ("pods", "events") and r["status"]}
            assert asked == {(hub.namespace, 200), (hub.namespace, 201)}, asked


def config_changes(hub, directory, names, user):
    """The ways user could change the files names in directory, tried for real inside the hub's
    running container: append to each, change its mode, add a file, rename one ([] if none).
    Fails outright if user cannot read them (the hub could not start)."""
    script = f"""
cd {directory} || exit 90
for f in {' '.join(names)}; do
  test -f "$f" && test -r "$f" || {{ echo "cannot read $f"; exit 91; }}
  if ( : >> "$f" ) 2>/dev/null; then echo "append to $f"; fi
  if chmod 0666 "$f" 2>/dev/null; then echo "chmod $f"; fi
done
if ( : > added_config.py ) 2>/dev/null; then echo "add a file to {directory}"; fi
if mv {names[0]} moved.py 2>/dev/null; then echo "rename {names[0]}"; fi
exit 0
"""
    out = hub.exec(["sh", "-c", script], user)
    assert out.returncode == 0, f"as {user}: {out.stdout}{out.stderr}"
    return [f"as {user}: {line}" for line in out.stdout.splitlines() if line.strip()]


def test_the_hub_cannot_change_its_configuration(bake, hubs):
    """The ConfigMap's files where the Deployment mounts them, tried in the running container:
    neither the pod's user nor any uid in group 0 (as OpenShift runs images) can append to
    them, change their mode, add a file or rename one. The control: the same tries succeed
    on a file of the pod's emptyDir, so a check that cannot see a change would fail."""
    hub = hubs(bake_case(bake, "tmp"))
    hub.wait_ready()
    directory, files = config_volume(hub.objects)
    context = hub_container(hub.objects)["securityContext"]
    pod_user = f"{context['runAsUser']}:{context['runAsGroup']}"
    users = (pod_user, f"{context['runAsUser']}:0")
    changes = [c for user in users for c in config_changes(hub, directory, sorted(files), user)]
    assert not changes, "\n".join(changes)
    assert hub.exec(["sh", "-c", ": > /tmp/control_config.py"], pod_user).returncode == 0
    control = config_changes(hub, "/tmp", ["control_config.py"], pod_user)
    assert len(control) == 4, control


# Faults in the pod's surroundings that a harness supplying its own would hide: each one
# stops the hub on a cluster, and must stop it here.
POD_FAULTS = {
    # The claim mounted elsewhere: the database would go to /srv/jupyterhub on the read-only root.
    "claim mounted at /data": (lambda d: next(m for m in d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/srv/jupyterhub").update(mountPath="/data"), "Read-only file system"),
    # No fsGroup: the fresh volume is root's, and the hub (uid 1000) cannot write to it.
    "no fsGroup": (lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("fsGroup"), "Permission denied"),
    # No emptyDir at /tmp: the proxy's pid file would go to the read-only root.
    "no emptyDir at /tmp": (lambda d: d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].remove(
        next(m for m in d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp")), "Read-only file system"),
}


@pytest.mark.parametrize("fault", list(POD_FAULTS))
def test_planted_pod_faults_stop_the_hub(bake, chp, tmp_path, fault):
    change, says = POD_FAULTS[fault]
    project = bake_case(bake, "tmp")
    objects = copy.deepcopy(render(project))
    change(hub_deployment(objects))
    code, output = run_until_exit(project, tmp_path, objects=objects)
    assert code != 0 and says in output, f"{fault}: exit {code}\n{output[-3000:]}"


# --- The loopback check, on a planted fault ---------------------------------------------

HAIRPINS = {
    # The hairpin the README says is avoided: the proxy reaches the hub through its Service.
    "hub_connect_url": (
        'c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{HUB_PORT}"',
        'c.JupyterHub.hub_connect_url = f"http://{HUB_SERVICE_NAME}.{NAMESPACE}.svc:{HUB_PORT}"',
        "through hub-dev.jupyterhub.svc, not loopback",
    ),
    "hub_connect_url left out": (
        'c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{HUB_PORT}"',
        "",
        "hub_connect_url is not set",
    ),
    "api_url on all interfaces": (
        'c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"',
        'c.ConfigurableHTTPProxy.api_url = f"http://:{PROXY_API_PORT}"',
        "must listen on loopback only",
    ),
}


@pytest.mark.parametrize("fault", list(HAIRPINS))
def test_loopback_check_reports_a_planted_hairpin(bake, tmp_path, fault):
    """The check test_hub_starts_logs_in_and_restarts makes, on a config changed the wrong way."""
    find, replace, says = HAIRPINS[fault]
    project = tmp_path / "project"
    shutil.copytree(bake_case(bake, "tmp"), project)
    config_file = project / "hub-config/jupyterhub_config.py"
    text = config_file.read_text(encoding="utf-8")
    assert text.count(find) == 1, f"the generated config no longer has {find!r}"
    config_file.write_text(text.replace(find, replace), encoding="utf-8")
    env = local_environment(project, tmp_path)
    assert loopback_problems(load_config(install_config(bake_case(bake, "tmp"), tmp_path / "good"), env)) == []
    problems = loopback_problems(load_config(install_config(project, tmp_path), env))
    assert any(says in problem for problem in problems), problems
