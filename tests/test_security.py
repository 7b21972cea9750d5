"""Security properties of every generated project, for every combination of choices.

A. What the manifests allow (both overlays, rendered by `kubectl kustomize`):
   namespaced RBAC only, a Role with exactly KubeSpawner's needs, a hub pod that
   meets the restricted Pod Security Standard, Services and NetworkPolicies that
   tell the hub from user pods.
B. Where secrets live: only in git-ignored files that a kustomize secretGenerator
   reads; nothing git would commit looks like a literal secret (and the scanner
   that says so is shown to find planted ones).

Speed: every combination of conftest.MATRIX is baked once per test run and each
distinct render is made once (tests/support/bakery.py, shared between xdist workers);
renders are keyed by the content of what kustomize reads (k8s/ and hub-config/).
The engines the checks use live in tests/support/: labels.py (label selectors),
netpol.py (the NetworkPolicy evaluator), secrets_scan.py (the secrets scanner).
"""

import atexit
import functools
import re
import stat
import subprocess
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import CHOICE_VARIABLES, CONFINED, MATRIX, OVERLAYS, ROOT, TEMPLATE, combo_id, need_tool
from support import fast_yaml, pod_security
from support.envfile import env_file
from support.labels import selects
from support.netpol import (
    KUBESPAWNER_PORT,
    KUBESPAWNER_PORT_NAME,
    check_hub_network_policy,
    check_policy_ports_exist,
    check_proxy_network_policy,
    check_singleuser_network_policy,
    container_port,
    hub_deployment,
    hub_pod,
    one,
    proxy_pod,
    public_port,
    separate_proxy,
)
from support.secrets_scan import scan_files, scan_text

# --- What KubeSpawner does (jupyterhub-kubespawner 7.0.0) ---------------------------

# The labels KubeSpawner gives every user pod (_build_pod_labels: common_labels,
# the component label twice, the user and server names).
# test_user_pod_labels_are_kubespawners checks them against the installed KubeSpawner.
KUBESPAWNER_COMMON_LABELS = {
    "app.kubernetes.io/name": "jupyterhub",
    "app.kubernetes.io/managed-by": "kubespawner",
    "app": "jupyterhub",
    "heritage": "jupyterhub",
}
KUBESPAWNER_COMPONENT = "singleuser-server"

# The Role KubeSpawner needs without internal_ssl and services_enabled
# (Zero to JupyterHub's hub Role minus secrets and services, which only those use).
ROLE_NEEDS = {
    "pods": {"list", "watch", "create", "delete"},
    "events": {"list", "watch"},
}
ROLE_NEEDS_WITH_STORAGE = {**ROLE_NEEDS, "persistentvolumeclaims": {"get", "create", "delete"}}

# Kinds a namespace owner may create; anything else in a render is a finding.
NAMESPACED_KINDS = {
    "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment",
    "Service", "Ingress", "NetworkPolicy", "Secret", "ConfigMap", "DaemonSet",
}  # fmt: skip

# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip

# Extra bakes besides the matrix: the ingress controller's namespace given, and a
# namespace other than the default (to see it reach every object and subject).
EXTRA_CASES = [
    dict(MATRIX[0], ingress_controller_namespace="ingress-nginx"),
    dict(MATRIX[len(MATRIX) // 2], ingress_controller_namespace="kube-system"),
    dict(MATRIX[-1], ingress_controller_namespace="projectcontour", namespace="lab-ns-1"),
    dict(MATRIX[7], namespace="team-hub", ingress_controller_namespace="traefik"),
    # The choices not crossed with the matrix (conftest.CONFINED), at their other values.
    *(dict(MATRIX[0], **{name: value}) for name in CONFINED for value in CHOICE_VARIABLES[name][1:]),
]
CASES = MATRIX + EXTRA_CASES


# --- Reading a project --------------------------------------------------------------


def user_pod_labels(hub_config):
    """The labels KubeSpawner gives a user pod under this configuration."""
    spawner = hub_config.KubeSpawner
    component = spawner.get("component_label", KUBESPAWNER_COMPONENT)
    labels = {"hub.jupyter.org/username": "someone"}
    labels.update(spawner.get("extra_labels", {}))
    labels.update(spawner.get("common_labels", KUBESPAWNER_COMMON_LABELS))
    labels.update({"app.kubernetes.io/component": component, "component": component, "hub.jupyter.org/servername": ""})
    return labels


def user_port(hub_config):
    return hub_config.KubeSpawner.get("port", 0) or KUBESPAWNER_PORT


def url_port(url):
    return urlparse(url.replace("://:", "://0.0.0.0:")).port


# --- A. Checks on a render: each returns a list of problems, empty when all is well ---


def check_namespaced_only(docs, namespace):
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] not in NAMESPACED_KINDS:
            problems.append(f"{where}: kind {doc['kind']} is not a namespaced kind this project may create")
        if doc["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: namespace {doc['metadata'].get('namespace')!r}, expected {namespace!r}")
    return problems


def check_role(docs, user_storage):
    problems = []
    roles = [d for d in docs if d["kind"] == "Role"]
    if len(roles) != 1:
        return [f"expected one Role, found {len(roles)}"]
    needs = ROLE_NEEDS_WITH_STORAGE if user_storage else ROLE_NEEDS
    granted = {}
    for index, rule in enumerate(roles[0].get("rules") or []):
        where = f"Role/{roles[0]['metadata']['name']} rule {index}"
        if rule.get("apiGroups") != [""]:
            problems.append(f"{where}: apiGroups {rule.get('apiGroups')}, only the core API ('') is needed")
        if rule.get("nonResourceURLs"):
            problems.append(f"{where}: grants nonResourceURLs {rule['nonResourceURLs']}")
        for field in ("resources", "verbs", "apiGroups"):
            if "*" in (rule.get(field) or []):
                problems.append(f"{where}: '*' in {field}")
        for resource in rule.get("resources") or []:
            if resource in ("secrets", "services"):
                problems.append(f"{where}: grants {resource} (only internal_ssl/services_enabled need them)")
            granted.setdefault(resource, set()).update(rule.get("verbs") or [])
    for resource, verbs in sorted(granted.items()):
        if resource not in needs:
            problems.append(f"Role grants {resource} {sorted(verbs)}, which KubeSpawner does not use here")
        elif verbs != needs[resource]:
            problems.append(f"Role grants {resource} {sorted(verbs)}, KubeSpawner needs exactly {sorted(needs[resource])}")
    for resource in sorted(set(needs) - set(granted)):
        problems.append(f"Role lacks {resource} {sorted(needs[resource])}, which KubeSpawner needs")
    return problems


def check_role_binding(docs):
    problems = []
    deployment = hub_deployment(docs)
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"].get("serviceAccountName")
    if not account or account == "default":
        problems.append(f"the hub uses the service account {account!r}; it needs its own")
    if account not in {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}:
        problems.append(f"the hub's service account {account!r} is not part of the render")
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    if len(bindings) != 1:
        problems.append(f"expected one RoleBinding, found {len(bindings)}")
    for binding in bindings:
        where = f"RoleBinding/{binding['metadata']['name']}"
        ref = binding["roleRef"]
        if ref.get("kind") != "Role" or ref.get("apiGroup") != "rbac.authorization.k8s.io":
            problems.append(f"{where}: binds {ref.get('kind')} from {ref.get('apiGroup')!r}, not this namespace's Role")
        elif ref.get("name") not in roles:
            problems.append(f"{where}: binds Role {ref.get('name')!r}, which the render does not define")
        if binding["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: in namespace {binding['metadata'].get('namespace')!r}, the hub is in {namespace!r}")
        subjects = binding.get("subjects") or []
        expected = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        if [dict(s, namespace=s.get("namespace") or namespace) for s in subjects] != [expected]:
            problems.append(f"{where}: subjects {subjects}, expected only {expected}")
    return problems


def check_restricted_pod(pod):
    """The restricted Pod Security Standard, as far as a manifest shows it."""
    problems = []
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"pod: {field} is set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} is not allowed (restricted)")
    if pod_context.get("sysctls"):
        problems.append(f"pod: sysctls {pod_context['sysctls']}")
    containers = [
        (kind, c) for kind in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(kind) or []
    ]
    if not containers:
        problems.append("pod has no containers")
    for kind, container in containers:
        where = f"{kind[:-1]} {container['name']}"
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities.drop must include ALL")
        if capabilities.get("add"):
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{where}: runs as uid 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile {seccomp!r}, expected RuntimeDefault (pod or container)")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {context['procMount']}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
            if port.get("hostIP"):
                problems.append(f"{where}: hostIP {port['hostIP']}")
    return problems


