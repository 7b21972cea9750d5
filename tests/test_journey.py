"""From the login form to a running kernel: real user servers, spawned by the generated
config on an emulated cluster (tests/emulated_cluster.py), for dummy, native and tmp, each
with proxy=separate, and dummy with the proxy in the hub's container as well.

The hub's pod is the development overlay's, run as the cluster would run it
(tests/hubrunner.py); the users' pods are what KubeSpawner asks the API server for, admitted
by the namespace's restricted Pod Security profile and run as given.

Each journey: log in through the real form; start the server as a browser does; it
answers through the proxy; the pod as the API server received it, and as the node runs
it; a kernel runs 1+1 over its WebSocket through the proxy; `kubectl rollout restart` of
the hub (its proxy dies with it) and the server is reached again without a new pod;
scripts/smoke-test passes while the user's kernel answers 1+1 every 100 ms, and harms
nobody: the user's pod stays, the kernel misses no answer, and the smoke test's own user,
pod and claim are gone after it (tmp: its temporary user stays, as it says); stopping
deletes the pod and keeps the claim; the idle culler (within the timeout plus --cull-every, the README's bound)
stops an idle server; the admin deletes the user (and KubeSpawner the claim); and the Role
is minimal by evidence: the hub was refused nothing, and every verb it grants was used or
is excused by its comment (support/role_evidence.py). Plus: a Role without `create` on pods
makes the spawn fail with a 403, and scripts/smoke-test then fails naming its step.
"""

import collections
import copy
import os
import re
import time
from pathlib import Path

import pytest

from conftest import need_tool
from hubrunner import CHP_BIN, container_path, descendants, hub_deployment, pod_environment, process_environ, process_ids
from journey import (
    LOGIN,
    profiles_of,
    KernelPinger,
    SINGLEUSER_BIN,
    Deployment,
    api,
    form_login,
    open_server,
    render,
    restart_under_a_kernel,
    run_code,
    smoke_test,
    start_server,
    stop_server,
    user_image_of,
    wait_for_server,
    wait_until_answers,
)
from support import role_evidence

# No xdist group: each journey has its own emulated cluster (bridge, addresses, ports), and
# they spend most of their time waiting (for servers, for the culler), so they run side by
# side on as many workers as are free (tests/conftest.py starts them first).
pytestmark = pytest.mark.slow

USER_IMAGE = "registry.example.org/team/notebook:2026.1"
# user_storage both ways; the culler's timeout at the shortest the template allows
# (the default is an hour), so that step 6 waits about a minute.
# proxy=separate for every authenticator that works offline; dummy with the proxy in the hub too.
CASES = {
    # With profiles and named servers (conftest.CONFINED): the server starts from the spawn form
    # with a profile other than the default, and a named server (with another) runs a kernel.
    "dummy": dict(authenticator="dummy", user_storage="yes", idle_culling="yes", idle_timeout="60",
                  profiles="profile_list", named_servers="yes", named_server_limit="1"),
    "dummy-separate": dict(authenticator="dummy", user_storage="no", idle_culling="yes", idle_timeout="60", proxy="separate"),
    "native-separate": dict(authenticator="native", user_storage="no", idle_culling="yes", idle_timeout="60", proxy="separate"),
    "tmp-separate": dict(authenticator="tmp", user_storage="yes", idle_culling="yes", idle_timeout="60",
                         user_image=USER_IMAGE, proxy="separate"),
}
# proxy=separate: while the hub restarts, a user's kernel keeps answering 1+1 sent every 100 ms
# over its WebSocket, with no failed request and no gap between answers longer than this.
SEPARATE_PROXY_LONGEST_GAP = 1.0
ADMIN = "hubadmin"
# From the culler's DELETE until the pod is gone: KubeSpawner's delete, the kubelet's SIGTERM
# and the pod's removal (the stated bound is when the culler acts).
CULLED_POD_STOP_SECONDS = 15


@pytest.fixture(scope="module")
def tools():
    need_tool("node")
    need_tool("kubectl")
    need_tool("tini")
    for path in (CHP_BIN / "configurable-http-proxy", SINGLEUSER_BIN / "jupyterhub-singleuser"):
        if not path.exists():
            message = f"{path} is missing: run scripts/install-test-tools"
            pytest.skip(message)
    if os.geteuid() != 0:
        message = "the emulated cluster needs root (namespaces, mounts, a bridge)"
        pytest.skip(message)


