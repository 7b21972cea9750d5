"""skaffold.yaml: readable by every Skaffold from the stated minimum on, and consistent with the overlays.

The file is written in the oldest Skaffold config version that has every field it uses, so
that older Skaffold releases can read it. Each baked file is validated against that
version's schema and against the newest one's; a field only the newer schema knows fails,
named, so that raising the version is a deliberate choice (and the READMEs' minimum follows).
Schemas: tests/support/skaffold_schema.py finds or downloads them.
"""

import functools
import re

import jsonschema
import pytest

from conftest import CHOICE_VARIABLES, MATRIX, ROOT, combo_id
from support import fast_yaml
from support.skaffold_schema import SCHEMA_PATH, URL_BASE_VARIABLE, SchemaUnavailable, find_schema, load_schema

# The newest Skaffold config version (Skaffold 2.19.0 and later, April 2026).
NEWEST = "v4beta14"

# The first Skaffold release that reads each config version: Skaffold's CHANGELOG.md, as
# ../shared/schemas/README.md records it. Kept here, apart from the READMEs it checks.
FIRST_RELEASE = {"v4beta11": "2.12.0", "v4beta12": "2.14.0", "v4beta13": "2.15.0", "v4beta14": "2.19.0"}

# How both READMEs state the minimum.
STATED_MINIMUM = re.compile(r"Skaffold (\d+\.\d+\.\d+) or newer")


def written_version():
    """The config version the template writes (the apiVersion line carries no Jinja)."""
    text = (ROOT / "{{cookiecutter.project}}" / "skaffold.yaml").read_text(encoding="utf-8")
    (version,) = re.findall(r"^apiVersion: skaffold/(\S+)$", text, re.M)
    return version


@functools.lru_cache(maxsize=None)
def _validator(version):
    """The validator, or why there is none: a failed lookup (a download that timed out,
    say) is remembered too, not tried again by every test."""
    try:
        return jsonschema.Draft7Validator(load_schema(version))
    except SchemaUnavailable as missing:
        return str(missing)


def validator(version):
    found = _validator(version)
    if isinstance(found, str):
        pytest.skip(found)
    return found


def versions():
    return sorted({written_version(), NEWEST})


def dotted(path):
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def deepest(error):
    return max((deepest(sub) for sub in error.context or []), default=len(error.absolute_path))


def leaf_errors(error):
    """The errors that say what is wrong: inside an anyOf (Skaffold's builders, artifact
    types, tag policies, ...), those of the alternative that fits the object itself (no
    complaint about the object's own keys), then the one that matched furthest."""
    if not error.context:
        return [error]
    branches = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def misfit(errors):
        leaves = [leaf for sub in errors for leaf in leaf_errors(sub)]
        own_level = sum(len(leaf.absolute_path) == len(error.absolute_path) for leaf in leaves)
        return own_level, -max(map(deepest, errors))

    best = min(branches.values(), key=misfit)
    return [leaf for sub in best for leaf in leaf_errors(sub)]


def schema_problems(config, version):
    """One line per problem of config under skaffold/<version>, naming the field."""
    problems = []
    for error in validator(version).iter_errors(config):
        for leaf in leaf_errors(error):
            where = dotted(leaf.absolute_path)
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                known = leaf.schema.get("properties", {})
                for field in sorted(set(leaf.instance) - set(known)):
                    problems.append(f"{dotted([*leaf.absolute_path, field])}: skaffold/{version} has no such field")
            else:
                problems.append(f"{where}: {leaf.message} (skaffold/{version})")
    return sorted(set(problems))


def load(project):
    return fast_yaml.load((project / "skaffold.yaml").read_text())


# The matrix, and every value of the choices not crossed with it that change skaffold.yaml
# (conftest.CONFINED), together.
SKAFFOLD_COMBOS = MATRIX + [
    dict(MATRIX[0], create_namespace="no", kaniko_credentials=kaniko, registry_insecure=insecure)
    for kaniko in ("docker-config", "secret", "none") for insecure in ("no", "yes")
] + [
    # build_user_image=yes: a second artifact, with each setting the first one's depends on.
    dict(MATRIX[0], build_user_image="yes", create_namespace=namespace, kaniko_credentials=kaniko, registry_insecure=insecure)
    for namespace, kaniko, insecure in (("yes", "docker-config", "no"), ("no", "secret", "yes"), ("yes", "none", "yes"))
]  # fmt: skip


