"""Profiles (profiles=profile_list) and named servers (named_servers=yes), without a cluster.

The checks the hub applies to hub-config/profiles.yaml when it starts (hub_helpers.py's
load_profiles and resource_problem, imported as the template holds them), each rule with a
good and a bad file; the generated profiles.yaml passes them and is what the issue asked
for (a default, a larger one, a GPU one with its toleration, pinned images, one differing
from the users' image); the generated configuration loads it as the hub does, and a
broken file stops the configuration with one line; the resources without profiles keep the
same ratio; the ConfigMap lists the file only when it exists; named servers and their
limit reach the configuration; the generated README says what the issue asks.
"""

import copy
import importlib.util
import re
import shutil

import pytest
import yaml

from conftest import ROOT
from support.bakery import load_hub_config

spec = importlib.util.spec_from_file_location("template_hub_helpers", ROOT / "{{cookiecutter.project}}" / "hub-config" / "hub_helpers.py")
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)

DEFAULTS = {"cpu_guarantee": 0.5, "cpu_limit": 2, "mem_guarantee": "1G", "mem_limit": "4G"}


def good_document():
    return {
        "profiles": [
            {"display_name": "Standard", "slug": "standard", "default": True},
            {
                "display_name": "Large",
                "slug": "large",
                "kubespawner_override": {"image": "quay.io/jupyter/scipy-notebook:2025-11-10", "cpu_guarantee": 2, "cpu_limit": 8,
                                         "mem_guarantee": "4G", "mem_limit": "16G"},
            },
        ]
    }  # fmt: skip


def changed(change):
    document = good_document()
    change(document)
    return document


def override(slug, **values):
    def change(document):
        profile = next(p for p in document["profiles"] if p["slug"] == slug)
        profile.setdefault("kubespawner_override", {}).update(values)

    return change


# (what is changed, what the one line must say: the profile and the rule)
BAD = {
    "no slug": (lambda d: d["profiles"][1].pop("slug"), ["profile #2", "needs a slug"]),
    "a slug with capitals": (lambda d: d["profiles"][1].update(slug="Large"), ["'Large'", "needs a slug"]),
    "two profiles, one slug": (lambda d: d["profiles"][1].update(slug="standard"), ["'standard'", "slugs must differ"]),
    "no display_name": (lambda d: d["profiles"][1].pop("display_name"), ["'large'", "display_name"]),
    "an empty display_name": (lambda d: d["profiles"][0].update(display_name=" "), ["'standard'", "display_name"]),
    "two defaults": (lambda d: d["profiles"][1].update(default=True), ["'standard' and profile 'large'", "both the default"]),
    "no default": (lambda d: d["profiles"][0].pop("default"), ["no profile is the default"]),
    "default: yes-ish": (lambda d: d["profiles"][1].update(default="yes"), ["'large'", "default"]),
    "an image on :latest": (override("large", image="quay.io/jupyter/scipy-notebook:latest"), ["'large'", ":latest"]),
    "an image without a tag": (override("large", image="quay.io/jupyter/scipy-notebook"), ["'large'", "no tag"]),
    "an image with a registry port, no tag": (override("large", image="localhost:5000/nb"), ["'large'", "no tag"]),
    "a malformed digest": (override("large", image="quay.io/jupyter/scipy-notebook@sha256:abc"), ["'large'", "digest"]),
    "memory limit above the ratio": (override("large", mem_limit="17G"), ["'large'", "mem_limit 17G is more than 4 times mem_guarantee 4G"]),
    "cpu limit above the ratio": (override("large", cpu_limit=8.5), ["'large'", "cpu_limit 8.5 is more than 4 times cpu_guarantee 2"]),
    # A profile that raises only its limit is held to the hub's guarantee it keeps.
    "a limit alone, over the hub's guarantee": (override("standard", mem_limit="8G"), ["'standard'", "mem_limit 8G is more than 4 times mem_guarantee 1G"]),
    "a limit below its guarantee": (override("large", mem_limit="2G"), ["'large'", "mem_limit 2G is below mem_guarantee 4G"]),
    "memory in a unit KubeSpawner does not read": (override("large", mem_guarantee="4Gi"), ["'large'", "not an amount of memory"]),
    "cpu as text": (override("large", cpu_guarantee="2"), ["'large'", "not a positive number of cores"]),
    "no profiles at all": (lambda d: d.update(profiles=[]), ["`profiles:`"]),
    "a profile that is a string": (lambda d: d["profiles"].append("gpu"), ["profile #3", "not a mapping"]),
    "kubespawner_override not a mapping": (lambda d: d["profiles"][1].update(kubespawner_override=["image"]), ["'large'", "not a mapping"]),
}


