"""Run a baked project's jupyterhub_config.py with the real `jupyterhub` and CHP, on loopback.

Only what must differ outside the hub's pod is changed, on the command line and in the
environment (the generated files are copied unchanged):

- ports: free loopback ports instead of 8000 / 8081 / 8001, everything bound to 127.0.0.1;
- the proxy's pid file: in the test's directory, not the shared /tmp;
- JUPYTERHUB_STATE_DIR (the volume at /srv/jupyterhub in the pod): a temporary directory;
- POD_NAMESPACE (the downward API), a kube config whose API server is a closed port;
- the Secret's variables (hub-secrets.env), given by the caller;
- CONFIGPROXY_AUTH_TOKEN: ours, so that the tests can read CHP's route table.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

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


def read_env_file(path):
    """NAME=value lines of a kustomize `envs:` file (what the Secret would hold)."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


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


def hub_environment(workdir, secrets_env=None, namespace=NAMESPACE):
    """The environment the hub container would have, pointing at test locations."""
    workdir = Path(workdir)
    env = {k: v for k, v in os.environ.items() if not LEAKY_ENV.match(k)}
    env["PATH"] = os.pathsep.join([str(CHP_BIN), str(VENV_BIN), env.get("PATH", "")])
    env["JUPYTERHUB_STATE_DIR"] = str(workdir / "state")
    if namespace is not None:
        env["POD_NAMESPACE"] = namespace
    env["KUBECONFIG"] = str(write_kube_config(workdir / "kubeconfig", f"https://127.0.0.1:{free_port()}"))
    env.update(secrets_env or {})
    return env


def install_config(project, workdir):
    """The two config files side by side, as the Dockerfile puts them in /usr/local/etc/jupyterhub/."""
    etc = Path(workdir) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name in ("jupyterhub_config.py", "authenticator_config.py"):
        shutil.copy2(Path(project) / name, etc / name)
    return etc / "jupyterhub_config.py"


def hub_command(config, workdir, public_port, hub_port, api_port):
    """The image's CMD plus the overrides a run outside the pod needs."""
    return [
        str(VENV_BIN / "jupyterhub"),
        "--config", str(config),
        # The config binds the proxy and the hub to all interfaces on fixed ports, as
        # in the pod; here everything is on loopback, on ports that are free.
        f"--JupyterHub.bind_url=http://127.0.0.1:{public_port}",
        f"--JupyterHub.hub_bind_url=http://127.0.0.1:{hub_port}",
        f"--JupyterHub.hub_connect_url=http://127.0.0.1:{hub_port}",
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{api_port}",
        # /tmp/jupyterhub-proxy.pid is shared by every hub on this machine, and a hub
        # kills the process a stale pid file names.
        f"--ConfigurableHTTPProxy.pid_file={Path(workdir) / 'proxy.pid'}",
    ]


class HubProcess:
    """One baked project's hub (and the CHP it starts), restartable on the same state."""

    def __init__(self, project, workdir, secrets_env=None, namespace=NAMESPACE):
        self.project = Path(project)
        self.workdir = Path(workdir)
        self.state_dir = self.workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config = install_config(project, self.workdir)
        self.proxy_token = secrets.token_hex(32)
        self.env = hub_environment(self.workdir, secrets_env, namespace)
        self.env["CONFIGPROXY_AUTH_TOKEN"] = self.proxy_token
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
        return hub_command(self.config, self.workdir, self.public_port, self.hub_port, self.api_port)

    # --- life cycle ---
    def start(self):
        """Start the hub (it starts CHP); returns immediately."""
        assert self.proc is None or self.proc.poll() is not None, "hub already running"
        self.starts += 1
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n===== hub start #{self.starts} =====\n")
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

    def wait_ready(self, timeout=60):
        """Poll /hub/health through the proxy's public port; seconds from start to the first 200."""
        return wait_for_health(self.proc, f"{self.url}/hub/health", self.started_at, timeout, self.log_tail, "hub")

    def stop(self, timeout=20):
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
        # services itself); given a moment, since it does not wait for them.
        deadline = time.monotonic() + 5
        while code is not None and time.monotonic() < deadline:
            if not any(process_argv(pid) == argv for pid, argv in tree.items()):
                break
            time.sleep(0.1)
        self.leftovers = {pid: argv for pid, argv in tree.items() if process_argv(pid) == argv}
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

    def descendants(self):
        """{pid: argv} of the live processes the hub started, directly or not."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        return descendants(self.proc.pid)

    def wait_for_process(self, needle, timeout=20):
        """(pid, argv) of a process the hub started whose command line contains needle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid, argv in self.descendants().items():
                if any(needle in arg for arg in argv):
                    return pid, argv
            time.sleep(0.2)
        return None

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
    """Start the hub on a config that is expected to refuse; CompletedProcess of the attempt."""
    workdir = Path(workdir)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    config = install_config(project, workdir)
    env = hub_environment(workdir, secrets_env, namespace)
    proc = subprocess.Popen(
        hub_command(config, workdir, free_port(), free_port(), free_port()),
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
