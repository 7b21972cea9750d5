"""The emulated node: its pod network, its images, and a kubelet that runs pods as given.

- **Network**: a Linux bridge of its own with a /24 (the node's address .1, pods from .2,
  Service addresses from .200), created when the cluster starts and removed when it
  stops. Each pod gets a sandbox: a "pause" process holding the pod's network, UTS and
  IPC namespaces, with a veth pair into the bridge, its own address, loopback and a
  default route through the node. So every pod has its own ports (the config's 8000,
  8001, 8081 as they are) and its own 127.0.0.1, as on a cluster.
- **Images**: `HostImage` stand-ins (this machine's root as the lower layer, plus files
  of their own: the test tools' environments in /opt or the tools' directory, a jovyan
  user) and `BuildahImage`s (an image in buildah's storage, mounted read-only as the
  lower layer).
  A name that is not registered fails to pull, as on a cluster.
- **Containers** run through support/container_init.py, which does what runc does with
  the spec the kubelet derives from the pod (support/pod_spec.py): the environment
  (downward API, Secrets, ConfigMaps, service links), the command, the user, group and
  supplementary groups, capabilities, no_new_privs, readOnlyRootFilesystem, volumes.
- **Volumes**: a claim is a directory the provisioner made root:root 0755 (a fresh
  file system's root); an emptyDir a new 0777 directory; Secrets, ConfigMaps and the
  projected service account token are files laid out as the kubelet's AtomicWriter does
  (a timestamped directory, ..data and one symlink per key), mounted read-only. With
  fsGroup the kubelet makes each volume that supports ownership management group-owned
  by it, group-writable and setgid, as `SetVolumeOwnership` does; without it, a claim
  stays root's.
- **Probes**: startup, readiness and liveness (httpGet, tcpSocket) from the node, with
  the spec's periods, timeouts and thresholds; a failed startup or liveness probe kills
  the container, and restartPolicy decides what follows (with the kubelet's back-off).

Root is needed (namespaces, mounts, the bridge).
"""

import asyncio
import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from support import pod_spec

CONTAINER_INIT = Path(__file__).with_name("container_init.py")
NET_LOCK = Path("/run/lock/jupyterhub-template-tests-net.lock")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
BACKOFF_START, BACKOFF_MAX = 10, 300  # the kubelet's container restart back-off, seconds


# Every process of an emulated node names the test process that made it, so that what a
# killed test run left (pods, sandboxes, bridges) can be found and removed by the next one.
OWNER_VARIABLE = "EMULATED_CLUSTER_OWNER"
BRIDGE_ALIAS = "emulated-cluster owner="
BUILDAH_PREFIX = "emulated-node-"  # + the owner's pid: buildah containers holding pulled images


def owned_env():
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", OWNER_VARIABLE: str(os.getpid())}


