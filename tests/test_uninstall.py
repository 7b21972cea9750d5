"""scripts/uninstall deletes one hub, in order, and nothing of the other hub or of anyone else.

It runs against a strict kubectl stand-in (tests/support/kubectl_state_standin.py) holding what a
namespace with both hubs holds: both overlays' renders (real `kubectl kustomize`), the hubs'
pods, a ConfigMap and a Secret that an earlier deploy left behind, the users' pods and claims
exactly as KubeSpawner builds them under each overlay's configuration (KubeSpawner itself,
the config loaded in this process), a Secret made by hand, and objects of another namespace.
Every call the script made is also put to the real kubectl's parser.
"""

import asyncio
import copy
import json
import subprocess

import pytest

from conftest import OVERLAYS
from hubrunner import render
from support.kubectl_state_standin import calls, install, read_state
from test_hub import MockOrmSpawner, MockUser, pod_config_loaded
from test_secret_rotation import assert_real_kubectl_accepts, made_secret

USERS = ("alice", "bob")
NAMED_SERVER = "lab-2"
CASES = {
    # With named servers: alice's named server has a pod and a claim of its own, which go too.
    "separate-env-file": {"proxy": "separate", "hub_secrets": "env-file", "named_servers": "yes"},
    "github-existing-secret": {"authenticator": "github", "proxy": "in-hub", "hub_secrets": "existing-secret"},
}


async def kubespawner_manifests(config, username, server=""):
    """The pod and the claim KubeSpawner creates for username's server (no API calls), and its namespace."""
    from jupyterhub.app import JupyterHub
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    app = JupyterHub(config=config)
    app.init_hub()
    orm_spawner = MockOrmSpawner()
    orm_spawner.name = server
    spawner = KubeSpawner(_mock=True, config=config, user=MockUser(username), hub=app.hub, orm_spawner=orm_spawner)
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    claim = ApiClient().sanitize_for_serialization(spawner.get_pvc_manifest())
    for obj, kind in ((pod, "Pod"), (claim, "PersistentVolumeClaim")):
        obj["kind"] = kind
        obj["metadata"]["namespace"] = spawner.namespace
    return pod, claim


def users_objects(project, objects, secrets, workdir, monkeypatch):
    """Each user's pod and claim under this overlay's hub, built by KubeSpawner."""
    built = []
    with pod_config_loaded(project, workdir, monkeypatch, objects, secrets) as (_, config):
        for user in USERS:
            built.extend(asyncio.run(kubespawner_manifests(config, user)))
        if config.JupyterHub.get("allow_named_servers"):
            built.extend(asyncio.run(kubespawner_manifests(config, USERS[0], NAMED_SERVER)))
            assert built[-1]["metadata"]["name"].endswith(f"claim-{USERS[0]}--{NAMED_SERVER}"), built[-1]["metadata"]
    return built


def hub_pods(objects):
    """The pods the Deployments run (the stand-in deletes them with their Deployment, in the foreground)."""
    pods = []
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        template = deployment["spec"]["template"]
        pods.append({
            "kind": "Pod",
            "metadata": {"name": f"{deployment['metadata']['name']}-5d9c7b8f4-x2x7q", "namespace": deployment["metadata"]["namespace"],
                         "labels": template["metadata"]["labels"], "ownerDeployment": deployment["metadata"]["name"]},
            "spec": {"volumes": template["spec"].get("volumes", [])},
        })  # fmt: skip
    return pods


def key(obj):
    return (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])


