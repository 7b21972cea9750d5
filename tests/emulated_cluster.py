"""A small, strict stand-in for one namespace of a Kubernetes cluster, for the journey tests.

No API server can be installed here, so this emulates the parts KubeSpawner 7 touches,
and no more, on loopback:

- **API server** (aiohttp): core/v1 pods, persistentvolumeclaims and events in ONE
  namespace; list (label and field selectors, resourceVersion), watch (a stream of JSON
  lines, as kubernetes_asyncio's Watch reads them), get, create (409 when the name is
  taken), delete. Clients authenticate with the service account's token (401 otherwise)
  and are authorized by the Role the generated overlay renders: a verb on a resource the
  Role does not grant, or any other namespace, gets 403. Every request is logged
  (`Cluster.requests`, and `api.log` in the work directory).
- **Kubelet**: a created pod gets an address of its own (127.X.Y.N) and its container's
  command runs as a local process, as the pod's user, with exactly the pod's environment
  plus what the image sets (PATH, HOME). The one translation is the pod network's:
  0.0.0.0 inside a pod is the pod's own address. Images are local virtual environments
  registered with `Cluster.add_image`; any other image fails to pull, as on a cluster.
  A claim mounted at the image's home becomes the process's home directory.
- **Service and DNS**: `hub.<namespace>.svc` resolves to a Service address through a
  private /etc/hosts, bind-mounted in a mount namespace of its own (the "node") that every
  pod process enters; the machine's /etc/hosts is never touched. The Service forwards its
  port 8081 to wherever the hub listens now, and keeps doing so across hub restarts.

Root is needed (mount namespace, running pods as uid 1000), as in CI.
"""

import asyncio
import copy
import datetime
import ipaddress
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from aiohttp import web

RESOURCES = ("pods", "persistentvolumeclaims", "events")
KINDS = {"pods": "Pod", "persistentvolumeclaims": "PersistentVolumeClaim", "events": "Event"}


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- RBAC ---------------------------------------------------------------------------------