user_image = user_image_of


def chosen_profile(deployment, slug):
    """The profile of that slug (None: the default) as the rendered ConfigMap gives it to the hub."""
    profiles = profiles_of(deployment.objects)
    return next(p for p in profiles if (p["slug"] == slug if slug else p.get("default")))


def check_profile(deployment, pod, profile):
    """The pod as the API server received it carries the profile's image (the users' image where
    it names none), resources, extra resource limits (a GPU) and tolerations."""
    from jupyterhub.traitlets import ByteSpecification

    override = profile["kubespawner_override"]
    [container] = pod["spec"]["containers"]
    summary = f"profile {profile['slug']}: {container['image']} {container.get('resources')} {pod['spec'].get('tolerations')}"
    assert container["image"] == override.get("image", user_image(deployment.project)), summary
    requests_, limits = container["resources"]["requests"], container["resources"]["limits"]
    memory = ByteSpecification()
    assert float(requests_["cpu"]) == override["cpu_guarantee"] and float(limits["cpu"]) == override["cpu_limit"], summary
    assert int(requests_["memory"]) == memory.validate(None, override["mem_guarantee"]), summary
    assert int(limits["memory"]) == memory.validate(None, override["mem_limit"]), summary
    for resource, value in override.get("extra_resource_limits", {}).items():
        assert limits[resource] == value, summary
    for toleration in override.get("tolerations", []):
        assert toleration in pod["spec"].get("tolerations", []), summary


def check_pod(deployment, context, name, profile=None):
    """The pod as the API server received it, and the container the node made of it.
    profile: the one the user chose, whose image and resources the pod must have."""
    cluster, namespace = deployment.cluster, deployment.namespace
    creates = [r for r in cluster.requests if (r["verb"], r["resource"], r["status"]) == ("create", "pods", 201)]
    assert creates and creates[-1]["namespace"] == namespace, creates
    pod_name = cluster.created_names("pods", namespace)[-1]
    pod = cluster.received[("pods", namespace, pod_name)]
    spec = pod["spec"]
    [container] = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["metadata"]["labels"]["hub.jupyter.org/username"] == name, pod["metadata"]["labels"]
    if profile is None:
        assert container["image"] == user_image(deployment.project), container["image"]
    else:
        check_profile(deployment, pod, profile)
    hub_env = pod_environment(deployment.objects, secrets={})
    assert env["JUPYTERHUB_API_URL"] == f"http://{hub_env['HUB_SERVICE_NAME']}.{namespace}.svc:8081/hub/api", env
    # This hub's pods: its name first (none for production), its instance label.
    prefix = hub_env["HUB_USER_OBJECT_PREFIX"]
    assert pod_name.startswith(f"{prefix}jupyter-"), pod_name
    assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == hub_env["HUB_INSTANCE"], pod["metadata"]["labels"]
    # What the restricted profile asks of it, as KubeSpawner sent it (the admission let it in).
    pod_context, context_ = spec.get("securityContext") or {}, container.get("securityContext") or {}
    security = {**pod_context, **context_}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, security
    assert security["allowPrivilegeEscalation"] is False and not security.get("privileged"), security
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", security
    assert "ALL" in context_["capabilities"]["drop"] and not context_["capabilities"].get("add"), security
    assert pod_context.get("fsGroup") == 100, f"fsGroup {pod_context.get('fsGroup')}: the users' group, so that the claim is theirs"
    assert spec["automountServiceAccountToken"] is False, spec
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
    if context["user_storage"] == "yes":
        # [<hub>-]claim-<name>, the name escaped for Kubernetes as KubeSpawner does it.
        assert len(claims) == 1 and claims[0].startswith(f"{prefix}claim-"), spec.get("volumes")
        assert claims == cluster.created_names("persistentvolumeclaims", namespace)[-1:], (claims, cluster.created)
        volume = cluster.volume_path(namespace, claims[0])
        info = volume.stat()
        assert info.st_gid == 100 and info.st_mode & 0o2070 == 0o2070, f"the claim is {oct(info.st_mode)} group {info.st_gid}"
    else:
        assert claims == [], spec.get("volumes")

    # The node ran it as uid 1000 in the users' group, with the pod's environment, no token.
    pid = cluster.pod_process(namespace, pod_name)
    uids, gids, groups = process_ids(pid)
    assert set(uids) == {1000} and set(gids) == {100} and 100 in groups, (uids, gids, groups)
    environ = process_environ(pid)
    assert {k: environ.get(k) for k in env} == env, environ
    assert not container_path(pid, "/var/run/secrets/kubernetes.io").exists(), "the user's container holds an API token"
    return pod_name, (claims or [None])[0]


