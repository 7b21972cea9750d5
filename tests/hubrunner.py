"""Run a baked project's jupyterhub_config.py with the real `jupyterhub` and CHP, on loopback.

The generated files are copied unchanged. What must differ outside the hub's pod is
changed, on the command line and in the environment, and derived from the generated
configuration as JupyterHub loads it (load_config), never written down here:

- ports: free ports instead of the configured ones, in the configured URLs (the
  hosts stay what the config says); the listening sockets are bound to 127.0.0.1;
- paths: the Deployment's variables that point into the pod's volumes (the proxy's
  pid file in the emptyDir) point into the test's directory;
- JUPYTERHUB_STATE_DIR (the volume at /srv/jupyterhub in the pod): a temporary directory;
- POD_NAMESPACE (the downward API), a kube config whose API server is a closed port;
- the Secret's variables (hub-secrets.env), given by the caller;
- CONFIGPROXY_AUTH_TOKEN: ours, so that the tests can read CHP's route table.

loopback_problems(config) is the check that the proxy reaches the hub, and the hub
the proxy's API, over loopback, as the pod's configuration says.
"""

import os
import re
import secrets
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from support.bakery import patched_environ
from support.envfile import env_file
from support.tools import CHP

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CHP_BIN = CHP / "node_modules" / ".bin"
NAMESPACE = "hub-test-ns"

# Variables of the developer's shell that the hub or its authenticators would read.
LEAKY_ENV = re.compile(r"^(JUPYTERHUB_|OAUTH_|GITHUB_|CONFIGPROXY_|KUBERNETES_|POD_NAMESPACE$|KUBECONFIG$)")


def free_port():
    """A loopback TCP port nobody listens on right now (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_argv(pid):
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None


def descendants(root_pid):
    """{pid: argv} of the live (not zombie) processes below root_pid."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [root_pid]
    while todo:
        for pid in children.get(todo.pop(), []):
            argv = process_argv(pid)
            if argv is not None:
                found[pid] = argv
                todo.append(pid)
    return found


def wait_for_exits(processes, timeout=60):
    """Wait until each of {pid: argv} has exited (or is another process by now); those still running.

    Waits for the exit itself (a pidfd becomes readable when its process ends), so a
    busy machine only makes it slower; timeout bounds a process that never exits.
    """
    deadline = time.monotonic() + timeout
    running = {}
    for pid, argv in processes.items():
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            continue
        try:
            if process_argv(pid) != argv:  # the pid was reused meanwhile: ours is gone
                continue
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            remaining = max(0.0, deadline - time.monotonic())
            if not poller.poll(remaining * 1000):
                running[pid] = argv
        finally:
            os.close(fd)
    return running


def wait_for_health(proc, health_url, started_at, timeout, log_tail, what):
    """Poll health_url until it answers 200; seconds since started_at.

    Fails at once, with the log's tail, if proc exits first.
    """
    deadline = started_at + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the {what} exited with {proc.returncode} before it was ready\n{log_tail()}")
        try:
            resp = requests.get(health_url, timeout=2, allow_redirects=False)
            last = resp.status_code
            if resp.status_code == 200:
                return time.monotonic() - started_at
        except requests.RequestException as error:
            last = type(error).__name__
        time.sleep(0.05)
    raise AssertionError(f"{health_url} not 200 within {timeout} s (last: {last})\n{log_tail()}")


# NAME=value lines of a kustomize `envs:` file (what the Secret would hold): the one parser.
read_env_file = env_file