@pytest.mark.parametrize("combo", SKAFFOLD_COMBOS, ids=combo_id)
def test_skaffold_yaml_is_valid_and_consistent(bake, combo):
    for version in versions():
        validator(version)  # without the schemas, skip before baking
    project = bake(**combo)
    config = load(project)
    assert config["apiVersion"] == f"skaffold/{written_version()}"
    for version in versions():
        problems = schema_problems(config, version)
        assert not problems, "\n".join(problems)

    # The choices not crossed with the matrix (conftest.CONFINED) at their defaults unless given.
    combo = {**{name: values[0] for name, values in CHOICE_VARIABLES.items()}, **combo}
    build = config["build"]
    artifact, *more = build["artifacts"]
    kaniko = artifact["kaniko"]
    cluster = build["cluster"]
    assert cluster["namespace"] == "jupyterhub"
    assert ":" in kaniko["image"] and not kaniko["image"].endswith(":latest")
    assert kaniko["cache"]["repo"].startswith(artifact["image"] + "/")
    assert "deploy" in config and "kubectl" in config["deploy"]

    credentials = combo["kaniko_credentials"]
    if credentials == "docker-config":
        assert cluster["dockerConfig"] == {"path": "~/.docker/config.json"}
        # A Secret of a new name each build: one a failed build left behind blocks nothing.
        assert cluster["randomDockerConfigSecret"] is True
    elif credentials == "secret":
        assert cluster["dockerConfig"] == {"secretName": "kaniko-docker-config"}
    else:
        assert "dockerConfig" not in cluster
    assert build.get("insecureRegistries", []) == (
        ["jupyterhub-registry.127.0.0.1.nip.io"] if combo["registry_insecure"] == "yes" else []
    )
    # The namespace, created before kaniko's pod needs it, unless a platform made it.
    hooks = (artifact.get("hooks") or {}).get("before") or []
    wanted = [["kubectl", "apply", "--filename", "k8s/namespace.yaml"]] if combo.get("create_namespace", "yes") == "yes" else []
    assert [h["command"] for h in hooks] == wanted, hooks
    # build_user_image=yes: the users' image, from user-image/, built like the hub's (same
    # executor, its own cache), and its kaniko pod, built at the same time, gets the
    # namespace first too.
    user_artifact = None
    if combo["build_user_image"] == "yes":
        (user_artifact,) = more
        assert user_artifact["image"] == artifact["image"] + "-user"
        assert user_artifact["context"] == "user-image" and (project / "user-image" / "Dockerfile").is_file()
        assert user_artifact["kaniko"]["dockerfile"] == "Dockerfile"
        assert user_artifact["kaniko"]["image"] == kaniko["image"]
        assert user_artifact["kaniko"]["cache"]["repo"].startswith(user_artifact["image"] + "/")
        assert user_artifact["kaniko"]["cache"]["repo"] != kaniko["cache"]["repo"]
        assert user_artifact.get("hooks") == artifact.get("hooks")
    else:
        assert more == [] and not (project / "user-image").exists()

    # Every profile deploys an existing overlay, whose `images:` entry names exactly
    # the artifact with the tag that profile's tag policy gives it.
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"development", "production"}
    for name, profile in profiles.items():
        (path,) = profile["manifests"]["kustomize"]["paths"]
        overlay = project / path
        assert (overlay / "kustomization.yaml").is_file(), path
        tag = effective_tag_template(config, profile)
        images = fast_yaml.load((overlay / "kustomization.yaml").read_text())["images"]
        wanted = [{"name": "jupyterhub-hub", "newName": artifact["image"], "newTag": tag}]
        if user_artifact:
            wanted.append({"name": "jupyterhub-user", "newName": user_artifact["image"], "newTag": tag})
        assert images == wanted
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


