"""A `kubectl` for the generated scripts that call one (scripts/hub-db), on the emulated cluster.

No API server can run here, so the tests put this on the scripts' PATH as `kubectl`. Run as
a program it is the client: it parses its arguments as kubectl would, logs every call
(accepted or not) as a JSON line to $KUBECTL_STANDIN_LOG, and hands what it accepted to the
test process over the (abstract) Unix socket named $KUBECTL_STANDIN_SOCKET, where `KubectlStandin` carries it
out on the hubs it serves (tests/hubrunner.py's HubDeployment) and sends back the output and
exit status.

It is strict. It knows kubectl's syntax for exactly what the scripts need, and refuses
everything else with exit status 2 and a line saying so, instead of guessing:

- the namespace, `-n NS`, `-n=NS`, `--namespace NS` or `--namespace=NS`, which it requires
  (a real kubectl would fall back on the kube context's namespace: a script must name its own);
- `exec [-i|--stdin] [-q|--quiet] [-c|--container NAME] TARGET -- COMMAND [ARG...]`,
  TARGET `deployment/NAME` (or `deploy/`, `deployments/`, `deployment.apps/`); the command
  after `--`, as kubectl has required since 1.21 (`exec TARGET COMMAND` is refused). Without
  -i the command's stdin is empty, as with kubectl. No `-t`: no terminal here, and a script
  must not ask for one (a terminal changes the bytes it carries). It runs in the pod's
  container as the container's user, with the container's environment
  (HubDeployment.exec);
- `rollout restart TARGET` (`kubectl rollout restart`: a new pod template) and
  `rollout status TARGET [--timeout=DURATION]` (until every pod has the current template
  and is ready).
"""

import base64
import json
import os
import re
import socket
import sys
import time

DEPLOYMENT_PREFIXES = ("deployment/", "deployments/", "deploy/", "deployment.apps/", "deployments.apps/")


class Usage(Exception):
    """An invocation this stand-in does not accept (kubectl's syntax, or beyond its scope)."""


def _deployment(target):
    for prefix in DEPLOYMENT_PREFIXES:
        if target.startswith(prefix) and len(target) > len(prefix):
            return target[len(prefix):]
    raise Usage(f"target {target!r}: the stand-in knows deployment/NAME only")


