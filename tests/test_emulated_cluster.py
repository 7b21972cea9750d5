"""The emulated cluster refuses and runs what a real cluster refuses and runs: its negative controls.

Every rule the hub, image and journey tests rely on is shown to bite here, on a pod or a
request that must be refused (and is), beside one that must pass (and does):

- Pod Security admission, restricted and baseline, control by control (support/pod_security.py),
  and through the API server: a pod without a seccomp profile in a namespace labelled
  `pod-security.kubernetes.io/enforce: restricted` is refused, the same pod elsewhere is not;
- RBAC as the API server applies it (support/rbac.py): verbs, subresources, resourceNames,
  other namespaces; through the API server with a service account's token;
- the kubelet: runAsUser, runAsGroup and fsGroup on the process and on the volumes,
  readOnlyRootFilesystem (a write to the root fails, to a volume succeeds), runAsNonRoot with
  a root user refused, capabilities and no_new_privs, the downward API, a missing Secret, the
  service account token mounted or not.
"""

import copy
import json
import os
import ssl
import urllib.request
from pathlib import Path

import pytest

from conftest import need_tool
from hubrunner import process_ids
from support import pod_security, pod_spec, rbac

pytestmark = pytest.mark.slow

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def restricted_pod(name="p", command=("sleep", "300"), **container_extra):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1234, "runAsGroup": 2345, "fsGroup": 3456,
                                "seccompProfile": {"type": "RuntimeDefault"}},  # fmt: skip
            "containers": [{
                "name": "c", "image": "shell:1", "command": list(command),
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                **container_extra,
            }],  # fmt: skip
        },
    }


# --- Pod Security admission, control by control -------------------------------------------


def without(path, pod=None):
    pod = copy.deepcopy(pod or restricted_pod())
    *parents, last = path
    target = pod
    for part in parents:
        target = target[part]
    target.pop(last)
    return pod


def setting(path, value, pod=None):
    pod = copy.deepcopy(pod or restricted_pod())
    *parents, last = path
    target = pod
    for part in parents:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[last] = value
    return pod