def write_kube_config(path, server):
    """A kube config KubeSpawner can load; its API server is not there (nothing is created)."""
    Path(path).write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: fake
  user:
    token: not-a-real-token
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: not-the-pod-namespace  # KubeSpawner must use POD_NAMESPACE, not this
current-context: fake
""",
        encoding="utf-8",
    )
    return Path(path)


def deployment_env(project, workdir=None):
    """The plain `value:` variables of the hub container in the baked Deployment.

    With workdir, a value that is a path under one of the container's volume mounts
    (the emptyDir at /tmp, for instance) is moved to workdir/volumes/<volume name>/,
    created here. The downward API's and the Secret's variables are the caller's business.
    """
    import yaml

    deployment = yaml.safe_load((Path(project) / "k8s" / "base" / "hub-deployment.yaml").read_text(encoding="utf-8"))
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "hub"]
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
    env = {}
    for item in container.get("env", []):
        if "value" not in item:
            continue
        value = str(item["value"])
        for mount_path, volume in mounts.items():
            if workdir is not None and value.startswith(mount_path + "/"):
                local = Path(workdir) / "volumes" / volume
                local.mkdir(parents=True, exist_ok=True)
                value = str(local / value[len(mount_path) + 1:])
                break
        env[item["name"]] = value
    return env


def hub_environment(project, workdir, secrets_env=None, namespace=NAMESPACE):
    """The environment the hub container would have, pointing at test locations."""
    workdir = Path(workdir)
    env = {k: v for k, v in os.environ.items() if not LEAKY_ENV.match(k)}
    env["PATH"] = os.pathsep.join([str(CHP_BIN), str(VENV_BIN), env.get("PATH", "")])
    env.update(deployment_env(project, workdir))
    env["JUPYTERHUB_STATE_DIR"] = str(workdir / "state")
    if namespace is not None:
        env["POD_NAMESPACE"] = namespace
    env["KUBECONFIG"] = str(write_kube_config(workdir / "kubeconfig", f"https://127.0.0.1:{free_port()}"))
    env.update(secrets_env or {})
    return env


def config_files(project):
    """The files the project's Dockerfile copies into /usr/local/etc/jupyterhub/."""
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) /usr/local/etc/jupyterhub/$", (Path(project) / "Dockerfile").read_text(), re.M)
    assert len(copied) == 1, f"expected one COPY into /usr/local/etc/jupyterhub/, found {copied}"
    return copied[0].split()


def install_config(project, workdir):
    """The config files side by side, as the Dockerfile puts them in /usr/local/etc/jupyterhub/."""
    etc = Path(workdir) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name in config_files(project):
        shutil.copy2(Path(project) / name, etc / name)
    return etc / "jupyterhub_config.py"


# os.environ is exactly env inside the block, and exactly what it was after it.
environment = patched_environ


def load_config(config_file, env):
    """The traitlets Config JupyterHub gets from config_file (and the file it loads) under env."""
    from traitlets.config import PyFileConfigLoader

    config_file = Path(config_file)
    with environment(env):
        return PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()


# JupyterHub's defaults, where the config leaves a setting out.
DEFAULT_HUB_BIND_URL = "http://:8081"
DEFAULT_PROXY_API_URL = "http://127.0.0.1:8001"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _get(config, section, name, default=None):
    return config[section][name] if name in config[section] else default


def url_port(url):
    return urlsplit(url.replace("://:", "://0.0.0.0:")).port


def loopback_problems(config):
    """What keeps the proxy and the hub from talking over loopback in the pod, as sentences.

    In one container, CHP routes /hub/ to JupyterHub.hub_connect_url and the hub calls
    CHP's API at ConfigurableHTTPProxy.api_url: both must be loopback (no hairpin
    through the Service, the API never on the pod's network), and hub_connect_url must
    name the port the hub listens on. User pods, by contrast, cannot use loopback.
    """
    problems = []
    bind = _get(config, "JupyterHub", "hub_bind_url", DEFAULT_HUB_BIND_URL)
    connect = _get(config, "JupyterHub", "hub_connect_url")
    if connect is None:
        problems.append("JupyterHub.hub_connect_url is not set: the proxy would reach the hub by the pod's hostname")
    else:
        host = urlsplit(connect).hostname
        if host not in LOOPBACK_HOSTS:
            problems.append(f"JupyterHub.hub_connect_url {connect!r}: the proxy would reach the hub through {host}, not loopback")
        if url_port(connect) != url_port(bind):
            problems.append(f"JupyterHub.hub_connect_url {connect!r} is not the port the hub listens on ({bind!r})")
    api = _get(config, "ConfigurableHTTPProxy", "api_url", DEFAULT_PROXY_API_URL)
    if urlsplit(api).hostname not in LOOPBACK_HOSTS:
        problems.append(f"ConfigurableHTTPProxy.api_url {api!r}: the proxy's API must listen on loopback only")
    spawner_connect = _get(config, "KubeSpawner", "hub_connect_url")
    if spawner_connect is None or urlsplit(spawner_connect).hostname in LOOPBACK_HOSTS:
        problems.append(f"KubeSpawner.hub_connect_url {spawner_connect!r}: user pods cannot reach the hub on loopback")
    return problems