def role_of(objects, service_account="hub"):
    """The rules of the Role bound to the service account, from rendered manifests."""
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        if any(s.get("kind") == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
            assert binding["roleRef"]["kind"] == "Role", binding["roleRef"]
            return roles[binding["roleRef"]["name"]]["rules"]
    raise AssertionError(f"no RoleBinding for the service account {service_account!r}")


def allowed(rules, verb, resource):
    """Does a rule grant verb on this core-API resource? (Names and subresources: not used.)"""
    for rule in rules:
        if "" not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if resource in rule.get("resources", []) or "*" in rule.get("resources", []):
            if verb in rule.get("verbs", []) or "*" in rule.get("verbs", []):
                return True
    return False


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
        if op == "exists" and key not in own:
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


def container_status(container, ready, state):
    """A containerStatuses entry with every field the client's model requires."""
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": f"emulated://{container['image']}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


# --- The cluster --------------------------------------------------------------------------


class Cluster:
    """One namespace of an emulated cluster; `with Cluster(...) as cluster:` runs it."""

    def __init__(self, workdir, namespace, role_rules, service_account_token=None):
        # Pod processes run as uid 1000 and must reach their home directories: pytest's
        # temporary directories are root's alone, so the node's files live in TMPDIR (open
        # to every user, like /tmp; conftest.py's run directory); its logs are copied to
        # logdir at the end.
        self.logdir = Path(workdir)
        self.workdir = Path(tempfile.mkdtemp(prefix="emulated-cluster-"))
        os.chmod(self.workdir, 0o755)
        self.namespace = namespace
        self.rules = role_rules
        self.token = service_account_token or uuid.uuid4().hex
        self.images = {}
        self.objects = {r: {} for r in RESOURCES}
        self.history = []  # (resourceVersion, resource, type, object): what watches replay
        self.requests = []
        self.created = []  # (resource, name) of every successful create
        self.received = {}  # (resource, name) -> the body of its create request, as sent
        self.resource_version = 0
        self.processes = {}  # pod name -> Popen
        self.log_path = self.workdir / "api.log"
        # 127.X.Y.0/24 of our own: .1 is the hub's Service, pods get .2 and up.
        net = ipaddress.ip_network(f"127.{random.randint(16, 250)}.{random.randint(1, 250)}.0/24")
        self.service_ip = str(net[1])
        self._pod_ips = (str(ip) for ip in itertools.islice(net.hosts(), 1, None))
        self.hub_target = None  # (host, port) where the hub's API listens now
        self.node = None
        self.loop = None
        self._changed = None

    # --- life cycle ---
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._write_hosts_and_start_node()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="emulated-cluster")
        self.thread.start()
        assert ready.wait(20), "the emulated API server did not start"

    def stop(self):
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if self.node is not None and self.node.poll() is None:
            self.node.kill()
            self.node.wait()
        keep = self.logdir / "cluster-logs"
        keep.mkdir(parents=True, exist_ok=True)
        for log in self.workdir.glob("*.log"):
            shutil.copy2(log, keep / log.name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_hosts_and_start_node(self):
        """The node: a process holding a mount namespace whose /etc/hosts knows the Service."""
        hosts = self.workdir / "hosts"
        original = Path("/etc/hosts").read_text(encoding="utf-8")
        service = f"hub.{self.namespace}.svc"
        hosts.write_text(
            f"{original.rstrip()}\n# emulated cluster DNS\n"
            f"{self.service_ip} {service} hub.{self.namespace}.svc.cluster.local hub.{self.namespace} \n",
            encoding="utf-8",
        )
        os.chmod(hosts, 0o644)
        self.node = subprocess.Popen(
            [
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", 'mount --bind "$0" /etc/hosts && echo ready && exec sleep infinity', str(hosts),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = self.node.stdout.readline()
        assert line.strip() == b"ready", f"could not make the node's mount namespace (need root): {line!r}"

    def _run(self, ready):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.service = self.loop.run_until_complete(
            asyncio.start_server(self._forward, self.service_ip, 8081)
        )
        ready.set()
        self.loop.run_forever()

    async def _shutdown(self):
        for name in list(self.processes):
            await self._stop_container(name, grace=2)
        self.service.close()
        await self.runner.cleanup()

    # --- for the tests ---
    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def add_image(self, image, bin_dir, cmd=("jupyterhub-singleuser",), home="/home/jovyan"):
        """A local stand-in for a container image: its PATH (bin_dir first), CMD and home.

        The default CMD is that of Zero to JupyterHub's user images (KubeSpawner leaves
        the command to the image unless `KubeSpawner.cmd` is set).
        """
        self.images[image] = {"bin": str(bin_dir), "cmd": list(cmd), "home": home}

    def point_service_at(self, host, port):
        """The hub's Service forwards to this address (the hub pod's, after each start)."""
        self.hub_target = (host, port)

    def write_kube_config(self, path, namespace="not-the-pod-namespace"):
        """What KubeSpawner loads outside a cluster; the context's namespace must be ignored."""
        Path(path).write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
                    "users": [{"name": "hub", "user": {"token": self.token}}],
                    "contexts": [
                        {"name": "emulated", "context": {"cluster": "emulated", "user": "hub", "namespace": namespace}}
                    ],
                    "current-context": "emulated",
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        return Path(path)

    def refused(self):
        return [r for r in self.requests if r["status"] == 403]

    def pods(self):
        return copy.deepcopy(self.objects["pods"])

    def claims(self):
        return copy.deepcopy(self.objects["persistentvolumeclaims"])

    def created_names(self, resource):
        return [name for kind, name in self.created if kind == resource]

    def pod_process(self, name):
        return self.processes.get(name)

    def wait_for(self, predicate, timeout, what):
        """Poll predicate() (the cluster's state, read from the test's thread) until it is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.log_tail()}")

    def log_tail(self, lines=30):
        return "---- emulated API server (last requests) ----\n" + "\n".join(
            f"{r['status']} {r['verb'] or r['method']} {r['path']}" for r in self.requests[-lines:]
        )

    # --- the API server ---
    async def _handle(self, request):
        entry = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "verb": None,
            "resource": None,
            "name": None,
            "namespace": None,
            "status": None,
        }
        self.requests.append(entry)
        try:
            response = await self._dispatch(request, entry)
        except web.HTTPException as error:
            response = error
        entry["status"] = response.status
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(
                f"{now()} {entry['status']} {request.method} {request.path_qs}"
                f" verb={entry['verb']} resource={entry['resource']}\n"
            )
        return response

    @staticmethod
    def _status(code, reason, message):
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code},
            status=code,
        )

    async def _dispatch(self, request, entry):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        parts = request.path.strip("/").split("/")
        # /api/v1/namespaces/<ns>/<resource>[/<name>]
        if len(parts) not in (5, 6) or parts[:3] != ["api", "v1", "namespaces"]:
            return self._status(403, "Forbidden", f'the hub may not {request.method} "{request.path}"')
        namespace, resource = parts[3], parts[4]
        name = parts[5] if len(parts) == 6 else None
        watching = request.query.get("watch", "").lower() in ("true", "1")
        verb = {
            ("GET", False): "watch" if watching else "list",
            ("GET", True): "get",
            ("POST", False): "create",
            ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection",
            ("PUT", True): "update",
            ("PATCH", True): "patch",
        }.get((request.method, name is not None))
        entry.update(verb=verb, resource=resource, name=name, namespace=namespace)
        if verb is None:
            return self._status(405, "MethodNotAllowed", f"{request.method} {request.path}")
        if namespace != self.namespace or not allowed(self.rules, verb, resource):
            return self._status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:{self.namespace}:hub" cannot'
                f' {verb} resource "{resource}" in API group "" in the namespace "{namespace}"',
            )
        if resource not in RESOURCES:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({resource})")
        if verb in ("list", "watch"):
            try:
                labels = parse_selector(request.query.get("labelSelector"))
                fields = parse_selector(request.query.get("fieldSelector"))
            except ValueError as error:
                return self._status(400, "BadRequest", str(error))
            if verb == "list":
                return self._list(resource, labels, fields)
            return await self._watch(request, resource, labels, fields)
        if verb == "get":
            obj = self.objects[resource].get(name)
            if obj is None:
                return self._status(404, "NotFound", f'{resource} "{name}" not found')
            return web.json_response(obj)
        if verb == "create":
            return await self._create(resource, await request.json())
        if verb == "delete":
            body = (await request.json() if request.can_read_body else None) or {}
            grace = request.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
            return await self._delete(resource, name, None if grace is None else int(grace))
        return self._status(405, "MethodNotAllowed", f"{verb} is not emulated")

    def _list(self, resource, labels, fields):
        items = [o for o in self.objects[resource].values() if matches(o, labels, fields)]
        return web.json_response(
            {
                "kind": KINDS[resource] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }
        )

    async def _watch(self, request, resource, labels, fields):
        since = int(request.query.get("resourceVersion") or 0)
        timeout = int(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = self.loop.time() + timeout
        sent = since
        try:
            while True:
                for rv, kind, type_, obj in self.history:
                    if rv > sent and kind == resource:
                        sent = rv
                        if matches(obj, labels, fields):
                            line = json.dumps({"type": type_, "object": obj}) + "\n"
                            await response.write(line.encode())
                sent = max(sent, self.resource_version)
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    break
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _record(self, resource, type_, obj):
        """Store a change (new resourceVersion) and wake the watches."""
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        if type_ == "DELETED":
            self.objects[resource].pop(obj["metadata"]["name"], None)
        else:
            self.objects[resource][obj["metadata"]["name"]] = obj
        self.history.append((self.resource_version, resource, type_, copy.deepcopy(obj)))
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{now()} {type_} {resource}/{obj['metadata']['name']} resourceVersion={self.resource_version}\n")
        async with self._changed:
            self._changed.notify_all()

    async def _create(self, resource, body):
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return self._status(422, "Invalid", "metadata.name: Required value")
        if name in self.objects[resource]:
            return self._status(409, "AlreadyExists", f'{resource} "{name}" already exists')
        if body.get("metadata", {}).get("namespace") not in (None, self.namespace):
            return self._status(400, "BadRequest", "the namespace of the object does not match the request")
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", KINDS[resource])
        obj["metadata"].update(namespace=self.namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        if resource == "pods":
            obj["status"] = {"phase": "Pending", "conditions": [], "containerStatuses": None}
        elif resource == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound"}
            volume = self.workdir / "volumes" / name
            volume.mkdir(parents=True)
            os.chown(volume, 1000, 100)  # as fsGroup and the provisioner would leave it
        await self._record(resource, "ADDED", obj)
        self.created.append((resource, name))
        self.received[(resource, name)] = copy.deepcopy(body)
        if resource == "pods":
            asyncio.ensure_future(self._kubelet(name))
        return web.json_response(obj, status=201)

    async def _delete(self, resource, name, grace):
        obj = self.objects[resource].get(name)
        if obj is None:
            return self._status(404, "NotFound", f'{resource} "{name}" not found')
        if resource == "pods":
            if "deletionTimestamp" not in obj["metadata"]:
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now()
                await self._record(resource, "MODIFIED", obj)
                asyncio.ensure_future(self._finish_pod(name, 30 if grace is None else grace))
            return web.json_response(obj)
        await self._record(resource, "DELETED", copy.deepcopy(obj))
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    # --- events ---
    async def _event(self, pod, reason, message, type_="Normal"):
        name = f"{pod['metadata']['name']}.{uuid.uuid4().hex[:12]}"
        await self._record(
            "events",
            "ADDED",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": self.namespace, "uid": str(uuid.uuid4()), "creationTimestamp": now()},
                "involvedObject": {
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "namespace": self.namespace,
                    "uid": pod["metadata"]["uid"],
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "eventTime": None,
                "source": {"component": "emulated-kubelet"},
            },
        )

    # --- the kubelet ---
    async def _set_pod_status(self, name, **status):
        pod = self.objects["pods"].get(name)
        if pod is None:
            return None
        pod = copy.deepcopy(pod)
        pod["status"].update(status)
        await self._record("pods", "MODIFIED", pod)
        return pod

    async def _kubelet(self, name):
        try:
            await self._run_pod(name)
        except Exception as error:  # a bug here must show, as a failed pod and in the log
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"{now()} kubelet error for pod {name}: {error!r}\n")
            if name in self.objects["pods"]:
                await self._event(self.objects["pods"][name], "Failed", f"emulated kubelet: {error!r}", "Warning")
            raise

    async def _run_pod(self, name):
        pod = self.objects["pods"][name]
        await self._event(pod, "Scheduled", f"Successfully assigned {self.namespace}/{name} to emulated-node")
        spec = pod["spec"]
        [container] = spec["containers"]  # KubeSpawner: one container, no init containers here
        image = self.images.get(container["image"])
        if image is None:
            await self._event(pod, "Failed", f'Failed to pull image "{container["image"]}": not found', "Warning")
            await self._set_pod_status(
                name, containerStatuses=[container_status(container, False, {"waiting": {"reason": "ErrImagePull"}})]
            )
            return
        await self._event(pod, "Pulled", f'Container image "{container["image"]}" already present on machine')
        pod_ip = next(self._pod_ips)
        home = self._home(pod, container, image)
        if home is None:
            return
        security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid = security.get("runAsUser", 0)
        gid = security.get("runAsGroup", security.get("fsGroup", 0))
        if security.get("runAsNonRoot") and uid == 0:
            await self._event(pod, "Failed", "Error: container has runAsNonRoot and image will run as root", "Warning")
            return

        def pod_net(value):
            return value.replace("0.0.0.0", pod_ip)  # what the pod's own network does

        env = {"PATH": f"{image['bin']}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
        for item in container.get("env", []):
            assert "valueFrom" not in item, f"valueFrom is not emulated: {item}"
            env[item["name"]] = pod_net(item.get("value", ""))
        # Kubernetes: `command` replaces the image's ENTRYPOINT (none here), `args` its CMD.
        argv = (container.get("command") or []) + (container.get("args") or image["cmd"])
        argv = [pod_net(a) for a in argv]
        await self._event(pod, "Created", f"Created container {container['name']}")
        log = open(self.workdir / f"{name}.log", "ab")
        self.processes[name] = proc = subprocess.Popen(
            [
                "nsenter", f"--mount=/proc/{self.node.pid}/ns/mnt", f"--wd={home}", "--",
                "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                *argv,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        await self._event(pod, "Started", f"Started container {container['name']}")
        started = now()
        await self._set_pod_status(
            name,
            phase="Running",
            podIP=pod_ip,
            podIPs=[{"ip": pod_ip}],
            hostIP="127.0.0.1",
            startTime=started,
            conditions=[{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            containerStatuses=[container_status(container, True, {"running": {"startedAt": started}})],
        )
        code = await self.loop.run_in_executor(None, proc.wait)
        if self.processes.get(name) is proc and "deletionTimestamp" not in self.objects["pods"][name]["metadata"]:
            # It exited by itself: restartPolicy is KubeSpawner's "OnFailure", but a
            # crash loop would only hide the failure here; report it and stay down.
            await self._event(pod, "BackOff", f"container exited with code {code}", "Warning")
            await self._set_pod_status(
                name,
                phase="Failed" if code else "Succeeded",
                conditions=[{"type": "Ready", "status": "False"}],
                containerStatuses=[container_status(container, False, {"terminated": {"exitCode": code}})],
            )

    def _home(self, pod, container, image):
        """The process's home: the claim mounted at the image's home, else an emptyDir."""
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"] == image["home"] and mount["name"] in claims:
                claim = claims[mount["name"]]
                if claim not in self.objects["persistentvolumeclaims"]:
                    asyncio.ensure_future(
                        self._event(pod, "FailedScheduling", f'persistentvolumeclaim "{claim}" not found', "Warning")
                    )
                    return None
                return self.workdir / "volumes" / claim
        empty = self.workdir / "emptydir" / pod["metadata"]["name"]
        if empty.exists():
            shutil.rmtree(empty)
        empty.mkdir(parents=True)
        os.chown(empty, 1000, 100)
        return empty

    async def _stop_container(self, name, grace):
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(self.loop.run_in_executor(None, proc.wait), max(grace, 1))
        except asyncio.TimeoutError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernels too: the whole pod goes
        except ProcessLookupError:
            pass
        await self.loop.run_in_executor(None, proc.wait)

    async def _finish_pod(self, name, grace):
        pod = self.objects["pods"].get(name)
        await self._stop_container(name, grace)
        if pod is not None:
            await self._event(pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}")
            await self._record("pods", "DELETED", copy.deepcopy(self.objects["pods"][name]))

    # --- the Service in front of the hub ---
    async def _forward(self, reader, writer):
        """One connection to hub.<ns>.svc:8081, relayed to the hub (or refused, if none)."""
        if self.hub_target is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.hub_target)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