def _alive(pid):
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def reap_orphans():
    """Kill the sandboxes and containers, and delete the bridges, of test processes that are gone."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        owner = next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(OWNER_VARIABLE.encode() + b"=")), None)
        if owner is None or _alive(owner):
            continue
        with contextlib.suppress(OSError):
            for child in (entry / "task" / entry.name / "children").read_text().split():
                os.kill(int(child), signal.SIGKILL)  # a container's PID 1: its namespace goes with it
        with contextlib.suppress(OSError):
            os.kill(int(entry.name), signal.SIGKILL)
    if shutil.which("buildah"):
        listed = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True, text=True, check=False)
        for name in listed.stdout.split():
            if name.startswith(BUILDAH_PREFIX) and not _alive(name[len(BUILDAH_PREFIX):].split("-", 1)[0]):
                subprocess.run(["buildah", "umount", name], capture_output=True, check=False)
                subprocess.run(["buildah", "rm", name], capture_output=True, check=False)
    for link in json.loads(run(["ip", "-j", "link", "show", "type", "bridge"])):
        alias = link.get("ifalias", "")
        if alias.startswith(BRIDGE_ALIAS) and not _alive(alias[len(BRIDGE_ALIAS):]):
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True, check=False)


def run(argv, stdin=None):
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: {result.stderr.strip()}")
    return result.stdout


# --- The node's network -----------------------------------------------------------------


class Network:
    """A bridge with a /24 of the 10/8 that no route of this machine overlaps yet."""

    def __init__(self):
        self.bridge = f"ec{uuid.uuid4().hex[:8]}"
        NET_LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(NET_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # workers and scripts pick subnets one at a time
            reap_orphans()
            routes = json.loads(run(["ip", "-j", "-4", "route", "show"]))
            taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"]
            for _ in range(200):
                net = ipaddress.ip_network(f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24")
                if not any(net.overlaps(t) for t in taken):
                    break
            else:
                raise RuntimeError("no free /24 in 10.64.0.0/10 for the emulated node")
            self.net = net
            self.node_ip = str(net[1])
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "link", "set", self.bridge, "alias", f"{BRIDGE_ALIAS}{os.getpid()}"])
            # A fixed address: a bridge without one takes the lowest of its ports' addresses,
            # and changes it when that pod goes; the other pods' ARP entries for the node
            # and the Services then point nowhere for half a minute.
            mac = "02:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(5))
            run(["ip", "link", "set", self.bridge, "address", mac])
            run(["ip", "addr", "add", f"{self.node_ip}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
        self._pods = (str(ip) for ip in list(net.hosts())[1:198])
        self._services = (str(ip) for ip in list(net.hosts())[198:250])

    def pod_ip(self):
        return next(self._pods)

    def service_ip(self):
        ip = next(self._services)
        run(["ip", "addr", "add", f"{ip}/32", "dev", self.bridge])
        return ip

    def close(self):
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


class Sandbox:
    """A pod's "pause" process: its network (address, loopback, route), hostname and IPC."""

    def __init__(self, network, hostname, ip):
        self.network = network
        self.ip = ip
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--uts", "--ipc", "--",
             "sh", "-c", 'hostname "$0" && echo ready && exec sleep infinity', hostname],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, env=owned_env(),
        )  # fmt: skip
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the pod sandbox did not start: {line!r}")
        self.pid = self.proc.pid
        self.veth = f"ev{uuid.uuid4().hex[:10]}"
        run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", str(self.pid)])
        run(["ip", "link", "set", self.veth, "master", network.bridge, "up"])
        run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "ip", "-batch", "-"],
            stdin=f"link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\nroute add default via {network.node_ip}\n",
        )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)


# --- Images -------------------------------------------------------------------------------


class HostImage:
    """A stand-in image: this machine's root file system plus files of its own.

    config: the OCI image config's fields (User, Entrypoint, Cmd, Env, WorkingDir);
    files: {container path: (host file or None for a directory, mode, uid, gid)};
    reach: host paths the image's user must be able to reach (the test tools' Python, for
    instance): every directory above them becomes traversable in the image's layer.
    """

    def __init__(self, name, config, files=None, reach=()):
        self.name = name
        self.config = config
        self.files = dict(files or {})
        self.reach = [str(p) for p in reach]
        for path in reach:
            for parent in Path(path).parents:
                if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
                    info = os.stat(parent)
                    self.files.setdefault(str(parent), (None, (info.st_mode & 0o7777) | 0o111, info.st_uid, info.st_gid))

    def pull(self):
        """(lower directory, release callable)."""
        return "/", lambda: None

    def hidden_by(self, mount_paths):
        """The paths this image needs that a volume mounted at one of mount_paths would hide."""
        return [p for p in self.reach for m in mount_paths if p == m or p.startswith(m.rstrip("/") + "/")]

    def layer(self):
        entries = []
        for path, (source, mode, uid, gid) in sorted(self.files.items()):
            entries.append({"path": path, "kind": "dir" if source is None else "file", "source": str(source or ""),
                            "mode": mode, "uid": uid, "gid": gid})  # fmt: skip
        return entries

    def read(self, path):
        """A file of the image (for /etc/passwd and /etc/group)."""
        if path in self.files and self.files[path][0]:
            return Path(self.files[path][0]).read_text()
        return Path(path).read_text() if Path(path).is_file() else ""