def with_port(url, port, host=None):
    """url with another port (and host, if given); an empty host (all interfaces) stays empty unless given."""
    parts = urlsplit(url.replace("://:", "://0.0.0.0:"))
    netloc = f"{host or parts.hostname}:{port}"
    if host is None and "://:" in url:
        netloc = f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def port_overrides(config, public_port, hub_port, api_port):
    """--Class.trait=value options that move the configured URLs to the given ports.

    Listening sockets go to 127.0.0.1 (nothing of a test hub on the machine's network);
    the URLs the proxy and the hub use to reach each other keep their configured host.
    """
    bind = _get(config, "JupyterHub", "bind_url", "http://:8000")
    hub_bind = _get(config, "JupyterHub", "hub_bind_url", DEFAULT_HUB_BIND_URL)
    options = [
        f"--JupyterHub.bind_url={with_port(bind, public_port, host='127.0.0.1')}",
        f"--JupyterHub.hub_bind_url={with_port(hub_bind, hub_port, host='127.0.0.1')}",
        f"--ConfigurableHTTPProxy.api_url="
        f"{with_port(_get(config, 'ConfigurableHTTPProxy', 'api_url', DEFAULT_PROXY_API_URL), api_port)}",
    ]
    connect = _get(config, "JupyterHub", "hub_connect_url")
    if connect is not None and url_port(connect) == url_port(hub_bind):
        options.append(f"--JupyterHub.hub_connect_url={with_port(connect, hub_port)}")
    return options


def hub_command(config_file, config, public_port, hub_port, api_port):
    """The image's CMD plus the ports a run outside the pod needs."""
    return [
        str(VENV_BIN / "jupyterhub"),
        "--config", str(config_file),
        *port_overrides(config, public_port, hub_port, api_port),
    ]


