"""A user's journey through a generated hub on the emulated cluster: the pieces the journey
tests (tests/test_journey.py) and scripts/benchmark-journey share.

`Deployment` is one baked project's development overlay applied to the emulated cluster
(tests/hubrunner.py's HubDeployment): the hub's pod as the Deployment says, its Role
guarding the API server it reaches with its service account token, and the users' image
(a stand-in of k8s-singleuser-sample) registered for the pods KubeSpawner asks for.
"""

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests

from hubrunner import HubDeployment, read_env_file, render, xsrf_form
from support.kubelet import HostImage
from support.tools import SINGLEUSER

SINGLEUSER_BIN = SINGLEUSER / "bin"


def secrets_env(project, authenticator):
    """The variables the Secret hub-secrets gives the hub: the development overlay's file, if any."""
    path = Path(project) / "k8s" / "overlays" / "development" / "hub-secrets.env"
    return read_env_file(path) if path.exists() else {}


def user_image_of(project):
    """USER_IMAGE of the project's jupyterhub_config.py (in hub-config/, or at the top in a
    project generated before the configuration became a ConfigMap): the users' image."""
    [config] = [p for p in (Path(project) / "hub-config/jupyterhub_config.py", Path(project) / "jupyterhub_config.py") if p.exists()]
    return re.search(r'^USER_IMAGE = "([^"]+)"', config.read_text(), re.M)[1]


def singleuser_standin_image(name, workdir):
    """The users' image: Zero to JupyterHub's k8s-singleuser-sample as far as KubeSpawner and the
    hub see it (user jovyan, uid 1000 in group 100, home /home/jovyan, tini, then
    jupyterhub-singleuser), with JupyterHub and JupyterLab from the test tools' singleuser
    environment (tests/singleuser-requirements.txt) over this machine's root."""
    from hubrunner import etc_file_with

    files = {
        "/etc/passwd": (etc_file_with(Path(workdir) / "singleuser", "/etc/passwd", "jovyan:x:1000:100::/home/jovyan:/bin/bash"), 0o644, 0, 0),
        "/home/jovyan": (None, 0o755, 1000, 100),
    }
    config = {
        "User": "1000",
        "Entrypoint": ["tini", "-g", "--"],
        "Cmd": ["jupyterhub-singleuser"],
        "WorkingDir": "/home/jovyan",
        "Env": [f"PATH={SINGLEUSER_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME=/home/jovyan", "LANG=C.UTF-8"],
    }
    return HostImage(name, config, files, reach=[SINGLEUSER_BIN / "python"])


class Deployment(HubDeployment):
    """A baked project's development overlay on the emulated cluster, with a user image; `with Deployment(...) as d:`.

    objects: the render to apply instead of the overlay's (a planted fault)."""

    def __init__(self, project, workdir, user_image, authenticator, objects=None):
        super().__init__(project, workdir, extra_images=[singleuser_standin_image(user_image, workdir)], objects=objects)
        self.authenticator = authenticator
        self.secrets = secrets_env(project, authenticator)

    @property
    def hub(self):
        return self

    def logs(self):
        return self.log_tail(60)


# --- What a browser does ------------------------------------------------------------------


def api(session, hub, method, path, **kwargs):
    """The hub's REST API with the browser's cookies (and the _xsrf header the hub wants)."""
    headers = {"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/") or session.cookies.get("_xsrf") or ""}
    return session.request(method, f"{hub.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)


def form_login(hub, username, password):
    """The login form, submitted as a browser does; the session, logged in or not."""
    session = requests.Session()
    form = xsrf_form(session, f"{hub.url}/hub/login", username=username, password=password)
    resp = session.post(f"{hub.url}/hub/login", data=form, timeout=30, allow_redirects=False)
    assert resp.status_code == 302, f"POST /hub/login as {username}: {resp.status_code} {resp.text[-400:]}"
    return session


def logged_in_name(session, hub):
    resp = api(session, hub, "GET", "/user")
    assert resp.status_code == 200, f"/hub/api/user: {resp.status_code}"
    return resp.json()["name"]


def start_server(session, hub, name, timeout=180):
    """What the browser does after logging in: /hub/spawn, then wait on the pending page."""
    resp = session.get(f"{hub.url}/hub/spawn", timeout=60, allow_redirects=False)
    assert resp.status_code in (302, 303), f"/hub/spawn: {resp.status_code} {resp.text[-400:]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api(session, hub, "GET", f"/users/{name}").json().get("servers", {}).get("")
        if server and server["ready"]:
            return server
        assert server and server["pending"], f"the spawn failed: {server}"
        time.sleep(0.1)
    raise AssertionError(f"{name}'s server not ready within {timeout} s")


def open_server(session, hub, name):
    """Open the user's JupyterLab (the OAuth round trip sets its cookie); its api/status."""
    resp = session.get(f"{hub.url}/user/{name}/lab", timeout=30)
    assert resp.status_code == 200 and urlparse(resp.url).path == f"/user/{name}/lab", (
        f"/user/{name}/lab: {resp.status_code} at {resp.url}"
    )
    resp = session.get(f"{hub.url}/user/{name}/api/status", timeout=30)
    assert resp.status_code == 200, f"/user/{name}/api/status: {resp.status_code}"
    return resp.json()


def server_headers(session, name):
    xsrf = session.cookies.get("_xsrf", path=f"/user/{name}/")
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies if f"/user/{name}/".startswith(c.path or "/"))
    return {"X-XSRFToken": xsrf or "", "Cookie": cookie}