@pytest.fixture(params=sorted(CASES))
def namespace_with_two_hubs(request, bake, tmp_path_factory, monkeypatch):
    """(project, case, {overlay: {"rendered", "stale", "hub pods", "user pods", "user claims", "made"}}, unrelated objects)."""
    case = CASES[request.param]
    project = bake(**case)
    workdir = tmp_path_factory.mktemp("kubespawner")
    hubs = {}
    for overlay in OVERLAYS:
        rendered = render(project, overlay)
        made = [made_secret(project, rendered, uid=f"uid-{overlay}")] if case["hub_secrets"] == "existing-secret" else []
        secrets = {"OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": "secret"} if made else None
        users = users_objects(project, rendered + made, secrets, workdir / overlay, monkeypatch)
        # What earlier deploys left: kustomize named each content's ConfigMap (and Secret) anew.
        stale = []
        for obj in rendered:
            if obj["kind"] in ("ConfigMap", "Secret"):
                old = copy.deepcopy(obj)
                old["metadata"]["name"] = obj["metadata"]["name"][:-10] + "0ld0ld0ld0"
                stale.append(old)
        hubs[overlay] = {
            "rendered": rendered, "stale": stale, "hub pods": hub_pods(rendered), "made": made,
            "user pods": [o for o in users if o["kind"] == "Pod"], "user claims": [o for o in users if o["kind"] == "PersistentVolumeClaim"],
        }  # fmt: skip
    namespace = hubs["production"]["rendered"][0]["metadata"]["namespace"]
    elsewhere = copy.deepcopy(hubs["development"]["rendered"] + hubs["development"]["user pods"])
    for obj in elsewhere:
        obj["metadata"]["namespace"] = "another-namespace"
    unrelated = [{"kind": "Secret", "metadata": {"name": "kaniko-docker-config", "namespace": namespace}}, *elsewhere]
    return project, case, hubs, unrelated


def every_object(hubs, unrelated):
    return [o for hub in hubs.values() for group in hub.values() for o in group] + unrelated