class HubProcess:
    """One baked project's hub (and the CHP it starts), restartable on the same state."""

    def __init__(self, project, workdir, secrets_env=None, namespace=NAMESPACE):
        self.project = Path(project)
        self.workdir = Path(workdir)
        self.state_dir = self.workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = install_config(project, self.workdir)
        self.proxy_token = secrets.token_hex(32)
        self.env = hub_environment(project, self.workdir, secrets_env, namespace)
        self.env["CONFIGPROXY_AUTH_TOKEN"] = self.proxy_token
        # The configuration as the hub will load it: what the tests check, and the
        # source of the URLs whose ports move.
        self.config = load_config(self.config_file, self.env)
        self.public_port, self.hub_port, self.api_port = free_port(), free_port(), free_port()
        self.log_path = self.workdir / "hub.log"
        self.proc = None
        self.starts = 0
        self.leftovers = {}

    # --- URLs ---
    @property
    def url(self):
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def proxy_api(self):
        return f"http://127.0.0.1:{self.api_port}"

    def command(self):
        return hub_command(self.config_file, self.config, self.public_port, self.hub_port, self.api_port)

    # --- life cycle ---
    def start(self):
        """Start the hub (it starts CHP); returns immediately."""
        assert self.proc is None or self.proc.poll() is not None, "hub already running"
        self.starts += 1
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n{self.start_marker}\n")
            log.flush()
            # Its own session: the hub and CHP form one process group that teardown can
            # kill as a whole (services are tracked by descendants()). cwd: the image's
            # WORKDIR, the volume.
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.state_dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self.proc

    @property
    def start_marker(self):
        """The line the log has before this start's output."""
        return f"===== hub start #{self.starts} ====="

    def wait_running(self, timeout=90):
        """Wait for JupyterHub's "now running" line of this start: by then it has started
        the proxy and every managed service (JupyterHub.start() logs it after them)."""
        self.wait_for_log("JupyterHub is now running", timeout, after=self.start_marker)

    def wait_ready(self, timeout=60):
        """Poll /hub/health through the proxy's public port; seconds from start to the first 200."""
        return wait_for_health(self.proc, f"{self.url}/hub/health", self.started_at, timeout, self.log_tail, "hub")

    def stop(self, timeout=30):
        """SIGTERM to the hub (it stops CHP and its services), then make sure all are gone.

        Returns the hub's exit code, or None if it had to be killed.
        """
        if self.proc is None:
            return None
        # Hub-managed services run in sessions of their own (LocalProcessSpawner), so
        # the process group does not hold them: remember the whole tree first.
        tree = self.descendants()
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        # What the hub left running after it exited (it should stop CHP and the
        # services itself; it does not wait for them to end).
        self.leftovers = wait_for_exits(tree) if code is not None else dict(tree)
        self.kill_all(tree)
        return code

    def kill_all(self, tree=None):
        """SIGKILL the hub, its process group (CHP) and the given descendants if still there."""
        if self.proc is None:
            return
        tree = self.descendants() if tree is None else tree
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, argv in tree.items():
            if process_argv(pid) == argv:  # the same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def wait_for_log(self, text, timeout=60, after=None):
        """Wait until the log holds text (after the marker `after`, if given); fails at once if the hub exits."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if after is not None:
                log = log.split(after, 1)[1] if after in log else ""
            if text in log:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the hub exited ({self.proc.returncode}) before logging {text!r}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the hub's log within {timeout} s\n{self.log_tail()}")
            time.sleep(0.1)

    def descendants(self):
        """{pid: argv} of the live processes the hub started, directly or not."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        return descendants(self.proc.pid)

    def wait_for_process(self, needle, timeout=20):
        """(pid, argv) of a process the hub started whose command line contains needle."""
        deadline = time.monotonic() + timeout
        while True:
            for pid, argv in self.descendants().items():
                if any(needle in arg for arg in argv):
                    return pid, argv
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    # --- inspection ---
    def log_text(self):
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=40):
        tail = self.log_text().splitlines()[-lines:]
        return "---- hub log (last lines) ----\n" + "\n".join(tail)

    def routes(self):
        resp = requests.get(
            f"{self.proxy_api}/api/routes",
            headers={"Authorization": f"token {self.proxy_token}"},
            timeout=5,
        )
        resp.raise_for_status()
        return resp.json()

    def db_rows(self, query, *args):
        """Rows of the hub's sqlite database (read-only)."""
        db = self.state_dir / "jupyterhub.sqlite"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(query, args).fetchall()
        finally:
            con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def xsrf_form(session, url, **fields):
    """GET a form page (which sets the _xsrf cookie) and return fields plus its _xsrf value."""
    resp = session.get(url, timeout=10)
    resp.raise_for_status()
    match = re.search(r'name="_xsrf"\s+value="([^"]+)"', resp.text)
    token = match.group(1) if match else session.cookies.get("_xsrf")
    assert token, f"no _xsrf field or cookie on {url}"
    return {"_xsrf": token, **fields}


def run_config_only(project, workdir, secrets_env=None, namespace=NAMESPACE, timeout=60):
    """Start the hub on a config that is expected to refuse; CompletedProcess of the attempt.

    The config cannot be loaded to find its URLs (it refuses): should it start after
    all, it listens on free loopback ports, not on the configured ones.
    """
    workdir = Path(workdir)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    config_file = install_config(project, workdir)
    env = hub_environment(project, workdir, secrets_env, namespace)
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "jupyterhub"), "--config", str(config_file),
            f"--JupyterHub.bind_url=http://127.0.0.1:{free_port()}",
            f"--JupyterHub.hub_bind_url=http://127.0.0.1:{free_port()}",
            f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{free_port()}",
        ],
        cwd=workdir / "state",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