def check_hub_pod(deployment):
    """The hub as the node runs it: the Deployment's user, groups and volumes, a read-only root."""
    hub_pid = deployment.find_process("jupyterhub")[0]
    template = hub_deployment(deployment.objects)["spec"]["template"]["spec"]
    [container] = template["containers"]
    uids, gids, groups = process_ids(hub_pid)
    assert set(uids) == {container["securityContext"]["runAsUser"]}, uids
    assert set(gids) == {container["securityContext"]["runAsGroup"]}, gids
    assert template["securityContext"]["fsGroup"] in groups, groups
    environ = process_environ(hub_pid)
    assert environ["POD_NAMESPACE"] == deployment.namespace, environ.get("POD_NAMESPACE")
    assert container_path(hub_pid, "/var/run/secrets/kubernetes.io/serviceaccount/token").is_file(), "the hub has no service account token"
    mounts = Path(f"/proc/{hub_pid}/mountinfo").read_text().splitlines()
    root_mount = next(line.split() for line in mounts if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), f"the hub's root file system is not read-only: {root_mount}"


def check_proxy_pod(deployment):
    """proxy=separate: the proxy as the node runs it: the Deployment's user, no Kubernetes API
    token, a read-only root, and the token it shares with the hub from the hub's Secret."""
    if not deployment.proxy_deployment_name:
        return
    running = deployment.cluster.container(deployment.namespace, deployment.proxy_pod)
    [pid] = [p for p, argv in descendants(running.pid).items() if any("configurable-http-proxy" in a for a in argv)][:1]
    uids, gids, _ = process_ids(pid)
    assert set(uids) == {1000} and set(gids) == {1000}, (uids, gids)
    assert not container_path(pid, "/var/run/secrets/kubernetes.io/serviceaccount").exists(), "the proxy has a service account token"
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    root_mount = next(line.split() for line in mounts if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), f"the proxy's root file system is not read-only: {root_mount}"
    hub_token = process_environ(deployment.find_process("jupyterhub")[0]).get("CONFIGPROXY_AUTH_TOKEN")
    assert hub_token and process_environ(pid)["CONFIGPROXY_AUTH_TOKEN"] == hub_token, "the hub and the proxy do not share the token"


NAMED_SERVER = "lab-2"


