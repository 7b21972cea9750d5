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


def user_image_of(project, overlay="development"):
    """USER_IMAGE of the project's jupyterhub_config.py (in hub-config/, or at the top in a
    project generated before the configuration became a ConfigMap): the users' image. Where
    the project builds it (build_user_image=yes), the config reads it from the hub's
    environment: the overlay's render names it (k8s/components/user-image)."""
    [config] = [p for p in (Path(project) / "hub-config/jupyterhub_config.py", Path(project) / "jupyterhub_config.py") if p.exists()]
    found = re.search(r'^USER_IMAGE = "([^"]+)"', config.read_text(), re.M)
    if found:
        return found[1]
    from hubrunner import hub_container, render

    return {e["name"]: e.get("value") for e in hub_container(render(project, overlay))["env"]}["USER_IMAGE"]


def singleuser_standin_image(name, workdir, cmd=("jupyter", "lab")):
    """The users' image: Zero to JupyterHub's k8s-singleuser-sample as far as KubeSpawner and the
    hub see it (user jovyan, uid 1000 in group 100, home /home/jovyan, its ENTRYPOINT tini and
    its CMD `jupyter lab`, which never answers the hub: the config's KubeSpawner.cmd must say
    jupyterhub-singleuser, as Zero to JupyterHub's singleuser.cmd does), with JupyterHub and
    JupyterLab from the test tools' singleuser environment (tests/singleuser-requirements.txt)
    over this machine's root. cmd: the image's CMD, for a test of another image's."""
    from hubrunner import etc_file_with

    files = {
        "/etc/passwd": (etc_file_with(Path(workdir) / "singleuser", "/etc/passwd", "jovyan:x:1000:100::/home/jovyan:/bin/bash"), 0o644, 0, 0),
        "/home/jovyan": (None, 0o755, 1000, 100),
    }
    config = {
        "User": "1000",
        "Entrypoint": ["tini", "--"],
        "Cmd": list(cmd),
        "WorkingDir": "/home/jovyan",
        "Env": [f"PATH={SINGLEUSER_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME=/home/jovyan", "LANG=C.UTF-8"],
    }
    return HostImage(name, config, files, reach=[SINGLEUSER_BIN / "python"])


def profiles_of(objects):
    """The profiles (profiles=profile_list) as the hub reads them: hub-config/profiles.yaml in
    the rendered ConfigMap; [] without profiles."""
    import yaml

    texts = [o["data"]["profiles.yaml"] for o in objects if o["kind"] == "ConfigMap" and "profiles.yaml" in o.get("data", {})]
    return [profile for text in texts for profile in yaml.safe_load(text)["profiles"]]


def profile_images(objects):
    """Every image a profile names (a profile without one runs the users' image)."""
    return sorted({p["kubespawner_override"]["image"] for p in profiles_of(objects) if "image" in p.get("kubespawner_override", {})})


class Deployment(HubDeployment):
    """A baked project's development overlay on the emulated cluster, with a user image (and a
    stand-in for every image the profiles name); `with Deployment(...) as d:`.

    objects: the render to apply instead of the overlay's (a planted fault)."""

    def __init__(self, project, workdir, user_image, authenticator, objects=None):
        objects = render(project) if objects is None else objects
        images = [user_image] + [i for i in profile_images(objects) if i != user_image]
        super().__init__(project, workdir, extra_images=[singleuser_standin_image(i, workdir) for i in images], objects=objects)
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


def start_server(session, hub, name, timeout=180, profile=None):
    """What the browser does after logging in: /hub/spawn, then wait on the pending page.
    With profiles the hub shows its form first: submitted with `profile` chosen (None: the one
    the form preselects, the default)."""
    resp = session.get(f"{hub.url}/hub/spawn", timeout=60, allow_redirects=False)
    if resp.status_code == 200 and 'name="profile"' in resp.text:
        # The spawn form (KubeSpawner's profile_list), submitted as the browser does.
        checked = re.findall(r'name="profile"\s+id="[^"]*"\s+value="([^"]+)"\s+checked', resp.text)
        choice = profile or checked[0]
        assert f'value="{choice}"' in resp.text, f"the spawn form offers no profile {choice}: {resp.text[-2000:]}"
        xsrf = session.cookies.get("_xsrf", path="/hub/") or session.cookies.get("_xsrf")
        resp = session.post(f"{hub.url}/hub/spawn", data={"profile": choice, "_xsrf": xsrf}, timeout=60, allow_redirects=False)
    else:
        assert profile is None, f"asked for profile {profile}, but /hub/spawn showed no form: {resp.status_code}"
    assert resp.status_code in (302, 303), f"/hub/spawn: {resp.status_code} {resp.text[-400:]}"
    return wait_for_server(session, hub, name, "", timeout)


