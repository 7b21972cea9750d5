"""checkov, a scanner this project did not write, over what the template generates.

- Every distinct render of every overlay of the bake matrix (plus the extra cases
  of the security and network tests) and every distinct Dockerfile, in one checkov run
  (each distinct resource once; checkov_inputs says how): no check fails but those the
  generated repository's .checkov.yaml skips, and each of those skips is still needed
  (it fails somewhere without it).
- checkov as a user runs it, in a baked project's root, where it reads .checkov.yaml:
  nothing fails; without the skip list, exactly the skipped checks fail.

checkov lives in a virtual environment of its own, the test tools' checkov/ (tests/support/tools.py) (it pins
networkx<2.7), installed by scripts/install-test-tools; it runs with
--skip-download, so it needs no network.
"""

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import OVERLAYS, ROOT, need_tool
from support import fast_yaml
from test_network_policies import OAUTH_CASES
from support.tools import CHECKOV as CHECKOV_ENV
from test_security import CASES

pytestmark = pytest.mark.slow

CHECKOV = CHECKOV_ENV / "bin" / "checkov"
SHIPPED_CONFIG = ROOT / "{{cookiecutter.project}}" / ".checkov.yaml"


@pytest.fixture(scope="module")
def checkov():
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} is missing: run scripts/install-test-tools")
    return CHECKOV


def skip_list():
    return set(yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))["skip-check"])


# checkov's own race (bridgecrewio/checkov issue 6845): its kustomize runner's workers write
# the rendered files' names into a multiprocessing Manager's dict, and now and then one finds
# the Manager's pipe closed and the run ends with exit 2 and this traceback, whatever it scans
# (twice in this suite's runs on a loaded machine, never on a second try).
CHECKOV_RACE = ("shared_kustomize_file_mappings", "BrokenPipeError")


