"""Every overlay renders with kustomize, validates against Kubernetes' own schemas,
and says what the answers said: namespace, host, image."""

import functools
import json

import kubernetes_validate
import pytest

from conftest import MATRIX, OVERLAYS, combo_id, kustomize
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
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 1 and kinds.count("Ingress") == 1, kinds
    for obj in objects:
        for version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
            try:
                validate_strict(json.dumps(obj, sort_keys=True), version)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} invalid in {version}: {error.message}")
        # Every namespaced object lands in the chosen namespace.
        assert obj["kind"] not in CLUSTER_SCOPED, f"{obj['kind']} is cluster-scoped"
        assert obj["metadata"].get("namespace") == context["namespace"], obj["metadata"]

    by_kind = {o["kind"]: o for o in objects}
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
    for source in container.get("envFrom", []):
        if context.get("hub_secrets") == "existing-secret":
            # Made in the cluster, not by the overlay: see the generated README, "Secrets".
            name = {"production": "hub-secrets", "development": "hub-secrets-dev"}[overlay]
            assert source["secretRef"] == {"name": name, "optional": False}
        else:
            assert ("Secret", source["secretRef"]["name"]) in names
    return objects


def baked_context(project):
    """The answers the project was baked with, as cookiecutter recorded them."""
    skaffold = fast_yaml.load((project / "skaffold.yaml").read_text())
    artifact = skaffold["build"]["artifacts"][0]["image"]
    registry, image_name = artifact.split("/", 1) if "/" in artifact else (artifact, "")
    return registry, image_name


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(bake, combo, overlay):
    project = bake(**combo)
    context = {
        "namespace": "jupyterhub",
        "hostname": "jupyterhub-jupyterhub.127.0.0.1.nip.io",
        "registry": "jupyterhub-registry.127.0.0.1.nip.io",
        "image_name": "jupyterhub",
        **combo,
    }
    check_overlay(project, overlay, context)


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
    objects = check_overlay(project, overlay, context)
    by_kind = {o["kind"]: o for o in objects}
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
