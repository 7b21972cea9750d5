"""A baked project's hub, deployed as its rendered overlay says, on the emulated cluster.

`HubDeployment` applies the overlay (`kubectl kustomize`) to an emulated cluster
(tests/emulated_cluster.py) whose namespace enforces the restricted Pod Security profile,
and the cluster runs the hub's pod as a node would: the Deployment's environment (the
downward API's values resolved by the kubelet, the Secret's variables), its volumes at
their mountPaths (the claim, owned as fsGroup makes it, and the emptyDir), its user,
groups, capabilities and read-only root file system, its ports and probes, its service
account token. Nothing about the pod is set by the tests: what differs between tests is
the image only:

- `hub_standin_image(project)`: the project's Dockerfile read as an image config
  (ENTRYPOINT, CMD, USER, WORKDIR, any file it copies into the config directory, as
  projects generated before the configuration became a ConfigMap did) over this
  machine's root, with the test tools' JupyterHub, KubeSpawner and
  authenticators (the versions k8s-hub pins: requirements-dev.txt) and the proxy the
  Dockerfile pins; the hub, image and journey tests that need no image build use it;
- an image that buildah built from the Dockerfile (tests/test_image.py).

The tests reach the hub as users do, through the Ingress (a relay to the Service, as an
ingress controller would), and the proxy's API as an operator would, with
`kubectl port-forward` to the pod's loopback and the token read from the proxy's
environment.

`loopback_problems(config)` is the check that the proxy reaches the hub, and the hub the
proxy's API, over loopback, as the pod's configuration says; `pod_environment(render)` is
the hub container's environment as the kubelet makes it, for the tests that load the
configuration in this process.
"""

import contextlib
import copy
import os
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from support import fast_yaml, pod_spec
from support.bakery import patched_environ
from support.envfile import env_file
from support.kubelet import HostImage, passwd_with
from support.tools import CHP

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CHP_BIN = CHP / "node_modules" / ".bin"
# The label a platform puts on the namespaces it gives out, and the strictest it may:
# every pod of the project must be admitted under it.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
CONTAINER_NAME = "hub"


# --- Processes (host view) ------------------------------------------------------------------


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