def test_a_good_file_passes():
    assert helpers.profile_problems(good_document(), DEFAULTS) == []


@pytest.mark.parametrize("case", list(BAD))
def test_each_rule_names_the_profile_and_the_rule(case, tmp_path):
    change, says = BAD[case]
    document = changed(change)
    problems = helpers.profile_problems(document, DEFAULTS)
    assert len(problems) == 1, problems
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        helpers.load_profiles(str(path), DEFAULTS)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("profiles.yaml: "), message
    for text in says:
        assert text in message, (text, message)


def test_the_ratio_is_a_parameter_and_a_limit_at_it_passes():
    at_the_ratio = changed(override("large", mem_limit="16G", cpu_limit=8))
    assert helpers.profile_problems(at_the_ratio, DEFAULTS) == []
    assert helpers.profile_problems(at_the_ratio, DEFAULTS, ratio=3) != []
    assert helpers.OVERCOMMIT_RATIO == 4


@pytest.mark.parametrize(
    "text, says",
    [("profiles: [\n", "not valid YAML at line"), ("", "`profiles:`"), ("- a\n- b\n", "`profiles:`")],
)
def test_a_file_that_is_not_a_profile_list_is_one_line(tmp_path, text, says):
    path = tmp_path / "profiles.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(says)) as raised:
        helpers.load_profiles(str(path), DEFAULTS)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="cannot be read"):
        helpers.load_profiles(str(tmp_path / "missing.yaml"), DEFAULTS)


@pytest.mark.parametrize(
    "value, expected",
    [("4G", 4 * 1024**3), ("512M", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3)), (1073741824, 1073741824), ("2T", 2 * 1024**4)],
)
def test_memory_is_read_as_kubespawner_reads_it(value, expected):
    from jupyterhub.traitlets import ByteSpecification

    assert helpers.memory_bytes(value) == expected == ByteSpecification().validate(None, value)


# --- The generated files ---------------------------------------------------------------


def generated_profiles(project):
    return yaml.safe_load((project / "hub-config" / "profiles.yaml").read_text(encoding="utf-8"))["profiles"]


def user_image(project):
    return re.search(r'^USER_IMAGE = "([^"]+)"', (project / "hub-config" / "jupyterhub_config.py").read_text(), re.M)[1]


