"""Each overlay is a hub of its own, from the first deploy to the tenth.

- For every combination: the two overlays' renders share no object (kind, namespace, name),
  have different hosts, select only their own pods (the instance label), and their users'
  pods and claims can never have the same name (shown on KubeSpawner's own expansion of the
  templates, for any user name and server name).
- On the emulated cluster: both hubs in one namespace (as in a workshop), a user of each
  spawns, and each hub sees only its own user's pod; re-applying an unchanged overlay leaves
  the hub's pod alone.
- The namespace: created by a Skaffold build hook from k8s/namespace.yaml (restricted Pod
  Security) or left to the platform; scripts/check says so in one line when the namespace
  or registry settings contradict each other.
- scripts/release pins the production overlay to a digest, changing one line (two with a
  users' image built here: both images, from one build).
"""

import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MATRIX, combo_id, kustomize, need_tool
from support import fast_yaml

INSTANCE = "app.kubernetes.io/instance"


def identities(objects):
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}


def hub_env(objects):
    from hubrunner import hub_container

    return {e["name"]: e.get("value") for e in hub_container(objects)["env"]}


# Renders of distinct k8s/ trees: many combinations share one.
_CHECKED = {}


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_the_overlays_are_two_hubs(bakery, combo):
    project = bakery.project(combo)
    key = bakery.render_key(project, "development")
    if key in _CHECKED:
        return
    development, production = (bakery.render(project, overlay) for overlay in ("development", "production"))
    common = identities(development) & identities(production)
    assert not common, f"objects both overlays deploy: {sorted(common)}"
    hosts = [{rule["host"] for o in objects if o["kind"] == "Ingress" for rule in o["spec"]["rules"]} for objects in (development, production)]
    assert hosts[0] and hosts[1] and not hosts[0] & hosts[1], hosts
    for objects, instance in ((development, "development"), (production, "production")):
        env = hub_env(objects)
        assert env["HUB_INSTANCE"] == instance, env
        for obj in objects:
            assert obj["metadata"]["labels"].get(INSTANCE) == instance, f"{obj['kind']}/{obj['metadata']['name']}"
            selectors = []
            if obj["kind"] == "Deployment":
                selectors.append(obj["spec"]["selector"]["matchLabels"])
            if obj["kind"] == "Service":
                selectors.append(obj["spec"]["selector"])
            if obj["kind"] == "NetworkPolicy":
                selectors.append(obj["spec"]["podSelector"]["matchLabels"])
                for rule in obj["spec"].get("ingress", []) + obj["spec"].get("egress", []):
                    selectors += [p["podSelector"]["matchLabels"] for p in rule.get("from", []) + rule.get("to", []) if "podSelector" in p]
            for selector in selectors:
                assert selector.get(INSTANCE) == instance, f"{obj['kind']}/{obj['metadata']['name']} selects {selector}"
    prefixes = {hub_env(development)["HUB_USER_OBJECT_PREFIX"], hub_env(production)["HUB_USER_OBJECT_PREFIX"]}
    assert prefixes == {"dev-", ""}, prefixes
    _CHECKED[key] = True


def kubespawner_names(prefix, username, servername):
    """(pod name, claim name) as KubeSpawner 7 expands this project's templates."""
    from types import SimpleNamespace

    from kubespawner import KubeSpawner

    # KubeSpawner's own expansion, on what it reads of a spawner (a real one would load a kube config).
    spawner = SimpleNamespace(
        slug_scheme="safe", name=servername, user=SimpleNamespace(name=username, id=1), namespace="ns",
        _namespace_default=lambda: "ns",
    )  # fmt: skip
    return (
        KubeSpawner._expand_user_properties(spawner, prefix + "jupyter-{user_server}"),
        KubeSpawner._expand_user_properties(spawner, prefix + "claim-{user_server}"),
    )