def check_resources_and_probes(pod):
    problems = []
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not (resources.get(part) or {}).get("memory"):
                problems.append(f"container {container['name']}: no memory {part[:-1]}")
        for probe in ("readinessProbe", "livenessProbe"):
            if not container.get(probe):
                problems.append(f"container {container['name']}: no {probe}")
    return problems


def check_services(docs, user_labels):
    """Each Service selects exactly one of the project's pods (the hub's, or a separate
    proxy's), never user pods, and forwards only to ports that pod declares."""
    problems = []
    pods = {id(p): p for p in (hub_pod(docs), proxy_pod(docs))}.values()
    for service in (d for d in docs if d["kind"] == "Service"):
        where = f"Service/{service['metadata']['name']}"
        selector = service["spec"].get("selector")
        if not selector:
            problems.append(f"{where}: no selector")
            continue
        selected = [p for p in pods if selects(selector, p["metadata"]["labels"])]
        if len(selected) != 1:
            problems.append(f"{where}: selector {selector} selects {len(selected)} of the hub's and the proxy's pods, not one")
            continue
        [pod] = selected
        if selects(selector, user_labels):
            problems.append(f"{where}: selector {selector} also selects user pods {user_labels}")
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{where}: type {service['spec']['type']}; only the Ingress should publish the hub")
        for port in service["spec"]["ports"]:
            if container_port(pod, port.get("targetPort", port["port"])) is None:
                problems.append(f"{where}: targetPort {port.get('targetPort')!r} is no port of the pod it selects")
    return problems


# --- A. The tests ---------------------------------------------------------------------


def context_of(case):
    return {"namespace": TEMPLATE["namespace"], "ingress_controller_namespace": "", **case}


@pytest.fixture
def render(bakery):
    def _render(case, overlay):
        project = bakery.project(case)
        return bakery.render(project, overlay), bakery.hub_config(project, overlay), project

    return _render


def assert_no_problems(problems):
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_rbac_is_namespaced_and_minimal(render, case, overlay):
    docs, _, _ = render(case, overlay)
    assert_no_problems(
        check_namespaced_only(docs, context_of(case)["namespace"])
        + check_role(docs, case["user_storage"] == "yes")
        + check_role_binding(docs)
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_hub_pod_is_restricted_with_requests_limits_and_probes(render, case, overlay):
    """The hub's pod, and a separate proxy's (which also has no Kubernetes API token)."""
    docs, _, _ = render(case, overlay)
    assert_no_problems(check_restricted_pod(hub_pod(docs)) + check_resources_and_probes(hub_pod(docs)) + check_proxy_pod(docs))


def check_proxy_pod(docs):
    """proxy=separate: the proxy's pod as restricted as the hub's, with requests, limits and
    probes, and without a Kubernetes API token (it has no business with the API)."""
    if not separate_proxy(docs):
        return []
    pod = proxy_pod(docs)
    problems = [f"proxy: {p}" for p in check_restricted_pod(pod) + check_resources_and_probes(pod)]
    if pod["spec"].get("automountServiceAccountToken") is not False:
        problems.append("proxy: the pod gets a Kubernetes API token (automountServiceAccountToken is not false)")
    if pod["spec"].get("serviceAccountName", "default") != "default":
        problems.append(f"proxy: runs as service account {pod['spec']['serviceAccountName']}, which may hold rights")
    return problems


# pre_puller=yes: what a pod on every node may take (requests), and at most use (limits).
PRE_PULLER_MAX_REQUESTS = {"cpu": 0.01, "memory": 16 * 2**20}
PRE_PULLER_MAX_LIMITS = {"cpu": 0.1, "memory": 64 * 2**20}
# The taint of the GPU nodes the GPU profile's pods tolerate.
GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}