def named_server_journey(deployment, context, session, name):
    """named_servers=yes: the user starts a named server through the REST API (with a profile
    other than the default's and than the one the default server runs, when there are
    profiles), its pod and claim are <user>--<server>'s (with the hub's prefix), it answers at
    /user/<name>/<server>/ and runs 1+1 in a kernel there; one more than named_server_limit is
    refused; stopping it deletes its pod and keeps its claim. Returns its claim (or None)."""
    hub, cluster, namespace = deployment.hub, deployment.cluster, deployment.namespace
    prefix = pod_environment(deployment.objects, secrets={})["HUB_USER_OBJECT_PREFIX"]
    profiles = profiles_of(deployment.objects)
    profile = profiles and [p for p in profiles if not p.get("default")][0]
    resp = api(session, hub, "POST", f"/users/{name}/servers/{NAMED_SERVER}", json={"profile": profile["slug"]} if profile else {})
    assert resp.status_code in (201, 202), f"POST the named server: {resp.status_code} {resp.text[:300]}"
    wait_for_server(session, hub, name, NAMED_SERVER)
    pod_name = f"{prefix}jupyter-{name}--{NAMED_SERVER}"
    assert cluster.created_names("pods", namespace)[-1] == pod_name, cluster.created_names("pods", namespace)
    pod = cluster.received[("pods", namespace, pod_name)]
    assert pod["metadata"]["labels"]["hub.jupyter.org/servername"] == NAMED_SERVER, pod["metadata"]["labels"]
    if profile:
        check_profile(deployment, pod, profile)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
    claim = None
    if context["user_storage"] == "yes":
        # A volume of its own, not the default server's home.
        assert claims == [f"{prefix}claim-{name}--{NAMED_SERVER}"], claims
        [claim] = claims
        assert claim in cluster.claims(namespace), cluster.claims(namespace)
    pod_ip = cluster.pods(namespace)[pod_name]["status"]["podIP"]
    route = hub.routes()[f"/user/{name}/{NAMED_SERVER}"]
    assert route["target"] == f"http://{pod_ip}:8888", route
    status = open_server(session, hub, f"{name}/{NAMED_SERVER}")
    assert "started" in status, status
    assert run_code(session, hub, f"{name}/{NAMED_SERVER}", "1+1") == "2"
    # The limit (the case sets it to 1, so that this server reaches it): one more is refused.
    limit = int(context["named_server_limit"])
    assert limit == 1, "the journey reaches the limit with one named server"
    resp = api(session, hub, "POST", f"/users/{name}/servers/one-too-many", json={})
    assert resp.status_code == 400 and f"maximum of {limit} named servers" in resp.text, f"{resp.status_code} {resp.text[:300]}"
    # Stopped (not deleted): the pod goes, the claim stays.
    resp = api(session, hub, "DELETE", f"/users/{name}/servers/{NAMED_SERVER}")
    assert resp.status_code in (202, 204), f"DELETE the named server: {resp.status_code} {resp.text[:300]}"
    cluster.wait_for(lambda: pod_name not in cluster.pods(namespace), 60, "the named server's pod going after the stop")
    if claim:
        assert claim in cluster.claims(namespace), "the named server's claim went with its pod"
    return claim


SMOKE_USER = "smoke-test"  # the generated scripts/smoke-test's own user


def user_pods(cluster, namespace):
    return {n: p for n, p in cluster.pods(namespace).items() if "hub.jupyter.org/username" in p["metadata"].get("labels", {})}


def smoke_test_beside_a_user(deployment, context, session, name, pod_name):
    """scripts/smoke-test while `name` works in a kernel (1+1 every 100 ms over its WebSocket):
    it passes; `name`'s server is the same pod, still ready, and its kernel answered every
    request over one connection; the smoke test's own pod (and claim) came and went, and its
    user is gone, as its output says (tmp: the temporary user and its claim stay, as it says)."""
    hub, cluster, namespace = deployment.hub, deployment.cluster, deployment.namespace
    pod_uid = cluster.pods(namespace)[pod_name]["metadata"]["uid"]
    pod_pid = cluster.pod_process(namespace, pod_name)
    pods_created, claims_created = (len(cluster.created_names(r, namespace)) for r in ("pods", "persistentvolumeclaims"))
    claims_before = set(cluster.claims(namespace))
    with KernelPinger(session, hub, name) as pinger:
        result = smoke_test(deployment)
    output = f"smoke-test:\n{result.stdout}{result.stderr}\n{name}'s kernel meanwhile: {pinger.summary()}"
    print(f"\n{output}")
    assert result.returncode == 0, output
    steps = ["log in", "start server", "server answers", "run 1+1 in a kernel", "stop server", "remove user"]
    if context["authenticator"] != "tmp":
        steps.insert(1, "create user")
    for step in steps:
        assert f"] {step}: ok" in result.stdout, output
    assert "= 2" in result.stdout, output

    # The user's server: the same pod and process, ready; the kernel never missed an answer.
    assert cluster.pods(namespace).get(pod_name, {}).get("metadata", {}).get("uid") == pod_uid, f"{name}'s pod was replaced or deleted\n{output}"
    assert cluster.pod_process(namespace, pod_name) == pod_pid, f"{name}'s server process changed\n{output}"
    server = api(session, hub, "GET", f"/users/{name}").json()["servers"].get("")
    assert server and server["ready"], f"{name}'s server: {server}\n{output}"
    assert pinger.failed == 0 and pinger.connections == 1, output

    # The smoke test's own server: one new pod, of another user, gone now.
    new_pods = [n for n in cluster.created_names("pods", namespace)[pods_created:]
                if "hub.jupyter.org/username" in cluster.received[("pods", namespace, n)]["metadata"].get("labels", {})]
    assert len(new_pods) == 1 and new_pods[0] != pod_name, (new_pods, output)
    [smoke_pod] = new_pods
    smoke_user = cluster.received[("pods", namespace, smoke_pod)]["metadata"]["labels"]["hub.jupyter.org/username"]
    assert smoke_user != name and smoke_pod not in user_pods(cluster, namespace), (smoke_pod, output)
    new_claims = cluster.created_names("persistentvolumeclaims", namespace)[claims_created:]
    assert len(new_claims) == (1 if context["user_storage"] == "yes" else 0), (new_claims, output)
    if context["authenticator"] == "tmp":
        # No admin logs in: the new temporary user cannot delete itself; the output says what stays.
        assert f"left user {smoke_user}" in result.stdout, output
        assert set(cluster.claims(namespace)) == claims_before | set(new_claims), output
        return
    assert smoke_user == SMOKE_USER and smoke_pod in result.stdout, output
    assert set(cluster.claims(namespace)) == claims_before, f"claims left: {set(cluster.claims(namespace)) - claims_before}\n{output}"
    assert all(c in result.stdout for c in new_claims), output
    admin = session if context["authenticator"] == "native" else form_login(hub, ADMIN, deployment.secrets["JUPYTERHUB_ADMIN_PASSWORD"])
    resp = api(admin, hub, "GET", f"/users/{SMOKE_USER}")
    assert resp.status_code == 404, f"the user {SMOKE_USER} is left: {resp.status_code} {resp.text[:300]}\n{output}"
    # Nobody logs in as the smoke test's user (dummy: not even with the shared password).
    if context["authenticator"] == "dummy":
        with pytest.raises(AssertionError, match="POST /hub/login as smoke-test: 403"):
            form_login(hub, SMOKE_USER, deployment.secrets["JUPYTERHUB_USER_PASSWORD"])