USER_NAMES = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-._@ÄéXY"), min_size=1, max_size=70)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(USER_NAMES, st.sampled_from(["", "dev", "my-server"]), USER_NAMES, st.sampled_from(["", "dev", "my-server"]))
def test_user_pods_and_claims_of_two_hubs_never_share_a_name(user_a, server_a, user_b, server_b):
    """Production keeps KubeSpawner's names, development puts dev- first: whatever the users are
    called (dev-alice on production included), no name of one hub is a name of the other."""
    production = kubespawner_names("", user_a, server_a)
    development = kubespawner_names("dev-", user_b, server_b)
    assert not set(production) & set(development), (production, development)
    assert all(name.startswith(("jupyter-", "claim-")) for name in production)
    assert all(name.startswith("dev-") for name in development)


def test_names_of_users_who_look_like_the_other_hub_stay_apart():
    assert kubespawner_names("", "dev-alice", "")[0] == "jupyter-dev-alice"
    assert kubespawner_names("dev-", "alice", "")[0] == "dev-jupyter-alice"


# --- The namespace -------------------------------------------------------------------------


@pytest.mark.parametrize("create", ["yes", "no"])
def test_the_namespace_is_created_by_a_hook_or_left_to_the_platform(bake, create):
    import kubernetes_validate

    project = bake(create_namespace=create, namespace="lab-7")
    skaffold = fast_yaml.load((project / "skaffold.yaml").read_text())
    hooks = (skaffold["build"]["artifacts"][0].get("hooks") or {}).get("before") or []
    namespace_file = project / "k8s" / "namespace.yaml"
    if create == "no":
        assert not hooks and not namespace_file.exists()
        return
    assert [h["command"] for h in hooks] == [["kubectl", "apply", "--filename", "k8s/namespace.yaml"]]
    namespace = fast_yaml.load(namespace_file.read_text())
    kubernetes_validate.validate(namespace, "1.37.0", strict=True)
    assert namespace["metadata"]["name"] == "lab-7"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Not part of an overlay: deleting one hub must not delete the namespace.
    for overlay in ("development", "production"):
        assert not [o for o in kustomize(project, overlay) if o["kind"] == "Namespace"]


