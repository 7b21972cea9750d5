"""A strict stand-in for `kubectl` that answers from a file of objects, for the generated
scripts that read and change objects (scripts/reload-secrets, scripts/uninstall; the exec into
a running hub that scripts/hub-db needs has a stand-in of its own, support/kubectl_standin.py):
it logs every call, answers from a JSON file of objects, changes them as the API server would,
and rejects any syntax it was not taught.

What it knows (each form as real kubectl spells it; `real_kubectl_accepts` below asks the real
kubectl's own parser about every logged call, so the grammar here cannot drift from it):

    kubectl -n NS get TYPE NAME -o json
    kubectl -n NS get TYPE[,TYPE...] -l SELECTOR -o name
    kubectl -n NS patch deployment NAME --type=merge -p JSON
    kubectl -n NS rollout status deployment/NAME --timeout=DURATION
    kubectl -n NS delete TYPE[,TYPE...] -l SELECTOR [--wait=true] [--cascade=foreground]
    kubectl -n NS delete TYPE/NAME... [--wait=true]

Anything else: one line on stderr and exit status 1, as kubectl does with a usage error.
Run as a program, `install(directory, state, log)` puts it on a PATH as `kubectl`.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

# Resource names kubectl resolves (singular, plural, short) -> (kind, the prefix of `-o name`).
RESOURCES = {}
for _kind, _names, _prefix in (
    ("Pod", ("pod", "pods", "po"), "pod"),
    ("Deployment", ("deployment", "deployments", "deploy"), "deployment.apps"),
    ("Service", ("service", "services", "svc"), "service"),
    ("Ingress", ("ingress", "ingresses", "ing"), "ingress.networking.k8s.io"),
    ("NetworkPolicy", ("networkpolicy", "networkpolicies", "netpol"), "networkpolicy.networking.k8s.io"),
    ("Role", ("role", "roles"), "role.rbac.authorization.k8s.io"),
    ("RoleBinding", ("rolebinding", "rolebindings"), "rolebinding.rbac.authorization.k8s.io"),
    ("ServiceAccount", ("serviceaccount", "serviceaccounts", "sa"), "serviceaccount"),
    ("ConfigMap", ("configmap", "configmaps", "cm"), "configmap"),
    ("Secret", ("secret", "secrets"), "secret"),
    ("PersistentVolumeClaim", ("persistentvolumeclaim", "persistentvolumeclaims", "pvc"), "persistentvolumeclaim"),
):
    for _name in _names:
        RESOURCES[_name] = (_kind, _prefix)
# The group-qualified type names of `-o name`, which kubectl accepts back as TYPE/NAME.
RESOURCES.update({prefix: (kind, prefix) for kind, prefix in set(RESOURCES.values())})
PREFIX = {kind: prefix for kind, prefix in RESOURCES.values()}

# Flags each verb takes here (a subset of the real ones), and whether they take a value.
FLAGS = {
    "get": {"-l": True, "--selector": True, "-o": True, "--output": True},
    "patch": {"--type": True, "-p": True, "--patch": True},
    "rollout status": {"--timeout": True},
    "delete": {"-l": True, "--selector": True, "--wait": True, "--cascade": True},
}
DURATION = re.compile(r"^\d+(s|m|h)$")


class Usage(Exception):
    pass


def parse(verb, words):
    """(positional arguments, {flag: value}) of a verb's words; Usage on anything unknown."""
    allowed, positional, flags = FLAGS[verb], [], {}
    words = list(words)
    while words:
        word = words.pop(0)
        if not word.startswith("-"):
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        if name not in allowed:
            raise Usage(f"error: unknown flag: {name}")
        if not eq:
            if not words:
                raise Usage(f"error: flag needs an argument: {name}")
            value = words.pop(0)
        long = {"-l": "--selector", "-o": "--output", "-p": "--patch"}.get(name, name)
        if long in flags:
            raise Usage(f"error: {long} given twice")
        flags[long] = value
    return positional, flags


def resolve(type_name):
    if type_name not in RESOURCES:
        raise Usage(f'error: the server doesn\'t have a resource type "{type_name}"')
    return RESOURCES[type_name][0]