@pytest.mark.parametrize("case", list(CASES))
def test_journey(bake, tools, tmp_path, case, record_property):
    context = CASES[case]
    project = bake(admin_user=ADMIN, **context)
    login = LOGIN[context["authenticator"]]
    with Deployment(project, tmp_path, user_image(project), context["authenticator"]) as deployment:
        hub, cluster, namespace = deployment.hub, deployment.cluster, deployment.namespace
        try:
            check_hub_pod(deployment)
            check_proxy_pod(deployment)

            # 1. Log in through the form; start the server (with profiles: from the spawn form,
            # choosing the last profile, not the default); it answers through the proxy.
            session, name = login(deployment)
            profile = profiles_of(deployment.objects)[-1] if context.get("profiles") == "profile_list" else None
            assert not (profile and profile.get("default")), "the journey's profile is the default"
            start_server(session, hub, name, profile=profile and profile["slug"])
            status = open_server(session, hub, name)
            assert "started" in status, status

            # 2. The pod, as the API server received it (the chosen profile's image and
            # resources); the claim.
            pod_name, claim = check_pod(deployment, context, name, profile)
            routes = hub.routes()
            pod_ip = cluster.pods(namespace)[pod_name]["status"]["podIP"]
            assert routes[f"/user/{name}"]["target"] == f"http://{pod_ip}:8888", routes

            # 3. A kernel runs 1+1 over its WebSocket, through the proxy.
            assert run_code(session, hub, name, "1+1") == "2"

            # 3b. named_servers=yes: a named server of the same user, with a pod, a claim and
            # a route of its own, runs 1+1 too; the limit holds; it stops, keeping its claim.
            named_claim = named_server_journey(deployment, context, session, name) if context.get("named_servers") == "yes" else None

            # 4. A setting changes during the class: a new ConfigMap rolls the hub while the
            # user's kernel answers 1+1 every 100 ms over its WebSocket. The user's pod stays;
            # with proxy=separate the user notices nothing, with in-hub the proxy goes with the
            # hub and the gap is measured.
            pods_before = cluster.created_names("pods", namespace)
            proxy_pods = deployment.proxy_pods()
            pinger, ready = restart_under_a_kernel(deployment, session, name)
            record_property("restart_longest_gap_seconds", round(pinger.longest_gap(), 2))
            record_property("restart_failed_requests", pinger.failed)
            print(f"\n[{case}] hub restarted by a new ConfigMap (new pod ready after {ready:.2f} s): {pinger.summary()}")
            assert len(deployment.pods_seen) >= 2, "the new ConfigMap did not roll the hub"
            assert set(cluster.created_names("pods", namespace)) - set(pods_before) <= {deployment.pod}, "the restart created a pod besides the hub's"
            assert cluster.pod_process(namespace, pod_name), "the user's server died with the hub"
            if context.get("proxy") == "separate":
                assert deployment.proxy_pods() == proxy_pods, "the proxy's pod was replaced"
                assert pinger.failed == 0, pinger.summary()
                assert pinger.longest_gap() <= SEPARATE_PROXY_LONGEST_GAP, pinger.summary()
                assert pinger.connections == 1, pinger.summary()
            else:
                assert pinger.failed > 0 and pinger.connections > 1, f"the in-hub proxy outlived the hub? {pinger.summary()}"

            # 5. The generated scripts/smoke-test, as the operator runs it after a deploy or when
            # users report trouble: while this user works in a kernel. It starts a server of its
            # own (dummy and native: a user of its own, which it deletes with its claim; tmp: a
            # new temporary user), and this user's server and kernel never notice.
            smoke_test_beside_a_user(deployment, context, session, name, pod_name)

            # 6. Stopping deletes the pod; the claim stays.
            stop_server(session, hub, name)
            cluster.wait_for(lambda: pod_name not in cluster.pods(namespace), 60, "the pod going after the stop")
            if context["user_storage"] == "yes":
                assert claim in cluster.claims(namespace), "the claim went with the pod"

            # 7. The idle culler stops an idle server (nobody asks the hub to), within the bound
            # the README states: the timeout plus the culler's interval (--cull-every).
            start_server(session, hub, name)
            idle_since = time.monotonic()  # the server's last activity is its start, at the latest
            pod_name = cluster.created_names("pods", namespace)[-1]
            deletes_before = [r for r in cluster.requests if r["verb"] == "delete"]
            [culler] = [s for s in hub.config().JupyterHub.services if s["name"] == "idle-culler"]
            [cull_every] = [int(a.split("=", 1)[1]) for a in culler["command"] if a.startswith("--cull-every=")]
            bound = int(context["idle_timeout"]) + cull_every
            cluster.wait_for(lambda: pod_name not in cluster.pods(namespace), bound + 60, "the culler stopping the idle server")
            stopped_after = time.monotonic() - idle_since
            print(f"[{case}] idle server stopped {stopped_after:.1f} s after its start (bound: {bound} s + the pod's stop)")
            assert stopped_after <= bound + CULLED_POD_STOP_SECONDS, f"culled after {stopped_after:.1f} s, beyond {bound} s"
            assert "culling" in hub.log_text().lower(), hub.log_tail()
            assert len([r for r in cluster.requests if r["verb"] == "delete"]) > len(deletes_before)

            # A claim is created once per user, however often the server starts.
            claims = collections.Counter(cluster.created_names("persistentvolumeclaims", namespace))
            if context["user_storage"] == "yes":
                assert claims[claim] == 1 and set(claims.values()) == {1}, claims
                assert named_claim is None or claims[named_claim] == 1, claims
            else:
                assert not claims, claims

            # 8. The admin deletes the user (the admin panel's "Delete User"); KubeSpawner
            # deletes the claim with it. (native: the user is the admin, who cannot delete
            # itself, and has no claim; tmp: nobody can log in as the admin.)
            if context["authenticator"] == "dummy":
                admin = form_login(hub, ADMIN, deployment.secrets["JUPYTERHUB_ADMIN_PASSWORD"])
                deadline = time.monotonic() + 60  # until the hub has finished the culler's stop
                while api(admin, hub, "GET", f"/users/{name}").json().get("servers") and time.monotonic() < deadline:
                    time.sleep(0.2)
                resp = api(admin, hub, "DELETE", f"/users/{name}")
                assert resp.status_code == 204, f"DELETE /users/{name}: {resp.status_code} {resp.text[:300]}"
                if context["user_storage"] == "yes":
                    # Every server's claim, a named server's too.
                    gone = {claim, named_claim} - {None}
                    cluster.wait_for(lambda: not gone & set(cluster.claims(namespace)), 60, "the claims going with their user")

            # 9. The Role: sufficient (nothing refused) and minimal by evidence.
            account = hub_deployment(deployment.objects)["spec"]["template"]["spec"]["serviceAccountName"]
            user = f"system:serviceaccount:{namespace}:{account}"
            rules = deployment.cluster.rules(namespace, account)
            role_source = (deployment.project / "k8s" / "base" / "hub-role.yaml").read_text(encoding="utf-8")
            from kubespawner import KubeSpawner

            assert role_evidence.problems(rules, cluster.requests, user, role_source, KubeSpawner) == []
            # A negative control on the same evidence: one verb more is caught.
            wider = copy.deepcopy(rules) + [{"apiGroups": [""], "resources": ["pods"], "verbs": ["update"]}]
            assert role_evidence.problems(wider, cluster.requests, user, role_source, KubeSpawner), "an unused verb passed"
        except AssertionError as error:
            error.args = (f"{error}\n{deployment.logs()}",)
            raise