def wait_for_server(session, hub, name, server_name, timeout=180):
    """The user's server (named, or "" for the default) once ready; fails if its spawn fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = api(session, hub, "GET", f"/users/{name}").json().get("servers", {}).get(server_name)
        if server and server["ready"]:
            return server
        assert server and server["pending"], f"the spawn failed: {server}"
        time.sleep(0.1)
    raise AssertionError(f"{name}'s server {server_name!r} not ready within {timeout} s")


def open_server(session, hub, name):
    """Open the user's JupyterLab (the OAuth round trip sets its cookie); its api/status.
    name: the user's name, or <user>/<server> for a named server."""
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


class KernelPinger:
    """A user at work while the hub restarts: one kernel, one WebSocket to it through the proxy,
    and `1+1` sent every `interval` seconds, each waiting at most `reply_timeout` for its answer.
    When the connection drops it connects again at once, as JupyterLab does. Every request is
    recorded: (sent at, answered at or None), times from time.monotonic().

    with KernelPinger(session, hub, name) as pinger: ...; then pinger.failed, pinger.longest_gap()
    """

    def __init__(self, session, hub, name, interval=0.1, reply_timeout=5.0):
        self.session, self.hub, self.name = session, hub, name
        self.interval, self.reply_timeout = interval, reply_timeout
        self.requests = []
        self.connections = 0
        self._stop = None

    def __enter__(self):
        import threading

        base = f"{self.hub.url}/user/{self.name}/api/kernels"
        xsrf = server_headers(self.session, self.name)["X-XSRFToken"]
        resp = self.session.post(base, json={}, headers={"X-XSRFToken": xsrf}, timeout=60)
        assert resp.status_code == 201, f"POST {base}: {resp.status_code} {resp.text[:300]}"
        self.kernel = resp.json()["id"]
        self.url = f"{base.replace('http', 'ws', 1)}/{self.kernel}/channels?session_id=pinger&_xsrf={xsrf}"
        self.headers = server_headers(self.session, self.name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not any(answered for _, answered in self.requests):
            assert time.monotonic() < deadline and self._thread.is_alive(), f"the kernel never answered: {self.requests[-3:]}"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        xsrf = server_headers(self.session, self.name)["X-XSRFToken"]
        self.session.delete(f"{self.hub.url}/user/{self.name}/api/kernels/{self.kernel}", headers={"X-XSRFToken": xsrf}, timeout=30)

    async def _run(self):
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        ws, count = None, 0
        while not self._stop.is_set():
            sent = time.monotonic()
            answered = None
            try:
                if ws is None:
                    ws = await websocket_connect(HTTPRequest(self.url, headers=self.headers, connect_timeout=self.reply_timeout,
                                                             request_timeout=self.reply_timeout))  # fmt: skip
                    self.connections += 1
                count += 1
                msg_id = f"pinger-{count}"
                await ws.write_message(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": "pinger",
                               "username": self.name, "version": "5.3"},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": "1+1", "silent": False, "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True},
                }))  # fmt: skip
                deadline = sent + self.reply_timeout
                while answered is None:
                    raw = await asyncio.wait_for(ws.read_message(), max(0.01, deadline - time.monotonic()))
                    if raw is None:
                        raise ConnectionError("the WebSocket closed")
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_result":
                        assert msg["content"]["data"]["text/plain"] == "2", msg
                        answered = time.monotonic()
            except (OSError, ConnectionError, asyncio.TimeoutError, Exception):  # noqa: BLE001  (any failure is a failed request)
                if ws is not None:
                    ws.close()
                ws = None
            self.requests.append((sent, answered))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - sent)))
        if ws is not None:
            ws.close()

    @property
    def failed(self):
        return sum(1 for _, answered in self.requests if answered is None)

    def longest_gap(self):
        """The longest time between two answers in a row (the first from the start of the
        measurement): how long the user saw nothing."""
        answers = [answered for _, answered in self.requests if answered is not None]
        return max((b - a for a, b in zip(answers, answers[1:])), default=float("inf"))

    def summary(self):
        return (f"{len(self.requests)} requests of 1+1, {self.failed} failed, longest gap between answers"
                f" {self.longest_gap():.2f} s, {self.connections} WebSocket connection(s)")


