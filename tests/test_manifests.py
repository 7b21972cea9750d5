"""Every overlay renders with kustomize, validates against Kubernetes' own schemas,
and says what the answers said: namespace, host, image, the hub's configuration."""

import functools
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from conftest import MATRIX, OVERLAYS, combo_id, kustomize, need_tool
from support import fast_yaml
from support.bakery import session_bakery

# The Kubernetes versions the generated manifests are validated against: the
# oldest and the newest that kubernetes-validate has schemas for (see README.md).
OLDEST_KUBERNETES = "1.25.0"
NEWEST_KUBERNETES = "1.37.0"

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "IngressClass"}

# Text variables that change manifests, each with a non-default value.
TEXT_VARIANTS = [
    {"ingress_class": "contour", "storage_class": "fast-ssd", "tls": "yes", "__cert_manager_issuer": "letsencrypt"},
    {"ingress_controller_namespace": "ingress-nginx", "tls": "yes"},
    {"namespace": "lab-ns-1", "ingress_domain": "apps.example.org"},
    {"registry": "localhost:5000/team", "image_name": "hub/main", "hostname": "hub.example.org"},
]


@functools.lru_cache(maxsize=None)
def validate_strict(document_json, version):
    """Cached by content: many combinations render identical objects."""
    kubernetes_validate.validate(json.loads(document_json), version, strict=True)


def check_overlay(project, overlay, context):
    # Shared with every project whose k8s/ differs only in secret values: read, never change.
    objects = session_bakery().render(project, overlay)
    from hubrunner import hub_deployment

    kinds = sorted(o["kind"] for o in objects)
    separate = context.get("proxy") == "separate"
    assert kinds.count("Deployment") == (2 if separate else 1) and kinds.count("Ingress") == 1, kinds
    for obj in objects:
        for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
            try:
                validate_strict(json.dumps(obj, sort_keys=True), version)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} invalid in {version}: {error.message}")
        # Every namespaced object lands in the chosen namespace.
        assert obj["kind"] not in CLUSTER_SCOPED, f"{obj['kind']} is cluster-scoped"
        assert obj["metadata"].get("namespace") == context["namespace"], obj["metadata"]

    by_kind = {o["kind"]: o for o in objects if o["kind"] != "Deployment"}
    by_kind["Deployment"] = hub_deployment(objects)
    ingress = by_kind["Ingress"]
    # Each overlay is a hub of its own, at its own host: production the chosen one,
    # development dev-<it> unless given.
    host = context["hostname"] if overlay == "production" else context.get("__development_hostname", "dev-" + context["hostname"])
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
    if context["tls"] == "yes":
        assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": {"production": "hub-tls", "development": "hub-tls-dev"}[overlay]}]
    else:
        assert "tls" not in ingress["spec"]
    # The hub is told its address (JUPYTERHUB_PUBLIC_URL) from the Ingress.
    scheme = "https" if context["tls"] == "yes" else "http"
    hub_env = {e["name"]: e.get("value") for e in by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert hub_env["JUPYTERHUB_PUBLIC_URL"] == f"{scheme}://{host}", hub_env

    # The image is the one Skaffold builds, with the tag of this overlay's profile.
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{context['registry']}/{context['image_name']}:{overlay}"

    # Names the Deployment refers to exist (kustomize adds a hash to the Secret's name).
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert ("ServiceAccount", pod["serviceAccountName"]) in names
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    problems = config_map_problems(project, objects, {"production": "", "development": "-dev"}[overlay])
    assert not problems, "\n".join(problems)
    for source in container.get("envFrom", []):
        if context.get("hub_secrets") == "existing-secret":
            # Made in the cluster, not by the overlay: see the generated README, "Secrets".
            name = {"production": "hub-secrets", "development": "hub-secrets-dev"}[overlay]
            assert source["secretRef"] == {"name": name, "optional": False}
        else:
            assert ("Secret", source["secretRef"]["name"]) in names
    problems = separate_proxy_problems(objects, overlay, context) if separate else in_hub_proxy_problems(objects)
    assert not problems, "\n".join(problems)
    return objects


# --- Where the proxy runs ----------------------------------------------------------------


def _component_of(objects, obj):
    """The component label of the pods a Service or Ingress backend sends to."""
    if obj["kind"] == "Ingress":
        [rule] = obj["spec"]["rules"]
        [path] = rule["http"]["paths"]
        service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == path["backend"]["service"]["name"])
        return _component_of(objects, service), path["backend"]["service"]["port"]
    return obj["spec"]["selector"].get("app.kubernetes.io/component")