def quantity(value):
    """A Kubernetes CPU or memory quantity as a number (cores, bytes)."""
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("m", 1e-3), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def pre_pullers(docs):
    return [d for d in docs if d["kind"] == "DaemonSet" and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "pre-puller"]


def users_images(hub_config):
    """The images the hub starts user servers from: KubeSpawner's image, and each profile's own."""
    spawner = hub_config.KubeSpawner
    images = {spawner.image}
    for profile in spawner.get("profile_list", None) or []:
        image = (profile.get("kubespawner_override") or {}).get("image")
        if image:
            images.add(image)
    return images


def tolerates(tolerations, taint):
    return any(
        t.get("key") == taint["key"] and t.get("operator") == "Exists" and t.get("effect") in (None, taint["effect"])
        for t in tolerations or []
    )


def profile_taints(hub_config):
    """(profile, key, value, effect) of each taint a profile's tolerations let its pods onto (a
    toleration of no effect: each effect; Exists: some value of the key)."""
    found = []
    for profile in hub_config.KubeSpawner.get("profile_list", None) or []:
        for toleration in (profile.get("kubespawner_override") or {}).get("tolerations") or []:
            for effect in [toleration["effect"]] if toleration.get("effect") else ["NoSchedule", "PreferNoSchedule", "NoExecute"]:
                value = "any-value" if toleration.get("operator") == "Exists" else toleration.get("value")
                found.append((profile.get("slug"), toleration.get("key"), value, effect))
    return found


def tolerated_taint(tolerations, key, value, effect):
    """Whether a pod with these tolerations may run on a node with this taint (Kubernetes' rule)."""
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != effect:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == key):
            return True
        if t.get("operator", "Equal") == "Equal" and t.get("key") == key and t.get("value") == value:
            return True
    return False