def change_a_setting(hub_config):
    """What a teacher does during a class: one setting changed in hub-config/ (here, the log
    level's comment: any change to a file gives the ConfigMap a new name and rolls the hub)."""
    path = hub_config / "jupyterhub_config.py"
    path.write_text(path.read_text(encoding="utf-8") + f"\n# changed during the class at {time.time():.0f}\n", encoding="utf-8")


def restart_under_a_kernel(deployment, session, name, settle=2.0):
    """A new ConfigMap rolls the hub while the user's kernel answers 1+1 every 100 ms over its
    WebSocket; (the pinger, seconds until the new hub was ready). It keeps measuring for
    `settle` seconds after the server answers again through the proxy."""
    with KernelPinger(session, deployment.hub, name) as pinger:
        time.sleep(settle)
        ready = deployment.hub.reconfigure(change_a_setting)
        wait_until_answers(session, deployment.hub, name)
        answered_before = sum(1 for _, a in pinger.requests if a is not None)
        deadline = time.monotonic() + 120
        # Until the kernel has answered again over a WebSocket (the in-hub proxy's restart cut it).
        while sum(1 for _, a in pinger.requests if a is not None) <= answered_before + int(settle / pinger.interval) // 2:
            assert time.monotonic() < deadline, f"the kernel did not answer again: {pinger.summary()}"
            time.sleep(0.1)
    return pinger, ready


# --- Many users at once ----------------------------------------------------------------------


def login_to_kernel(deployment, login, name):
    """One user's first minute: log in, start the server, open JupyterLab, 1+1 in a new kernel;
    seconds from the login form to the answer."""
    started = time.monotonic()
    session, name = login(deployment, name=name)
    start_server(session, deployment.hub, name, timeout=600)
    open_server(session, deployment.hub, name)
    assert run_code(session, deployment.hub, name, "1+1") == "2"
    return time.monotonic() - started


def users_at_once(deployment, login, count, prefix="load"):
    """`count` users log in at the same moment, each until 1+1 answers in a kernel; a list of
    (name, seconds or the exception that stopped that user)."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"{prefix}{i:03d}" for i in range(count)]

    def one(name):
        try:
            return name, login_to_kernel(deployment, login, name)
        except Exception as error:  # noqa: BLE001  (a failed user is a figure, not a crash)
            return name, error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, names))


def percentile(values, fraction):
    """The nearest-rank percentile (p95 of 20 values: the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-int(fraction * 100) * len(ordered) // 100) - 1))]


def resident_memory(deployment):
    """{process: resident memory in MiB} of the hub's pod (the hub; the proxy and the culler when
    they run there) and a separate proxy's pod, read from /proc as the kubelet's cAdvisor does."""
    from hubrunner import descendants

    def rss(pid):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    found = {}
    pods = [deployment.pod] + ([deployment.proxy_pod] if deployment.proxy_deployment_name else [])
    for pod in pods:
        running = deployment.cluster.container(deployment.namespace, pod)
        for pid, argv in descendants(running.pid).items():
            line = " ".join(argv)
            for what, needle in (("proxy", "configurable-http-proxy"), ("idle culler", "jupyterhub_idle_culler"), ("hub", "bin/jupyterhub")):
                if needle in line and "tini" not in argv[0]:
                    found[what] = found.get(what, 0.0) + rss(pid)
                    break
    return found


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