def _ports(container):
    return {p["name"]: p["containerPort"] for p in container.get("ports") or []}


def in_hub_proxy_problems(objects):
    """proxy=in-hub: one Deployment, whose container has the public port the Ingress reaches."""
    from hubrunner import hub_container

    problems = []
    component, port = _component_of(objects, next(o for o in objects if o["kind"] == "Ingress"))
    if component != "hub" or port != {"name": "http"}:
        problems.append(f"the Ingress reaches {component} port {port}, not the hub's http port")
    if _ports(hub_container(objects)).get("http") != 8000:
        problems.append("the hub container has no public port http: 8000")
    return problems


def separate_proxy_problems(objects, overlay, context):
    """proxy=separate, as the issue asks: the proxy runs from the hub's image with its own
    command, the Ingress reaches it, the hub has no public port and calls the proxy's API
    through its Service, both take the token from the hub's Secret, and the proxy has no API
    token. (The NetworkPolicies, Pod Security and checkov have tests of their own.)"""
    from hubrunner import hub_container, hub_deployment

    problems = []
    suffix = {"production": "", "development": "-dev"}[overlay]
    proxies = [o for o in objects if o["kind"] == "Deployment" and o is not hub_deployment(objects)]
    if len(proxies) != 1:
        return [f"{len(proxies)} Deployments besides the hub's, not one proxy"]
    [proxy] = proxies
    pod = proxy["spec"]["template"]["spec"]
    labels = proxy["spec"]["template"]["metadata"]["labels"]
    if proxy["metadata"]["name"] != f"proxy{suffix}" or labels.get("app.kubernetes.io/component") != "proxy":
        problems.append(f"Deployment/{proxy['metadata']['name']} is not the proxy{suffix} with pods labelled component: proxy")
    if labels.get("app.kubernetes.io/instance") != overlay:
        problems.append(f"the proxy's pods are not labelled instance: {overlay}")
    [container] = pod["containers"]
    hub = hub_container(objects)
    if container["image"] != hub["image"]:
        problems.append(f"the proxy runs {container['image']}, not the hub's image {hub['image']}")
    if container.get("command") != ["configurable-http-proxy"]:
        problems.append(f"the proxy's command is {container.get('command')}")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("the proxy's pod gets a Kubernetes API token")
    if proxy["spec"].get("replicas") != 1 or proxy["spec"]["strategy"].get("type") != "Recreate":
        problems.append("not one proxy at a time (replicas 1, Recreate)")
    args = container.get("args") or []
    env = {e["name"]: e for e in container.get("env") or []}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    hub_service = next(n for n, o in services.items() if o["spec"]["selector"].get("app.kubernetes.io/component") == "hub")
    if env.get("HUB_SERVICE_NAME", {}).get("value") != hub_service:
        problems.append(f"the proxy's HUB_SERVICE_NAME is not the hub's Service {hub_service}")
    if "--default-target=http://$(HUB_SERVICE_NAME):8081" not in args:
        problems.append(f"the proxy does not send /hub/ to the hub's Service: {args}")
    if _ports(container) != {"http": 8000, "api": 8001} or "--port=8000" not in args or "--api-port=8001" not in args:
        problems.append(f"the proxy's ports are not http 8000 and api 8001: {_ports(container)} {args}")
    component, port = _component_of(objects, next(o for o in objects if o["kind"] == "Ingress"))
    if component != "proxy" or port != {"name": "http"}:
        problems.append(f"the Ingress reaches {component} port {port}, not the proxy's http port")
    if "http" in _ports(hub) or "http" in {p["name"] for p in services[hub_service]["spec"]["ports"]}:
        problems.append("the hub still has a public port http")
    hub_env = {e["name"]: e for e in hub.get("env") or []}
    proxy_services = [n for n, o in services.items() if o["spec"]["selector"].get("app.kubernetes.io/component") == "proxy"]
    if proxy_services != [f"proxy{suffix}"] or hub_env.get("PROXY_SERVICE_NAME", {}).get("value") != proxy_services[0]:
        problems.append(f"the hub's PROXY_SERVICE_NAME does not name the proxy's Service {proxy_services}")
    if "JUPYTERHUB_PROXY_PID_FILE" in hub_env:
        problems.append("the hub is still told where a proxy pid file goes")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if hub[probe]["httpGet"]["port"] != "hub":
            problems.append(f"the hub's {probe} goes to {hub[probe]['httpGet']['port']}, not its own port")
        if container[probe]["httpGet"] != {"path": "/_chp_healthz", "port": "http"}:
            problems.append(f"the proxy's {probe} is not CHP's health check")
    [hub_secret] = [e["secretRef"]["name"] for e in hub.get("envFrom") or []]
    token = env.get("CONFIGPROXY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if token.get("name") != hub_secret or token.get("key") != "CONFIGPROXY_AUTH_TOKEN" or token.get("optional") is not False:
        problems.append(f"the proxy's token is not the hub Secret's ({hub_secret}) CONFIGPROXY_AUTH_TOKEN: {token}")
    secrets = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == hub_secret]
    if context.get("hub_secrets") == "env-file" and not (secrets and "CONFIGPROXY_AUTH_TOKEN" in secrets[0].get("data", {})):
        problems.append(f"the generated Secret {hub_secret} has no CONFIGPROXY_AUTH_TOKEN")
    return problems