def check_pre_puller(docs, hub_config, wanted):
    """pre_puller=yes: one DaemonSet whose pod meets the restricted profile (by the checks above
    and by the emulated cluster's Pod Security admission), without a token or rights, each of its
    containers read-only with small requests and limits, on the GPU nodes too, updated a few nodes
    at a time, and pulling exactly the images the hub starts users from, each once.
    pre_puller=no: none."""
    daemonsets = pre_pullers(docs)
    if not wanted:
        return [f"pre_puller=no, but the render holds DaemonSet/{d['metadata']['name']}" for d in daemonsets]
    if len(daemonsets) != 1:
        return [f"pre_puller=yes: expected one pre-puller DaemonSet, found {len(daemonsets)}"]
    [daemonset] = daemonsets
    pod = daemonset["spec"]["template"]
    spec = pod["spec"]
    problems = [f"pre-puller: {p}" for p in check_restricted_pod(pod)]
    problems += [f"pre-puller: Pod Security admission (restricted): {check}: {why}" for check, why in pod_security.violations(pod, "restricted")]
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("pre-puller: the pod gets a Kubernetes API token (automountServiceAccountToken is not false)")
    if spec.get("serviceAccountName", "default") != "default":
        problems.append(f"pre-puller: runs as service account {spec['serviceAccountName']}, which may hold rights")
    containers = [("initContainer", c) for c in spec.get("initContainers") or []] + [("container", c) for c in spec["containers"]]
    for kind, container in containers:
        where = f"pre-puller: {kind} {container['name']}"
        if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root file system is writable")
        resources = container.get("resources") or {}
        for part, most in (("requests", PRE_PULLER_MAX_REQUESTS), ("limits", PRE_PULLER_MAX_LIMITS)):
            for resource, bound in most.items():
                value = (resources.get(part) or {}).get(resource)
                if value is None:
                    problems.append(f"{where}: no {resource} {part[:-1]}")
                elif quantity(value) > bound:
                    problems.append(f"{where}: {resource} {part[:-1]} {value}, more than a pod on every node should take")
    if not tolerates(spec.get("tolerations"), GPU_TAINT):
        problems.append(f"pre-puller: does not tolerate the GPU nodes' taint {GPU_TAINT}")
    for profile, key, value, effect in profile_taints(hub_config):
        if not tolerated_taint(spec.get("tolerations"), key, value, effect):
            problems.append(f"pre-puller: does not reach nodes tainted {key}={value}:{effect}, where the profile {profile} runs")
    strategy = daemonset["spec"].get("updateStrategy") or {}
    unavailable = str((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        problems.append(f"pre-puller: updateStrategy {strategy.get('type')}: a changed image would reach no node until pods are deleted")
    elif unavailable.endswith("%") and float(unavailable[:-1]) >= 100:
        problems.append(f"pre-puller: maxUnavailable {unavailable}: every node would replace its puller, and pull, at once")
    if len(spec["containers"]) != 1 or not spec["containers"][0]["image"].startswith("registry.k8s.io/pause:"):
        problems.append(f"pre-puller: its one container should be a pinned pause image, not {[c['image'] for c in spec['containers']]}")
    pulled = [c["image"] for c in spec.get("initContainers") or []]
    for image in sorted(users_images(hub_config) - set(pulled)):
        problems.append(f"pre-puller: does not pull {image}, which the hub starts users from")
    for image in sorted(set(pulled) - users_images(hub_config)):
        problems.append(f"pre-puller: pulls {image}, which the hub starts no user from")
    for image in sorted({i for i in pulled if pulled.count(i) > 1}):
        problems.append(f"pre-puller: pulls {image} more than once")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_pre_puller_is_restricted_tokenless_small_and_pulls_the_users_images(render, case, overlay):
    docs, hub_config, _ = render(case, overlay)
    assert_no_problems(check_pre_puller(docs, hub_config, case.get("pre_puller", TEMPLATE["pre_puller"][0]) == "yes"))


def test_pre_puller_checks_catch_planted_faults(render):
    import copy

    case = dict(MATRIX[0], pre_puller="yes")
    docs, hub_config, _ = render(case, "production")
    assert check_pre_puller(docs, hub_config, True) == []
    assert check_pre_puller(docs, hub_config, False), "not caught: a pre-puller where none was chosen"
    assert check_pre_puller(render(MATRIX[0], "production")[0], hub_config, True), "not caught: no pre-puller"

    def daemonset(d):
        return pre_pullers(d)[0]["spec"]

    def pull(d):
        return daemonset(d)["template"]["spec"]["initContainers"][0]

    def pause(d):
        return daemonset(d)["template"]["spec"]["containers"][0]

    faults = {
        "an API token": lambda d: daemonset(d)["template"]["spec"].pop("automountServiceAccountToken"),
        "the hub's service account": lambda d: daemonset(d)["template"]["spec"].update(serviceAccountName="hub"),
        "a pull as root": lambda d: pull(d)["securityContext"].update(runAsUser=0),
        "a privileged pause": lambda d: pause(d)["securityContext"].update(privileged=True),
        "privilege escalation": lambda d: pull(d)["securityContext"].pop("allowPrivilegeEscalation"),
        "no seccomp profile": lambda d: daemonset(d)["template"]["spec"]["securityContext"].pop("seccompProfile"),
        "a host path": lambda d: daemonset(d)["template"]["spec"].update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
        "a writable root": lambda d: pause(d)["securityContext"].pop("readOnlyRootFilesystem"),
        "no memory limit on a pull": lambda d: pull(d)["resources"]["limits"].pop("memory"),
        "a big request": lambda d: pause(d)["resources"]["requests"].update(memory="1Gi"),
        "no GPU toleration": lambda d: daemonset(d)["template"]["spec"].pop("tolerations"),
        "every node at once": lambda d: daemonset(d)["updateStrategy"]["rollingUpdate"].update(maxUnavailable="100%"),
        "never updated": lambda d: daemonset(d).update(updateStrategy={"type": "OnDelete"}),
        "the users' image not pulled": lambda d: daemonset(d)["template"]["spec"].pop("initContainers"),
        "an image nobody uses": lambda d: pull(d).update(image="quay.io/jupyter/base-notebook:2025-01-06"),
        "a pull twice": lambda d: daemonset(d)["template"]["spec"]["initContainers"].append(copy.deepcopy(pull(d))),
        "no pause": lambda d: pause(d).update(image="quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"),
    }
    for what, change in faults.items():
        mutated = copy.deepcopy(docs)
        change(mutated)
        assert check_pre_puller(mutated, hub_config, True), f"not caught: {what}"
    # Profiles (KubeSpawner's profile_list): an image of its own, and a node pool of its own.
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    for what, override, caught in (
        ("a profile's own image", {"image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06"}, True),
        ("a profile's taint", {"tolerations": [{"key": "example.org/highmem", "operator": "Equal", "value": "yes"}]}, True),
        ("the GPU taint, tolerated", {"tolerations": [gpu_toleration]}, False),
        ("the users' image again", {"image": hub_config.KubeSpawner.image}, False),
    ):
        planted = copy.deepcopy(hub_config)
        planted.KubeSpawner.profile_list = [{"slug": "planted", "kubespawner_override": override}]
        assert bool(check_pre_puller(docs, planted, True)) == caught, f"{'not caught' if caught else 'a false alarm'}: {what}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_services_select_the_hub_and_never_user_pods(render, case, overlay):
    docs, hub_config, _ = render(case, overlay)
    assert_no_problems(check_services(docs, user_pod_labels(hub_config)))


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_network_policies_fence_hub_and_user_pods(render, case, overlay):
    docs, hub_config, _ = render(case, overlay)
    users = user_pod_labels(hub_config)
    hub_api_port = url_port(hub_config.JupyterHub.hub_bind_url)
    assert container_port(hub_pod(docs), hub_api_port), f"the hub container does not declare the hub port {hub_api_port}"
    assert public_port(docs) == proxy_listen_port(docs, hub_config), "the Ingress does not reach the port the proxy listens on"
    assert_no_problems(
        check_hub_network_policy(
            docs, users, context_of(case)["ingress_controller_namespace"], hub_api_port, user_port(hub_config)
        )
        + check_proxy_network_policy(docs, context_of(case)["ingress_controller_namespace"])
        + check_singleuser_network_policy(docs, users, user_port(hub_config), hub_api_port)
        + check_policy_ports_exist(docs)
    )


def proxy_listen_port(docs, hub_config):
    """Where configurable-http-proxy listens: the hub's bind_url when the hub starts it,
    else the --port of the proxy Deployment's command."""
    if not separate_proxy(docs):
        return url_port(hub_config.JupyterHub.bind_url)
    [container] = proxy_pod(docs)["spec"]["containers"]
    [port] = [int(a.split("=", 1)[1]) for a in container.get("args") or [] if a.startswith("--port=")]
    return port


@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_kubespawner_extras_that_need_more_rbac_stay_off(bakery, case):
    """internal_ssl needs secrets, services_enabled needs services: the Role grants neither."""
    project = bakery.project(case)
    config = bakery.hub_config(project)
    assert config.JupyterHub.get("internal_ssl", False) is False
    for section in ("Spawner", "KubeSpawner"):
        assert config[section].get("services_enabled", False) is False, section
    # The authenticator's own file is loaded by load_subconfig; it must not turn them on either.
    text = (project / "hub-config/authenticator_config.py").read_text(encoding="utf-8")
    assert not re.search(r"internal_ssl|services_enabled", text)


def test_user_pod_labels_are_kubespawners():
    """The label set the checks use is what the installed KubeSpawner gives user pods."""
    kubespawner = pytest.importorskip("kubespawner")
    traits = kubespawner.KubeSpawner.class_traits()
    assert traits["common_labels"].default() == KUBESPAWNER_COMMON_LABELS
    assert traits["component_label"].default() == KUBESPAWNER_COMPONENT
    # The NetworkPolicies name the user server's port as KubeSpawner's pods do.
    pod = kubespawner.objects.make_pod(name="x", cmd=["jupyterhub-singleuser"], port=KUBESPAWNER_PORT, image="x", image_pull_policy="IfNotPresent")
    assert [(p.name, p.container_port) for p in pod.spec.containers[0].ports] == [(KUBESPAWNER_PORT_NAME, KUBESPAWNER_PORT)]


# A negative control for the checks above: each broken manifest is caught.
def test_checks_catch_broken_manifests(render):
    import copy

    case = next(c for c in MATRIX if c["user_storage"] == "yes" and c["authenticator"] == "dummy")
    docs, hub_config, _ = render(case, "production")  # the base's names: hub, singleuser
    users = user_pod_labels(hub_config)

    def broken(change):
        mutated = copy.deepcopy(docs)
        change(mutated)
        return mutated

    def role(d):
        return one(d, "Role")

    assert check_role(broken(lambda d: role(d)["rules"][0]["verbs"].append("*")), True)
    assert check_role(broken(lambda d: role(d)["rules"][0]["resources"].append("secrets")), True)
    assert check_role(docs, False), "storage rules present although user_storage=no would be wrong"
    assert check_namespaced_only(broken(lambda d: d.append({"kind": "ClusterRole", "metadata": {"name": "x"}})), "jupyterhub")
    assert check_role_binding(broken(lambda d: one(d, "RoleBinding")["roleRef"].update(kind="ClusterRole")))
    def container(d):
        return hub_pod(d)["spec"]["containers"][0]

    assert check_restricted_pod(hub_pod(broken(lambda d: hub_pod(d)["spec"].update(hostNetwork=True))))
    assert check_restricted_pod(
        hub_pod(broken(lambda d: hub_pod(d)["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})))
    )
    assert check_restricted_pod(hub_pod(broken(lambda d: container(d)["securityContext"].pop("allowPrivilegeEscalation"))))
    assert check_restricted_pod(hub_pod(broken(lambda d: container(d)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]))))
    assert check_restricted_pod(hub_pod(broken(lambda d: hub_pod(d)["spec"]["securityContext"].pop("seccompProfile"))))
    assert check_restricted_pod(hub_pod(broken(lambda d: container(d)["ports"][0].update(hostPort=80))))
    assert check_resources_and_probes(hub_pod(broken(lambda d: container(d).pop("livenessProbe"))))
    assert check_resources_and_probes(hub_pod(broken(lambda d: container(d)["resources"].pop("limits"))))
    assert check_services(broken(lambda d: one(d, "Service")["spec"]["selector"].pop("app.kubernetes.io/component")), users)
    assert check_hub_network_policy(
        broken(lambda d: one(d, "NetworkPolicy", "hub")["spec"]["ingress"][1].pop("from")), users, "", 8081
    )
    assert check_singleuser_network_policy(
        broken(lambda d: one(d, "NetworkPolicy", "singleuser")["spec"]["podSelector"]["matchLabels"].pop("app.kubernetes.io/component")),
        users, KUBESPAWNER_PORT, 8081,
    )  # fmt: skip
    assert check_policy_ports_exist(
        broken(lambda d: one(d, "NetworkPolicy", "hub")["spec"]["ingress"][0]["ports"][0].update(port="proxy"))
    )
    # A port name user pods do not have, on either side of the hub -> user server path.
    assert check_singleuser_network_policy(
        broken(lambda d: one(d, "NetworkPolicy", "singleuser")["spec"]["ingress"][0]["ports"][0].update(port="notebook")),
        users, KUBESPAWNER_PORT, 8081,
    )  # fmt: skip
    assert check_hub_network_policy(
        broken(lambda d: one(d, "NetworkPolicy", "hub")["spec"]["egress"][-1]["ports"][0].update(port="notebook")),
        users, "", 8081,
    )  # fmt: skip


def test_checks_catch_a_broken_separate_proxy(render):
    """The proxy pod's and its NetworkPolicy's checks, on proxy=separate renders broken the ways
    that would give the proxy rights or reach it has no use for."""
    import copy

    case = next(c for c in MATRIX if c["proxy"] == "separate" and c["authenticator"] == "dummy")
    docs, hub_config, _ = render(case, "production")
    users = user_pod_labels(hub_config)
    assert check_proxy_pod(docs) == [] and check_proxy_network_policy(docs, "") == []
    assert check_services(docs, users) == [] and check_hub_network_policy(docs, users, "", 8081) == []

    def broken(change):
        mutated = copy.deepcopy(docs)
        change(mutated)
        return mutated

    def pod(d):
        return proxy_pod(d)["spec"]

    def policy(d):
        return one(d, "NetworkPolicy", "proxy")["spec"]

    for fault, change in {
        "an API token": lambda d: pod(d).pop("automountServiceAccountToken"),
        "the hub's service account": lambda d: pod(d).update(serviceAccountName="hub"),
        "root": lambda d: pod(d)["containers"][0]["securityContext"].update(runAsNonRoot=False, runAsUser=0),
        "no memory limit": lambda d: pod(d)["containers"][0]["resources"].pop("limits"),
        "no liveness probe": lambda d: pod(d)["containers"][0].pop("livenessProbe"),
    }.items():
        assert check_proxy_pod(broken(change)), f"not caught: {fault}"
    for fault, change in {
        "the API from everyone": lambda d: policy(d)["ingress"][1].pop("from"),
        "the API from user pods": lambda d: policy(d)["ingress"][1]["from"][0]["podSelector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "singleuser-server"}),
        "egress anywhere": lambda d: policy(d)["egress"].append({}),
        "no egress policy": lambda d: policy(d).update(policyTypes=["Ingress"]),
        "the public port from anyone": lambda d: policy(d)["ingress"][0].pop("from"),
    }.items():
        assert check_proxy_network_policy(broken(change), ""), f"not caught: {fault}"
    assert check_services(broken(lambda d: one(d, "Service", "proxy")["spec"]["selector"].update(
        {"app.kubernetes.io/component": "hub"})), users), "not caught: a proxy Service that selects the hub"
    assert check_hub_network_policy(broken(lambda d: one(d, "NetworkPolicy", "hub")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].update(
        {"app.kubernetes.io/component": "other"})), users, "", 8081), "not caught: the hub's port from a pod that is not the proxy"  # fmt: skip


# --- C. The hub's Deployment: settings with consequences on a real cluster ---------------------

# The startup probe must let a cold start through, with room: the slowest start measured
# (README.md, "The image: weight and rebuild time", container start to the first 200 on
# /hub/health, read from there so the two cannot drift apart) times this margin. The margin
# covers what the benchmark does not see: a slower node, a database migration after a
# k8s-hub upgrade, a busy API server; a probe that gives up first kills the hub in a loop.
STARTUP_MARGIN = 5


def measured_cold_start_seconds():
    """The worst container-start-to-health figure of the README's benchmark table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| container start to first 200 on `/hub/health`"))
    return max(float(x) for x in re.findall(r"worst ([0-9.]+) s", row))


def check_deployment_invariants(docs):
    problems = []
    deployment = hub_deployment(docs)
    spec = deployment["spec"]
    # One hub: JupyterHub keeps its state in one SQLite file and in memory (the proxy's
    # routes, the spawners); a second replica would spawn the same users twice and write
    # the same database from two processes.
    if spec.get("replicas", 1) != 1:
        problems.append(f"replicas {spec.get('replicas')}: exactly one hub may run")
    # Recreate: the old hub stops before the new one starts. RollingUpdate starts the new
    # one first: two hubs on one SQLite file, and on a multi-node cluster the new pod waits
    # forever for the ReadWriteOnce volume still attached to the old pod's node (Multi-Attach
    # error), so the rollout hangs.
    strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
    if strategy != "Recreate":
        problems.append(f"strategy {strategy}: the hub's Deployment must use Recreate")
    # ReadWriteOnce: SQLite on a shared file system (ReadWriteMany, NFS) with more than one
    # writer corrupts the database or locks up; the volume belongs to one hub on one node.
    volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes") or []}
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    [container] = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "hub"]
    state = [m for m in container.get("volumeMounts") or [] if m["mountPath"] == "/srv/jupyterhub"]
    if len(state) != 1 or "persistentVolumeClaim" not in volumes.get(state[0]["name"], {}):
        problems.append("the hub's state (/srv/jupyterhub) is not on a claim")
    else:
        claim = claims.get(volumes[state[0]["name"]]["persistentVolumeClaim"]["claimName"])
        if claim is None:
            problems.append("the hub's claim is not part of the render")
        elif claim["spec"].get("accessModes") != ["ReadWriteOnce"]:
            problems.append(f"the hub's claim has accessModes {claim['spec'].get('accessModes')}, expected [ReadWriteOnce]")
    # The startup probe's budget covers a cold start, with STARTUP_MARGIN.
    probe = container.get("startupProbe") or {}
    budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    needed = STARTUP_MARGIN * measured_cold_start_seconds()
    if not probe:
        problems.append("no startupProbe: the liveness probe would judge a hub that is still starting")
    elif budget < needed:
        problems.append(f"the startup probe gives up after {budget} s; a cold start needs up to {needed:.0f} s ({STARTUP_MARGIN} x the measured worst)")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_the_hubs_deployment_keeps_its_invariants(render, case, overlay):
    docs, _, _ = render(case, overlay)
    assert_no_problems(check_deployment_invariants(docs))


def test_deployment_invariants_catch_planted_faults(render):
    import copy

    docs, _, _ = render(MATRIX[0], "production")
    assert check_deployment_invariants(docs) == []

    def broken(change):
        mutated = copy.deepcopy(docs)
        change(mutated)
        return check_deployment_invariants(mutated)

    def container(d):
        return one(d, "Deployment")["spec"]["template"]["spec"]["containers"][0]

    faults = {
        "two replicas": lambda d: one(d, "Deployment")["spec"].update(replicas=2),
        "RollingUpdate": lambda d: one(d, "Deployment")["spec"].update(strategy={"type": "RollingUpdate"}),
        "no strategy (RollingUpdate by default)": lambda d: one(d, "Deployment")["spec"].pop("strategy"),
        "ReadWriteMany": lambda d: one(d, "PersistentVolumeClaim")["spec"].update(accessModes=["ReadWriteMany"]),
        "state on an emptyDir": lambda d: one(d, "Deployment")["spec"]["template"]["spec"]["volumes"].__setitem__(
            0, {"name": "hub-db-dir", "emptyDir": {}}),
        "a 30 s startup budget": lambda d: container(d)["startupProbe"].update(periodSeconds=5, failureThreshold=6),
        "no startup probe": lambda d: container(d).pop("startupProbe"),
    }
    for what, change in faults.items():
        assert broken(change), f"not caught: {what}"


# --- B. Secrets -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _empty_git_dir():
    """One empty repository per process, through which git looks at any directory as its
    work tree: it reads that tree's .gitignore and writes nothing into it."""
    directory = Path(tempfile.mkdtemp(prefix="git-view-")) / "empty.git"
    subprocess.run([need_tool("git"), "init", "-q", "--bare", str(directory)], check=True)
    atexit.register(shutil.rmtree, directory.parent, True)
    return directory


def git(repo, *args, check=True):
    """git in repo as a fresh `git init` there would see it (no commits, no index)."""
    result = subprocess.run(
        [need_tool("git"), f"--git-dir={_empty_git_dir()}", f"--work-tree={repo}", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def git_copy(project, dest):
    """A copy of the project to change: git sees it as a new repository."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


def committed_files(repo):
    """The files `git add .` would add: untracked and not ignored."""
    listed = git(repo, "ls-files", "--others", "--exclude-standard", "-z").stdout
    return sorted(p for p in listed.split("\0") if p)


def is_ignored(repo, path):
    return git(repo, "check-ignore", "-q", "--", str(path), check=False).returncode == 0


def secret_sources(kustomization):
    """Files a kustomization's secretGenerator reads (envs, env and files, 'key=path' too)."""
    sources = []
    for generator in kustomization.get("secretGenerator") or []:
        sources += generator.get("envs") or []
        sources += [generator["env"]] if generator.get("env") else []
        sources += [entry.split("=", 1)[-1] for entry in generator.get("files") or []]
    return sources


def required_env(project):
    """The secrets the hub refuses to start without: the chosen authenticator's, and with
    proxy=separate the proxy's token."""
    text = (project / "hub-config/authenticator_config.py").read_text(encoding="utf-8")
    needed = set(re.findall(r"require_env\(\s*\"([A-Z0-9_]+)\"", text))
    if 'PROXY = "separate"' in (project / "hub-config/jupyterhub_config.py").read_text(encoding="utf-8"):
        needed.add("CONFIGPROXY_AUTH_TOKEN")
    return needed


@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_secrets_come_from_git_ignored_files(bakery, case):
    project = bakery.project(case)
    repo = project  # read only: git looks at it through an empty repository of its own
    needed = required_env(project)
    example = repo / "hub-secrets.env.example"
    for overlay in OVERLAYS:
        directory = Path("k8s/overlays") / overlay
        kustomization = fast_yaml.load((repo / directory / "kustomization.yaml").read_text(encoding="utf-8"))
        sources = secret_sources(kustomization)
        docs = bakery.render(project, overlay)
        secrets = [d for d in docs if d["kind"] == "Secret"]
        generators = {g["name"] for g in kustomization.get("secretGenerator") or []}
        for source in sources:
            assert is_ignored(repo, directory / source), f"{directory / source} is read by a secretGenerator but git would commit it"
            assert (repo / directory / source).exists(), f"post_gen_project.py did not create {directory / source}"
            mode = stat.S_IMODE((repo / directory / source).stat().st_mode)
            assert mode & 0o077 == 0, f"{directory / source} has mode {oct(mode)}; others can read it"
        for secret in secrets:
            assert any(secret["metadata"]["name"].startswith(f"{g}-") for g in generators), (
                f"Secret {secret['metadata']['name']} in {overlay} does not come from a secretGenerator"
            )
        provided = set().union(*(secret.get("data", {}) for secret in secrets)) if secrets else set()
        container = hub_pod(docs)["spec"]["containers"][0]
        references = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if "secretRef" in e]
        if needed and case.get("hub_secrets") == "existing-secret":
            # The Secret is made in the cluster (kubectl, Sealed Secrets, ...): the
            # repository neither holds nor generates it, and the pod needs it to start.
            assert not sources and not secrets, f"{overlay}: hub_secrets=existing-secret but the overlay makes {secrets}"
            # Each hub its own Secret, made by hand: production's hub-secrets, development's hub-secrets-dev.
            assert references == [{"production": "hub-secrets", "development": "hub-secrets-dev"}[overlay]], references
            assert all(e["secretRef"].get("optional") is not True for e in container["envFrom"])
            continue
        assert needed <= provided, f"{overlay}: the authenticator needs {sorted(needed - provided)}, no Secret provides them"
        assert sorted(references) == sorted(s["metadata"]["name"] for s in secrets), (
            f"{overlay}: the hub reads Secrets {references}, the overlay generates {[s['metadata']['name'] for s in secrets]}"
        )
        if needed:
            assert sources, f"{overlay}: the authenticator needs {sorted(needed)} but no secretGenerator reads a file"
    if needed:
        assert example.exists() and not is_ignored(repo, "hub-secrets.env.example")
        for name, value in env_file(example).items():
            assert value == "" or value.startswith("replace-with-") or value in ("true", "false"), (
                f"hub-secrets.env.example: {name} holds {value!r}, not a placeholder"
            )
        assert needed <= set(env_file(example)), "the example does not list every secret the hub needs"
    else:
        assert not example.exists(), "an example secrets file for an authenticator that needs no secrets"
    skaffold = fast_yaml.load((repo / "skaffold.yaml").read_text(encoding="utf-8"))
    docker_config = ((skaffold["build"].get("cluster") or {}).get("dockerConfig") or {}).get("path")
    if docker_config:
        assert docker_config.startswith(("~", "/")) or is_ignored(repo, docker_config), (
            f"skaffold reads registry credentials from {docker_config}, which git would commit"
        )


@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_committed_files_hold_no_literal_secrets(bakery, case):
    repo = bakery.project(case)  # read only
    files = committed_files(repo)
    assert "hub-config/jupyterhub_config.py" in files and ".gitignore" in files, files
    assert not any(Path(f).name == "hub-secrets.env" for f in files), files
    assert_no_problems(scan_files(repo, files))


# --- B. The scanner fails when it should ----------------------------------------------

PLANTED = {
    "private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    "rsa key": "key: |\n  -----BEGIN RSA PRIVATE KEY-----\n  MIIEowIBAAKCAQEA\n",
    "github token": "GITHUB_TOKEN=ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5" + "\n",
    "github pat": "token = 'github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz'\n",
    "aws key id": "aws_access_key_id = AKIAIOSFODNN7EXAMPLF\n",
    "aws secret": "aws_secret_access_key = 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\n",
    "password": "JUPYTERHUB_ADMIN_PASSWORD=Qm7xY2_kP9vLr4TzW8nB3cDf6HjK1sGa5uE0\n",
    "python secret": 'c.GitHubOAuthenticator.client_secret = "3f9a8c7e6d5b4a3f2e1d0c9b8a7f6e5d4c3b2a19"\n',
    "yaml token": "metadata:\n  name: x\napiToken: 'Zx81bQ0pL2mN4vR6tY8uI0oP3aS5dF7gH9jK'\n",
    "secret data": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hub\ndata:\n  password: aHVudGVyMg==\n",
    "secret stringData": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hub\nstringData:\n  password: hunter2\n",
    "generator literals": (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nsecretGenerator:\n"
        "  - name: hub-secrets\n    literals: [OAUTH_CLIENT_SECRET=abc]\n"
    ),
    "base64 blob": "blob: 'TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsuIFJhbmRvbSA5ODc2NTQzMjE=xYz'\n",
    "docker auth": '{"auths": {"r.example.org": {"auth": "dXNlcjpodW50ZXIy"}}}\n',
    "url credentials": "REGISTRY=https://robot:s3cr3tPassw0rd@registry.internal.org/v2/\n",
    "slack": "SLACK=xoxb-123456789012-abcdefghijkl\n",
    "jwt": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n",
}

CLEAN = {
    "placeholders": "JUPYTERHUB_ADMIN_PASSWORD=replace-with-an-admin-password-of-32-characters-or-more\nOAUTH_CLIENT_SECRET=\n",
    "env lookup": 'c.GitHubOAuthenticator.client_secret = require_env(\n    "OAUTH_CLIENT_SECRET", "the client secret"\n)\n',
    "names": "dockerConfig:\n  secretName: \"kaniko-docker-config\"\nsecretRef:\n  name: hub-secrets\n",
    "selector key": "- key: app.kubernetes.io/component\n  operator: In\n",
    "image digest": "user_image: quay.io/jupyter/scipy-notebook@sha256:" + "0123456789abcdef" * 4 + "\n",
    "url": "token_url: https://auth.example.org/realms/jupyterhub/protocol/openid-connect/token\n",
    "short": "JUPYTERHUB_USER_PASSWORD=\ntoken: abc\n",
}


@pytest.mark.parametrize("name", PLANTED)
def test_scanner_finds_planted_secret(name, tmp_path):
    planted = tmp_path / "planted.txt"
    planted.write_text(PLANTED[name], encoding="utf-8")
    assert scan_files(tmp_path, ["planted.txt"]), f"the scanner missed a planted {name}"


@pytest.mark.parametrize("name", CLEAN)
def test_scanner_passes_what_is_no_secret(name):
    assert scan_text(CLEAN[name]) == ()


def test_scan_of_a_project_with_a_planted_secret_fails(bakery, tmp_path):
    """The whole path: a baked project, git's view of it, the scan."""
    case = next(c for c in MATRIX if c["authenticator"] == "dummy")
    repo = git_copy(bakery.project(case), tmp_path / "repo")
    assert scan_files(repo, committed_files(repo)) == []
    generated = repo / "k8s/overlays/development/hub-secrets.env"
    # The generated secrets file would be caught if git committed it...
    assert scan_files(repo, [generated.relative_to(repo)]), "the generated admin password is not recognised"
    # ...and is caught as soon as it is no longer ignored.
    (repo / ".gitignore").write_text("# nothing ignored\n")
    findings = scan_files(repo, committed_files(repo))
    assert any(f.startswith("k8s/overlays/development/hub-secrets.env:") for f in findings), findings
    # A password pasted into a committed file is caught as well.
    (repo / ".gitignore").write_text((ROOT / "{{cookiecutter.project}}" / ".gitignore").read_text())
    (repo / "hub-secrets.env.example").write_text(generated.read_text())
    findings = scan_files(repo, committed_files(repo))
    assert any(f.startswith("hub-secrets.env.example:") for f in findings), findings


# --- D. The Role, minimal by evidence: the check the journeys apply, on planted faults ---------


def test_role_evidence_catches_planted_faults(render):
    """The journeys record the hub's requests; here, a record as a journey with storage makes it."""
    from kubespawner import KubeSpawner

    from support import rbac, role_evidence

    case = next(c for c in MATRIX if c["user_storage"] == "yes")
    docs, _, project = render(case, "development")
    deployment = hub_deployment(docs)
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    rules = rbac.rules_for(docs, namespace, account)
    assert rules, f"no Role bound to {account}"
    source = (project / "k8s" / "base" / "hub-role.yaml").read_text(encoding="utf-8")
    user = f"system:serviceaccount:{namespace}:{account}"
    used = [("list", "pods"), ("watch", "pods"), ("create", "pods"), ("delete", "pods"), ("list", "events"),
            ("watch", "events"), ("create", "persistentvolumeclaims"), ("delete", "persistentvolumeclaims")]  # fmt: skip
    requests = [{"user": user, "verb": v, "resource": r, "subresource": "", "status": 200} for v, r in used]
    assert role_evidence.problems(rules, requests, user, source, KubeSpawner) == []
    faults = {
        "a verb nobody uses": (rules + [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}], requests, source),
        "an excuse removed": (rules, requests, source.replace("#   get: KubeSpawner._make_create_pvc_request", "#   get:")),
        "an excuse naming no method": (rules, requests, source.replace("_make_create_pvc_request", "_no_such_method")),
        "a refused request": (rules, requests + [{"user": user, "verb": "patch", "resource": "pods", "status": 403}], source),
    }
    for what, (planted_rules, planted_requests, planted_source) in faults.items():
        assert role_evidence.problems(planted_rules, planted_requests, user, planted_source, KubeSpawner), f"not caught: {what}"