def matches(labels, selector):
    for term in selector.split(","):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key) != value:
                return False
        else:
            raise Usage(f"error: this stand-in does not know the selector term {term!r}")
    return True


def merge_patch(target, patch):
    """RFC 7386, as `--type=merge` applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def run(argv, state):
    """(stdout, stderr, status) of one call; state changes in place."""
    if argv[:1] != ["-n"] or len(argv) < 3:
        raise Usage("error: this stand-in wants -n NAMESPACE first, as the scripts write it")
    namespace, words = argv[1], argv[2:]
    objects = state["objects"]

    def in_namespace(kind=None):
        return [o for o in objects if o["metadata"].get("namespace") == namespace and kind in (None, o["kind"])]

    def find(kind, name):
        found = [o for o in in_namespace(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def not_found(kind, name):
        plural = next(n for n, (k, _) in RESOURCES.items() if k == kind and n.endswith("s") and "." not in n)
        return "", f'Error from server (NotFound): {plural} "{name}" not found\n', 1

    verb, rest = (("rollout status", words[2:]) if words[:2] == ["rollout", "status"] else (words[0], words[1:]))
    if verb not in FLAGS:
        raise Usage(f'error: unknown command "{words[0]}" for "kubectl"')
    positional, flags = parse(verb, rest)

    if verb == "get":
        output = flags.get("--output")
        if output == "json" and len(positional) == 2 and "--selector" not in flags:
            kind = resolve(positional[0])
            obj = find(kind, positional[1])
            return (json.dumps(obj), "", 0) if obj else not_found(kind, positional[1])
        if output == "name" and len(positional) == 1 and "--selector" in flags:
            kinds = [resolve(t) for t in positional[0].split(",")]
            found = [o for kind in kinds for o in in_namespace(kind) if matches(o["metadata"].get("labels") or {}, flags["--selector"])]
            if not found:
                return "", f"No resources found in {namespace} namespace.\n", 0
            return "".join(f"{PREFIX[o['kind']]}/{o['metadata']['name']}\n" for o in found), "", 0
        raise Usage(f"error: this stand-in does not know `get {' '.join(rest)}`")

    if verb == "patch":
        if len(positional) != 2 or resolve(positional[0]) != "Deployment" or flags.get("--type") != "merge" or "--patch" not in flags:
            raise Usage("error: this stand-in patches only `deployment NAME --type=merge -p JSON`")
        obj = find("Deployment", positional[1])
        if obj is None:
            return not_found("Deployment", positional[1])
        try:
            patch = json.loads(flags["--patch"])
        except ValueError as error:
            raise Usage(f"error: unable to parse the patch: {error}") from None
        before = json.dumps(obj["spec"]["template"], sort_keys=True)
        objects[objects.index(obj)] = patched = merge_patch(obj, patch)
        if json.dumps(patched["spec"]["template"], sort_keys=True) != before:
            state.setdefault("rolled", []).append(positional[1])  # a new ReplicaSet
            return f"deployment.apps/{positional[1]} patched\n", "", 0
        return f"deployment.apps/{positional[1]} patched (no change)\n", "", 0

    if verb == "rollout status":
        if len(positional) != 1 or "/" not in positional[0] or not DURATION.match(flags.get("--timeout", "")):
            raise Usage("error: this stand-in wants `rollout status TYPE/NAME --timeout=DURATION`")
        type_name, name = positional[0].split("/", 1)
        if resolve(type_name) != "Deployment":
            raise Usage(f"error: no status viewer for {type_name}")
        if find("Deployment", name) is None:
            return not_found("Deployment", name)
        if name in state.get("failing_rollouts", []):
            return "", f"error: timed out waiting for the condition\n", 1
        return f'deployment "{name}" successfully rolled out\n', "", 0

    if verb == "delete":
        if flags.get("--wait", "true") != "true" or flags.get("--cascade", "foreground") not in ("foreground", "background"):
            raise Usage("error: this stand-in wants --wait=true and --cascade=foreground|background")
        if "--selector" in flags:
            if len(positional) != 1 or "/" in positional[0]:
                raise Usage("error: with -l, give one TYPE[,TYPE...]")
            kinds = [resolve(t) for t in positional[0].split(",")]
            doomed = [o for kind in kinds for o in in_namespace(kind) if matches(o["metadata"].get("labels") or {}, flags["--selector"])]
            if not doomed:
                return "", f"No resources found\n", 0
        else:
            if not positional or not all("/" in p for p in positional):
                raise Usage("error: give TYPE/NAME arguments, or TYPE with -l")
            doomed = []
            for word in positional:
                type_name, name = word.split("/", 1)
                obj = find(resolve(type_name), name)
                if obj is None:
                    return not_found(resolve(type_name), name)
                doomed.append(obj)
        # A pod protected by its claim: a claim in use cannot go before the pods using it.
        for obj in doomed:
            if obj["kind"] == "PersistentVolumeClaim":
                users = [p for p in in_namespace("Pod") if p not in doomed and obj["metadata"]["name"] in claims_of(p)]
                if users:
                    return "", f"error: persistentvolumeclaim {obj['metadata']['name']} is still used by pod {users[0]['metadata']['name']} (kubernetes.io/pvc-protection: the delete would wait for ever)\n", 1
        for obj in doomed:
            objects.remove(obj)
            # The Deployment's pods go with it (in the foreground: before the command returns).
            if obj["kind"] == "Deployment" and flags.get("--cascade") == "foreground":
                for pod in [p for p in in_namespace("Pod") if (p["metadata"].get("ownerDeployment") == obj["metadata"]["name"])]:
                    objects.remove(pod)
        return "".join(f"{PREFIX[o['kind']]} \"{o['metadata']['name']}\" deleted\n" for o in doomed), "", 0

    raise Usage("error: unreachable")


def claims_of(pod):
    return [v["persistentVolumeClaim"]["claimName"] for v in pod.get("spec", {}).get("volumes", []) if "persistentVolumeClaim" in v]


def main(argv):
    state_file, log_file = Path(os.environ["KUBECTL_STANDIN_STATE"]), Path(os.environ["KUBECTL_STANDIN_LOG"])
    with log_file.open("a", encoding="utf-8") as log:
        log.write(json.dumps(argv) + "\n")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    try:
        out, err, status = run(argv, state)
    except Usage as usage:
        out, err, status = "", f"{usage}\n", 1
        state.setdefault("usage_errors", []).append(argv)
    state_file.write_text(json.dumps(state), encoding="utf-8")
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


def install(directory, objects):
    """A `kubectl` in directory/bin, its state (objects) and its log; returns (env, state file, log file)."""
    directory = Path(directory)
    (directory / "bin").mkdir(parents=True, exist_ok=True)
    script = directory / "bin" / "kubectl"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      "import kubectl_state_standin\nsys.exit(kubectl_state_standin.main(sys.argv[1:]))\n")  # fmt: skip
    script.chmod(0o755)
    state, log = directory / "kubectl-state.json", directory / "kubectl-calls.jsonl"
    state.write_text(json.dumps({"objects": objects}), encoding="utf-8")
    log.write_text("", encoding="utf-8")
    env = dict(os.environ, PATH=f"{directory / 'bin'}{os.pathsep}{os.environ['PATH']}",
               KUBECTL_STANDIN_STATE=str(state), KUBECTL_STANDIN_LOG=str(log))  # fmt: skip
    return env, state, log


def calls(log):
    return [json.loads(line) for line in Path(log).read_text(encoding="utf-8").splitlines() if line]


def read_state(state):
    return json.loads(Path(state).read_text(encoding="utf-8"))


def real_kubectl_accepts(kubectl, argv, workdir):
    """None if the real kubectl parses argv and gets as far as calling the API server (a closed
    port here), else what it said: its own verdict on the syntax the stand-in accepted."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Path(workdir) / "closed-kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: closed, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: nobody, user: {}}]\n"
        "contexts: [{name: closed, context: {cluster: closed, user: nobody}}]\ncurrent-context: closed\n",
        encoding="utf-8",
    )
    result = subprocess.run([kubectl, "--kubeconfig", str(config), "--request-timeout=5s", *argv],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    said = result.stdout + result.stderr
    if result.returncode != 0 and f"127.0.0.1:{port}" in said and "connection refused" in said:
        return None
    return said.strip() or f"exit {result.returncode}"