def uninstall(project, env, *args, stdin=""):
    return subprocess.run([str(project / "scripts" / "uninstall"), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def selector_of(call):
    return dict(term.split("=", 1) for term in call[call.index("-l") + 1].split(","))


def labels(obj):
    return obj["metadata"].get("labels") or {}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing jupyterhub.app in-process
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_uninstall_deletes_one_hub_in_order_and_keeps_the_users_volumes(namespace_with_two_hubs, tmp_path, overlay):
    project, case, hubs, unrelated = namespace_with_two_hubs
    other = next(o for o in OVERLAYS if o != overlay)
    mine = hubs[overlay]
    namespace = mine["rendered"][0]["metadata"]["namespace"]
    env, state_file, log = install(tmp_path, every_object(hubs, unrelated))
    result = uninstall(project, env, "--overlay", overlay, "--yes")
    assert result.returncode == 0, result.stderr
    assert not read_state(state_file).get("usage_errors")
    made = calls(log)
    assert all(c[:2] == ["-n", namespace] for c in made), made
    deletes = [c[2:] for c in made if c[2] == "delete"]
    # The order: the Deployments with their pods, the users' pods, then the rest of the hub.
    assert [d[1] for d in deletes] == ["deployment", "pod", deletes[2][1]], deletes
    assert "--cascade=foreground" in deletes[0], "the hub's pods must be gone before its volume goes"
    assert [c[2] for c in made[:len(made) - len(deletes)]] == ["get"] * (len(made) - len(deletes)), "it looks before it deletes"

    # The users' pods are selected by exactly the labels this hub's own NetworkPolicy selects
    # them by (from the render), which KubeSpawner gives them (built by KubeSpawner here).
    [policy] = [o for o in mine["rendered"] if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "singleuser-server"]
    assert selector_of(deletes[1]) == policy["spec"]["podSelector"]["matchLabels"], deletes[1]
    # The hub's objects: by labels every object of its render carries, and no user object does.
    common = dict(set.intersection(*(set(labels(o).items()) for o in mine["rendered"])))
    for delete in (deletes[0], deletes[2]):
        assert set(selector_of(delete).items()) <= set(common.items()), (delete, common)

    remaining = {key(o) for o in read_state(state_file)["objects"]}
    gone = [*mine["rendered"], *mine["stale"], *mine["hub pods"], *mine["user pods"]]
    assert not [key(o) for o in gone if key(o) in remaining], "left behind"
    kept = [*hubs[other]["rendered"], *hubs[other]["stale"], *hubs[other]["hub pods"], *hubs[other]["user pods"],
            *hubs[other]["user claims"], *mine["user claims"], *mine["made"], *hubs[other]["made"], *unrelated]  # fmt: skip
    assert [key(o) for o in kept if key(o) not in remaining] == [], "deleted what it must not"
    assert remaining == {key(o) for o in kept}

    said = result.stderr
    claims = " ".join(f"persistentvolumeclaim/{c['metadata']['name']}" for c in mine["user claims"])
    assert f"uninstall: kept the user volumes; to delete them: kubectl -n {namespace} delete {claims}" in said, said
    assert ("kept the Secret you made" in said) == (case["hub_secrets"] == "existing-secret"), said
    assert f"stop {len(mine['user pods'])} running user servers" in said, said
    assert_real_kubectl_accepts(log, tmp_path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_uninstall_deletes_the_users_volumes_only_when_asked_and_can_keep_the_hubs(namespace_with_two_hubs, tmp_path):
    project, case, hubs, unrelated = namespace_with_two_hubs
    mine, other = hubs["production"], hubs["development"]
    namespace = mine["rendered"][0]["metadata"]["namespace"]
    env, state_file, log = install(tmp_path, every_object(hubs, unrelated))
    result = uninstall(project, env, "--overlay", "production", "--no-keep-user-volumes", "--keep-hub-volume", "--yes")
    assert result.returncode == 0, result.stderr
    deletes = [c[2:] for c in calls(log) if c[2] == "delete"]
    # The claims go by name, after the pods that used them, before the rest.
    claim_names = sorted(f"persistentvolumeclaim/{c['metadata']['name']}" for c in mine["user claims"])
    assert sorted(deletes[2][1:-1]) == claim_names and deletes[2][-1] == "--wait=true", deletes
    remaining = {key(o) for o in read_state(state_file)["objects"]}
    [hub_volume] = [o for o in mine["rendered"] if o["kind"] == "PersistentVolumeClaim"]
    assert key(hub_volume) in remaining, "--keep-hub-volume deleted the hub's volume"
    assert not [key(o) for o in mine["user claims"] if key(o) in remaining]
    assert all(key(o) in remaining for o in other["user claims"] + other["rendered"]), "the other hub's went too"
    assert f"keep persistentvolumeclaim/{hub_volume['metadata']['name']}: the hub's database" in result.stderr, result.stderr
    assert_real_kubectl_accepts(log, tmp_path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_uninstall_asks_first_and_a_dry_run_deletes_nothing(namespace_with_two_hubs, tmp_path):
    project, case, hubs, unrelated = namespace_with_two_hubs
    namespace = hubs["development"]["rendered"][0]["metadata"]["namespace"]
    env, state_file, log = install(tmp_path, every_object(hubs, unrelated))
    before = read_state(state_file)["objects"]
    for args, stdin, says in (
        (["--overlay", "development"], "production\n", "uninstall: not confirmed (typed 'production', not 'development'): nothing was deleted"),
        (["--overlay", "development"], "", "uninstall: not confirmed (typed '', not 'development'): nothing was deleted"),
        (["--overlay", "staging", "--yes"], "", "uninstall: argument --overlay: invalid choice: 'staging' (choose from 'development', 'production')"),
        (["--yes"], "", "uninstall: the following arguments are required: --overlay"),
    ):  # fmt: skip
        result = uninstall(project, env, *args, stdin=stdin)
        assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == says, result.stderr
        # Bad arguments: that one line only; a refusal comes after what it found (the plan).
        assert len(result.stderr.strip().splitlines()) == 1 or "not confirmed" in says, result.stderr
    result = uninstall(project, env, "--overlay", "development", "--dry-run", "--no-keep-user-volumes")
    assert result.returncode == 0, result.stderr
    assert [c[2] for c in calls(log)] and all(c[2] == "get" for c in calls(log)), "a refusal or a dry run deleted something"
    assert read_state(state_file)["objects"] == before
    for line in ("kubectl -n {ns} delete deployment -l ", "kubectl -n {ns} delete pod -l ", "kubectl -n {ns} delete persistentvolumeclaim/dev-claim-alice"):
        assert f"uninstall: would run: {line.format(ns=namespace)}" in result.stderr, result.stderr
    # Typed right, it goes ahead.
    result = uninstall(project, env, "--overlay", "development", stdin="development\n")
    assert result.returncode == 0 and "deleted the development hub" in result.stderr, result.stderr
    assert_real_kubectl_accepts(log, tmp_path)
