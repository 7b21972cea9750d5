"""A small, strict stand-in for a one-node Kubernetes cluster, for the hub, image and journey tests.

No API server can be installed here, so this emulates, on this machine and as documented by
Kubernetes, what the generated project meets on a cluster, and no more:

- **Applying the rendered overlay** (`apply`, as `kubectl apply -k` with an admin's rights):
  every object is stored; a Deployment gets its pods from a controller (replicas, the
  pod-template hash, Recreate and RollingUpdate, a replacement for a deleted pod), a
  Service a cluster address that forwards each port to the ready pods it selects, a claim
  a volume from the provisioner.
- **The API server** (HTTPS, aiohttp), core/v1 and the few groups the project renders:
  list (label and field selectors, resourceVersion), watch (JSON lines, as
  kubernetes_asyncio reads them), get, create (409 when the name is taken), delete
  (graceful for pods). Clients authenticate with a service account token that the kubelet
  mounted into their pod (401 otherwise) and are authorized by RBAC over the Roles and
  RoleBindings applied (support/rbac.py: verbs, subresources, resourceNames); a request
  they do not grant gets Kubernetes' 403. Every request is logged (`requests`, and
  `api.log` in the work directory).
- **Admission** of every pod, whoever creates it: validation (volumes that the mounts name,
  the service account), the ServiceAccount plugin (it adds the projected token volume
  unless automountServiceAccountToken is false) and Pod Security admission by the
  namespace's `pod-security.kubernetes.io/enforce` label (support/pod_security.py).
- **The node** (support/kubelet.py): pod sandboxes with addresses of their own on a bridge,
  containers run as runc would run them (support/container_init.py), volumes with
  fsGroup ownership, probes, restarts, graceful termination, events.
- **DNS**: each pod's /etc/hosts names its own address and every Service of its namespace
  (`<name>`, `<name>.<ns>`, `<name>.<ns>.svc`, `<name>.<ns>.svc.cluster.local`); the kubelet
  writes it when the pod starts. Services created later are not seen by running pods.

What this does not prove is listed in README.md, "What the emulated cluster does not prove".
Root is needed, as in CI.
"""

import asyncio
import base64
import contextlib
import copy
import ctypes
import datetime
import hashlib
import json
import os
import random
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path

from aiohttp import web

from support import kubelet, pod_security, pod_spec, rbac, tls

# resource -> (API group, version, kind)
RESOURCES = {
    "pods": ("", "v1", "Pod"),
    "persistentvolumeclaims": ("", "v1", "PersistentVolumeClaim"),
    "events": ("", "v1", "Event"),
    "secrets": ("", "v1", "Secret"),
    "configmaps": ("", "v1", "ConfigMap"),
    "services": ("", "v1", "Service"),
    "serviceaccounts": ("", "v1", "ServiceAccount"),
    "deployments": ("apps", "v1", "Deployment"),
    "roles": ("rbac.authorization.k8s.io", "v1", "Role"),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
    "ingresses": ("networking.k8s.io", "v1", "Ingress"),
    "networkpolicies": ("networking.k8s.io", "v1", "NetworkPolicy"),
}
KIND_RESOURCE = {kind: resource for resource, (_, _, kind) in RESOURCES.items()}
NODE_NAME = "emulated-node"
ALWAYS_READ_ONLY = {"secret", "configMap", "downwardAPI", "projected"}
NODE_ALLOCATABLE = {"cpu": "2", "memory": "8Gi"}
API_PORT = 6443  # where the API server listens, as on kind and k3s
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class ImmutableField(Exception):
    """What `kubectl apply` reports when an object's immutable field would change."""


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template):
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:10])


def random_suffix(n=5):
    return "".join(random.choice(HASH_ALPHABET) for _ in range(n))


# --- Selectors ----------------------------------------------------------------------------


def parse_selector(text):
    """[(key, op, value)] of an equality-based selector; ValueError on anything else."""
    terms = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                terms.append((key, "!=" if op == "!=" else "=", value))
                break
        else:
            if term.startswith("!"):
                terms.append((term[1:], "!exists", None))
                continue
            if not term.replace("/", "").replace(".", "").replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"unsupported selector term {term!r}")
            terms.append((term, "exists", None))
    return terms


def field_value(obj, path):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def matches(obj, labels, fields):
    own = obj["metadata"].get("labels") or {}
    for key, op, value in labels:
        if (op == "exists") != (key in own) and op in ("exists", "!exists"):
            return False
        if op == "=" and own.get(key) != value:
            return False
        if op == "!=" and own.get(key) == value:
            return False
    for key, op, value in fields:
        actual = field_value(obj, key)
        actual = "" if actual is None else str(actual)
        if (op == "=") != (actual == value):
            return False
    return True


def selects(selector, labels):
    """A Service's selector (a plain map) or a matchLabels/matchExpressions selector."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            return False
        for expression in selector.get("matchExpressions") or []:
            key, op, values = expression["key"], expression["operator"], expression.get("values") or []
            if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
                return False
            if (op == "Exists") != (key in labels) and op in ("Exists", "DoesNotExist"):
                return False
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def container_status(container, ready, state, restarts=0, last=None, started=None):
    """A containerStatuses entry with every field the client's model requires."""
    status = {
        "name": container["name"],
        "image": container["image"],
        "imageID": f"emulated://{container['image']}",
        "ready": ready,
        "started": ("running" in state) if started is None else started,
        "restartCount": restarts,
        "state": state,
    }
    if last:
        status["lastState"] = last
    return status


# --- TLS ------------------------------------------------------------------------------------


def make_tls(directory, addresses):
    """A CA and a serving certificate for the API server's addresses; paths of ca.crt, tls.crt, tls.key."""
    names = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    return tls.ca_and_certificate(directory, "emulated-cluster-ca", "kube-apiserver", names, addresses)


# --- Connections into a pod's network namespace ---------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def connect_in_netns(pid, host, port, timeout=10):
    """A TCP connection opened from inside the network namespace of process pid (as
    `kubectl port-forward` reaches a pod's loopback): a thread of its own enters it."""
    result = {}

    def work():
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                result["error"] = OSError(ctypes.get_errno(), "setns")
                return
            result["sock"] = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            result["error"] = error
        finally:
            os.close(fd)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in result:
        raise result["error"]
    sock = result["sock"]
    sock.settimeout(None)
    return sock


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