def process_environ(pid):
    try:
        items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def process_ids(pid):
    """(uids, gids, supplementary groups) of a process, as /proc shows them."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in status.splitlines() if ":" in line}
    return [int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]], sorted(int(x) for x in fields.get("Groups", []))


def container_path(pid, path):
    """A path of the container that process pid runs in, seen from the node: under
    /proc/<pid>/root, with symbolic links (/var/run -> /run) followed inside that root."""
    from support.container_init import inside

    return Path(inside(f"/proc/{pid}/root", path))


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
    """Wait until each of {pid: argv} has exited (or is another process by now); those still running."""
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


def wait_for_health(health_url, started_at, timeout, log_tail, what, alive=lambda: True):
    """Poll health_url until it answers 200; seconds since started_at. Fails at once if alive() turns false."""
    deadline = started_at + timeout
    last = None
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"the {what} stopped before it was ready\n{log_tail()}")
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


# --- The project as the cluster sees it -------------------------------------------------------


def render(project, overlay="development"):
    """The overlay as `kubectl kustomize` renders it (a list of objects)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(Path(project) / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"kubectl kustomize {overlay}: {out.stderr}"
    return [doc for doc in fast_yaml.load_all(out.stdout) if doc]


def the(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in the render, found {len(found)}"
    return found[0]


def hub_deployment(objects):
    """The hub's Deployment (its pods are labelled app.kubernetes.io/component: hub; its name
    depends on the overlay: hub, hub-dev)."""
    found = [
        o for o in objects
        if o["kind"] == "Deployment" and o["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "hub"
    ]  # fmt: skip
    assert len(found) == 1, f"expected one hub Deployment in the render, found {len(found)}"
    return found[0]


def proxy_deployment(objects):
    """proxy=separate: the proxy's Deployment (pods labelled app.kubernetes.io/component: proxy);
    None when the proxy runs in the hub's container."""
    found = [
        o for o in objects
        if o["kind"] == "Deployment" and o["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "proxy"
    ]  # fmt: skip
    assert len(found) <= 1, f"expected at most one proxy Deployment in the render, found {len(found)}"
    return found[0] if found else None


def hub_container(objects):
    [container] = [c for c in hub_deployment(objects)["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    return container


def with_secrets(objects, values):
    """The render with the hub's Secret holding exactly `values` (the generated one replaced,
    or, with existing-secret, the one an operator creates by hand)."""
    import base64

    objects = copy.deepcopy(objects)
    container = hub_container(objects)
    names = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if "secretRef" in e]
    if not names:
        return objects
    [name] = names
    namespace = hub_deployment(objects)["metadata"]["namespace"]
    objects = [o for o in objects if not (o["kind"] == "Secret" and o["metadata"]["name"] == name)]
    objects.append({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    })  # fmt: skip
    return objects


def dockerfile_config(project):
    """The final stage's image config as the Dockerfile states it."""
    return dockerfile_image(project)[0]


def dockerfile_image(project):
    """The final stage's image config, and the files it copies from the build context into
    /usr/local/etc/jupyterhub/ ({name: mode}): none today (the configuration is a ConfigMap);
    a project generated before that copied its config files there."""
    text = (Path(project) / "Dockerfile").read_text(encoding="utf-8")
    final = text.rsplit("\nFROM ", 1)[1]
    import json as _json

    config = {
        "User": re.findall(r"^USER (\S+)$", final, re.M)[-1],
        "WorkingDir": re.findall(r"^WORKDIR (\S+)$", final, re.M)[-1],
        "Entrypoint": _json.loads(re.findall(r"^ENTRYPOINT (\[.*\])$", final, re.M)[-1]),
        "Cmd": _json.loads(re.findall(r"^CMD (\[.*\])$", final, re.M)[-1]),
    }
    copied = {}
    for flags, names in re.findall(r"^COPY ((?:--\S+ )*)(.+) /usr/local/etc/jupyterhub/$", final, re.M):
        mode = re.search(r"--chmod=([0-7]+)", flags)
        for name in names.split():
            copied[name] = int(mode.group(1), 8) if mode else 0o644
    return config, copied


def config_volume(objects):
    """The hub's configuration as the pod gets it: (the mountPath of the ConfigMap volume
    that holds it, {file name: text}) from the rendered Deployment and ConfigMap."""
    deployment = hub_deployment(objects)
    container = hub_container(objects)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes") or []}
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    found = [(m["mountPath"], volumes[m["name"]]["configMap"]["name"])
             for m in container.get("volumeMounts") or [] if "configMap" in volumes[m["name"]]]  # fmt: skip
    assert len(found) == 1, f"the hub container mounts {len(found)} ConfigMap volumes, not one"
    [(mount_path, name)] = found
    assert name in maps, f"the hub container mounts ConfigMap/{name}, which the render does not hold"
    return mount_path, maps[name]["data"]


def image_config_file(project):
    """The config file the image's command names (jupyterhub --config <path>)."""
    cmd = dockerfile_config(project)["Cmd"]
    return Path(cmd[cmd.index("--config") + 1])


def config_file_path(project, objects):
    """The config file the image's command names, which must lie in the mounted ConfigMap:
    its key there."""
    path = image_config_file(project)
    mount_path, files = config_volume(objects)
    key = os.path.relpath(path, mount_path)
    assert key in files, f"the image's command reads {path}, which the ConfigMap at {mount_path} does not hold"
    return key


def install_config(project, workdir, objects=None):
    """The ConfigMap's files side by side, as the kubelet puts them where the Deployment
    mounts them (or, for a project generated before the configuration became a ConfigMap,
    the files its Dockerfile copies); the file the image's command names."""
    objects = render(project) if objects is None else objects
    etc = Path(workdir) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    if not any(o["kind"] == "ConfigMap" for o in objects):
        for name in dockerfile_image(project)[1]:
            shutil.copy2(Path(project) / name, etc / name)
        return etc / image_config_file(project).name
    for name, text in config_volume(objects)[1].items():
        (etc / name).write_text(text, encoding="utf-8")
    return etc / config_file_path(project, objects)


def etc_file_with(workdir, path, line):
    target = Path(workdir) / "image-files" / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(passwd_with(Path(path).read_text(), line))
    return target


def hub_standin_image(project, name, workdir):
    """The hub image without a build: the Dockerfile's config over this machine's root, with the
    test tools' hub packages and proxy (README, "What is tested": their versions are k8s-hub's)."""
    config, copied = dockerfile_image(project)
    workdir = Path(workdir)
    python = Path(os.path.realpath(sys.executable))
    files = {f"/usr/local/etc/jupyterhub/{n}": (Path(project) / n, mode, 0, 0) for n, mode in copied.items()}
    # k8s-hub: jovyan (uid 1000, group 1000) owns the WORKDIR.
    files["/etc/passwd"] = (etc_file_with(workdir, "/etc/passwd", "jovyan:x:1000:1000:Default user:/home/jovyan:/bin/bash"), 0o644, 0, 0)
    files["/etc/group"] = (etc_file_with(workdir, "/etc/group", "jovyan:x:1000:"), 0o644, 0, 0)
    files[config["WorkingDir"]] = (None, 0o755, 1000, 1000)
    files["/home/jovyan"] = (None, 0o755, 1000, 1000)
    config = dict(config, Env=[f"PATH={CHP_BIN}:{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"])
    return HostImage(name, config, files, reach=[VENV_BIN / "python", python, CHP_BIN / "configurable-http-proxy"])


def pod_environment(objects, secrets=None, pod_name="hub-0123456789-abcde", pod_ip="10.0.0.2", workdir=None):
    """The hub container's environment as the kubelet would make it from the render (the
    Secret's values as given, or as rendered); with workdir, a value that is a path under
    one of the container's volume mounts is moved to workdir/volumes/<volume name>/, so
    that a configuration loaded in this process uses a directory of the test's."""
    objects = with_secrets(objects, secrets) if secrets is not None else objects
    deployment = hub_deployment(objects)
    template = copy.deepcopy(deployment["spec"]["template"])
    namespace = deployment["metadata"]["namespace"]
    pod = {"metadata": dict(template.get("metadata") or {}, name=pod_name, namespace=namespace, uid="0"),
           "spec": template["spec"], "status": {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}}  # fmt: skip
    container = hub_container(objects)
    store = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("Secret", "ConfigMap")}
    services = [dict(s, spec=dict(s["spec"], clusterIP=f"10.96.0.{i + 10}")) for i, s in enumerate(o for o in objects if o["kind"] == "Service")]
    env = pod_spec.environment(pod, container, [], store, services, {"name": "node", "ip": "10.0.0.1", "allocatable": {"cpu": "2", "memory": "8Gi"}})
    if workdir is not None:
        mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
        for key, value in env.items():
            for mount_path, volume in mounts.items():
                if value.startswith(mount_path + "/"):
                    local = Path(workdir) / "volumes" / volume
                    local.mkdir(parents=True, exist_ok=True)
                    env[key] = str(local / value[len(mount_path) + 1:])
                    break
    return env


# os.environ is exactly env inside the block, and exactly what it was after it.
environment = patched_environ


def load_config(config_file, env):
    """The traitlets Config JupyterHub gets from config_file (and the file it loads) under env."""
    from traitlets.config import PyFileConfigLoader

    config_file = Path(config_file)
    with environment(env):
        return PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()


def local_environment(project, workdir, objects=None, secrets=None):
    """For a configuration loaded in this process: the pod's environment (paths moved into
    workdir), plus what this process needs to run Python (a kube config is never read)."""
    objects = render(project) if objects is None else objects
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR", "HOME")}
    env.update(pod_environment(objects, secrets, workdir=workdir))
    return env


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


# --- The hub on the emulated cluster -------------------------------------------------------------


class HubDeployment:
    """A baked project's overlay on an emulated cluster; `with HubDeployment(...) as hub:`.

    image: a kubelet image for the hub (default: hub_standin_image); extra_images: more
    (the users' image); secrets: the values of the hub's Secret (default: the rendered
    one; with existing-secret, required, as an operator creates it); objects: the render
    to apply (default: the overlay's), for tests that plant a fault in it.
    """

    def __init__(self, project, workdir, image=None, extra_images=(), overlay="development", secrets=None,
                 objects=None, namespace_labels=RESTRICTED, wait=True, cluster=None):  # fmt: skip
        """cluster: an emulated cluster another HubDeployment runs (a second hub beside it),
        which this one neither starts nor stops."""
        from emulated_cluster import Cluster

        self.project = Path(project)
        self.overlay = overlay
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.objects = render(project, overlay) if objects is None else copy.deepcopy(objects)
        self.secrets_given = secrets
        if secrets is not None:
            self.objects = with_secrets(self.objects, secrets)
        self.namespace = hub_deployment(self.objects)["metadata"]["namespace"]
        self.deployment_name = hub_deployment(self.objects)["metadata"]["name"]
        # proxy=separate: configurable-http-proxy's own Deployment (None: it runs in the hub's pod).
        proxy = proxy_deployment(self.objects)
        self.proxy_deployment_name = proxy["metadata"]["name"] if proxy else None
        self.image_name = hub_container(self.objects)["image"]
        self.image = image or hub_standin_image(project, self.image_name, self.workdir)
        mounts = [m["mountPath"] for m in hub_container(self.objects).get("volumeMounts") or []]
        hidden = self.image.hidden_by(mounts) if hasattr(self.image, "hidden_by") else []
        assert not hidden, (
            f"the test tools the stand-in hub image runs ({hidden[0]}) lie under a path the hub's pod mounts a"
            f" volume over ({', '.join(mounts)}): set TEMPLATE_TEST_TOOLS to a directory elsewhere (README, 'What is tested')"
        )
        self.extra_images = list(extra_images)
        self.namespace_labels = namespace_labels
        self.wait = wait
        self.owns_cluster = cluster is None
        self.cluster = Cluster(self.workdir) if cluster is None else cluster
        self.pods_seen = []
        self._url = None

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            if self.owns_cluster:
                stack.callback(self.cluster.stop)
                self.cluster.start()
            if not any(o["kind"] == "Namespace" for o in self.objects) and self.namespace not in self.cluster.namespaces:
                self.cluster.create_namespace(self.namespace, self.namespace_labels)
            self.cluster.add_image(self.image)
            for image in self.extra_images:
                self.cluster.add_image(image)
            self.started_at = time.monotonic()
            self.cluster.apply(self.objects)
            if self.wait:
                self.wait_ready()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        self._stack.close()

    # --- the pod ---
    def pods(self, include_terminating=False):
        return [p["metadata"]["name"] for p in self.cluster.deployment_pods(self.namespace, self.deployment_name, include_terminating)]

    @property
    def pod(self):
        """The hub's current pod (the newest that is not terminating)."""
        pods = self.pods()
        assert pods, f"the hub has no pod\n{self.cluster.log_tail()}"
        if pods[-1] not in self.pods_seen:
            self.pods_seen.append(pods[-1])
        return pods[-1]

    def pod_object(self):
        return self.cluster.pods(self.namespace)[self.pod]

    def container(self):
        return self.cluster.container(self.namespace, self.pod)

    def exec(self, argv, user, timeout=60, input=None, text=True, container_env=False):
        """argv in the hub's container as `kubectl exec` runs it: in the container's mount, PID
        and network namespaces and root, as user ("uid:gid"); the CompletedProcess. input: its
        stdin (else this process's); container_env: with the container's environment (as
        `kubectl exec` gives it: the image's and the Deployment's variables), not this process's."""
        running = self.container()
        assert running, f"the hub's container is not running\n{self.log_tail()}"
        inside = [pid for pid in descendants(running.pid) if os.readlink(f"/proc/{pid}/root") != "/"]
        assert inside, "no process of the hub's container has entered its root"
        uid, gid = user.split(":")
        return subprocess.run(
            [shutil.which("nsenter"), "-t", str(min(inside)), "-m", "-p", "-n", "-r", "-w", "-S", uid, "-G", gid, "--", *argv],
            input=input, capture_output=True, text=text, timeout=timeout, check=False,
            env=process_environ(min(inside)) if container_env else None,
        )  # fmt: skip

    def wait_ready(self, timeout=180):
        """Until the hub's pod (and a separate proxy's) is Ready (its readiness probe passed);
        seconds since started_at."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.pods()
            if pods and self.cluster.pod_ready(self.namespace, pods[-1]) and self.proxy_ready():
                self.pod  # noqa: B018  (remembered in pods_seen)
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        raise AssertionError(f"the hub's pod was not ready within {timeout} s\n{self.log_tail()}")

    # --- proxy=separate: the proxy's pod ---
    def proxy_pods(self):
        if not self.proxy_deployment_name:
            return []
        return [p["metadata"]["name"] for p in self.cluster.deployment_pods(self.namespace, self.proxy_deployment_name)]

    def proxy_ready(self):
        """True when the proxy answers: always with proxy=in-hub (the hub's readiness says it)."""
        if not self.proxy_deployment_name:
            return True
        pods = self.proxy_pods()
        return bool(pods) and self.cluster.pod_ready(self.namespace, pods[-1])

    @property
    def proxy_pod(self):
        """The pod configurable-http-proxy runs in: its own (proxy=separate) or the hub's."""
        if not self.proxy_deployment_name:
            return self.pod
        pods = self.proxy_pods()
        assert pods, f"the proxy has no pod\n{self.cluster.log_tail()}"
        return pods[-1]

    def health_seconds(self, timeout=180):
        """Seconds from the start of the hub's container to its first 200 on /hub/health at the
        pod's public port (what the probes ask, without their period)."""
        self.cluster.wait_for(lambda: self.pods() and self.container(), timeout, "the hub's container")
        running = self.container()
        pod = self.pod_object()
        # The proxy's public port when the proxy is in the hub's pod, else the hub's own.
        port = pod_spec.container_port(pod, "http") or pod_spec.container_port(pod, "hub")
        url = f"http://{pod['status']['podIP']}:{port}/hub/health"
        return wait_for_health(url, running.started_at_monotonic, timeout, self.log_tail, "hub", alive=lambda: running.proc.poll() is None)

    def restart(self, timeout=180):
        """`kubectl rollout restart deployment/hub`: seconds until the new pod is ready."""
        self.started_at = time.monotonic()
        old = self.pod
        self.cluster.rollout_restart(self.namespace, self.deployment_name)
        self.cluster.wait_for(lambda: old not in self.pods(include_terminating=True) and self.pods(), timeout, "the new hub pod")
        return self.wait_ready(timeout)

    def reconfigure(self, change, timeout=180):
        """A changed setting, deployed as the README says: `change(hub_config_dir)` edits
        hub-config/ in a copy of the project, the overlay is rendered again with kustomize and
        applied (`kubectl apply -k`): a new ConfigMap, a new pod template, a new hub pod.
        Seconds until the new pod is ready; the new render becomes this deployment's."""
        copy_dir = Path(tempfile.mkdtemp(prefix="reconfigured-", dir=self.workdir)) / self.project.name
        shutil.copytree(self.project, copy_dir, symlinks=True)
        change(copy_dir / "hub-config")
        objects = render(copy_dir, self.overlay)
        if self.secrets_given is not None:
            objects = with_secrets(objects, self.secrets_given)
        old = self.pod
        self.started_at = time.monotonic()
        self.cluster.apply(objects)
        self.objects = objects
        self.cluster.wait_for(lambda: old not in self.pods(include_terminating=True) and self.pods(), timeout, "the new hub pod")
        return self.wait_ready(timeout)

    def container_status(self, pod=None):
        pod = self.cluster.pods(self.namespace).get(pod or self.pod)
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return statuses[0] if statuses else {}

    def terminated(self, pod=None, timeout=120):
        """The container's first termination ({exitCode, ...}) once it has happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.container_status(pod)
            state = status.get("lastState", {}).get("terminated") or status.get("state", {}).get("terminated")
            if state:
                return state
            time.sleep(0.1)
        raise AssertionError(f"the hub's container did not end within {timeout} s\n{self.log_tail()}")

    # --- what users and operators reach ---
    @property
    def url(self):
        """The hub's public address, through the Ingress."""
        if self._url is None:
            [host] = [rule["host"] for o in self.objects if o["kind"] == "Ingress" for rule in o["spec"]["rules"]]
            self._url = self.cluster.ingress_url(self.namespace, host)
        return self._url

    def processes(self):
        """{pid: argv} of the hub container's processes (host pids)."""
        running = self.container()
        return descendants(running.pid) if running else {}

    def find_process(self, needle, timeout=20):
        """(pid, argv) of a process of the container whose command line contains needle."""
        deadline = time.monotonic() + timeout
        while True:
            for pid, argv in self.processes().items():
                if any(needle in arg for arg in argv):
                    return pid, argv
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    def proxy_token(self):
        """CONFIGPROXY_AUTH_TOKEN, from the proxy's environment (`kubectl exec ... env`)."""
        running = self.cluster.container(self.namespace, self.proxy_pod)
        found = [pid for pid, argv in (descendants(running.pid) if running else {}).items()
                 if any("configurable-http-proxy" in arg for arg in argv)]  # fmt: skip
        assert found, f"no configurable-http-proxy in the proxy's container\n{self.log_tail()}"
        return process_environ(found[0])["CONFIGPROXY_AUTH_TOKEN"]

    def proxy_api_port(self, config):
        return url_port(_get(config, "ConfigurableHTTPProxy", "api_url", DEFAULT_PROXY_API_URL))

    def routes(self, config=None):
        """The proxy's route table, through `kubectl port-forward` to its API port in its pod."""
        config = config or self.config()
        local = self.cluster.port_forward(self.namespace, self.proxy_pod, self.proxy_api_port(config))
        resp = requests.get(f"http://127.0.0.1:{local}/api/routes", headers={"Authorization": f"token {self.proxy_token()}"}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def config(self):
        """The configuration as the hub loads it (in this process, from the same files and environment)."""
        if not hasattr(self, "_config"):
            scratch = Path(tempfile.mkdtemp(prefix="hub-config-", dir=self.workdir))
            self._config = load_config(install_config(self.project, scratch, self.objects), local_environment(self.project, scratch, self.objects))
        return self._config

    # --- the volumes, as the node holds them ---
    def volume(self, name):
        """The host directory of one of the hub pod's volumes (a claim's, or an emptyDir)."""
        pod = self.pod_object()
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == name)
        if "persistentVolumeClaim" in volume:
            return self.cluster.volume_path(self.namespace, volume["persistentVolumeClaim"]["claimName"])
        return self.cluster.workdir / "pods" / f"{self.namespace}_{self.pod}" / "volumes" / name

    def mount_of(self, path):
        """The volume mounted at path in the hub container: (volume name, path inside it)."""
        container = next(c for c in self.pod_object()["spec"]["containers"] if c["name"] == CONTAINER_NAME)
        for mount in sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"])):
            base = mount["mountPath"].rstrip("/")
            if path == base or path.startswith(base + "/"):
                return mount["name"], path[len(base):].lstrip("/")
        return None

    def host_path(self, path):
        """Where a path of the hub container lies on the node (it must be on a volume)."""
        found = self.mount_of(path)
        assert found, f"{path} is on no volume of the hub's pod"
        volume, inner = found
        return self.volume(volume) / inner

    def db_rows(self, query, *args):
        """Rows of the hub's sqlite database (read-only), on its volume."""
        db = self.host_path("/srv/jupyterhub/jupyterhub.sqlite")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(query, args).fetchall()
        finally:
            con.close()

    # --- logs ---
    def log_text(self, pod=None):
        """`kubectl logs` of the hub: every pod's, oldest first, each after a line naming it (and
        a separate proxy's pods after them)."""
        names = [pod] if pod else self.pods_seen + [p for p in self.pods(True) if p not in self.pods_seen] + self.proxy_pods()
        return "".join(f"\n===== pod {name} =====\n{self.all_runs(name)}" for name in names)

    def all_runs(self, pod):
        runs = [c for ns, name, c in self.cluster.container_runs if (ns, name) == (self.namespace, pod)]
        return "".join(c.log_path.read_text(encoding="utf-8", errors="replace") for c in runs)

    def log_tail(self, lines=40):
        tail = self.log_text().splitlines()[-lines:]
        return "---- hub log (last lines) ----\n" + "\n".join(tail) + "\n" + self.cluster.log_tail(15)

    def wait_for_log(self, text, timeout=60, pod=None):
        """Wait until the pod's log holds text."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text(pod or self.pod):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the hub's log within {timeout} s\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_running(self, timeout=90):
        """JupyterHub's "now running" line of the current pod: by then it has started the proxy
        and every managed service (JupyterHub.start() logs it after them)."""
        self.wait_for_log("JupyterHub is now running", timeout)


def xsrf_form(session, url, **fields):
    """GET a form page (which sets the _xsrf cookie) and return fields plus its _xsrf value."""
    resp = session.get(url, timeout=10)
    resp.raise_for_status()
    match = re.search(r'name="_xsrf"\s+value="([^"]+)"', resp.text)
    token = match.group(1) if match else session.cookies.get("_xsrf")
    assert token, f"no _xsrf field or cookie on {url}"
    return {"_xsrf": token, **fields}


def run_until_exit(project, workdir, secrets=None, objects=None, timeout=120):
    """Deploy a hub that is expected to refuse to start; (its first exit code, its log)."""
    with HubDeployment(project, workdir, secrets=secrets, objects=objects, wait=False) as hub:
        hub.cluster.wait_for(lambda: hub.pods(), 60, "the hub's pod")
        state = hub.terminated(timeout=timeout)
        return state["exitCode"], hub.log_text(hub.pod).strip()