def test_role_is_enforced(bake, tools, tmp_path):
    """Without `create` on pods in the Role, the spawn fails with a 403, and smoke-test says where
    (and removes the user it created)."""
    project = bake(admin_user=ADMIN, **CASES["dummy"])
    objects = render(project)
    for role in (o for o in objects if o["kind"] == "Role"):
        for rule in role["rules"]:
            if "pods" in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    with Deployment(project, tmp_path, user_image(project), "dummy", objects=objects) as deployment:
        result = smoke_test(deployment, "--timeout", "120")
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "start server: FAILED" in result.stdout, output
        assert "FAILED at step 'start server'" in result.stderr, output
        assert "] log in: ok" in result.stdout and "] create user: ok" in result.stdout, output
        # What it made before the failure, it removes: its user (there is no pod, nor a claim).
        assert f"clean up: user {SMOKE_USER} deleted" in result.stdout, output
        admin = form_login(deployment.hub, ADMIN, deployment.secrets["JUPYTERHUB_ADMIN_PASSWORD"])
        assert api(admin, deployment.hub, "GET", f"/users/{SMOKE_USER}").status_code == 404, output
        refused = [(r["verb"], r["resource"], r["namespace"]) for r in deployment.cluster.refused()]
        assert ("create", "pods", deployment.namespace) in refused, deployment.cluster.log_tail()
        singleuser = [n for n, p in deployment.cluster.pods(deployment.namespace).items() if "hub.jupyter.org/username" in p["metadata"].get("labels", {})]
        assert singleuser == [], "a user pod exists although the Role forbids creating it"
        assert "403" in deployment.hub.log_text(), deployment.hub.log_tail()