# --- The cluster --------------------------------------------------------------------------


class Cluster:
    """An emulated one-node cluster; `with Cluster(workdir) as cluster:` runs it."""

    def __init__(self, workdir):
        # Pods run as non-root users and must reach their volumes: the node's files live in
        # TMPDIR (open to every user, like /tmp: conftest.py's run directory); its logs are
        # copied to logdir at the end.
        self.logdir = Path(workdir)
        self.workdir = Path(tempfile.mkdtemp(prefix="emulated-cluster-"))
        os.chmod(self.workdir, 0o755)
        self.images = {}
        self.namespaces = {}  # name -> Namespace object
        self.store = {}  # (resource, namespace, name) -> object
        self.history = []  # (resourceVersion, resource, namespace, type, object): what watches replay
        self.requests = []
        self.created = []  # (resource, namespace, name) of every successful create through the API
        self.received = {}  # (resource, namespace, name) -> the body of its create request, as sent
        self.resource_version = 0
        self.tokens = {}  # bearer token -> (namespace, service account)
        self.containers = {}  # (namespace, pod) -> kubelet.ContainerProcess of its running container
        self.container_runs = []  # every ContainerProcess started, in order: (namespace, pod, process)
        self.pod_tasks = {}
        self.forwarders = {}
        self.relays = []
        self.log_path = self.workdir / "api.log"
        self.loop = None
        self.network = None
        self._changed = None

    # --- life cycle ---
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.network = kubelet.Network()
        self.kubernetes_ip = self.network.service_ip()
        self.tls = make_tls(self.workdir, [self.network.node_ip, self.kubernetes_ip])
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="emulated-cluster")
        self.thread.start()
        assert ready.wait(20), "the emulated API server did not start"

    def stop(self):
        if self.loop is not None:
            with contextlib.suppress(Exception):
                self.call(self._shutdown(), timeout=120)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        for process in list(self.containers.values()):
            process.kill()
        for sandbox in list(getattr(self, "_sandboxes", {}).values()):
            sandbox.stop()
        if self.network is not None:
            self.network.close()
        keep = self.logdir / "cluster-logs"
        keep.mkdir(parents=True, exist_ok=True)
        for log in list(self.workdir.glob("*.log")) + list((self.workdir / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                shutil.copy2(log, keep / log.name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, ready):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls["tls.crt"], self.tls["tls.key"])
        site = web.TCPSite(self.runner, self.network.node_ip, API_PORT, ssl_context=context)
        self.loop.run_until_complete(site.start())
        self.loop.run_until_complete(self._start_forwarder(
            ("default", "kubernetes"), self.kubernetes_ip, 443, lambda: (self.network.node_ip, API_PORT)
        ))  # fmt: skip
        self.kubernetes_service = {
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": self.kubernetes_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
        }
        ready.set()
        self.loop.run_forever()

    async def _shutdown(self):
        for key in [k for k in self.store if k[0] == "deployments"]:
            self.store.pop(key)  # no controller replaces what goes now
        for key, task in list(self.pod_tasks.items()):
            pod = self.store.get(("pods", *key))
            if pod is not None:
                await self._delete_pod(key[0], key[1], grace=2)
        deadline = self.loop.time() + 60
        while self.pod_tasks and self.loop.time() < deadline:
            await asyncio.sleep(0.1)
        for server in self.forwarders.values():
            server.close()
        for server in self.relays:
            server.close()
        await self.runner.cleanup()

    def call(self, coroutine, timeout=60):
        """Run a coroutine on the cluster's loop, from the test's thread; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    # --- for the tests: setting up, as a cluster administrator ---
    @property
    def url(self):
        return f"https://{self.network.node_ip}:{API_PORT}"

    def add_image(self, image):
        """A kubelet.HostImage or kubelet.BuildahImage, pulled by its name."""
        self.images[image.name] = image

    def create_namespace(self, name, labels=None):
        labels = {"kubernetes.io/metadata.name": name, **(labels or {})}
        self.namespaces[name] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        self.call(self._ensure_default_service_account(name))

    async def _ensure_default_service_account(self, namespace):
        if ("serviceaccounts", namespace, "default") not in self.store:
            await self._store_object("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}})

    def apply(self, objects):
        """Create or update the objects, as `kubectl apply` does for a cluster administrator."""
        return self.call(self._apply(copy.deepcopy(objects)), timeout=120)

    async def _apply(self, objects):
        for obj in objects:
            if obj["kind"] == "Namespace":
                labels = {"kubernetes.io/metadata.name": obj["metadata"]["name"], **(obj["metadata"].get("labels") or {})}
                self.namespaces[obj["metadata"]["name"]] = dict(obj, metadata=dict(obj["metadata"], labels=labels))
                await self._ensure_default_service_account(obj["metadata"]["name"])
        for obj in objects:
            if obj["kind"] == "Namespace":
                continue
            resource = KIND_RESOURCE[obj["kind"]]
            namespace = obj["metadata"]["namespace"]
            assert namespace in self.namespaces, f'namespaces "{namespace}" not found ({obj["kind"]}/{obj["metadata"]["name"]})'
            old = self.store.get((resource, namespace, obj["metadata"]["name"]))
            if resource == "pods":
                error = await self._create_pod(namespace, obj, user="admin")
                assert error is None, error
                continue
            if old is not None and resource == "deployments" and old["spec"]["selector"] != obj["spec"]["selector"]:
                # apps/v1 validation: a Deployment's selector cannot change once it exists.
                raise ImmutableField(
                    f'Deployment.apps "{obj["metadata"]["name"]}" is invalid: spec.selector: Invalid value:'
                    f' {json.dumps(obj["spec"]["selector"])}: field is immutable'
                )
            if old is not None:
                obj["metadata"]["uid"] = old["metadata"]["uid"]
                obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                if resource == "services":
                    obj["spec"]["clusterIP"] = old["spec"]["clusterIP"]
                if resource == "persistentvolumeclaims":
                    obj["spec"]["volumeName"] = old["spec"].get("volumeName")
                    obj["status"] = old.get("status")
                if old == {**obj, "metadata": {**obj["metadata"], "resourceVersion": old["metadata"].get("resourceVersion")}}:
                    continue
            await self._admit_and_store(resource, namespace, obj, "MODIFIED" if old else "ADDED")
            if resource == "deployments":
                await self._reconcile_deployment(namespace, obj["metadata"]["name"])

    def delete(self, resource, namespace, name, grace=None):
        return self.call(self._delete(resource, namespace, name, grace), timeout=120)

    def delete_pod(self, namespace, name, grace=None, wait=True):
        """`kubectl delete pod`: graceful; a Deployment's controller replaces it at once."""
        self.call(self._delete_pod(namespace, name, grace))
        if wait:
            self.wait_for(lambda: ("pods", namespace, name) not in self.store, 120, f"pod {name} gone")

    def rollout_restart(self, namespace, name):
        """`kubectl rollout restart deployment/<name>`: a new pod template, rolled out per the strategy."""
        def change(deployment):
            annotations = deployment["spec"]["template"]["metadata"].setdefault("annotations", {})
            annotations["kubectl.kubernetes.io/restartedAt"] = datetime.datetime.now(datetime.timezone.utc).isoformat()

        return self.update_deployment(namespace, name, change)

    def update_deployment(self, namespace, name, change):
        deployment = copy.deepcopy(self.store[("deployments", namespace, name)])
        change(deployment)
        self.apply([deployment])
        return deployment

    # --- for the tests: looking ---
    def refused(self):
        return [r for r in self.requests if r["status"] == 403]

    def objects_of(self, resource, namespace=None):
        return {n: copy.deepcopy(o) for (r, ns, n), o in list(self.store.items()) if r == resource and namespace in (None, ns)}

    def pods(self, namespace=None):
        return self.objects_of("pods", namespace)

    def claims(self, namespace=None):
        return self.objects_of("persistentvolumeclaims", namespace)

    def created_names(self, resource, namespace=None):
        return [name for kind, ns, name in self.created if kind == resource and namespace in (None, ns)]

    def events(self, namespace=None, name=None):
        found = [o for (r, ns, _), o in list(self.store.items()) if r == "events" and namespace in (None, ns)]
        found = [e for e in found if name in (None, e["involvedObject"]["name"])]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def container(self, namespace, pod):
        """The running container's process (kubelet.ContainerProcess) of a pod, or None."""
        return self.containers.get((namespace, pod))

    def pod_process(self, namespace, pod):
        """The host pid of the pod's container's PID 1, or None."""
        running = self.container(namespace, pod)
        return running.init_pid() if running else None

    def logs(self, namespace, pod, previous=False):
        """`kubectl logs` (--previous): the container's output of its current (or last) run."""
        runs = [c for ns, name, c in self.container_runs if (ns, name) == (namespace, pod)]
        if previous:
            runs = runs[:-1]
        if not runs:
            return ""
        return runs[-1].log_path.read_text(encoding="utf-8", errors="replace")

    def pod_ready(self, namespace, name):
        pod = self.store.get(("pods", namespace, name))
        return bool(pod) and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])

    def deployment_pods(self, namespace, name, include_terminating=False):
        deployment = self.store.get(("deployments", namespace, name))
        if deployment is None:
            return []
        found = [
            o for (r, ns, _), o in list(self.store.items())
            if r == "pods" and ns == namespace and selects(deployment["spec"]["selector"], o["metadata"].get("labels") or {})
            and (include_terminating or "deletionTimestamp" not in o["metadata"])
        ]  # fmt: skip
        return sorted(found, key=lambda p: p["metadata"]["creationTimestamp"] + p["metadata"]["name"])

    def wait_for(self, predicate, timeout, what):
        """Poll predicate() (the cluster's state, read from the test's thread) until it is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.log_tail()}")

    def log_tail(self, lines=30):
        events = [f"{e['involvedObject']['name']}: {e['reason']}: {e['message']}" for e in self.events()[-15:]]
        return (
            "---- emulated API server (last requests) ----\n"
            + "\n".join(f"{r['status']} {r['user']} {r['verb'] or r['method']} {r['path']}" for r in self.requests[-lines:])
            + "\n---- events (last) ----\n" + "\n".join(events)
        )

    def volume_path(self, namespace, claim):
        """The directory the provisioner made for a claim (what the volume holds)."""
        pvc = self.store[("persistentvolumeclaims", namespace, claim)]
        return self.workdir / "volumes" / pvc["spec"]["volumeName"]

    def service_address(self, namespace, name, port):
        """(cluster IP, port number) of a Service's port (by name or number)."""
        service = self.store[("services", namespace, name)]
        for declared in service["spec"]["ports"]:
            if port in (declared.get("name"), declared["port"]):
                return service["spec"]["clusterIP"], declared["port"]
        raise KeyError(f"Service {name} has no port {port!r}")

    def ingress_url(self, namespace, host=None):
        """A local address where the Ingress's backend answers: what an ingress controller
        does for the rule of `host` (the only rule, if None): a relay to the Service."""
        ingresses = [o for (r, ns, _), o in list(self.store.items()) if r == "ingresses" and ns == namespace]
        backends = [
            path["backend"]["service"] for ingress in ingresses for rule in ingress["spec"]["rules"]
            if host in (None, rule.get("host")) for path in rule["http"]["paths"] if path.get("path", "/") == "/"
        ]  # fmt: skip
        assert len(backends) == 1, f"expected one Ingress backend for / on {host or 'its host'}, found {backends}"
        backend = backends[0]
        port = backend["port"].get("name", backend["port"].get("number"))
        ip, number = self.service_address(namespace, backend["name"], port)
        local = self.call(self._relay(lambda: asyncio.open_connection(ip, number)))
        return f"http://127.0.0.1:{local}"

    def port_forward(self, namespace, pod, port):
        """`kubectl port-forward pod/<pod> :<port>`: a local port that reaches the pod's own
        127.0.0.1:<port> (where a pod keeps what only it may use: the proxy's API)."""

        async def connect():
            sandbox = self._sandboxes[(namespace, pod)]
            sock = await self.loop.run_in_executor(None, connect_in_netns, sandbox.pid, "127.0.0.1", port)
            return await asyncio.open_connection(sock=sock)

        return self.call(self._relay(connect))

    async def _relay(self, connect):
        async def handle(reader, writer):
            try:
                up_reader, up_writer = await connect()
            except (OSError, KeyError):
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.relays.append(server)
        return server.sockets[0].getsockname()[1]

    # --- the store ---
    async def _store_object(self, resource, obj, type_="ADDED"):
        namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        group, version, kind = RESOURCES[resource]
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        obj.setdefault("kind", kind)
        await self._record(resource, namespace, type_, obj)
        return obj

    async def _record(self, resource, namespace, type_, obj):
        """Store a change (new resourceVersion) and wake the watches."""
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        key = (resource, namespace, obj["metadata"]["name"])
        if type_ == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        self.history.append((self.resource_version, resource, namespace, type_, copy.deepcopy(obj)))
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{now()} {type_} {resource}/{namespace}/{obj['metadata']['name']} resourceVersion={self.resource_version}\n")
        async with self._changed:
            self._changed.notify_all()

    async def _admit_and_store(self, resource, namespace, obj, type_="ADDED"):
        if resource == "persistentvolumeclaims" and type_ == "ADDED":
            self._provision(obj)
        if resource == "services" and type_ == "ADDED":
            obj["spec"].setdefault("clusterIP", self.network.service_ip())
        await self._store_object(resource, obj, type_)
        if resource == "services":
            await self._start_service(namespace, obj)

    def _provision(self, claim):
        """The provisioner: a new file system's root, root:root 0755, bound at once."""
        volume = f"pvc-{uuid.uuid4()}"
        path = self.workdir / "volumes" / volume
        path.mkdir(parents=True)
        os.chmod(path.parent, 0o755)
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)
        claim["spec"]["volumeName"] = volume
        claim["status"] = {"phase": "Bound", "accessModes": claim["spec"].get("accessModes", []),
                           "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]}}  # fmt: skip

    # --- events ---
    async def _event(self, obj, reason, message, type_="Normal", source="kubelet"):
        namespace = obj["metadata"]["namespace"]
        name = f"{obj['metadata']['name']}.{uuid.uuid4().hex[:12]}"
        await self._record(
            "events",
            namespace,
            "ADDED",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
                "involvedObject": {
                    "kind": obj.get("kind", "Pod"),
                    "name": obj["metadata"]["name"],
                    "namespace": namespace,
                    "uid": obj["metadata"].get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "eventTime": None,
                "source": {"component": source, "host": NODE_NAME},
            },
        )

    # --- the API server ---
    async def _handle(self, request):
        entry = {
            "time": time.time(), "method": request.method, "path": request.path, "query": dict(request.query),
            "user": None, "verb": None, "resource": None, "subresource": None, "name": None, "namespace": None,
            "status": None,
        }  # fmt: skip
        self.requests.append(entry)
        try:
            response = await self._dispatch(request, entry)
        except web.HTTPException as error:
            response = error
        entry["status"] = response.status
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(
                f"{now()} {entry['status']} {entry['user']} {request.method} {request.path_qs}"
                f" verb={entry['verb']} resource={entry['resource']}\n"
            )
        return response

    @staticmethod
    def _status(code, reason, message):
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code},
            status=code,
        )

    def authenticate(self, header):
        token = (header or "").removeprefix("Bearer ").strip()
        if not header or not header.startswith("Bearer ") or token not in self.tokens:
            return None
        namespace, account = self.tokens[token]
        return namespace, account

    def rules(self, namespace, account):
        rbac_objects = [o for (r, ns, _), o in list(self.store.items()) if r in ("roles", "rolebindings") and ns == namespace]
        return rbac.rules_for(rbac_objects, namespace, account)

    async def _dispatch(self, request, entry):
        subject = self.authenticate(request.headers.get("Authorization"))
        if subject is None:
            return self._status(401, "Unauthorized", "Unauthorized")
        user = f"system:serviceaccount:{subject[0]}:{subject[1]}"
        entry["user"] = user
        attributes = rbac.request_attributes(request.method, request.path, dict(request.query))
        if attributes is None:
            return self._status(403, "Forbidden", f'forbidden: User "{user}" cannot {request.method.lower()} path "{request.path}"')
        entry.update(
            verb=attributes["verb"], resource=attributes["resource"], subresource=attributes["subresource"],
            name=attributes["name"] or None, namespace=attributes["namespace"],
        )  # fmt: skip
        namespace = attributes["namespace"]
        if namespace is None or not rbac.allows(self.rules(subject[0], subject[1]) if namespace == subject[0] else [], attributes):
            return self._status(403, "Forbidden", rbac.forbidden_message(attributes, user))
        resource = attributes["resource"]
        if resource not in RESOURCES or RESOURCES[resource][0] != attributes["apiGroup"] or attributes["subresource"]:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({resource})")
        if namespace not in self.namespaces:
            return self._status(404, "NotFound", f'namespaces "{namespace}" not found')
        verb = attributes["verb"]
        name = request.match_info["tail"].split("/")[-1] if verb in ("get", "delete", "update", "patch") else None
        if verb in ("list", "watch"):
            try:
                labels = parse_selector(request.query.get("labelSelector"))
                fields = parse_selector(request.query.get("fieldSelector"))
            except ValueError as error:
                return self._status(400, "BadRequest", str(error))
            if verb == "list":
                return self._list(resource, namespace, labels, fields)
            return await self._watch(request, resource, namespace, labels, fields)
        if verb == "get":
            obj = self.store.get((resource, namespace, name))
            if obj is None:
                return self._status(404, "NotFound", f'{resource} "{name}" not found')
            return web.json_response(obj)
        if verb == "create":
            body = await request.json()
            return await self._create(resource, namespace, body, user)
        if verb == "delete":
            body = (await request.json() if request.can_read_body else None) or {}
            grace = request.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
            return await self._delete(resource, namespace, name, None if grace is None else int(grace))
        return self._status(405, "MethodNotAllowed", f"{verb} is not emulated")

    def _list(self, resource, namespace, labels, fields):
        items = [o for (r, ns, _), o in list(self.store.items()) if r == resource and ns == namespace and matches(o, labels, fields)]
        group, version, kind = RESOURCES[resource]
        return web.json_response(
            {
                "kind": kind + "List",
                "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }
        )

    async def _watch(self, request, resource, namespace, labels, fields):
        since = int(request.query.get("resourceVersion") or 0)
        timeout = int(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = self.loop.time() + timeout
        sent = since
        try:
            while True:
                for rv, kind, ns, type_, obj in self.history:
                    if rv > sent and kind == resource and ns == namespace:
                        sent = rv
                        if matches(obj, labels, fields):
                            await response.write((json.dumps({"type": type_, "object": obj}) + "\n").encode())
                sent = max(sent, self.resource_version)
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    break
                async with self._changed:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _create(self, resource, namespace, body, user):
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return self._status(422, "Invalid", "metadata.name: Required value")
        if body.get("metadata", {}).get("namespace") not in (None, namespace):
            return self._status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        if (resource, namespace, name) in self.store:
            return self._status(409, "AlreadyExists", f'{resource} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj["metadata"]["namespace"] = namespace
        if resource == "pods":
            error = await self._create_pod(namespace, obj, user)
            if error is not None:
                return self._status(*error)
        else:
            await self._admit_and_store(resource, namespace, obj)
        self.created.append((resource, namespace, name))
        self.received[(resource, namespace, name)] = copy.deepcopy(body)
        return web.json_response(self.store[(resource, namespace, name)], status=201)

    async def _delete(self, resource, namespace, name, grace):
        obj = self.store.get((resource, namespace, name))
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        if resource == "pods":
            return web.json_response(await self._delete_pod(namespace, name, grace))
        if resource == "persistentvolumeclaims" and self._claim_in_use(namespace, name):
            # The pvc-protection finalizer: gone once no pod uses it.
            obj = copy.deepcopy(obj)
            obj["metadata"].setdefault("deletionTimestamp", now())
            obj["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]
            await self._record(resource, namespace, "MODIFIED", obj)
            return web.json_response(obj)
        owned = self.deployment_pods(namespace, name) if resource == "deployments" else []
        await self._record(resource, namespace, "DELETED", copy.deepcopy(obj))
        for pod in owned:  # the garbage collector: a Deployment's pods go with it
            await self._delete_pod(namespace, pod["metadata"]["name"], None)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _claim_in_use(self, namespace, claim):
        return any(
            v.get("persistentVolumeClaim", {}).get("claimName") == claim
            for (r, ns, _), pod in list(self.store.items()) if r == "pods" and ns == namespace
            for v in pod["spec"].get("volumes") or []
        )  # fmt: skip

    async def _release_claims(self, namespace):
        for (r, ns, name), claim in list(self.store.items()):
            if r == "persistentvolumeclaims" and ns == namespace and "deletionTimestamp" in claim["metadata"]:
                if not self._claim_in_use(namespace, name):
                    await self._record(r, ns, "DELETED", copy.deepcopy(claim))

    # --- pod admission ---
    def _validate_pod(self, pod):
        spec = pod.get("spec") or {}
        volumes = {v["name"] for v in spec.get("volumes") or []}
        problems = []
        for kind in ("initContainers", "containers"):
            for i, container in enumerate(spec.get(kind) or []):
                for j, mount in enumerate(container.get("volumeMounts") or []):
                    if mount["name"] not in volumes:
                        problems.append(f'spec.{kind}[{i}].volumeMounts[{j}].name: Not found: "{mount["name"]}"')
        if not spec.get("containers"):
            problems.append("spec.containers: Required value")
        return problems

    async def _create_pod(self, namespace, pod, user):
        """Admission, then the store; (code, reason, message) if refused, else None."""
        name = pod["metadata"]["name"]
        problems = self._validate_pod(pod)
        if problems:
            return 422, "Invalid", f'Pod "{name}" is invalid: ' + ", ".join(problems)
        spec = pod["spec"]
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("enableServiceLinks", True)
        account = self.store.get(("serviceaccounts", namespace, spec["serviceAccountName"]))
        if account is None:
            return 403, "Forbidden", (
                f'pods "{name}" is forbidden: error looking up service account {namespace}/{spec["serviceAccountName"]}:'
                f' serviceaccount "{spec["serviceAccountName"]}" not found'
            )
        automount = spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        if automount is not False:
            # The ServiceAccount admission plugin: the projected token volume, in every container.
            volume = f"kube-api-access-{random_suffix()}"
            spec.setdefault("volumes", []).append({"name": volume, "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}})  # fmt: skip
            for container in spec["containers"] + (spec.get("initContainers") or []):
                container.setdefault("volumeMounts", []).append(
                    {"name": volume, "mountPath": kubelet.SERVICE_ACCOUNT_DIR, "readOnly": True}
                )
        level = pod_security.level_of(self.namespaces[namespace]["metadata"].get("labels"))
        refusal = pod_security.admission_error(pod, name, level)
        if refusal:
            return 403, "Forbidden", refusal
        pod["status"] = {"phase": "Pending", "conditions": [], "containerStatuses": None, "qosClass": "Burstable"}
        await self._store_object("pods", pod)
        self.pod_tasks[(namespace, name)] = asyncio.ensure_future(self._kubelet(namespace, name))
        return None

    # --- the Deployment controller (its ReplicaSets folded in) ---
    async def _reconcile_deployment(self, namespace, name):
        locks = self.__dict__.setdefault("_deployment_locks", {})
        async with locks.setdefault((namespace, name), asyncio.Lock()):
            await self._reconcile_deployment_locked(namespace, name)

    async def _reconcile_deployment_locked(self, namespace, name):
        deployment = self.store.get(("deployments", namespace, name))
        if deployment is None:
            return
        template = deployment["spec"]["template"]
        wanted = template_hash(template)
        pods = self.deployment_pods(namespace, name)
        current = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == wanted]
        old = [p for p in pods if p not in current]
        replicas = deployment["spec"].get("replicas", 1)
        strategy = (deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate")
        if old and strategy == "Recreate":
            # Every old pod is gone (terminated, not just terminating) before a new one starts.
            for pod in old:
                await self._delete_pod(namespace, pod["metadata"]["name"], None)
            while any(p["metadata"]["labels"].get("pod-template-hash") != wanted
                      for p in self.deployment_pods(namespace, name, include_terminating=True)):
                await asyncio.sleep(0.1)
            current = [p for p in self.deployment_pods(namespace, name) if p["metadata"]["labels"].get("pod-template-hash") == wanted]
        surge = replicas - len(current)
        for _ in range(max(0, surge)):
            pod = copy.deepcopy(template)
            pod["apiVersion"], pod["kind"] = "v1", "Pod"
            pod["metadata"] = copy.deepcopy(template.get("metadata") or {})
            pod["metadata"]["name"] = f"{name}-{wanted}-{random_suffix()}"
            pod["metadata"]["namespace"] = namespace
            pod["metadata"].setdefault("labels", {})["pod-template-hash"] = wanted
            pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{wanted}", "controller": True}]
            error = await self._create_pod(namespace, pod, user="system:serviceaccount:kube-system:replicaset-controller")
            if error is not None:
                await self._event(deployment, "FailedCreate", f"Error creating: {error[2]}", "Warning", "replicaset-controller")
        if old and strategy != "Recreate":
            # RollingUpdate (maxSurge 25%, maxUnavailable 25%, rounded as the controller does):
            # the new pods first, then the old ones go once the new ones are ready.
            async def finish():
                while not all(self.pod_ready(namespace, p["metadata"]["name"]) for p in self.deployment_pods(namespace, name)
                              if p["metadata"]["labels"].get("pod-template-hash") == wanted):
                    await asyncio.sleep(0.2)
                for pod in old:
                    await self._delete_pod(namespace, pod["metadata"]["name"], None)

            asyncio.ensure_future(finish())

    # --- Services ---
    async def _start_service(self, namespace, service):
        name = service["metadata"]["name"]
        ip = service["spec"]["clusterIP"]
        for port in service["spec"].get("ports") or []:
            key = (namespace, name, port["port"])
            if key in self.forwarders:
                continue

            def endpoint(port=port, name=name):
                current = self.store.get(("services", namespace, name))
                if current is None:
                    return None
                for (r, ns, pod_name), pod in list(self.store.items()):
                    if r != "pods" or ns != namespace or "deletionTimestamp" in pod["metadata"]:
                        continue
                    if selects(current["spec"].get("selector"), pod["metadata"].get("labels") or {}) and self.pod_ready(ns, pod_name):
                        target = pod_spec.container_port(pod, port.get("targetPort", port["port"]))
                        if target is not None:
                            return pod["status"]["podIP"], target
                return None

            await self._start_forwarder(key, ip, port["port"], endpoint)

    async def _start_forwarder(self, key, ip, port, endpoint):
        async def handle(reader, writer):
            target = endpoint()
            if target is None:
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.forwarders[key] = await asyncio.start_server(handle, ip, port, reuse_address=True)

    def _hosts_file(self, namespace, pod, ip):
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{ip}\t{pod['spec'].get('hostname') or pod['metadata']['name']}"]
        for (r, ns, name), service in sorted(self.store.items()):
            if r == "services" and ns == namespace:
                lines.append(f"{service['spec']['clusterIP']}\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns} {name}")
        lines.append(f"{self.kubernetes_ip}\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default kubernetes")
        return "\n".join(lines) + "\n"

    # --- the kubelet ---
    async def _set_pod_status(self, namespace, name, **status):
        pod = self.store.get(("pods", namespace, name))
        if pod is None:
            return None
        pod = copy.deepcopy(pod)
        pod["status"].update(status)
        await self._record("pods", namespace, "MODIFIED", pod)
        return pod

    async def _kubelet(self, namespace, name):
        try:
            await self._run_pod(namespace, name)
        except Exception as error:  # a bug here must show, as a failed pod and in the log
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"{now()} kubelet error for pod {namespace}/{name}: {error!r}\n")
            if ("pods", namespace, name) in self.store:
                await self._event(self.store[("pods", namespace, name)], "Failed", f"emulated kubelet: {error!r}", "Warning")
            raise
        finally:
            await self._teardown(namespace, name)

    def _deleting(self, namespace, name):
        pod = self.store.get(("pods", namespace, name))
        return pod is None or "deletionTimestamp" in pod["metadata"]

    async def _run_pod(self, namespace, name):
        pod = copy.deepcopy(self.store[("pods", namespace, name)])
        spec = pod["spec"]
        [container] = spec["containers"]  # the hub and KubeSpawner's pods: one container, no init containers
        assert not spec.get("initContainers"), "init containers are not emulated"
        pod["spec"]["nodeName"] = NODE_NAME
        await self._record("pods", namespace, "MODIFIED", pod)
        await self._event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to {NODE_NAME}", source="default-scheduler")
        ip = self.network.pod_ip()
        hostname = spec.get("hostname") or name
        sandbox = await self.loop.run_in_executor(None, kubelet.Sandbox, self.network, hostname, ip)
        self._sandboxes = getattr(self, "_sandboxes", {})
        self._sandboxes[(namespace, name)] = sandbox
        pod_dir = self.workdir / "pods" / f"{namespace}_{name}"
        pod_dir.mkdir(parents=True)
        os.chmod(pod_dir, 0o755)
        await self._set_pod_status(
            namespace, name, podIP=ip, podIPs=[{"ip": ip}], hostIP=self.network.node_ip, hostIPs=[{"ip": self.network.node_ip}],
            startTime=now(), conditions=[{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                                         {"type": "ContainersReady", "status": "False"}, {"type": "Ready", "status": "False"}],
        )  # fmt: skip
        restarts, last_state = 0, None
        while not self._deleting(namespace, name):
            pod = copy.deepcopy(self.store[("pods", namespace, name)])
            try:
                process = await self._start_container(namespace, pod, container, pod_dir, restarts)
            except pod_spec.ConfigError as error:
                reason = getattr(error, "reason", "CreateContainerConfigError")
                await self._event(pod, "Failed", f"Error: {error}", "Warning")
                await self._set_pod_status(namespace, name, phase="Pending", containerStatuses=[
                    container_status(container, False, {"waiting": {"reason": reason, "message": str(error)}}, restarts, last_state)])
                await self._sleep_unless_deleted(namespace, name, 2)
                continue
            code = await self._supervise(namespace, name, container, process, restarts, last_state)
            self.containers.pop((namespace, name), None)
            await process.release()
            finished = now()
            last_state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "startedAt": process.started, "finishedAt": finished}}  # fmt: skip
            if self._deleting(namespace, name):
                await self._set_pod_status(namespace, name, containerStatuses=[container_status(container, False, last_state, restarts)])
                break
            policy = spec.get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                await self._set_pod_status(
                    namespace, name, phase="Succeeded" if code == 0 else "Failed",
                    conditions=[{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                    containerStatuses=[container_status(container, False, last_state, restarts)],
                )  # fmt: skip
                while not self._deleting(namespace, name):
                    await asyncio.sleep(0.2)
                break
            backoff = min(kubelet.BACKOFF_MAX, kubelet.BACKOFF_START * 2 ** restarts)
            restarts += 1
            await self._event(pod, "BackOff", f"Back-off restarting failed container {container['name']} in pod {name}", "Warning")
            await self._set_pod_status(namespace, name, conditions=[{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                                       containerStatuses=[container_status(container, False, {"waiting": {"reason": "CrashLoopBackOff"}}, restarts, last_state)])  # fmt: skip
            await self._sleep_unless_deleted(namespace, name, backoff)

    async def _sleep_unless_deleted(self, namespace, name, seconds):
        deadline = self.loop.time() + seconds
        while self.loop.time() < deadline and not self._deleting(namespace, name):
            await asyncio.sleep(0.1)

    async def _start_container(self, namespace, pod, container, pod_dir, restarts):
        """Pull, resolve, mount: a running ContainerProcess (with a release() for its image)."""
        name = pod["metadata"]["name"]
        image = self.images.get(container["image"])
        if image is None:
            await self._event(pod, "Failed", f'Failed to pull image "{container["image"]}": not found', "Warning")
            error = pod_spec.ConfigError(f'Back-off pulling image "{container["image"]}"')
            error.reason = "ErrImagePull"
            raise error
        await self._event(pod, "Pulled", f'Container image "{container["image"]}" already present on machine')
        store = {(o["kind"], n): o for (r, ns, n), o in list(self.store.items()) if ns == namespace and r in ("secrets", "configmaps")}
        services = [s for (r, ns, _), s in list(self.store.items()) if r == "services" and ns == namespace] + [self.kubernetes_service]
        node = {"name": NODE_NAME, "ip": self.network.node_ip, "allocatable": NODE_ALLOCATABLE}
        config = image.config
        env = pod_spec.environment(pod, container, config.get("Env") or [], store, services, node)
        argv = pod_spec.command(container, config, env)
        passwd = image.read("/etc/passwd").splitlines()
        uid, gid, groups = pod_spec.identity(pod, container, config.get("User", ""), passwd, image.read("/etc/group").splitlines())
        env.setdefault("HOSTNAME", pod["spec"].get("hostname") or name)
        env["HOME"] = pod_spec.home(env, uid, passwd)
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        mounts = self._volumes(namespace, pod, container, pod_dir, fs_group)
        context = container.get("securityContext") or {}
        run_dir = pod_dir / f"{container['name']}-{restarts}"
        run_dir.mkdir()
        etc = run_dir / "etc"
        etc.mkdir()
        (etc / "hosts").write_text(self._hosts_file(namespace, pod, pod["status"]["podIP"]))
        (etc / "hostname").write_text((pod["spec"].get("hostname") or name) + "\n")
        shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf")
        for f in etc.iterdir():
            os.chmod(f, 0o644)
        lower, release = await self.loop.run_in_executor(None, image.pull)
        spec = {
            "pause_pid": self._sandboxes[(namespace, name)].pid,
            "lower": lower,
            "layer": image.layer(),
            "state_dir": str(run_dir),
            "etc_files": {"/etc/hosts": str(etc / "hosts"), "/etc/hostname": str(etc / "hostname"), "/etc/resolv.conf": str(etc / "resolv.conf")},
            "mounts": mounts,
            "read_only_root": bool(context.get("readOnlyRootFilesystem")),
            "workdir": container.get("workingDir") or config.get("WorkingDir") or "/",
            "uid": uid, "gid": gid, "groups": groups,
            "no_new_privs": context.get("allowPrivilegeEscalation") is False,
            "privileged": bool(context.get("privileged")),
            "capabilities": context.get("capabilities") or {},
            "argv": argv, "env": env,
        }  # fmt: skip
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        process = kubelet.ContainerProcess(spec, run_dir / "spec.json", logs / f"{namespace}_{name}_{container['name']}-{restarts}.log")

        async def release_all():
            await self.loop.run_in_executor(None, release)

        process.release = release_all
        process.started = now()
        process.spec = spec
        self.containers[(namespace, name)] = process
        self.container_runs.append((namespace, name, process))
        await self._event(pod, "Created", f"Created container {container['name']}")
        await self._event(pod, "Started", f"Started container {container['name']}")
        return process

    def _volumes(self, namespace, pod, container, pod_dir, fs_group):
        """The container's mounts: each volume made on the node (owned as fsGroup says)."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        prepared = {}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            name = mount["name"]
            if name not in prepared:
                prepared[name] = self._prepare_volume(namespace, pod, volumes[name], pod_dir, fs_group)
            source = prepared[name]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            # The kubelet mounts Secret, ConfigMap, downward API and projected volumes
            # read-only whatever the mount says (Kubernetes 1.9.4 and later).
            read_only = bool(mount.get("readOnly")) or bool(ALWAYS_READ_ONLY & set(volumes[name]))
            mounts.append({"source": str(source), "target": mount["mountPath"], "readOnly": read_only})
        return mounts

    def _prepare_volume(self, namespace, pod, volume, pod_dir, fs_group):
        directory = pod_dir / "volumes" / volume["name"]
        if "emptyDir" in volume:
            if not directory.exists():  # an emptyDir lives as long as the pod, across container restarts
                directory.mkdir(parents=True)
                os.chmod(directory, 0o777)
                if fs_group is not None:
                    kubelet.set_volume_ownership(directory, fs_group)
            return directory
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if ("persistentvolumeclaims", namespace, claim) not in self.store:
                error = pod_spec.ConfigError(f'persistentvolumeclaim "{claim}" not found')
                error.reason = "ContainerCreating"
                raise error
            path = self.volume_path(namespace, claim)
            if fs_group is not None:
                kubelet.set_volume_ownership(path, fs_group)
            return path
        if "secret" in volume or "configMap" in volume:
            kind, key = ("Secret", "secret") if "secret" in volume else ("ConfigMap", "configMap")
            ref = volume[key]
            obj_name = ref.get("secretName") or ref.get("name")
            obj = self.store.get(("secrets" if kind == "Secret" else "configmaps", namespace, obj_name))
            if obj is None:
                raise pod_spec.ConfigError(f'{kind.lower()} "{obj_name}" not found')
            kubelet.write_files(directory, kubelet.secret_volume_files(obj, ref.get("items")), ref.get("defaultMode", 0o644), fs_group)
            return directory
        if "projected" in volume:
            files = {}
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    token = f"emulated.{uuid.uuid4().hex}{uuid.uuid4().hex}"
                    self.tokens[token] = (namespace, pod["spec"]["serviceAccountName"])
                    files[source["serviceAccountToken"]["path"]] = token
                elif "configMap" in source and source["configMap"]["name"] == "kube-root-ca.crt":
                    files["ca.crt"] = Path(self.tls["ca.crt"]).read_bytes()
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"]["items"]:
                        files[item["path"]] = pod_spec.field_ref(pod, item["fieldRef"]["fieldPath"], {"name": NODE_NAME, "ip": self.network.node_ip})
                else:
                    raise NotImplementedError(f"projected source {sorted(source)} is not emulated")
            kubelet.write_files(directory, files, volume["projected"].get("defaultMode", 0o644), fs_group)
            return directory
        raise NotImplementedError(f"volume {volume['name']} of type {sorted(set(volume) - {'name'})} is not emulated")

    def _exit_of(self, proc):
        """A future of the process's exit code, from a thread of its own. Not the loop's
        executor: a running container would hold one of its threads for its whole life, and the
        kubelet needs them to start every pod (the default pool has CPUs + 4 threads: with that
        many containers running, the next pod would hang after "Pulled" for ever)."""
        future = self.loop.create_future()

        def wait():
            proc.wait()
            self.loop.call_soon_threadsafe(lambda: future.done() or future.set_result(proc.returncode))

        threading.Thread(target=wait, name=f"container-exit-{proc.pid}", daemon=True).start()
        return future

    async def _supervise(self, namespace, name, container, process, restarts, last_state):
        """Status and probes while the container runs; its exit code."""
        started_probe = container.get("startupProbe")
        await self._set_pod_status(
            namespace, name, phase="Running",
            containerStatuses=[container_status(container, False, {"running": {"startedAt": process.started}}, restarts, last_state, started=not started_probe)],
        )  # fmt: skip
        exited = self._exit_of(process.proc)
        probes = asyncio.ensure_future(self._probe(namespace, name, container, process, restarts, last_state))
        await exited
        probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probes
        return process.proc.returncode

    async def _probe(self, namespace, name, container, process, restarts, last_state):
        pod = self.store[("pods", namespace, name)]
        ip = pod["status"]["podIP"]

        async def until(probe, want_success, what):
            """Run probe periodically; return when it succeeded once (want_success) or failed failureThreshold times."""
            await asyncio.sleep(probe.get("initialDelaySeconds", 0))
            failures = 0
            while True:
                ok = await kubelet.probe_once(probe, self.store.get(("pods", namespace, name)) or pod, ip)
                if ok and want_success:
                    return True
                failures = 0 if ok else failures + 1
                if not ok:
                    await self._event(pod, "Unhealthy", f"{what} probe failed", "Warning")
                if failures >= probe.get("failureThreshold", 3):
                    return False
                await asyncio.sleep(probe.get("periodSeconds", 10))

        def status(ready, started=True):
            return container_status(container, ready, {"running": {"startedAt": process.started}}, restarts, last_state, started=started)

        if container.get("startupProbe"):
            if not await until(container["startupProbe"], True, "Startup"):
                await self._event(pod, "Killing", f"Container {container['name']} failed startup probe, will be restarted")
                await self._kill(process, container, pod)
                return
        ready = not container.get("readinessProbe")
        await self._set_pod_status(namespace, name, containerStatuses=[status(ready)], conditions=self._conditions(ready))
        tasks = []
        if container.get("livenessProbe"):
            async def liveness():
                if not await until(container["livenessProbe"], False, "Liveness"):
                    await self._event(pod, "Killing", f"Container {container['name']} failed liveness probe, will be restarted")
                    await self._kill(process, container, pod)

            tasks.append(asyncio.ensure_future(liveness()))
        probe = container.get("readinessProbe")
        try:
            streak = 0  # consecutive results that disagree with the current readiness
            while probe and not self._deleting(namespace, name):
                ok = await kubelet.probe_once(probe, pod, ip)
                streak = streak + 1 if ok != ready else 0
                # Ready after successThreshold successes, not ready after failureThreshold failures.
                if streak >= probe.get("successThreshold" if ok else "failureThreshold", 1 if ok else 3):
                    ready, streak = ok, 0
                    if not ok:
                        await self._event(pod, "Unhealthy", "Readiness probe failed", "Warning")
                    await self._set_pod_status(namespace, name, containerStatuses=[status(ready)], conditions=self._conditions(ready))
                await asyncio.sleep(probe.get("periodSeconds", 10))
            if not probe:
                await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()

    @staticmethod
    def _conditions(ready):
        value = "True" if ready else "False"
        return [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": value}, {"type": "Ready", "status": value}]  # fmt: skip

    async def _kill(self, process, container, pod, grace=None):
        """SIGTERM to the container's PID 1; after the grace period, SIGKILL."""
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
        process.signal(15)
        try:
            await asyncio.wait_for(self.loop.run_in_executor(None, process.proc.wait), max(grace, 1))
        except asyncio.TimeoutError:
            process.kill()
            await self.loop.run_in_executor(None, process.proc.wait)

    async def _delete_pod(self, namespace, name, grace):
        pod = self.store.get(("pods", namespace, name))
        if pod is None:
            return None
        if "deletionTimestamp" not in pod["metadata"]:
            pod = copy.deepcopy(pod)
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
            pod["metadata"]["deletionTimestamp"] = now()
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            await self._record("pods", namespace, "MODIFIED", pod)
            process = self.containers.get((namespace, name))
            if process is not None:
                await self._event(pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}")
                asyncio.ensure_future(self._kill(process, pod["spec"]["containers"][0], pod, grace))
            # A Deployment's pod is replaced at once (the terminating one no longer counts).
            for (r, ns, deployment_name), deployment in list(self.store.items()):
                if r == "deployments" and ns == namespace and selects(deployment["spec"]["selector"], pod["metadata"].get("labels") or {}):
                    asyncio.ensure_future(self._reconcile_deployment(namespace, deployment_name))
        return pod

    async def _teardown(self, namespace, name):
        sandbox = getattr(self, "_sandboxes", {}).pop((namespace, name), None)
        if sandbox is not None:
            await self.loop.run_in_executor(None, sandbox.stop)
        shutil.rmtree(self.workdir / "pods" / f"{namespace}_{name}", ignore_errors=True)
        pod = self.store.get(("pods", namespace, name))
        if pod is not None:
            await self._record("pods", namespace, "DELETED", copy.deepcopy(pod))
        self.pod_tasks.pop((namespace, name), None)
        await self._release_claims(namespace)