def test_the_namespace_default_follows_the_environment(tmp_path):
    """A namespace from the environment (a workshop's session) exists: "no" comes first."""
    from conftest import run_cookiecutter

    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_NAMESPACE", "INGRESS_DOMAIN", "REGISTRY_HOST")}
    env["KUBECONFIG"] = str(tmp_path / "none")
    for extra, expected in (({}, True), ({"SESSION_NAMESPACE": "ws-3"}, False)):
        out = tmp_path / f"out{len(extra)}"
        result = run_cookiecutter("-o", str(out), cwd=tmp_path, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        assert (out / "jupyterhub-deploy" / "k8s" / "namespace.yaml").exists() == expected


# --- scripts/check: the places that name the namespace and the registry agree ------------------


def check_venv_env():
    from support.tools import TOOLS

    return {**os.environ, "CHECK_VENV": str(TOOLS / "check-venv")}


SETTINGS_FAULTS = {
    "kaniko builds in another namespace": (
        "skaffold.yaml", r'namespace: "jupyterhub"', 'namespace: "elsewhere"', "build.cluster.namespace is 'elsewhere'"),
    "the namespace file names another namespace": (
        "k8s/namespace.yaml", r'name: "jupyterhub"', 'name: "other-ns"', "creates the namespace 'other-ns'"),
    "plain HTTP for another registry": (
        "skaffold.yaml", "build:\n", "build:\n  insecureRegistries: [registry.example.org]\n", "insecureRegistries names 'registry.example.org'"),
    "kaniko's cache on another registry": (
        "skaffold.yaml", r'repo: "jupyterhub-registry', 'repo: "cache.example.org/jupyterhub-registry', "kaniko's cache repo"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(SETTINGS_FAULTS))
def test_check_names_contradicting_namespace_or_registry_settings(bake, tmp_path, fault):
    path, find, replace, says = SETTINGS_FAULTS[fault]
    project = tmp_path / "project"
    shutil.copytree(bake(create_namespace="yes"), project)
    target = project / path
    text = target.read_text()
    assert re.search(find, text), f"{path} no longer has {find!r}"
    target.write_text(re.sub(find, replace, text, count=1))
    result = subprocess.run([sys.executable, str(project / "scripts" / "check")], cwd=project, env=check_venv_env(),
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("check: ") and says in line]
    assert result.returncode == 1 and len(lines) == 1, f"{fault}:\n{result.stdout}{result.stderr}"


# --- scripts/release -------------------------------------------------------------------------


def fake_skaffold(directory, builds, status=0):
    """A `skaffold` that, like `skaffold build --file-output F`, writes the builds it pushed."""
    script = directory / "skaffold"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        f"assert args[:3] == ['build', '--profile', 'production'], args\n"
        f"out = args[args.index('--file-output') + 1]\n"
        f"if {status}: sys.exit({status})\n"
        f"json.dump({{'builds': {builds!r}}}, open(out, 'w'))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


def production_builds(project, *digests):
    """What `skaffold build -p production` reports for the project's artifacts (skaffold.yaml), pushed with these digests."""
    artifacts = fast_yaml.load((project / "skaffold.yaml").read_text())["build"]["artifacts"]
    assert len(artifacts) == len(digests)
    return [{"imageName": a["image"], "tag": f"{a['image']}:production@{d}"} for a, d in zip(artifacts, digests)]


def test_release_pins_production_to_the_digest_it_built(bake, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(bake(), project)
    kustomization = project / "k8s" / "overlays" / "production" / "kustomization.yaml"
    before = kustomization.read_text()
    digest = "sha256:" + "ab" * 32
    bin_dir = fake_skaffold(tmp_path, production_builds(project, digest))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run([str(project / "scripts" / "release")], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    after = kustomization.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 1, changed
    assert changed[0][1].strip() == f'digest: "{digest}"', changed
    [deployment] = [o for o in kustomize(project, "production") if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"@{digest}")
    shown = subprocess.run([str(project / "scripts" / "release"), "--show"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == digest
    # A rollback to an earlier digest, without building.
    older = "sha256:" + "cd" * 32
    subprocess.run([str(project / "scripts" / "release"), "--digest", older], env=env, capture_output=True, check=True)
    assert f'digest: "{older}"' in kustomization.read_text()
    # No users' image is built here: there is none to pin.
    result = subprocess.run([str(project / "scripts" / "release"), "--user-digest", older], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "names no users' image built here" in result.stderr, result.stderr


def test_release_pins_the_users_image_beside_the_hubs(bake, tmp_path):
    """build_user_image=yes: one build makes both images; both digests are pinned (two lines),
    the hub's USER_IMAGE names the users' by digest, and `skaffold run -p production` after
    the release deploys exactly those (Skaffold leaves a name with a digest alone)."""
    from hubrunner import hub_container
    from support import skaffold_images

    project = tmp_path / "project"
    shutil.copytree(bake(build_user_image="yes"), project)
    kustomization = project / "k8s" / "overlays" / "production" / "kustomization.yaml"
    before = kustomization.read_text()
    hub_digest, user_digest = "sha256:" + "ab" * 32, "sha256:" + "ef" * 32
    builds = production_builds(project, hub_digest, user_digest)
    release = str(project / "scripts" / "release")
    # The planted fault first: a build that reports the hub's image only changes nothing.
    env = {**os.environ, "PATH": f"{fake_skaffold(tmp_path, builds[:1])}:{os.environ['PATH']}"}
    result = subprocess.run([release], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "pushed with their digests" in result.stderr and kustomization.read_text() == before
    env = {**os.environ, "PATH": f"{fake_skaffold(tmp_path, builds)}:{os.environ['PATH']}"}
    result = subprocess.run([release], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    after = kustomization.read_text()
    changed = [b.strip() for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()), after
    assert changed == [f'digest: "{hub_digest}"', f'digest: "{user_digest}"'], changed
    objects = kustomize(project, "production")
    hub_image, user_image = (b["imageName"] for b in builds)
    container = hub_container(objects)
    assert container["image"] == f"{hub_image}@{hub_digest}"
    env_values = {e["name"]: e.get("value") for e in container["env"]}
    assert env_values["USER_IMAGE"] == f"{user_image}@{user_digest}"
    config = fast_yaml.load((project / "skaffold.yaml").read_text())
    newer = production_builds(project, "sha256:" + "1" * 64, "sha256:" + "2" * 64)
    assert skaffold_images.replace_images(objects, newer, config) == objects
    shown = subprocess.run([release, "--show"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == f"{hub_digest}, users' image {user_digest}"
    # A rollback of the users' image alone, without building.
    older = "sha256:" + "cd" * 32
    subprocess.run([release, "--user-digest", older], env=env, capture_output=True, check=True)
    text = kustomization.read_text()
    assert f'digest: "{older}"' in text and f'digest: "{hub_digest}"' in text and user_digest not in text


def test_release_changes_nothing_when_the_build_fails_or_the_digest_is_bad(bake, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(bake(), project)
    kustomization = project / "k8s" / "overlays" / "production" / "kustomization.yaml"
    before = kustomization.read_text()
    env = {**os.environ, "PATH": f"{fake_skaffold(tmp_path, production_builds(project, 'sha256:' + '0' * 64), status=3)}:{os.environ['PATH']}"}
    for args, says in (([], "skaffold build failed"), (["--digest", "latest"], "is not sha256:")):
        result = subprocess.run([str(project / "scripts" / "release"), *args], env=env, capture_output=True, text=True, check=False)
        assert result.returncode != 0 and says in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
        assert kustomization.read_text() == before


# --- On the emulated cluster: both hubs in one namespace -----------------------------------------


@pytest.mark.slow
def test_two_hubs_in_one_namespace_keep_to_their_own(bake, tmp_path):
    """The workshop case: one namespace, both overlays. A user of each hub spawns; each hub
    sees its own user's pod and not the other's, and the objects never collide."""
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")
    need_tool("tini")
    from hubrunner import HubDeployment, read_env_file, render
    from journey import api, form_login, logged_in_name, start_server, singleuser_standin_image, user_image_of

    project = bake(authenticator="dummy", user_storage="yes", idle_culling="no")
    user_image = user_image_of(project)
    production = render(project, "production")
    development = render(project, "development")
    with HubDeployment(project, tmp_path / "dev", objects=development,
                       extra_images=[singleuser_standin_image(user_image, tmp_path / "dev")]) as dev, \
         HubDeployment(project, tmp_path / "prod", objects=production, cluster=dev.cluster) as prod:  # fmt: skip
        passwords = {overlay: read_env_file(project / "k8s" / "overlays" / overlay / "hub-secrets.env")["JUPYTERHUB_USER_PASSWORD"]
                     for overlay in ("development", "production")}  # fmt: skip
        sessions = {}
        for hub, overlay in ((dev, "development"), (prod, "production")):
            session = form_login(hub, "alice", passwords[overlay])
            assert logged_in_name(session, hub) == "alice"
            start_server(session, hub, "alice")
            sessions[overlay] = session
        pods = dev.cluster.pods(dev.namespace)
        users = sorted(name for name, pod in pods.items() if "hub.jupyter.org/username" in pod["metadata"].get("labels", {}))
        assert users == ["dev-jupyter-alice", "jupyter-alice"], users
        claims = sorted(dev.cluster.claims(dev.namespace))
        assert {"dev-claim-alice", "claim-alice"} <= set(claims), claims
        for name, instance in (("dev-jupyter-alice", "development"), ("jupyter-alice", "production")):
            assert pods[name]["metadata"]["labels"][INSTANCE] == instance
        # Each hub's proxy routes alice to its own alice's pod, and her server answers there.
        for hub, overlay, own in ((dev, "development", "dev-jupyter-alice"), (prod, "production", "jupyter-alice")):
            assert api(sessions[overlay], hub, "GET", "/users/alice").json()["servers"][""]["ready"]
            target = hub.routes()["/user/alice"]["target"]
            assert target.startswith(f"http://{pods[own]['status']['podIP']}:"), target
        # Every API request of each hub stayed in its namespace and was allowed.
        assert dev.cluster.refused() == [], dev.cluster.refused()
        # An unchanged overlay applied again (a second `kubectl apply -k`): the hub's pod stays.
        before = dev.pod
        dev.cluster.apply(development)
        assert dev.pods(include_terminating=True) == [before], "re-applying an unchanged overlay restarted the hub"