def test_proxy_checks_catch_planted_faults(bake):
    """separate_proxy_problems and in_hub_proxy_problems, on renders changed the ways that would
    leave users without a proxy, or the proxy with more than it needs."""
    import copy

    from hubrunner import hub_container

    context = {"proxy": "separate", "hub_secrets": "env-file"}
    good = kustomize(bake(proxy="separate"), "development")
    assert separate_proxy_problems(good, "development", context) == []
    in_hub = kustomize(bake(), "development")
    assert in_hub_proxy_problems(in_hub) == []

    def proxy(objects):
        return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "proxy-dev")

    def ingress(objects):
        return next(o for o in objects if o["kind"] == "Ingress")

    faults = {
        "another image": lambda o: proxy(o)["spec"]["template"]["spec"]["containers"][0].update(image="node:20"),
        "an API token": lambda o: proxy(o)["spec"]["template"]["spec"].pop("automountServiceAccountToken"),
        "two proxies": lambda o: proxy(o)["spec"].update(replicas=2),
        "the Ingress at the hub": lambda o: ingress(o)["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(name="hub-dev"),
        "a token of its own": lambda o: proxy(o)["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"].update(name="proxy-token"),
        "the hub still public": lambda o: hub_container(o)["ports"].append({"name": "http", "containerPort": 8000}),
        "the hub probed through the proxy": lambda o: hub_container(o)["readinessProbe"]["httpGet"].update(port="http"),
        "hub name not copied": lambda o: proxy(o)["spec"]["template"]["spec"]["containers"][0]["env"][0].update(value="hub"),
    }
    for fault, plant in faults.items():
        objects = copy.deepcopy(good)
        plant(objects)
        assert separate_proxy_problems(objects, "development", context), f"not caught: {fault}"
    broken = copy.deepcopy(in_hub)
    hub_container(broken)["ports"] = [p for p in hub_container(broken)["ports"] if p["name"] != "http"]
    assert in_hub_proxy_problems(broken), "not caught: in-hub without a public port"


# --- The hub's configuration: a ConfigMap named after its content ------------------------


def kustomize_config_map_hash(data):
    """The suffix kustomize gives a generated ConfigMap, modelled on its source
    (api/hasher/hasher.go): the first 10 hex digits of the sha256 of Go's json.Marshal of
    {"data", "kind", "name"} (sorted keys; <, >, & escaped as Go does), with 0 1 3 a e
    mapped to g h k m t. The name hashes as "": encodeConfigMap looks it up as the single
    key "metadata/name", which no ConfigMap has (test_the_hash_model_is_kustomizes shows it
    agrees with the kubectl here)."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(char, escaped)
    return hashlib.sha256(encoded.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def config_map_problems(project, objects, suffix):
    """What is wrong with how the render gives the hub its configuration: one ConfigMap, whose
    data is exactly the files of hub-config/ (nothing else, nothing changed), named
    hub-config<suffix>-<hash of that data> (so any change to a file changes the name, and no
    change keeps it), mounted by the hub container where the image's command reads it."""
    from hubrunner import config_volume, image_config_file

    files = {p.name: p.read_text(encoding="utf-8") for p in sorted((Path(project) / "hub-config").iterdir()) if p.name != "kustomization.yaml"}
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    if len(maps) != 1:
        return [f"{len(maps)} ConfigMaps, not one: {[m['metadata']['name'] for m in maps]}"]
    [config_map] = maps
    problems = []
    name, data = config_map["metadata"]["name"], config_map.get("data") or {}
    if data != files:
        problems.append(f"ConfigMap/{name} holds {sorted(data)}, not hub-config/'s files as they are: {sorted(files)}")
    expected = f"hub-config{suffix}-{kustomize_config_map_hash(data)}"
    if name != expected:
        problems.append(f"ConfigMap/{name} is not named after its content: {expected}")
    try:
        mount_path, mounted = config_volume(objects)
    except AssertionError as error:
        return problems + [str(error)]
    if mounted is not data:
        problems.append(f"the hub container does not mount ConfigMap/{name}")
    config_file = image_config_file(project)
    if str(config_file.parent) != mount_path.rstrip("/") or config_file.name not in data:
        problems.append(f"the image's command reads {config_file}; the ConfigMap is mounted at {mount_path}")
    return problems


def test_config_map_checks_catch_planted_faults(bake):
    """config_map_problems, on renders changed the ways that would break the promise."""
    import copy

    project = bake()
    good = kustomize(project, "development")
    assert config_map_problems(project, good, "-dev") == []

    def config_map(objects):
        return next(o for o in objects if o["kind"] == "ConfigMap")

    def deployment(objects):
        return next(o for o in objects if o["kind"] == "Deployment")

    faults = {
        # generatorOptions.disableNameSuffixHash: a changed file would not roll the hub.
        "no hash in the name": lambda o: config_map(o)["metadata"].update(name="hub-config-dev"),
        "a stale file": lambda o: config_map(o)["data"].update({"hub_helpers.py": "# an older version\n"}),
        "a file left out": lambda o: config_map(o)["data"].pop("hub_helpers.py"),
        "mounted elsewhere": lambda o: next(m for m in deployment(o)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                                            if m["name"] == "config").update(mountPath="/etc/jupyterhub"),
        "not mounted": lambda o: deployment(o)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].pop(),
    }
    for fault, plant in faults.items():
        objects = copy.deepcopy(good)
        plant(objects)
        assert config_map_problems(project, objects, "-dev"), f"not caught: {fault}"


