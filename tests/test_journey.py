"""From the login form to a running kernel: real user servers, spawned by the generated
config on an emulated cluster (tests/emulated_cluster.py), for dummy, native and tmp.

Each journey: log in through the real form; start the server as a browser does; it
answers through the proxy; the pod as the API server received it; a kernel runs 1+1
over its WebSocket through the proxy; the hub restarts (its proxy dies with it) and the
server is reached again without a new pod; stopping deletes the pod and keeps the
claim; scripts/smoke-test passes; the idle culler stops an idle server; and the Role
refused nothing. Plus: a Role without `create` on pods makes the spawn fail with a 403,
and scripts/smoke-test then fails naming its step.
"""

import collections
import os
from pathlib import Path

import pytest

from conftest import need_tool
from hubrunner import CHP_BIN, NAMESPACE
from journey import (
    LOGIN,
    SINGLEUSER_BIN,
    Deployment,
    open_server,
    render,
    restart_hub,
    run_code,
    smoke_test,
    start_server,
    stop_server,
    wait_until_answers,
)
from emulated_cluster import role_of

# No xdist group: each journey has its own emulated cluster (addresses, ports, mount
# namespace), and they spend most of their time waiting (for servers, for the culler), so
# they run side by side on as many workers as are free (tests/conftest.py starts them first).
pytestmark = pytest.mark.slow

USER_IMAGE = "registry.example.org/team/notebook:2026.1"
# user_storage both ways; the culler's timeout at the shortest the template allows
# (the default is an hour), so that step 6 waits about a minute.
CASES = {
    "dummy": dict(authenticator="dummy", user_storage="yes", idle_culling="yes", idle_timeout="60"),
    "native": dict(authenticator="native", user_storage="no", idle_culling="yes", idle_timeout="60"),
    "tmp": dict(authenticator="tmp", user_storage="yes", idle_culling="yes", idle_timeout="60",
                user_image=USER_IMAGE),
}


@pytest.fixture(scope="module")
def tools():
    need_tool("node")
    need_tool("kubectl")
    for path in (CHP_BIN / "configurable-http-proxy", SINGLEUSER_BIN / "jupyterhub-singleuser"):
        if not path.exists():
            message = f"{path} is missing: run scripts/install-test-tools"
            pytest.skip(message)
    if os.geteuid() != 0:
        message = "the emulated cluster needs root (a mount namespace, pods as uid 1000)"
        pytest.skip(message)


def user_image(project):
    import re

    return re.search(r'^USER_IMAGE = "([^"]+)"', (Path(project) / "jupyterhub_config.py").read_text(), re.M)[1]


def check_pod(deployment, context, name):
    """The pod as the API server received it, and the process the kubelet made of it."""
    cluster = deployment.cluster
    creates = [r for r in cluster.requests if (r["verb"], r["resource"], r["status"]) == ("create", "pods", 201)]
    assert creates and creates[-1]["namespace"] == NAMESPACE, creates
    pod_name = cluster.created_names("pods")[-1]
    pod = cluster.received[("pods", pod_name)]
    spec = pod["spec"]
    [container] = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["metadata"]["labels"]["hub.jupyter.org/username"] == name, pod["metadata"]["labels"]
    assert container["image"] == user_image(deployment.project), container["image"]
    assert env["JUPYTERHUB_API_URL"] == f"http://hub.{NAMESPACE}.svc:8081/hub/api", env
    security = {**spec.get("securityContext", {}), **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, security
    assert security["allowPrivilegeEscalation"] is False, security
    assert spec["automountServiceAccountToken"] is False, spec
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]
    if context["user_storage"] == "yes":
        # claim-<name>, the name escaped for Kubernetes as KubeSpawner does it.
        assert len(claims) == 1 and claims[0].startswith("claim-"), spec.get("volumes")
        assert claims == cluster.created_names("persistentvolumeclaims")[-1:], (claims, cluster.created)
    else:
        assert claims == [], spec.get("volumes")

    # The kubelet ran it as uid 1000 with the pod's environment (+ the image's PATH and HOME).
    proc = cluster.pod_process(pod_name)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert "\nUid:\t1000\t1000\t1000\t1000\n" in status, status
    environ = dict(
        item.decode().split("=", 1) for item in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0") if item
    )
    pod_ip = cluster.objects["pods"][pod_name]["status"]["podIP"]
    expected = {k: v.replace("0.0.0.0", pod_ip) for k, v in env.items()}
    assert {k: v for k, v in environ.items() if k not in ("PATH", "HOME")} == expected, environ
    return pod_name, (claims or [None])[0]