def run_code(session, hub, name, code, timeout=120):
    """A new kernel runs code over its WebSocket, through the proxy (tornado's client)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    base = f"{hub.url}/user/{name}/api/kernels"
    resp = session.post(base, json={}, headers={"X-XSRFToken": server_headers(session, name)["X-XSRFToken"]}, timeout=60)
    assert resp.status_code == 201, f"POST {base}: {resp.status_code} {resp.text[:300]}"
    kernel = resp.json()["id"]
    xsrf = server_headers(session, name)["X-XSRFToken"]

    async def exchange():
        url = f"{base.replace('http', 'ws', 1)}/{kernel}/channels?session_id=journey&_xsrf={xsrf}"
        ws = await websocket_connect(HTTPRequest(url, headers=server_headers(session, name), connect_timeout=30))
        try:
            msg_id = f"journey-{time.monotonic_ns()}"
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": "journey",
                           "username": name, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            }))
            while True:
                raw = await asyncio.wait_for(ws.read_message(), timeout)
                assert raw is not None, "the kernel's WebSocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "execute_result":
                    return msg["content"]["data"]["text/plain"]
                assert msg["msg_type"] != "error", msg["content"]
        finally:
            ws.close()

    try:
        return asyncio.run(exchange())
    finally:
        session.delete(f"{base}/{kernel}", headers={"X-XSRFToken": xsrf}, timeout=30)


def stop_server(session, hub, name):
    """The "Stop My Server" button: DELETE on the hub's API, then wait until it is gone."""
    resp = api(session, hub, "DELETE", f"/users/{name}/server")
    assert resp.status_code in (202, 204), f"DELETE server: {resp.status_code} {resp.text[:300]}"
    deadline = time.monotonic() + 120
    while api(session, hub, "GET", f"/users/{name}").json().get("servers"):
        assert time.monotonic() < deadline, f"{name}'s server still listed 120 s after the stop"
        time.sleep(0.2)


def wait_until_answers(session, hub, name, timeout=120):
    """Poll /user/<name>/api/status through the proxy until it answers 200; seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if session.get(f"{hub.url}/user/{name}/api/status", timeout=5, allow_redirects=False).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/user/{name}/api/status did not answer within {timeout} s")


def restart_hub(hub):
    """`kubectl rollout restart deployment/hub`: Recreate stops the pod (its proxy dies with it)
    and starts a new one. Returns the window: seconds until the new pod is ready."""
    started = time.monotonic()
    hub.restart()
    return time.monotonic() - started


# --- Logging in, the way the generated README's "Log in" section says ---------------------


def login_dummy(deployment, name="alice"):
    """Any user name, with JUPYTERHUB_USER_PASSWORD from the development overlay's hub-secrets.env."""
    session = form_login(deployment.hub, name, deployment.secrets["JUPYTERHUB_USER_PASSWORD"])
    return session, logged_in_name(session, deployment.hub)


def login_native(deployment, name=None):
    """The admin does not sign up: the hub made the account at start with the password
    JUPYTERHUB_ADMIN_PASSWORD from the Secret (the README's "Log in"); log in at /hub/login."""
    hub = deployment.hub
    admin = name or re.search(r'^ADMIN_USER = "([^"]+)"', (deployment.project / "hub-config/jupyterhub_config.py").read_text(), re.M)[1]
    session = form_login(hub, admin, deployment.secrets["JUPYTERHUB_ADMIN_PASSWORD"])
    return session, logged_in_name(session, hub)


def login_tmp(deployment, name=None):
    """No login: opening the hub's / gives the visitor a new user (redirects: /hub/tmplogin)."""
    session = requests.Session()
    url = f"{deployment.hub.url}/"
    for _ in range(10):  # follow by hand, up to the page that would start the server
        resp = session.get(url, timeout=30, allow_redirects=False)
        if resp.status_code not in (301, 302, 303) or "/hub/spawn" in resp.headers["Location"]:
            break
        url = urljoin(url, resp.headers["Location"])
    return session, logged_in_name(session, deployment.hub)


LOGIN = {"dummy": login_dummy, "native": login_native, "tmp": login_tmp}


def smoke_test(deployment, *args, password=None, timeout=300):
    """The generated project's scripts/smoke-test against this hub; CompletedProcess."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if password:
        env["SMOKE_TEST_PASSWORD"] = password
    return subprocess.run(
        # As a user runs it: the script itself, on the system's python3 (standard library only).
        [str(deployment.project / "scripts" / "smoke-test"), "--url", deployment.hub.url, *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