@pytest.mark.parametrize("authenticator", ["dummy", "native", "github", "generic-oauth", "tmp"])
def test_smoke_test_ships_in_every_project(bake, authenticator):
    """Executable, standard library only (the system's python3 runs it), with this project's URL."""
    import subprocess

    project = bake(authenticator=authenticator, hostname="hub.example.org", tls="yes")
    script = project / "scripts" / "smoke-test"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "https://hub.example.org" in result.stdout, result.stdout
    # Nothing to log in with: it fails at once, naming the step, with status 1.
    if authenticator in ("github", "generic-oauth"):
        result = subprocess.run(
            [str(script), "--url", "http://127.0.0.1:9"], capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin"}, check=False, timeout=60,
        )
        assert result.returncode == 1 and "FAILED at step 'log in'" in result.stderr, result
        assert "--token" in result.stdout, result.stdout


def test_both_readmes_state_the_restart_trade_off(bake):
    """The gap the benchmark measured for both proxy choices, with its machine and date, where
    users read it, and when to pick which."""
    template_readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    readmes = [("README.md", template_readme)] + [
        (f"the generated README.md (proxy={proxy})", (bake(proxy=proxy) / "README.md").read_text()) for proxy in ("in-hub", "separate")
    ]
    for name, text in readmes:
        section = text.split("## Trade-offs", 1)
        assert len(section) == 2, f"{name} has no Trade-offs section"
        section = " ".join(section[1].split("\n## ", 1)[0].split())
        assert re.search(r"\d+\.\d s", section) and "0.11 s" in section, f"{name}: no measured gap for both choices"
        assert re.search(r"20\d\d-\d\d-\d\d", section) and "CPU" in section, f"{name}: no machine or date"
        assert "proxy=separate" in section and "in-hub" in section and "Zero to JupyterHub" in section, name
    # The template's figures are the benchmark's table's, not a second copy that can drift.
    table = template_readme.split("## A user's waits", 1)[1].split("\n## ", 1)[0]
    for figure in ("5.6 s", "0.11 s"):
        assert figure in table, f"the benchmark table lacks {figure}"