@pytest.mark.parametrize("case", list(CASES))
def test_journey(bake, tools, tmp_path, case, record_property):
    context = CASES[case]
    project = bake(admin_user="hubadmin", **context)
    with Deployment(project, tmp_path, user_image(project), context["authenticator"]) as deployment:
        hub, cluster = deployment.hub, deployment.cluster
        try:
            # 1. Log in through the form; start the server; it answers through the proxy.
            session, name = LOGIN[case](deployment)
            start_server(session, hub, name)
            status = open_server(session, hub, name)
            assert "started" in status, status

            # 2. The pod, as the API server received it; the claim.
            pod_name, claim = check_pod(deployment, context, name)
            routes = hub.routes()
            pod_ip = cluster.objects["pods"][pod_name]["status"]["podIP"]
            assert routes[f"/user/{name}"]["target"] == f"http://{pod_ip}:8888", routes

            # 3. A kernel runs 1+1 over its WebSocket, through the proxy.
            assert run_code(session, hub, name, "1+1") == "2"

            # 4. The hub restarts, its proxy with it: same pod, reached through the new proxy.
            pods_before = cluster.created_names("pods")
            window = restart_hub(hub) + wait_until_answers(session, hub, name)
            record_property("restart_window_seconds", round(window, 2))
            print(f"\n[{case}] hub restart: user server answering again after {window:.2f} s")
            assert cluster.created_names("pods") == pods_before, "the restart created a pod"
            assert cluster.pod_process(pod_name).poll() is None, "the user's server died with the hub"

            # 5. Stopping deletes the pod; the claim stays.
            stop_server(session, hub, name)
            cluster.wait_for(lambda: pod_name not in cluster.objects["pods"], 60, "the pod going after the stop")
            assert cluster.pod_process(pod_name) is None
            if context["user_storage"] == "yes":
                assert claim in cluster.objects["persistentvolumeclaims"], "the claim went with the pod"

            # The generated scripts/smoke-test, as a user runs it after deploying.
            # (native: as the admin, with the secrets file's password, like dummy's users)
            result = smoke_test(deployment)
            assert result.returncode == 0, f"smoke-test:\n{result.stdout}{result.stderr}"
            for step in ("log in", "start server", "server answers", "run 1+1 in a kernel", "stop server"):
                assert f"] {step}: ok" in result.stdout, result.stdout
            assert "= 2" in result.stdout, result.stdout

            # 6. The idle culler stops an idle server (nobody asks the hub to).
            start_server(session, hub, name)
            pod_name = cluster.created_names("pods")[-1]
            deletes_before = [r for r in cluster.requests if r["verb"] == "delete"]
            cluster.wait_for(lambda: pod_name not in cluster.objects["pods"], 200, "the culler stopping the idle server")
            assert "Culling server" in hub.log_text() or "culling" in hub.log_text().lower(), hub.log_tail()
            assert len([r for r in cluster.requests if r["verb"] == "delete"]) > len(deletes_before)

            # A claim is created once per user, however often the server starts.
            claims = collections.Counter(cluster.created_names("persistentvolumeclaims"))
            if context["user_storage"] == "yes":
                assert claims[claim] == 1 and set(claims.values()) == {1}, claims
            else:
                assert not claims, claims

            # 7. Nothing was refused by the Role, and KubeSpawner did use the API.
            assert cluster.refused() == [], cluster.refused()
            verbs = {(r["verb"], r["resource"]) for r in cluster.requests}
            assert {("create", "pods"), ("delete", "pods"), ("watch", "pods"), ("watch", "events")} <= verbs, verbs
        except AssertionError as error:
            error.args = (f"{error}\n{deployment.logs()}",)
            raise


def test_role_is_enforced(bake, tools, tmp_path):
    """Without `create` on pods in the Role, the spawn fails with a 403, and smoke-test says where."""
    project = bake(admin_user="hubadmin", **CASES["dummy"])
    rules = role_of(render(project))
    for rule in rules:
        if "pods" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    with Deployment(project, tmp_path, user_image(project), "dummy", rules=rules) as deployment:
        result = smoke_test(deployment, "--timeout", "120")
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "start server: FAILED" in result.stdout, output
        assert "FAILED at step 'start server'" in result.stderr, output
        assert "] log in: ok" in result.stdout, output
        refused = [(r["verb"], r["resource"], r["namespace"]) for r in deployment.cluster.refused()]
        assert ("create", "pods", NAMESPACE) in refused, deployment.cluster.log_tail()
        assert deployment.cluster.objects["pods"] == {}, "a pod exists although the Role forbids creating it"
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
    """The window the benchmark measured, with its machine and date, where users read it."""
    import re

    template_readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    generated_readme = (bake() / "README.md").read_text()
    for name, text in (("README.md", template_readme), ("the generated README.md", generated_readme)):
        section = text.split("## Trade-offs", 1)
        assert len(section) == 2, f"{name} has no Trade-offs section"
        section = " ".join(section[1].split("\n## ", 1)[0].split())
        assert re.search(r"\d+\.\d s .*from SIGTERM", section, re.S), f"{name}: no measured window"
        assert re.search(r"20\d\d-\d\d-\d\d", section) and "CPU" in section, f"{name}: no machine or date"
        assert "proxy" in section and "Zero to JupyterHub" in section, name