def _duration(text):
    """A Go duration as kubectl's --timeout takes it (300s, 5m, 1h30m, 0), in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if text == "0":
        return 0.0
    if not parts or not text:
        raise Usage(f"invalid --timeout {text!r} (a duration: 300s, 5m)")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse(argv):
    """The request an argument list makes: {"verb": ..., "namespace": ..., ...}; Usage if refused."""
    namespace, rest, command = None, [], None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            command = args
            break
        if arg in ("-n", "--namespace"):
            if not args:
                raise Usage(f"flag needs an argument: {arg}")
            namespace = args.pop(0)
        elif arg.startswith(("-n=", "--namespace=")):
            namespace = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if not namespace:
        raise Usage("no namespace (-n): the stand-in does not fall back on a kube context's namespace")
    if not rest:
        raise Usage("no command")
    verb, rest = rest[0], rest[1:]
    if verb == "exec":
        request = {"verb": "exec", "namespace": namespace, "stdin": False, "container": None}
        targets = []
        while rest:
            arg = rest.pop(0)
            if arg in ("-i", "--stdin", "--stdin=true"):
                request["stdin"] = True
            elif arg == "--stdin=false":
                request["stdin"] = False
            elif arg in ("-q", "--quiet"):
                pass
            elif arg in ("-c", "--container"):
                if not rest:
                    raise Usage(f"flag needs an argument: {arg}")
                request["container"] = rest.pop(0)
            elif arg.startswith(("-c=", "--container=")):
                request["container"] = arg.split("=", 1)[1]
            elif arg in ("-t", "--tty") or arg.startswith("--tty=") or re.fullmatch(r"-[a-z]*t[a-z]*", arg):
                raise Usage(f"{arg}: the stand-in has no terminal, and a script must not ask for one")
            elif arg.startswith("-"):
                raise Usage(f"unknown or unsupported flag for exec: {arg}")
            else:
                targets.append(arg)
        if command is None:
            raise Usage("exec [POD] [COMMAND] is not supported anymore. Use exec [POD] -- [COMMAND] instead")
        if len(targets) != 1:
            raise Usage(f"exec takes one target before --, got {targets}")
        if not command:
            raise Usage("you must specify at least one command for the container")
        request.update(deployment=_deployment(targets[0]), command=command)
        return request
    if command is not None:
        raise Usage(f"`--` given to {verb}, which takes no command")
    if verb == "rollout" and rest[:1] == ["restart"] and len(rest) == 2 and not rest[1].startswith("-"):
        return {"verb": "rollout restart", "namespace": namespace, "deployment": _deployment(rest[1])}
    if verb == "rollout" and rest[:1] == ["status"]:
        request = {"verb": "rollout status", "namespace": namespace, "timeout": 0.0}
        targets = []
        for arg in rest[1:]:
            if arg.startswith("--timeout="):
                request["timeout"] = _duration(arg.split("=", 1)[1])
            elif arg.startswith("-"):
                raise Usage(f"unknown or unsupported flag for rollout status: {arg}")
            else:
                targets.append(arg)
        if len(targets) != 1:
            raise Usage(f"rollout status takes one target, got {targets}")
        request["deployment"] = _deployment(targets[0])
        return request
    raise Usage(f"`{' '.join([verb, *rest[:1]])}` is not implemented by the stand-in (the scripts under test must not need it)")


# --- The client (this file run as `kubectl`) -------------------------------------------------


def client(argv):
    entry = {"argv": argv}
    try:
        request = parse(argv)
    except Usage as error:
        entry["refused"] = str(error)
        _log(entry)
        print(f"error: {error} (kubectl stand-in)", file=sys.stderr)
        return 2
    payload = sys.stdin.buffer.read() if request["verb"] == "exec" and request["stdin"] else b""
    entry.update(request=request, stdin_bytes=len(payload))
    _log(entry)
    message = json.dumps({"request": request, "stdin": base64.b64encode(payload).decode()}).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect("\0" + os.environ["KUBECTL_STANDIN_SOCKET"])  # an abstract socket: no path length limit
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        answer = json.loads(b"".join(iter(lambda: sock.recv(1 << 20), b"")))
    sys.stdout.buffer.write(base64.b64decode(answer["stdout"]))
    sys.stderr.buffer.write(base64.b64decode(answer["stderr"]))
    return answer["status"]


def _log(entry):
    with open(os.environ["KUBECTL_STANDIN_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


# --- The server (in the test process) ----------------------------------------------------------


class KubectlStandin:
    """`with KubectlStandin(directory) as kubectl:` a kubectl at kubectl.bin_dir, answering
    for the hubs given to kubectl.serve(hub, ...); kubectl.env() is the environment to run
    the scripts in, kubectl.calls() what they asked for."""

    def __init__(self, directory):
        from pathlib import Path

        self.directory = Path(directory)
        self.bin_dir = self.directory / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        # The socket's name in the abstract namespace (a path under tmp_path can be longer than
        # a socket address may be).
        self.socket_name = f"kubectl-standin-{os.getpid()}-{id(self)}"
        self.log_path = self.directory / "kubectl.log"
        program = self.bin_dir / "kubectl"
        program.write_text(f"#!/bin/sh\nexec {sys.executable} -S {os.path.abspath(__file__)} \"$@\"\n")
        program.chmod(0o755)
        self.hubs = {}

    def serve(self, *hubs):
        """Answer for these hubs (by namespace and Deployment name) from now on, and no others."""
        self.hubs = {(hub.namespace, hub.deployment_name): hub for hub in hubs}

    def env(self):
        return {
            "PATH": f"{self.bin_dir}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "KUBECTL_STANDIN_SOCKET": self.socket_name,
            "KUBECTL_STANDIN_LOG": str(self.log_path),
        }

    def calls(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()]

    def __enter__(self):
        import socketserver
        import threading

        standin = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                message = json.loads(self.rfile.read())
                try:
                    status, out, err = standin.run(message["request"], base64.b64decode(message["stdin"]))
                except Exception as error:  # noqa: BLE001 (reported to the script, and to the test)
                    status, out, err = 1, b"", f"kubectl stand-in: {type(error).__name__}: {error}\n".encode()
                    standin.errors.append(error)
                self.wfile.write(json.dumps({"status": status, "stdout": base64.b64encode(out).decode(),
                                             "stderr": base64.b64encode(err).decode()}).encode())  # fmt: skip

        self.errors = []
        self.server = socketserver.ThreadingUnixStreamServer("\0" + self.socket_name, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # --- what each verb does on the emulated cluster ---
    def run(self, request, stdin):
        hub = self.hubs.get((request["namespace"], request["deployment"]))
        if hub is None:
            return 1, b"", f'Error from server (NotFound): deployments.apps "{request["deployment"]}" not found\n'.encode()
        if request["verb"] == "exec":
            return self.exec(hub, request, stdin)
        if request["verb"] == "rollout restart":
            hub.cluster.rollout_restart(hub.namespace, hub.deployment_name)
            return 0, f"deployment.apps/{hub.deployment_name} restarted\n".encode(), b""
        return self.rollout_status(hub, request["timeout"])

    def exec(self, hub, request, stdin):
        pod = hub.pod_object()
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        name = request["container"] or next(iter(containers))
        if name not in containers:
            return 1, b"", f"error: container {name} not found in pod {hub.pod}\n".encode()
        # The user the runtime runs the container as: the container's securityContext, else the pod's.
        context = {**(pod["spec"].get("securityContext") or {}), **(containers[name].get("securityContext") or {})}
        user = f"{context.get('runAsUser', 0)}:{context.get('runAsGroup', 0)}"
        result = hub.exec(request["command"], user, timeout=600, input=stdin, text=False, container_env=True)
        return result.returncode, result.stdout, result.stderr

    def rollout_status(self, hub, timeout):
        from emulated_cluster import template_hash

        cluster, namespace, name = hub.cluster, hub.namespace, hub.deployment_name
        deadline = time.monotonic() + (timeout or 3600)
        while time.monotonic() < deadline:
            deployment = cluster.store[("deployments", namespace, name)]
            wanted = template_hash(deployment["spec"]["template"])
            pods = cluster.deployment_pods(namespace, name, include_terminating=True)
            if (len(pods) == deployment["spec"].get("replicas", 1)
                    and all(p["metadata"]["labels"].get("pod-template-hash") == wanted for p in pods)
                    and all(cluster.pod_ready(namespace, p["metadata"]["name"]) for p in pods)):  # fmt: skip
                return 0, f'deployment "{name}" successfully rolled out\n'.encode(), b""
            time.sleep(0.2)
        return 1, b"", b"error: timed out waiting for the condition\n"


if __name__ == "__main__":
    sys.exit(client(sys.argv[1:]))