class BuildahImage:
    """An image in buildah's storage: pulled as a working container, its root mounted."""

    def __init__(self, name, ref, buildah=("buildah",)):
        self.name = name
        self.ref = ref
        self.buildah = tuple(buildah)
        self.config = json.loads(run([*self.buildah, "inspect", "--type", "image", ref]))["OCIv1"]["config"]
        self._files = {}

    def pull(self):
        container = f"{BUILDAH_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        run([*self.buildah, "from", "--pull-never", "--name", container, self.ref])
        try:
            lower = run([*self.buildah, "mount", container]).strip()
        except RuntimeError:
            subprocess.run([*self.buildah, "rm", container], capture_output=True, check=False)
            raise

        def release():
            subprocess.run([*self.buildah, "umount", container], capture_output=True, check=False)
            subprocess.run([*self.buildah, "rm", container], capture_output=True, check=False)

        self._root = lower
        return lower, release

    def layer(self):
        return []

    def read(self, path):
        if path not in self._files:
            lower, release = self.pull()
            try:
                file = Path(lower) / path.lstrip("/")
                self._files[path] = file.read_text() if file.is_file() else ""
            finally:
                release()
        return self._files[path]


def passwd_with(base, entry):
    """/etc/passwd (or /etc/group) text with entry added unless its uid (gid) is there:
    the third field in both files."""
    number = entry.split(":")[2]
    lines = [line for line in base.splitlines() if line]
    if not any(line.split(":")[2:3] == [number] for line in lines):
        lines.append(entry)
    return "\n".join(lines) + "\n"


# --- Volumes ------------------------------------------------------------------------------


def set_volume_ownership(path, fs_group):
    """What the kubelet's SetVolumeOwnership does with fsGroup: group fsGroup, g+rw, dirs g+xs."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            info = os.lstat(name)
            if os.path.islink(name):
                continue
            os.lchown(name, -1, fs_group)
            mask = 0o660 | (0o2110 if os.path.isdir(name) else 0)
            os.chmod(name, (info.st_mode & 0o7777) | mask)


def write_files(directory, files, mode, fs_group):
    """A Secret, ConfigMap or projected volume as the kubelet's AtomicWriter lays it out: the
    files (root's, mode as given) in a timestamped directory that the symlink ..data points
    to, and one symlink per key to ..data/<key>, so a program that resolves its own path
    finds its siblings there. Written anew each time (a container's restart)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    stamp = directory / time.strftime("..%Y_%m_%d_%H_%M_%S.0000000001", time.gmtime())
    stamp.mkdir()
    for key, data in files.items():
        path = stamp / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.chown(path, 0, fs_group if fs_group is not None else 0)
        os.chmod(path, mode if fs_group is None else mode | 0o040)
    os.chmod(stamp, 0o755)
    (directory / "..data").symlink_to(stamp.name)
    for top in sorted({key.split("/", 1)[0] for key in files}):
        (directory / top).symlink_to(f"..data/{top}")
    os.chmod(directory, 0o755)


# --- Probes -------------------------------------------------------------------------------


async def probe_once(probe, pod, ip):
    """True if the probe succeeds (httpGet: 200-399; tcpSocket: the port accepts)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = pod_spec.container_port(pod, get["port"])
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(get.get("host") or ip, port), timeout)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(f"GET {get.get('path', '/')} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), timeout)
            parts = line.split()
            return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
    if "tcpSocket" in probe:
        port = pod_spec.container_port(pod, probe["tcpSocket"]["port"])
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            writer.close()
            return True
        except (OSError, asyncio.TimeoutError):
            return False
    raise NotImplementedError(f"probe {sorted(probe)} is not emulated")


# --- The container process ----------------------------------------------------------------


class ContainerProcess:
    """One run of a container: support/container_init.py with its spec, its log file."""

    def __init__(self, spec, spec_path, log_path):
        spec_path.write_text(json.dumps(spec))
        os.chmod(spec_path, 0o600)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", str(CONTAINER_INIT), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=owned_env(),
            )  # fmt: skip
        self.started_at = time.time()
        self.started_at_monotonic = time.monotonic()
        self.killed = False

    @property
    def pid(self):
        return self.proc.pid

    def init_pid(self):
        """The host pid of the container's PID 1 (the launcher's child), or None."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def signal(self, signum):
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signum)

    def kill(self):
        """SIGKILL to the container's PID 1: the kernel ends its whole PID namespace."""
        self.killed = True
        pid = self.init_pid()
        for target in (pid, self.proc.pid):
            if target:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)


def secret_volume_files(obj, items=None):
    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} if obj.get("kind") == "Secret" else {
        k: v.encode() for k, v in (obj.get("data") or {}).items()
    }
    if items:
        data = {item["path"]: data[item["key"]] for item in items}
    return data