def kubectl_kustomize_bytes(project, overlay):
    out = subprocess.run([need_tool("kubectl"), "kustomize", str(Path(project) / "k8s" / "overlays" / overlay)],
                         capture_output=True, check=True)  # fmt: skip
    return out.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_changed_setting_rolls_the_hub_and_an_unchanged_render_does_not(bake, tmp_path, overlay):
    """With kustomize itself: rendering again without a change gives the same bytes; changing any
    one file of hub-config/, even by a comment, gives the ConfigMap a new name, and the hub's pod
    template changes in that name only (a new ReplicaSet: the hub restarts on the new file).
    The test over every combination (config_map_problems) rests on the hash model that this
    test holds against kustomize."""
    from hubrunner import hub_deployment

    project = tmp_path / "project"
    shutil.copytree(bake(profiles="profile_list"), project)  # every file the ConfigMap can hold
    first = kubectl_kustomize_bytes(project, overlay)
    assert kubectl_kustomize_bytes(project, overlay) == first, "two renders of the same files differ"

    def parts(rendered):
        objects = [o for o in fast_yaml.load_all(rendered.decode()) if o]
        [config_map] = [o for o in objects if o["kind"] == "ConfigMap"]
        return config_map, hub_deployment(objects)["spec"]["template"]

    config_map, template = parts(first)
    suffix = "" if overlay == "production" else "-dev"
    assert config_map["metadata"]["name"] == f"hub-config{suffix}-{kustomize_config_map_hash(config_map['data'])}"
    for name in sorted(config_map["data"]):
        path = project / "hub-config" / name
        original = path.read_bytes()
        path.write_bytes(original + b"# changed by test_manifests.py\n")
        try:
            changed_map, changed_template = parts(kubectl_kustomize_bytes(project, overlay))
        finally:
            path.write_bytes(original)
        new_name = changed_map["metadata"]["name"]
        assert new_name != config_map["metadata"]["name"], f"a change to {name} kept the ConfigMap's name"
        assert new_name == f"hub-config{suffix}-{kustomize_config_map_hash(changed_map['data'])}", "the hash model is not kustomize's"
        # The pod template differs in the ConfigMap's name, and nothing else.
        as_text = json.dumps(changed_template, sort_keys=True)
        assert as_text != json.dumps(template, sort_keys=True), f"a change to {name} left the pod template as it was"
        assert as_text.replace(new_name, config_map["metadata"]["name"]) == json.dumps(template, sort_keys=True)
    assert kubectl_kustomize_bytes(project, overlay) == first, "the files restored, the render is not the first one"


