"""skaffold.yaml: valid against Skaffold's own schema, and consistent with the overlays."""

import functools
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import IN_CI, MATRIX, ROOT, combo_id

SCHEMA_PATHS = [os.environ.get("SKAFFOLD_SCHEMA", ""), ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json"]


@functools.lru_cache(maxsize=None)
def schema_validator():
    for path in SCHEMA_PATHS:
        if path and Path(path).is_file():
            schema = json.loads(Path(path).read_text())
            return jsonschema.Draft7Validator(schema)
    message = "the Skaffold v4beta14 schema is in neither $SKAFFOLD_SCHEMA nor ../shared/schemas/"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def load(project):
    return yaml.safe_load((project / "skaffold.yaml").read_text())


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_skaffold_yaml_is_valid_and_consistent(bake, combo):
    project = bake(**combo)
    config = load(project)
    errors = sorted(schema_validator().iter_errors(config), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    assert config["apiVersion"] == "skaffold/v4beta14"
    build = config["build"]
    (artifact,) = build["artifacts"]
    kaniko = artifact["kaniko"]
    cluster = build["cluster"]
    assert cluster["namespace"] == "jupyterhub"
    assert ":" in kaniko["image"] and not kaniko["image"].endswith(":latest")
    assert kaniko["cache"]["repo"].startswith(artifact["image"] + "/")
    assert "deploy" in config and "kubectl" in config["deploy"]

    credentials = combo["kaniko_credentials"]
    if credentials == "docker-config":
        assert cluster["dockerConfig"] == {"path": "~/.docker/config.json"}
    elif credentials == "secret":
        assert cluster["dockerConfig"] == {"secretName": "kaniko-docker-config"}
    else:
        assert "dockerConfig" not in cluster
    assert build.get("insecureRegistries", []) == (
        ["jupyterhub-registry.127.0.0.1.nip.io"] if combo["registry_insecure"] == "yes" else []
    )

    # Every profile deploys an existing overlay, whose `images:` entry names exactly
    # the artifact with the tag that profile's tag policy gives it.
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"development", "production"}
    for name, profile in profiles.items():
        (path,) = profile["manifests"]["kustomize"]["paths"]
        overlay = project / path
        assert (overlay / "kustomization.yaml").is_file(), path
        tag = effective_tag_template(config, profile)
        images = yaml.safe_load((overlay / "kustomization.yaml").read_text())["images"]
        assert images == [{"name": "jupyterhub-hub", "newName": artifact["image"], "newTag": tag}]
    # Without a profile, Skaffold deploys the development overlay with its tag.
    assert config["manifests"]["kustomize"]["paths"] == ["k8s/overlays/development"]
    assert build["tagPolicy"] == {"envTemplate": {"template": "development"}}


def effective_tag_template(config, profile):
    """The tag template after applying a profile's JSON patches (the only kind used here)."""
    template = config["build"]["tagPolicy"]["envTemplate"]["template"]
    for patch in profile.get("patches", []):
        assert patch["op"] == "replace"
        if patch["path"] == "/build/tagPolicy/envTemplate/template":
            template = patch["value"]
    assert "{{" not in template, "a constant tag: `skaffold build` then `kubectl apply -k` must agree"
    return template


def test_schema_catches_a_misspelt_key(bake):
    config = load(bake())
    config["build"]["cluster"]["namespaces"] = config["build"]["cluster"].pop("namespace")
    assert list(schema_validator().iter_errors(config))


def test_skaffold_artifact_follows_registry_and_image_name(bake):
    project = bake(registry="localhost:5000/team", image_name="hub/main", namespace="lab-ns-1")
    config = load(project)
    assert config["build"]["artifacts"][0]["image"] == "localhost:5000/team/hub/main"
    assert config["build"]["cluster"]["namespace"] == "lab-ns-1"