C = ("spec", "containers", 0, "securityContext")
P = ("spec", "securityContext")
BROKEN = {
    # baseline
    "hostNetwork": (setting(("spec", "hostNetwork"), True), "host namespaces"),
    "hostPID": (setting(("spec", "hostPID"), True), "host namespaces"),
    "privileged": (setting((*C, "privileged"), True), "privileged"),
    "capability added": (setting((*C, "capabilities", "add"), ["SYS_ADMIN"]), "non-default capabilities"),
    "hostPath": (setting(("spec", "volumes"), [{"name": "h", "hostPath": {"path": "/"}}]), "hostPath volumes"),
    "hostPort": (setting(("spec", "containers", 0, "ports"), [{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    "procMount": (setting((*C, "procMount"), "Unmasked"), "procMount"),
    "seccomp Unconfined": (setting((*C, "seccompProfile"), {"type": "Unconfined"}), "seccompProfile"),
    "unsafe sysctl": (setting((*P, "sysctls"), [{"name": "kernel.msgmax", "value": "1"}]), "forbidden sysctls"),
    "SELinux user": (setting((*C, "seLinuxOptions"), {"user": "system_u"}), "seLinuxOptions"),
    "AppArmor unconfined": (setting((*C, "appArmorProfile"), {"type": "Unconfined"}), "forbidden AppArmor profile"),
    # restricted
    "no seccomp profile": (without((*P, "seccompProfile")), "seccompProfile"),
    "allowPrivilegeEscalation missing": (without((*C, "allowPrivilegeEscalation")), "allowPrivilegeEscalation != false"),
    "capabilities not dropped": (without((*C, "capabilities")), "unrestricted capabilities"),
    "NET_RAW added": (setting((*C, "capabilities", "add"), ["NET_RAW"]), "unrestricted capabilities"),
    "runAsNonRoot missing": (without((*P, "runAsNonRoot")), "runAsNonRoot != true"),
    "runAsNonRoot false in the container": (setting((*C, "runAsNonRoot"), False), "runAsNonRoot != true"),
    "runAsUser 0": (setting((*C, "runAsUser"), 0), "runAsUser=0"),
    "a gitRepo volume": (setting(("spec", "volumes"), [{"name": "g", "gitRepo": {"repository": "x"}}]), "restricted volume types"),
}


def test_a_restricted_pod_is_admitted_at_every_level():
    for level in pod_security.LEVELS:
        assert pod_security.violations(restricted_pod(), level) == [], level


@pytest.mark.parametrize("fault", list(BROKEN))
def test_pod_security_refuses(fault):
    pod, check = BROKEN[fault]
    found = pod_security.violations(pod, "restricted")
    assert check in [name for name, _ in found], found
    message = pod_security.admission_error(pod, "p", "restricted")
    assert message.startswith('pods "p" is forbidden: violates PodSecurity "restricted:latest": ') and check in message, message
    assert pod_security.violations(pod, "privileged") == []


def test_baseline_allows_what_only_restricted_refuses():
    assert pod_security.violations(BROKEN["no seccomp profile"][0], "baseline") == []
    assert pod_security.violations(BROKEN["runAsUser 0"][0], "baseline") == []
    assert pod_security.violations(BROKEN["privileged"][0], "baseline")


def test_seccomp_on_the_pod_covers_its_containers_but_a_container_may_not_unset_it():
    pod = restricted_pod()
    assert pod_security.violations(pod, "restricted") == []
    moved = setting((*C, "seccompProfile"), {"type": "RuntimeDefault"}, without((*P, "seccompProfile")))
    assert pod_security.violations(moved, "restricted") == []
    assert pod_security.violations(setting((*C, "seccompProfile"), {"type": "Unconfined"}), "restricted")


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, query, expected",
    [
        ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "pods", "", "")),
        ("GET", "/api/v1/namespaces/ns/pods", {"watch": "True"}, ("watch", "pods", "", "")),
        ("GET", "/api/v1/namespaces/ns/pods", {"fieldSelector": "metadata.name=p"}, ("list", "pods", "", "p")),
        ("GET", "/api/v1/namespaces/ns/pods/p", {}, ("get", "pods", "", "p")),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, ("get", "pods", "log", "p")),
        ("POST", "/api/v1/namespaces/ns/pods/p/exec", {}, ("create", "pods", "exec", "p")),
        ("PATCH", "/api/v1/namespaces/ns/pods/p/status", {}, ("patch", "pods", "status", "p")),
        ("POST", "/api/v1/namespaces/ns/persistentvolumeclaims", {}, ("create", "persistentvolumeclaims", "", "")),
        ("DELETE", "/api/v1/namespaces/ns/pods", {}, ("deletecollection", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/ns/events", {}, ("watch", "events", "", "")),
        ("GET", "/apis/apps/v1/namespaces/ns/deployments/hub", {}, ("get", "deployments", "", "hub")),
    ],
)
def test_request_attributes(method, path, query, expected):
    attributes = rbac.request_attributes(method, path, query)
    assert (attributes["verb"], attributes["resource"], attributes["subresource"], attributes["name"]) == expected


def attrs(verb, resource, name="", subresource="", group=""):
    return {"verb": verb, "apiGroup": group, "namespace": "ns", "resource": resource, "subresource": subresource, "name": name}


def test_rbac_resource_names_subresources_and_verbs():
    named = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hub-secrets"], "verbs": ["get", "watch", "list"]}]
    assert rbac.allows(named, attrs("get", "secrets", "hub-secrets"))
    assert not rbac.allows(named, attrs("get", "secrets", "other")), "a name outside resourceNames"
    assert not rbac.allows(named, attrs("list", "secrets")), "a list without a name, under resourceNames"
    assert rbac.allows(named, attrs("list", "secrets", "hub-secrets")), "a list pinned to the name by a field selector"
    assert not rbac.allows(named, attrs("create", "secrets")), "create cannot be limited by resourceNames"
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]}]
    assert rbac.allows(pods, attrs("get", "pods", "p"))
    assert not rbac.allows(pods, attrs("get", "pods", "p", "log")), "a subresource the rule does not name"
    assert not rbac.allows(pods, attrs("create", "pods", "p", "exec")), "exec is pods/exec, not pods"
    assert not rbac.allows(pods, attrs("delete", "pods", "p"))
    assert rbac.allows([{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}], attrs("get", "pods", "p", "log"))
    assert rbac.allows([{"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}], attrs("get", "pods", "p", "log"))
    assert not rbac.allows(pods, attrs("get", "deployments", "hub", group="apps")), "another API group"


# --- Through the API server and onto the node -------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    need_tool("unshare")
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")
    from emulated_cluster import Cluster
    from support.kubelet import HostImage

    with Cluster(tmp_path) as cluster:
        cluster.create_namespace("strict", RESTRICTED)
        cluster.create_namespace("open")
        cluster.add_image(HostImage("shell:1", {"User": "", "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]}))
        yield cluster


def api_as(cluster, namespace, role_rules, account="tester"):
    """A token of a service account bound to a Role with these rules; a request function."""
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account, "namespace": namespace}, "rules": role_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": account, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account}]},
    ])  # fmt: skip
    token = "test-token-" + account
    cluster.tokens[token] = (namespace, account)
    context = ssl.create_default_context(cafile=str(cluster.tls["ca.crt"]))

    def request(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(cluster.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, context=context, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    return request


def test_api_server_admits_by_the_namespaces_label(cluster):
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}]
    pod = without((*P, "seccompProfile"), restricted_pod(name="no-seccomp"))
    for namespace, expected in (("strict", 403), ("open", 201)):
        request = api_as(cluster, namespace, rules)
        status, body = request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        assert status == expected, body
        if expected == 403:
            assert 'violates PodSecurity "restricted:latest": seccompProfile' in body["message"], body
    # The admitted one, deleted again.
    status, _ = api_as(cluster, "open", rules)("DELETE", "/api/v1/namespaces/open/pods/no-seccomp")
    assert status == 200


def test_api_server_applies_rbac(cluster):
    request = api_as(cluster, "strict", [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ])  # fmt: skip
    cluster.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": "strict"}, "data": {}} for n in ("mine", "other")])
    assert request("GET", "/api/v1/namespaces/strict/configmaps/mine")[0] == 200
    status, body = request("GET", "/api/v1/namespaces/strict/configmaps/other")
    assert status == 403 and 'configmaps "other" is forbidden' in body["message"], body
    assert request("GET", "/api/v1/namespaces/strict/configmaps")[0] == 403, "a list is not a get of a name"
    assert request("GET", "/api/v1/namespaces/strict/pods")[0] == 200
    assert request("GET", "/api/v1/namespaces/strict/pods/x/log")[0] == 403, "pods/log is not granted by pods"
    assert request("GET", "/api/v1/namespaces/open/pods")[0] == 403, "another namespace"
    assert request("POST", "/api/v1/namespaces/strict/pods", restricted_pod())[0] == 403
    cluster.tokens.pop("test-token-tester")
    assert request("GET", "/api/v1/namespaces/strict/pods")[0] == 401, "a token nobody issued"


def run_to_end(cluster, namespace, pod):
    """Apply a pod, wait for its container to end; (exit code, its log)."""
    cluster.apply([dict(pod, metadata=dict(pod["metadata"], namespace=namespace))])
    name = pod["metadata"]["name"]

    def ended():
        statuses = cluster.pods(namespace).get(name, {}).get("status", {}).get("containerStatuses") or []
        return statuses and "terminated" in statuses[0]["state"]

    cluster.wait_for(ended, 60, f"pod {name} to end")
    state = cluster.pods(namespace)[name]["status"]["containerStatuses"][0]["state"]["terminated"]
    return state["exitCode"], cluster.logs(namespace, name)


SCRIPT = """
echo "ids=$(id -u):$(id -g):$(id -G | tr ' ' ',')"
echo "caps=$(grep CapBnd /proc/self/status | cut -f2) nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)"
echo "env=$MY_NAMESPACE/$MY_POD/$MY_IP"
echo "scratch=$(stat -c %a:%g /scratch) claim=$(stat -c %a:%g /data)"
if touch /tmp/root-written 2>/dev/null; then echo root=writable; else echo root=refused; fi
touch /tmp/root-written 2>&1 | grep -q "Read-only file system" && echo root-error=EROFS
if touch /scratch/x /data/x 2>/dev/null; then echo volumes=writable; else echo volumes=read-only; fi
if test -e /var/run/secrets/kubernetes.io/serviceaccount/token; then echo token=mounted; else echo token=none; fi
"""


def kubelet_pod(name, read_only_root, automount=False):
    pod = restricted_pod(name, ("sh", "-c", SCRIPT))
    spec = pod["spec"]
    spec["automountServiceAccountToken"] = automount
    spec["volumes"] = [{"name": "scratch", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    container = spec["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = read_only_root
    container["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "data", "mountPath": "/data"}]
    container["env"] = [
        {"name": "MY_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    return pod


def test_the_kubelet_runs_the_pod_as_given(cluster):
    cluster.apply([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "strict"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}])  # fmt: skip
    code, log = run_to_end(cluster, "strict", kubelet_pod("ro", read_only_root=True))
    assert code == 0, log
    lines = dict(line.split("=", 1) for line in log.split() if "=" in line)
    assert lines["ids"] == "1234:2345:2345,3456", log  # runAsUser, runAsGroup, fsGroup as supplementary group
    assert lines["caps"] == "0000000000000000" and lines["nnp"] == "1", log  # drop ALL, allowPrivilegeEscalation=false
    namespace, pod, ip = lines["env"].split("/")
    assert (namespace, pod) == ("strict", "ro") and ip.startswith("10."), log
    assert lines["scratch"] == "2777:3456" and lines["claim"] == "2775:3456", log  # fsGroup ownership, setgid
    # /tmp of the image is 1777: only the read-only root keeps the user from writing there.
    assert lines["root"] == "refused" and lines.get("root-error") == "EROFS" and lines["volumes"] == "writable", log
    assert lines["token"] == "none", log
    # The same pod with a writable root (and the token mounted): the root takes the write.
    code, log = run_to_end(cluster, "strict", kubelet_pod("rw", read_only_root=False, automount=True))
    assert code == 0 and "root=writable" in log and "token=mounted" in log, log


def test_the_kubelet_refuses_a_root_user_under_run_as_non_root(cluster):
    pod = restricted_pod("root", ("sh", "-c", "echo started"))
    pod["spec"]["securityContext"].pop("runAsUser")  # the image's user: root
    cluster.apply([dict(pod, metadata=dict(pod["metadata"], namespace="open"))])
    cluster.wait_for(lambda: any("runAsNonRoot and image will run as root" in e["message"] for e in cluster.events("open", "root")), 30, "the refusal")
    # The kubelet records the event, then the container's status: wait for both (one CI run
    # under load read the status in between).
    cluster.wait_for(lambda: (cluster.pods("open")["root"]["status"].get("containerStatuses") or [None])[0], 30, "the container's status")
    state = cluster.pods("open")["root"]["status"]["containerStatuses"][0]["state"]
    assert state["waiting"]["reason"] == "CreateContainerConfigError", state
    assert cluster.logs("open", "root") == "", "the container must not have started"


def test_the_kubelet_waits_for_a_missing_secret(cluster):
    pod = restricted_pod("needs-secret", ("sh", "-c", "echo $PASSWORD"))
    pod["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "absent"}}]
    cluster.apply([dict(pod, metadata=dict(pod["metadata"], namespace="strict"))])
    cluster.wait_for(lambda: any('secret "absent" not found' in e["message"] for e in cluster.events("strict", "needs-secret")), 30, "the refusal")
    state = cluster.pods("strict")["needs-secret"]["status"]["containerStatuses"][0]["state"]
    assert state["waiting"]["reason"] == "CreateContainerConfigError", state


def test_pod_spec_environment_order_and_expansion():
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}}, "spec": {}, "status": {"podIP": "10.1.2.3"}}
    container = {
        "envFrom": [{"secretRef": {"name": "s"}}],
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)-$(FROM_SECRET)-$(MISSING)-$$(A)"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "1Gi"}},
    }
    store = {("Secret", "s"): {"data": {"FROM_SECRET": "c2VjcmV0"}}}
    services = [{"metadata": {"name": "hub"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80}]}}]
    env = pod_spec.environment(pod, container, ["PATH=/bin"], store, services, {"name": "n", "ip": "10.0.0.1", "allocatable": {"memory": "8Gi"}})
    assert env["B"] == "a-secret-$(MISSING)-$(A)" and env["APP"] == "x" and env["MEM"] == "1024", env
    assert env["HUB_SERVICE_HOST"] == "10.96.0.9" and env["HUB_PORT"] == "tcp://10.96.0.9:80", env
    with pytest.raises(pod_spec.ConfigError, match='secret "s" not found'):
        pod_spec.environment(pod, container, [], {}, [], {"name": "n", "ip": "10.0.0.1"})