def test_a_field_newer_than_the_written_version_fails_by_name(bake):
    """kaniko.imagePullSecret came after v4beta11: the newest schema takes it, the check names it."""
    config = load(bake(kaniko_credentials="secret"))
    config["build"]["artifacts"][0]["kaniko"]["imagePullSecret"] = "registry-pull"
    config["build"]["cluster"]["labels"] = {"team": "hub"}  # v4beta12's, elsewhere in the file
    assert schema_problems(config, NEWEST) == []
    assert schema_problems(config, written_version()) == [
        f"build.artifacts[0].kaniko.imagePullSecret: skaffold/{written_version()} has no such field",
        f"build.cluster.labels: skaffold/{written_version()} has no such field",
    ]


def test_schema_catches_a_misspelt_key(bake):
    config = load(bake())
    config["build"]["cluster"]["namespaces"] = config["build"]["cluster"].pop("namespace")
    for version in versions():
        assert f"build.cluster.namespaces: skaffold/{version} has no such field" in schema_problems(config, version)


def test_readmes_state_the_skaffold_that_reads_the_written_version(bake):
    minimum = FIRST_RELEASE[written_version()]
    generated = (bake() / "README.md").read_text(encoding="utf-8")
    for name, text in (("README.md", (ROOT / "README.md").read_text(encoding="utf-8")), ("the generated README", generated)):
        stated = set(STATED_MINIMUM.findall(text))
        assert stated == {minimum}, f"{name} states Skaffold {sorted(stated)} or newer; skaffold/{written_version()} needs {minimum}"
    # The generated README's first steps: how to see one's Skaffold, and what an older one does.
    needs = generated.split("## What you need", 1)[1].split("\n## ", 1)[0]
    assert "`skaffold version`" in needs
    assert f'unknown skaffold config API version "skaffold/{written_version()}"' in needs


def test_skaffold_artifact_follows_registry_and_image_name(bake):
    project = bake(registry="localhost:5000/team", image_name="hub/main", namespace="lab-ns-1")
    config = load(project)
    assert config["build"]["artifacts"][0]["image"] == "localhost:5000/team/hub/main"
    assert config["build"]["cluster"]["namespace"] == "lab-ns-1"


# --- Where the schemas come from (tests/support/skaffold_schema.py) -------------------------


@pytest.fixture
def schema_server(tmp_path):
    """An HTTP server on 127.0.0.1 laid out like Skaffold's repository, serving the real schemas."""
    import http.server
    import threading

    root = tmp_path / "www"
    for version in versions():
        try:
            source, _ = find_schema(version)
        except SchemaUnavailable as missing:
            pytest.skip(str(missing))
        target = root / SCHEMA_PATH.format(version=version)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    (root / "not-a-schema" / SCHEMA_PATH.format(version=NEWEST)).parent.mkdir(parents=True)
    (root / "not-a-schema" / SCHEMA_PATH.format(version=NEWEST)).write_text('{"title": "something else"}')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()
    server.server_close()


def test_schema_is_downloaded_when_nowhere_else_then_cached(schema_server, tmp_path):
    base, root = schema_server
    nowhere = dict(shared=tmp_path / "no-shared", cache=tmp_path / "cache")
    for version in versions():
        path, where = find_schema(version, environ={URL_BASE_VARIABLE: base}, **nowhere)
        assert where == f"downloaded from {base}{SCHEMA_PATH.format(version=version)}"
        assert path == tmp_path / "cache" / f"skaffold-{version}.json"
        assert path.read_bytes() == (root / SCHEMA_PATH.format(version=version)).read_bytes()
        # The next run reads the cache, with no server.
        assert find_schema(version, environ={URL_BASE_VARIABLE: "http://127.0.0.1:9/"}, **nowhere) == (path, "the download cache")
    assert not list((tmp_path / "cache").glob(".*")), "a temporary download file was left behind"


def test_schema_found_nowhere_says_what_was_tried(schema_server, tmp_path):
    base, _ = schema_server
    nowhere = dict(shared=tmp_path / "no-shared", cache=tmp_path / "cache")
    with pytest.raises(SchemaUnavailable) as missing:
        find_schema("v4beta99", environ={URL_BASE_VARIABLE: base}, **nowhere)
    message = str(missing.value)
    for tried in ("$SKAFFOLD_SCHEMA (unset)", str(tmp_path / "no-shared"), str(tmp_path / "cache"), "404"):
        assert tried in message, message
    # Something that answers but is no Skaffold schema is refused, and not cached.
    with pytest.raises(SchemaUnavailable, match="not a Skaffold config schema"):
        find_schema(NEWEST, environ={URL_BASE_VARIABLE: base + "not-a-schema/"}, **nowhere)
    assert not (tmp_path / "cache" / f"skaffold-{NEWEST}.json").exists()