def test_the_generated_profiles_are_the_ones_asked_for(bake):
    project = bake(profiles="profile_list")
    document = yaml.safe_load((project / "hub-config" / "profiles.yaml").read_text(encoding="utf-8"))
    assert helpers.profile_problems(document, DEFAULTS) == []
    profiles = document["profiles"]
    [default] = [p for p in profiles if p.get("default")]
    assert "image" not in default["kubespawner_override"], "the default profile runs the users' image (USER_IMAGE)"
    others = [p for p in profiles if not p.get("default")]
    images = [p["kubespawner_override"].get("image") for p in others]
    assert any(image and image != user_image(project) for image in images), "no profile with an image of its own"
    [gpu] = [p for p in profiles if "nvidia.com/gpu" in p["kubespawner_override"].get("extra_resource_limits", {})]
    gpu_override = gpu["kubespawner_override"]
    assert gpu_override["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_override["tolerations"]
    assert "cuda" in gpu_override["image"], "GPU work needs an image with the CUDA libraries"
    # Sane for data work: no server limited below the 4G the users' default gets.
    for profile in profiles:
        resources = {**DEFAULTS, **profile["kubespawner_override"]}
        assert helpers.memory_bytes(resources["mem_limit"]) >= 4 * 1024**3, profile["slug"]
    text = (project / "hub-config" / "profiles.yaml").read_text(encoding="utf-8")
    for said in ("4 times", "OVERCOMMIT_RATIO", "node_selector", "GKE", "EKS", "AKS", "CUDA"):
        assert said in text, said


@pytest.mark.parametrize("profiles", ["none", "profile_list"])
def test_the_config_map_holds_the_file_only_with_profiles(bake, profiles):
    project = bake(profiles=profiles)
    listed = yaml.safe_load((project / "hub-config" / "kustomization.yaml").read_text())["configMapGenerator"][0]["files"]
    assert ("profiles.yaml" in listed) == (profiles == "profile_list") == (project / "hub-config" / "profiles.yaml").exists()
    assert sorted(listed) == sorted(p.name for p in (project / "hub-config").iterdir() if p.name != "kustomization.yaml")


def test_the_hub_loads_the_profiles_as_kubespawner_wants_them(bake, bakery):
    project = bake(profiles="profile_list")
    config = bakery.hub_config(project)
    assert config.KubeSpawner.profile_list == generated_profiles(project)
    # Without profiles: the same resources for everyone, within the ratio, and no profile_list.
    plain = bakery.hub_config(bake(profiles="none"))
    resources = {name: plain.KubeSpawner[name] for name in helpers.RESOURCES}
    assert helpers.resource_problem(resources) is None, resources
    assert helpers.memory_bytes(resources["mem_limit"]) >= 4 * 1024**3 and resources["cpu_guarantee"] >= 0.5, resources
    assert "profile_list" not in plain.KubeSpawner


def test_a_broken_profiles_file_stops_the_hub_in_one_line(bake, bakery, tmp_path):
    source = bake(profiles="profile_list")
    project = tmp_path / "project"
    shutil.copytree(source, project)
    document = yaml.safe_load((project / "hub-config/profiles.yaml").read_text())
    broken = copy.deepcopy(document)
    broken["profiles"][-1]["kubespawner_override"]["image"] = "quay.io/jupyter/pytorch-notebook:latest"
    (project / "hub-config/profiles.yaml").write_text(yaml.safe_dump(broken))
    env = {"HUB_INSTANCE": "development", "HUB_SERVICE_NAME": "hub-dev", "HUB_USER_OBJECT_PREFIX": "dev-"}
    with pytest.raises(SystemExit) as stopped:
        load_hub_config(project, env)
    message = str(stopped.value.code)
    assert "\n" not in message and f"profile '{broken['profiles'][-1]['slug']}'" in message and ":latest" in message, message
    # The hub's own resources are held to the same ratio.
    config = project / "hub-config/jupyterhub_config.py"
    config.write_text(config.read_text().replace('"mem_limit": "4G"', '"mem_limit": "5G"'))
    with pytest.raises(SystemExit, match="USER_RESOURCES: mem_limit 5G is more than 4 times"):
        load_hub_config(project, env)


@pytest.mark.parametrize("named_servers, limit", [("no", "3"), ("yes", "3"), ("yes", "12")])
def test_named_servers_and_their_limit_reach_the_config(bake, bakery, named_servers, limit):
    config = bakery.hub_config(bake(named_servers=named_servers, named_server_limit=limit))
    if named_servers == "yes":
        assert config.JupyterHub.allow_named_servers is True
        assert config.JupyterHub.named_server_limit_per_user == int(limit)
    else:
        assert "allow_named_servers" not in config.JupyterHub and "named_server_limit_per_user" not in config.JupyterHub


def readme_section(project, title):
    text = (project / "README.md").read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"the generated README has no section {title}"
    return " ".join(text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0].split())


def test_the_generated_readme_says_how_to_add_a_profile_and_states_the_ratio(bake):
    project = bake(profiles="profile_list", named_servers="yes")
    section = readme_section(project, "Profiles")
    for said in ("hub-config/profiles.yaml", "4 times", "OVERCOMMIT_RATIO", "nvidia.com/gpu", "toleration", "CUDA", "slug"):
        assert said in section, said
    for profile in generated_profiles(project):
        assert f"`{profile['slug']}`" in section, profile["slug"]
    section = readme_section(project, "Named servers")
    for said in ("/user/", "claim-", "named_server_limit_per_user", "3"):
        assert said in section, said
    plain = (bake(profiles="none", named_servers="no") / "README.md").read_text(encoding="utf-8")
    assert "\n## Profiles\n" not in plain and "\n## Named servers\n" not in plain