# The suite's small load: this many users at once (scripts/benchmark-load runs 20 and more).
USERS_AT_ONCE = 5


def test_users_at_once(bake, tools, tmp_path, record_property):
    """USERS_AT_ONCE users log in at the same moment, each until 1+1 answers in a kernel, on
    proxy=separate: none fails. Prints p50 and p95 and the resident memory of the hub and the
    proxy at idle and with the servers running (the README's figures come from the benchmark)."""
    from journey import login_dummy, percentile, resident_memory, users_at_once

    context = dict(CASES["dummy-separate"], idle_culling="no")
    project = bake(admin_user=ADMIN, **context)
    with Deployment(project, tmp_path, user_image(project), "dummy") as deployment:
        idle = resident_memory(deployment)
        results = users_at_once(deployment, login_dummy, USERS_AT_ONCE)
        loaded = resident_memory(deployment)
        failures = [(name, outcome) for name, outcome in results if isinstance(outcome, Exception)]
        assert not failures, f"{failures}\n{deployment.logs()}"
        seconds = [outcome for _, outcome in results]
        p50, p95 = percentile(seconds, 0.5), percentile(seconds, 0.95)
        record_property("login_to_kernel_p50", round(p50, 2))
        record_property("login_to_kernel_p95", round(p95, 2))
        print(f"\n{USERS_AT_ONCE} users at once: login to 1+1 p50 {p50:.1f} s, p95 {p95:.1f} s;"
              f" resident memory idle {idle}, with {USERS_AT_ONCE} servers {loaded}")
        assert set(idle) >= {"hub", "proxy"} and set(loaded) >= {"hub", "proxy"}, (idle, loaded)
        running = [n for n, p in deployment.cluster.pods(deployment.namespace).items() if "hub.jupyter.org/username" in p["metadata"].get("labels", {})]
        assert len(running) == USERS_AT_ONCE, running


def test_the_percentile_is_nearest_rank():
    from journey import percentile

    values = list(range(1, 21))  # 1 .. 20
    assert percentile(values, 0.5) == 10 and percentile(values, 0.95) == 19 and percentile(values, 1.0) == 20
    assert percentile([3.0], 0.95) == 3.0 and percentile([5, 1, 4, 2, 3], 0.5) == 3


@pytest.mark.parametrize("timeout", ["3600", "60", "86400"])
def test_the_culler_looks_as_often_as_zero_to_jupyterhubs_and_the_readme_states_the_bound(bakery, timeout):
    """--cull-every is Zero to JupyterHub's 600 s (half the timeout when that is shorter), the
    hub learns activity from the proxy every 60 s (a quarter of the timeout when that is shorter,
    so that a user at work never looks idle to the culler), and the generated README states the
    bound the journeys hold the culler to: the timeout plus --cull-every."""
    project = bakery.project(dict(idle_culling="yes", idle_timeout=timeout))
    config = bakery.hub_config(project)
    [culler] = [s for s in config.JupyterHub.services if s["name"] == "idle-culler"]
    [cull_every] = [int(a.split("=", 1)[1]) for a in culler["command"] if a.startswith("--cull-every=")]
    assert cull_every == min(600, int(timeout) // 2), culler["command"]
    interval = config.JupyterHub.last_activity_interval
    assert interval == min(60, max(10, int(timeout) // 4)) and interval <= int(timeout) / 4, interval
    readme = " ".join((project / "README.md").read_text(encoding="utf-8").split())
    assert f"learns from the proxy every {interval} seconds" in readme
    assert f"looks every {cull_every} seconds" in readme and f"stopped at most {int(timeout) + cull_every} seconds" in readme