def test_skaffold_schema_variable_names_a_directory_or_one_file(schema_server, tmp_path):
    _, root = schema_server
    given = tmp_path / "given"
    given.mkdir()
    for version in versions():
        (given / f"skaffold-{version}.json").write_bytes((root / SCHEMA_PATH.format(version=version)).read_bytes())
    nowhere = dict(shared=tmp_path / "no-shared", cache=tmp_path / "cache")
    environ = {URL_BASE_VARIABLE: "http://127.0.0.1:9/", "SKAFFOLD_SCHEMA": str(given)}
    for version in versions():
        assert find_schema(version, environ=environ, **nowhere) == (given / f"skaffold-{version}.json", "$SKAFFOLD_SCHEMA")
    one_file = given / f"skaffold-{NEWEST}.json"
    environ = {URL_BASE_VARIABLE: "http://127.0.0.1:9/", "SKAFFOLD_SCHEMA": str(one_file)}
    assert find_schema(NEWEST, environ=environ, shared=tmp_path / "none", cache=tmp_path / "cache") == (one_file, "$SKAFFOLD_SCHEMA")
    # That file does not serve another version: the lookup goes on, and says why.
    with pytest.raises(SchemaUnavailable, match=re.escape(f"$SKAFFOLD_SCHEMA={one_file} (no skaffold-v4beta11.json there)")):
        find_schema("v4beta11", environ=environ, shared=tmp_path / "none", cache=tmp_path / "cache")


# --- No restart without a change: what `skaffold run` adds, modelled on its source ---------


def hub_template(objects):
    import json

    from hubrunner import hub_deployment

    return json.dumps(hub_deployment(objects)["spec"]["template"], sort_keys=True)