def run_checkov(checkov, *args, cwd):
    """checkov with the kubectl the tests use on its PATH (its kustomize framework calls it).
    A run that died of CHECKOV_RACE, and of nothing else, is run once more, and says so."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(need_tool("kubectl")).parent), os.environ["PATH"]]))

    def once():
        return subprocess.run(
            [str(checkov), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False
        )

    result = once()
    if result.returncode == 2 and all(sign in result.stderr for sign in CHECKOV_RACE):
        print(f"checkov died of its kustomize race (issue 6845) in {cwd}; run again:\n{result.stderr[-1500:]}")
        result = once()
    return result


def failures_and_files(stdout):
    """{(check id, file path)} of the failed checks and the set of files checkov judged, from -o json."""
    reports = json.loads(stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed, files = set(), set()
    for report in reports:
        for check in report["results"]["failed_checks"]:
            failed.add((check["check_id"], check["file_path"]))
            files.add(check["file_path"])
        for check in report["results"]["passed_checks"]:
            files.add(check["file_path"])
    return failed, files


def test_every_skip_says_why():
    """Each entry of skip-check comes right after a comment that names it and gives a reason."""
    lines = SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines()
    skips = skip_list()
    assert skips, "an empty skip list"
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\s*- (CKV\w+)", line)
        if not match:
            continue
        comment = []
        for previous in reversed(lines[:index]):
            if not previous.strip().startswith("#"):
                break
            comment.insert(0, previous.strip("# "))
        text = " ".join(comment)
        assert match.group(1) in text and len(text) > 80, f"{match.group(1)}: no reason given above it ({text!r})"


def test_every_skip_annotation_says_why():
    """A resource that skips a check itself (checkov.io/skipN: "CKV_...=reason") gives a reason."""
    found = 0
    for path in (ROOT / "{{cookiecutter.project}}" / "k8s").rglob("*.yaml"):
        for check, reason in re.findall(r'checkov\.io/skip\d+: "(CKV\w+)=([^"]*)"', path.read_text(encoding="utf-8")):
            found += 1
            assert len(reason) > 60, f"{path.name}: {check}: no reason given ({reason!r})"
    assert found, "no checkov.io/skip annotation left: drop this test, or the pattern no longer fits"


# A resource with a real fault, scanned along with the others: checkov must report it.
PLANTED_FAULTS = {
    "privileged.yaml": ("CKV_K8S_16", lambda pod: pod["spec"]["containers"][0]["securityContext"].update(privileged=True)),
    "no-memory-limit.yaml": ("CKV_K8S_13", lambda pod: pod["spec"]["containers"][0]["resources"].pop("limits")),
}

# How checkov's graph relates resources (checkov/kubernetes/graph_builder): a binding to the
# role its roleRef names (by name and kind), a NetworkPolicy to the pods its podSelector's
# labels select. It judges the pod template of each of these kinds as a Pod of its own
# (SUPPORTED_POD_CONTAINERS_TYPES in checkov's kubernetes_utils).
RELATED_BY_NAME = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
POD_OWNERS = {"Deployment", "DeploymentConfig", "DaemonSet", "Job", "ReplicaSet", "ReplicationController", "StatefulSet"}
RELATED_BY_LABELS = {"Pod", "NetworkPolicy"} | POD_OWNERS


def graph_checks():
    """{check id: (the kinds it judges, the kinds it relates them to)}: checkov's Kubernetes
    graph checks, read from checkov's own definitions. Every other check judges one resource
    on its own."""
    [directory] = CHECKOV_ENV.glob("lib/python*/site-packages/checkov/kubernetes/checks/graph_checks")
    found = {}
    for path in sorted(directory.glob("*.json")):
        check = json.loads(path.read_text(encoding="utf-8"))
        judged, related = set(), set()

        def walk(node):
            if isinstance(node, list):
                for item in node:
                    walk(item)
            elif isinstance(node, dict):
                if node.get("cond_type") == "filter" and node.get("attribute") in ("kind", "resource_type"):
                    judged.update(node["value"])
                if node.get("cond_type") == "connection":
                    related.update(node.get("resource_types", []) + node.get("connected_resource_types", []))
                for value in node.values():
                    walk(value)

        walk(check["definition"])
        found[check["metadata"]["id"]] = (judged, related)
    return found


def config_map_checks():
    """The files of checkov's own Kubernetes checks that name ConfigMap: the only checks that
    can judge one (graph checks name the kinds they judge: graph_checks)."""
    [directory] = CHECKOV_ENV.glob("lib/python*/site-packages/checkov/kubernetes/checks/resource")
    return sorted(p.name for p in directory.rglob("*.py") if '"ConfigMap"' in p.read_text(encoding="utf-8"))


# checkov's one check that judges a ConfigMap reads its namespace (test_config_map_view_hides_
# nothing_checkov_reads): the hub's configuration, Python, is nothing checkov judges.
CONFIG_MAP_CHECKS = ["DefaultNamespace.py"]


def config_map_view(objects):
    """The render as checkov sees it: the hub's ConfigMap with its data and its content hash
    left out (its namespace, labels and the Deployment's reference to it kept), so that renders
    that differ only in the hub's configuration are one render to scan."""
    view = copy.deepcopy(objects)
    names = {}
    for obj in view:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("hub-config"):
            stable = obj["metadata"]["name"].rsplit("-", 1)[0] + "-hash"
            names[obj["metadata"]["name"]] = stable
            obj["metadata"]["name"] = stable
            obj["data"] = {key: "# the hub's configuration: no checkov check reads it\n" for key in obj.get("data") or {}}
    for obj in view:
        if obj["kind"] in POD_OWNERS:
            for volume in obj["spec"]["template"]["spec"].get("volumes") or []:
                if "configMap" in volume and volume["configMap"]["name"] in names:
                    volume["configMap"]["name"] = names[volume["configMap"]["name"]]
    return view


def test_config_map_view_hides_nothing_checkov_reads(bakery):  # noqa: F811
    assert config_map_checks() == CONFIG_MAP_CHECKS, "checkov judges ConfigMaps with more checks now: scan their data"
    objects = bakery.render(bakery.project(CASES[0]), "development")
    view = config_map_view(objects)
    [config_map] = [o for o in view if o["kind"] == "ConfigMap"]
    [original] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == original["metadata"]["namespace"]
    assert sorted(config_map["data"]) == sorted(original["data"])
    [deployment] = [o for o in view if o["kind"] == "Deployment"]
    assert {"name": config_map["metadata"]["name"]} in [v.get("configMap") for v in deployment["spec"]["template"]["spec"]["volumes"]]
    # Everything else is as rendered.
    assert [o for o in view if o["kind"] not in ("ConfigMap", "Deployment")] == [o for o in objects if o["kind"] not in ("ConfigMap", "Deployment")]


def kept_apart(objects, suffix):
    """The related resources of one render, made unrelated to any other render's: a suffix
    of their own on each name and roleRef, and on each label value that relates a pod to a
    NetworkPolicy. Resources that matched still match; nothing else is changed."""
    objects = copy.deepcopy(objects)

    def relabel(labels):
        return {key: f"{value}-{suffix}" for key, value in (labels or {}).items()}

    for obj in objects:
        obj["metadata"]["name"] += f"-{suffix}"
        if "roleRef" in obj:
            obj["roleRef"]["name"] += f"-{suffix}"
        spec = obj.get("spec") or {}
        if obj["kind"] in POD_OWNERS:
            spec["template"]["metadata"]["labels"] = relabel(spec["template"]["metadata"].get("labels"))
            spec["selector"]["matchLabels"] = relabel(spec["selector"].get("matchLabels"))
        if obj["kind"] == "Pod":
            obj["metadata"]["labels"] = relabel(obj["metadata"].get("labels"))
        if obj["kind"] == "NetworkPolicy":
            selector = spec.get("podSelector") or {}
            # A policy for every pod would relate to every render's pods, whatever their labels.
            assert selector.get("matchLabels") and not selector.get("matchExpressions"), (
                f"NetworkPolicy {obj['metadata']['name']} selects by {selector}: scan whole renders again"
            )
            selector["matchLabels"] = relabel(selector["matchLabels"])
    return objects


def checkov_inputs(renders, checks):
    """The files to scan for a set of renders (digest -> list of resources), as {path: text}.

    checkov builds one graph of all the resources of a run and relates each to each, by
    name and by labels: whole renders side by side relate to each other (the same names
    and labels), and its time grows with the square of their number (62 renders: 71 s).
    Most of its checks judge one resource alone. So each distinct resource is written once,
    in a file of its own, under resources/, but those a graph check relates: per render,
    the set of them, each distinct set once, under related/, kept apart from the other
    sets (kept_apart). Adding a choice adds only the resources and sets it changes.
    """
    files, sets = {}, {}
    for digest, objects in sorted(renders.items()):
        present = {obj["kind"] for obj in objects}
        if present & POD_OWNERS:
            present.add("Pod")
        kinds = set()
        for judged, related in checks.values():
            if judged & present:
                kinds |= judged | related
        unknown = (kinds & present) - RELATED_BY_NAME - RELATED_BY_LABELS
        assert not unknown, f"render {digest}: checkov's graph checks relate {sorted(unknown)} in ways kept_apart does not know"
        together = [obj for obj in objects if obj["kind"] in kinds]
        for obj in objects:
            if obj["kind"] not in kinds:
                text = yaml.safe_dump(obj, sort_keys=True)
                files[f"resources/{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"] = text
        if together:
            text = yaml.safe_dump_all(sorted(together, key=lambda o: (o["kind"], o["metadata"]["name"])), sort_keys=True)
            sets.setdefault(hashlib.sha256(text.encode()).hexdigest()[:16], together)
    for digest, together in sets.items():
        files[f"related/{digest}.yaml"] = yaml.safe_dump_all(kept_apart(together, digest), sort_keys=True)
    return files


def test_graph_checks_are_read_from_checkov(checkov):
    """The reading of checkov's graph checks that checkov_inputs relies on."""
    checks = graph_checks()
    assert checks["CKV2_K8S_1"] == ({"ClusterRoleBinding", "RoleBinding"}, {"ClusterRoleBinding", "RoleBinding", "ClusterRole", "Role"})
    assert checks["CKV2_K8S_6"][0] == {"Pod"}, checks["CKV2_K8S_6"]


def test_checkov_inputs_keep_related_resources_together_and_apart(checkov):
    """Two renders whose Role differs: each binding is scanned with its own Role, each
    policy with its own pods, under names and labels no other set has; a resource both
    renders share is written once; a policy for every pod is refused."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "hub"}, "rules": []}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "hub"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
        "subjects": [{"kind": "ServiceAccount", "name": "hub"}],
    }  # fmt: skip
    labels = {"app.kubernetes.io/component": "hub"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hub"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {}}},
    }  # fmt: skip
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "hub"},
              "spec": {"podSelector": {"matchLabels": labels}}}  # fmt: skip
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "hub"}}
    wide = dict(role, rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    renders = {"a": [account, role, binding, deployment, policy], "b": [account, wide, binding, deployment, policy]}
    files = checkov_inputs(renders, graph_checks())
    assert sum(path.startswith("resources/") for path in files) == 1  # the ServiceAccount
    related = [list(yaml.safe_load_all(text)) for path, text in files.items() if path.startswith("related/")]
    assert len(related) == 2
    seen_names, seen_labels = set(), set()
    for objects in related:
        by_kind = {obj["kind"]: obj for obj in objects}
        assert set(by_kind) == {"Role", "RoleBinding", "Deployment", "NetworkPolicy"}
        assert by_kind["RoleBinding"]["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]
        pod_labels = by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"]
        assert by_kind["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == pod_labels != labels
        seen_names.add(by_kind["Role"]["metadata"]["name"])
        seen_labels.add(json.dumps(pod_labels))
    assert len(seen_names) == len(seen_labels) == 2, (seen_names, seen_labels)
    assert renders["a"][3]["spec"]["template"]["metadata"]["labels"] == labels, "the renders themselves are unchanged"
    everyone = dict(policy, spec={"podSelector": {}})
    with pytest.raises(AssertionError, match="scan whole renders again"):
        checkov_inputs({"c": [deployment, everyone]}, graph_checks())


def test_checkov_fails_nothing_beyond_the_skip_list_on_any_render_or_dockerfile(checkov, bakery, tmp_path):  # noqa: F811
    renders, dockerfiles, seen = {}, {}, set()
    for case in CASES + OAUTH_CASES:
        project = bakery.project(case)
        for overlay in OVERLAYS:
            key = bakery.render_key(project, overlay)
            if key in seen:  # the same k8s/ tree: the same render, read already
                continue
            seen.add(key)
            objects = config_map_view(bakery.render(project, overlay))
            renders.setdefault(hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()[:16], objects)
        # The hub's, and the users' where it is built here (build_user_image=yes).
        for path in (project / "Dockerfile", project / "user-image" / "Dockerfile"):
            if path.exists():
                dockerfile = path.read_text(encoding="utf-8")
                dockerfiles.setdefault(hashlib.sha256(dockerfile.encode()).hexdigest()[:16], dockerfile)
    scan = tmp_path / "scan"
    files = checkov_inputs(renders, graph_checks())
    for digest, text in dockerfiles.items():
        files[f"dockerfiles/{digest}/Dockerfile"] = text
    sample = next(iter(renders.values()))
    for name, (_, plant) in PLANTED_FAULTS.items():
        deployment = copy.deepcopy(next(obj for obj in sample if obj["kind"] == "Deployment"))
        plant(deployment["spec"]["template"])
        files[f"planted/{name}"] = yaml.safe_dump(deployment, sort_keys=True)
    # The graph checks too, through kept_apart: a render's related set without its
    # NetworkPolicies, and one whose Role lets the hub exec into pods (as its only rule:
    # checkov reads `rules.resources` of a one-rule Role only).
    related = [obj for obj in sample if obj["kind"] in RELATED_BY_NAME | POD_OWNERS]
    files["planted/unfenced.yaml"] = yaml.safe_dump_all(kept_apart(related, "unfenced"), sort_keys=True)
    exec_role = copy.deepcopy([obj for obj in sample if obj["kind"] in RELATED_BY_NAME])
    next(obj for obj in exec_role if obj["kind"] == "Role")["rules"] = [
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}
    ]
    files["planted/exec.yaml"] = yaml.safe_dump_all(kept_apart(exec_role, "exec"), sort_keys=True)
    # The skips a resource states itself (checkov.io/skipN annotations: the pre-puller's), each
    # still needed: without its annotations (beside its render's NetworkPolicies, which the graph
    # checks relate it to), exactly those checks fail on it, beyond the skip list.
    annotated = {}
    for objects in renders.values():
        for obj in objects:
            skips = {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k.startswith("checkov.io/skip")}
            if skips:
                bare = copy.deepcopy(obj)
                bare["metadata"]["annotations"] = {k: v for k, v in bare["metadata"]["annotations"].items() if k not in skips}
                name = f"unannotated-{obj['kind']}-{obj['metadata']['name']}.yaml".lower()
                policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
                files[f"planted/{name}"] = yaml.safe_dump_all([bare, *policies], sort_keys=True)
                annotated[name] = {v.split("=", 1)[0] for v in skips.values()}
    for path, text in files.items():
        (scan / path).parent.mkdir(parents=True, exist_ok=True)
        (scan / path).write_text(text, encoding="utf-8")
    print(f"\ncheckov over {len(renders)} distinct renders ({sum(not p.startswith(('dockerfiles/', 'planted/')) for p in files)} files)"
          f" and {len(dockerfiles)} distinct Dockerfiles")  # fmt: skip

    result = run_checkov(
        checkov, "--directory", str(scan), "--framework", "kubernetes", "dockerfile",
        "--skip-download", "--compact", "--output", "json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    failed, judged = failures_and_files(result.stdout)

    # Every file was judged, but those of the kinds checkov has no check for (NetworkPolicy,
    # PersistentVolumeClaim): a kind judged in one file must be judged in all.
    kinds = {path: {obj["kind"] for obj in fast_yaml.load_all(text) if obj} for path, text in files.items() if path.endswith(".yaml")}
    judged_kinds = set().union(*(kinds[path.lstrip("/")] for path in judged if path.lstrip("/") in kinds))
    assert {"Deployment", "Service", "Ingress", "Secret", "Role", "RoleBinding"} <= judged_kinds, judged_kinds
    expected_files = {f"/{path}" for path in files if path not in kinds or kinds[path] & judged_kinds}
    assert expected_files <= judged, f"checkov did not judge {sorted(expected_files - judged)}"
    planted = {name: check_id for name, (check_id, _) in PLANTED_FAULTS.items()}
    planted.update({"unfenced.yaml": "CKV2_K8S_6", "exec.yaml": "CKV2_K8S_2"})
    for name, check_id in planted.items():
        assert (check_id, f"/planted/{name}") in failed, f"checkov missed the planted fault {check_id} in {name}"
    for name, checks in annotated.items():
        found = {check for check, path in failed if path == f"/planted/{name}"} - skip_list()
        assert found == checks, f"{name}: the annotations skip {sorted(checks)}, without them {sorted(found)} fail"

    skips = skip_list()
    real = {(check, path) for check, path in failed if not path.startswith("/planted/")}
    unexpected = sorted((check, path) for check, path in real if check not in skips)
    assert not unexpected, "checkov fails checks that .checkov.yaml does not skip:\n" + "\n".join(
        f"{check} on {path}:\n{(scan / path.lstrip('/')).read_text(encoding='utf-8')[:2000]}" for check, path in unexpected[:5]
    )
    stale = skips - {check for check, _ in real}
    assert not stale, f".checkov.yaml skips {sorted(stale)}, which fail nowhere: drop them"


SUMMARY = re.compile(r"^(\w+) scan results:\s+Passed checks: (\d+), Failed checks: (\d+)", re.M)


def test_checkov_in_a_generated_project_reads_its_skip_list(checkov, bakery, tmp_path):  # noqa: F811
    """As a user runs it: `checkov` in the project's root, nothing else."""
    project = shutil.copytree(bakery.project(CASES[0]), tmp_path / "project")
    result = run_checkov(checkov, cwd=project)
    summaries = {framework: (int(passed), int(failed)) for framework, passed, failed in SUMMARY.findall(result.stdout)}
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # checkov reads the rendered overlays, the Dockerfile and the CI workflow.
    assert set(summaries) == {"kustomize", "dockerfile", "github_actions"}, summaries
    for framework, (passed, failed) in summaries.items():
        assert passed > 0 and failed == 0, f"{framework}: {passed} passed, {failed} failed"

    # Without the skip list, exactly the skipped checks fail: the file is read, and
    # every skip is needed here too.
    config = project / ".checkov.yaml"
    config.write_text(re.sub(r"(?ms)^skip-check:.*", "", config.read_text(encoding="utf-8")), encoding="utf-8")
    result = run_checkov(checkov, "--compact", cwd=project)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    failed = set(re.findall(r"^Check: (CKV\w+):.*\n\s+FAILED", result.stdout, re.M))
    assert failed == skip_list(), result.stdout[-4000:]