def baked_context(project):
    """The answers the project was baked with, as cookiecutter recorded them."""
    skaffold = fast_yaml.load((project / "skaffold.yaml").read_text())
    artifact = skaffold["build"]["artifacts"][0]["image"]
    registry, image_name = artifact.split("/", 1) if "/" in artifact else (artifact, "")
    return registry, image_name


def check_combination(bake, combo, overlay):
    """check_overlay on this combination's bake, the text variables at their defaults unless given."""
    context = {
        "namespace": "jupyterhub",
        "hostname": "jupyterhub-jupyterhub.127.0.0.1.nip.io",
        "registry": "jupyterhub-registry.127.0.0.1.nip.io",
        "image_name": "jupyterhub",
        **combo,
    }
    return check_overlay(bake(**combo), overlay, context)


# The matrix holds every combination of what users get (conftest.FEATURES): profiles,
# named servers, the users' image and the pre-puller among them.
@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(bake, combo, overlay):
    check_combination(bake, combo, overlay)


# pre_puller=yes: its Component, with the proxy in the hub and beside the separate proxy's Component.
@pytest.mark.parametrize("combo", [combo for combo in MATRIX if combo.get("pre_puller") == "yes"], ids=combo_id)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_with_the_pre_puller_renders_and_validates(bake, combo, overlay):
    objects = check_combination(bake, combo, overlay)
    suffix = {"production": "", "development": "-dev"}[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("DaemonSet", f"pre-puller{suffix}"), ("NetworkPolicy", f"pre-puller{suffix}")} <= names, names
    [daemonset] = [o for o in objects if o["kind"] == "DaemonSet"]
    # The overlay's instance label reaches the selector, so two hubs' pre-pullers never share pods.
    assert daemonset["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == overlay


@pytest.mark.parametrize("variant", TEXT_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_text_variables_reach_the_manifests(bake, variant, overlay):
    project = bake(**variant)
    namespace = variant.get("namespace", "jupyterhub")
    domain = variant.get("ingress_domain", "127.0.0.1.nip.io")
    context = {
        "namespace": namespace,
        "hostname": variant.get("hostname", f"{namespace}-jupyterhub.{domain}"),
        "registry": variant.get("registry", f"{namespace}-registry.{domain}"),
        "image_name": variant.get("image_name", "jupyterhub"),
        "tls": variant.get("tls", "no"),
    }
    from hubrunner import hub_deployment

    objects = check_overlay(project, overlay, context)
    by_kind = {o["kind"]: o for o in objects if o["kind"] != "Deployment"}
    by_kind["Deployment"] = hub_deployment(objects)
    ingress = by_kind["Ingress"]
    if "ingress_class" in variant:
        assert ingress["spec"]["ingressClassName"] == variant["ingress_class"]
    else:
        assert "ingressClassName" not in ingress["spec"]
    if "__cert_manager_issuer" in variant:
        assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == variant["__cert_manager_issuer"]
    pvc = by_kind["PersistentVolumeClaim"]
    assert pvc["spec"].get("storageClassName") == variant.get("storage_class")


def test_done_when_example_renders(bake):
    project = bake(namespace="lab-ns-1", ingress_domain="apps.example.org")
    for overlay in OVERLAYS:
        check_overlay(
            project,
            overlay,
            {
                "namespace": "lab-ns-1",
                "hostname": "lab-ns-1-jupyterhub.apps.example.org",
                "registry": "lab-ns-1-registry.apps.example.org",
                "image_name": "jupyterhub",
                "tls": "no",
            },
        )
    assert baked_context(project) == ("lab-ns-1-registry.apps.example.org", "jupyterhub")


def test_validation_can_fail(bake):
    """The strict schema rejects what a typo would produce, so the checks above mean something."""
    deployment = next(o for o in kustomize(bake(), "development") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy "] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)