@pytest.mark.parametrize("overlay", ["development", "production"])
def test_an_unchanged_skaffold_run_leaves_the_hubs_pod_template_alone(bake, overlay):
    """Two runs, two run IDs (Skaffold's UUIDs): with the generated skaffold.env the hub's pod
    template is byte-identical, so the Deployment does not roll; without it, it differs."""
    from conftest import kustomize
    from support import skaffold_labels

    project = bake()
    objects = kustomize(project, overlay)
    env_file = (project / "skaffold.env").read_text(encoding="utf-8")
    runs = [skaffold_labels.apply(objects, skaffold_labels.labels_for_run(env_file, {})) for _ in range(2)]
    assert hub_template(runs[0]) == hub_template(runs[1]), "the second run changed the hub's pod template"
    [deployment] = [o for o in runs[0] if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["skaffold.dev/run-id"] == project.name, (
        "the fixed run ID reaches the pod template"
    )
    # The planted fault: no skaffold.env, Skaffold's own run ID per run: every run rolls the hub.
    bare = [skaffold_labels.apply(objects, skaffold_labels.labels_for_run(None, {})) for _ in range(2)]
    assert hub_template(bare[0]) != hub_template(bare[1])
    # A change does roll it: another image digest (what a new build deploys).
    changed = [dict(o) for o in runs[1]]
    [deployment] = [o for o in changed if o["kind"] == "Deployment"]
    deployment["spec"] = {**deployment["spec"], "template": {**deployment["spec"]["template"], "spec": {
        **deployment["spec"]["template"]["spec"],
        "containers": [dict(deployment["spec"]["template"]["spec"]["containers"][0], image="registry.example.org/hub@sha256:" + "1" * 64)],
    }}}  # fmt: skip
    assert hub_template(changed) != hub_template(runs[0])


def test_skaffold_env_is_the_flag_skaffold_reads():
    """SKAFFOLD_LABEL=k=v is --label k=v; a value already in the environment wins over the file."""
    from support import skaffold_labels

    text = "# a comment\n\nSKAFFOLD_LABEL=skaffold.dev/run-id=team-hub\n"
    assert skaffold_labels.labels_for_run(text, {}, run_id="uuid")["skaffold.dev/run-id"] == "team-hub"
    assert skaffold_labels.labels_for_run(text, {"SKAFFOLD_LABEL": "a=b"}, run_id="uuid") == {"skaffold.dev/run-id": "uuid", "a": "b"}


# --- Where Skaffold puts the tags it built, modelled on its source (support/skaffold_images.py) ---


def test_the_image_model_does_what_skaffolds_own_tests_show():
    """Two cases of Skaffold's pkg/skaffold/kubernetes/manifest/images_test.go: by default a
    field is rewritten when its key is `image` (anywhere in an allowed kind); an allow entry
    with a path replaces the default entry of its kind and rewrites that path, whatever the key."""
    from support import skaffold_images

    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "image-name", "labels": {"this.should.not.change": "image-name", "image": "image-name"}},
        "spec": {"template": {"spec": {"restartPolicy": "image-name"}}, "image": "this-should-not-change"},
    }  # fmt: skip
    builds = [{"imageName": "image-name", "tag": "gcr.io/k8s-skaffold/image-name:TAG"}]
    [by_default] = skaffold_images.replace_images([job], builds)
    assert by_default["metadata"]["labels"] == {"this.should.not.change": "image-name", "image": "gcr.io/k8s-skaffold/image-name:TAG"}
    assert by_default["spec"]["template"]["spec"]["restartPolicy"] == "image-name"
    assert by_default["spec"]["image"] == "this-should-not-change"
    custom = {"resourceSelector": {"allow": [{"groupKind": "Job.batch", "image": [".spec.template.spec.restartPolicy"]}]}}
    [by_path] = skaffold_images.replace_images([job], builds, custom)
    assert by_path["spec"]["template"]["spec"]["restartPolicy"] == "gcr.io/k8s-skaffold/image-name:TAG"
    assert by_path["metadata"]["labels"]["image"] == "image-name", "the entry replaced the default `.*`"
    # A name given by digest stays; a value that is no image reference (a URL) stays.
    pinned = dict(job, spec={"template": {"spec": {"restartPolicy": "image-name@sha256:" + "0" * 64}}})
    assert skaffold_images.replace_images([pinned], builds, custom) == [pinned]
    assert skaffold_images.parse("http://hub:8081/hub/") is None


def built(config, tag):
    """What `skaffold build` reports for each artifact (--file-output's builds): pushed, by tag and digest."""
    return [
        {"imageName": a["image"], "tag": f"{a['image']}:{tag}@sha256:{str(i + 1) * 64}"}
        for i, a in enumerate(config["build"]["artifacts"])
    ]


@pytest.mark.parametrize("overlay", ["development", "production"])
def test_skaffold_run_tells_the_hub_the_user_image_it_built(bake, overlay):
    """build_user_image=yes: `skaffold run` (each profile) deploys the hub with USER_IMAGE naming
    the users' image it just built, by tag and digest; `kubectl apply -k` after `skaffold build`
    names it by the overlay's tag. Skaffold's own default would leave the variable at the tag."""
    from conftest import kustomize
    from hubrunner import hub_container
    from support import skaffold_images

    project = bake(build_user_image="yes")
    config = load(project)
    hub_build, user_build = built(config, overlay)
    objects = kustomize(project, overlay)
    env = {e["name"]: e.get("value") for e in hub_container(objects)["env"]}
    assert env["USER_IMAGE"] == f"{user_build['imageName']}:{overlay}", "kubectl apply -k: the overlay's name and tag"
    deployed = skaffold_images.replace_images(objects, [hub_build, user_build], config)
    container = hub_container(deployed)
    assert container["image"] == hub_build["tag"]
    assert {e["name"]: e.get("value") for e in container["env"]} == {**env, "USER_IMAGE": user_build["tag"]}
    changed = [(a["kind"], a["metadata"]["name"]) for a, b in zip(objects, deployed) if a != b]
    assert changed == [("Deployment", "hub-dev" if overlay == "development" else "hub")], changed
    # The planted fault: no resourceSelector, Skaffold's default: the hub's image moves, USER_IMAGE not.
    default = skaffold_images.replace_images(objects, [hub_build, user_build], {k: v for k, v in config.items() if k != "resourceSelector"})
    assert hub_container(default)["image"] == hub_build["tag"]
    assert {e["name"]: e.get("value") for e in hub_container(default)["env"]}["USER_IMAGE"] == env["USER_IMAGE"]


def test_the_resource_selector_keeps_what_skaffold_does_by_default(bake):
    """An allow entry replaces Skaffold's default entry of its kind: ours restates every default
    path of Deployment.apps (images, labels, pod specs), so labels and images go where they went."""
    from support import skaffold_images

    config = load(bake(build_user_image="yes"))
    (entry,) = config["resourceSelector"]["allow"]
    default = skaffold_images.DEFAULT_ALLOW[entry["groupKind"]]
    for field in ("image", "labels", "podSpec"):
        assert set(default[field]) <= set(entry[field]), field
    assert "resourceSelector" not in load(bake(build_user_image="no"))


@pytest.mark.parametrize("overlay", ["development", "production"])
def test_the_hubs_config_starts_users_from_what_it_was_told(bake, bakery, overlay):
    """The hub's configuration, loaded with the Deployment's environment: KubeSpawner gets
    USER_IMAGE as it is, asks the registry at every start while it names a tag only (which a
    later `skaffold build` moves), trusts a node's copy once it names a digest (`skaffold run`,
    a release), and starts jupyterhub-singleuser whatever the image's own command is. Without
    the variable the hub stops, naming it."""
    from hubrunner import hub_container, pod_environment
    from support import skaffold_images
    from support.bakery import load_hub_config

    project = bake(build_user_image="yes")
    by_tag = bakery.hub_config(project, overlay).KubeSpawner
    assert by_tag.image == f"jupyterhub-registry.127.0.0.1.nip.io/jupyterhub-user:{overlay}"
    assert by_tag.image_pull_policy == "Always"
    assert by_tag.cmd == ["jupyterhub-singleuser"]
    config = load(project)
    deployed = skaffold_images.replace_images(kustomize_of(project, overlay), built(config, overlay), config)
    env = {k: v for k, v in pod_environment(deployed, secrets={"CONFIGPROXY_AUTH_TOKEN": "t"}).items() if not v.startswith("/")}
    by_digest = load_hub_config(project, env).KubeSpawner
    assert by_digest.image == env["USER_IMAGE"] == built(config, overlay)[1]["tag"]
    assert by_digest.image_pull_policy == "IfNotPresent"
    with pytest.raises(SystemExit, match="USER_IMAGE is not set"):
        load_hub_config(project, {k: v for k, v in env.items() if k != "USER_IMAGE"})
    # build_user_image=no: the chosen image, pinned, from a node's copy.
    fixed = bakery.hub_config(bake(), overlay).KubeSpawner
    assert (fixed.image, fixed.image_pull_policy) == ("quay.io/jupyterhub/k8s-singleuser-sample:4.4.0", "IfNotPresent")
    assert "USER_IMAGE" not in {e["name"] for e in hub_container(kustomize_of(bake(), overlay))["env"]}


def kustomize_of(project, overlay):
    from conftest import kustomize

    return kustomize(project, overlay)


@pytest.mark.parametrize("overlay", ["development", "production"])
def test_the_pre_puller_pulls_what_skaffold_run_tells_the_hub(bake, overlay):
    """build_user_image=yes with the pre-puller: its DaemonSet names the users' image by the same
    placeholder (jupyterhub-user), so kustomize gives both the overlay's tag and `skaffold run`
    both the digest it built (Skaffold's default rewrites a DaemonSet's images, initContainers too)."""
    from conftest import kustomize
    from hubrunner import hub_container
    from support import skaffold_images

    project = bake(build_user_image="yes", pre_puller="yes")
    config = load(project)
    for objects in (kustomize(project, overlay), skaffold_images.replace_images(kustomize(project, overlay), built(config, overlay), config)):
        user_image = {e["name"]: e.get("value") for e in hub_container(objects)["env"]}["USER_IMAGE"]
        [daemonset] = [o for o in objects if o["kind"] == "DaemonSet"]
        pulled = [c["image"] for c in daemonset["spec"]["template"]["spec"]["initContainers"]]
        assert pulled[0] == user_image, (pulled, user_image)
    assert "@sha256:" in user_image
