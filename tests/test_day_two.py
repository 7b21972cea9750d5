"""Day two: a teammate's fresh clone deploys, the generated repository checks itself
(scripts/check), and its CI workflow and Renovate configuration are valid and mean
what they say."""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import AUTHENTICATORS, MATRIX, OVERLAYS, ROOT, TOOLS, combo_id, need_tool, needs_secrets
from support.bakery import session_bakery
from support.once import judge_once, project_units

SECRETS_NEEDED = [name for name in sorted(p.name for p in AUTHENTICATORS.iterdir()) if needs_secrets(name)]
TEMPLATE_CHECK = ROOT / "{{cookiecutter.project}}" / "scripts" / "check"
RENOVATE = TOOLS / "renovate" / "node_modules" / "renovate"


def run(*args, cwd, env=None, check=True):
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


def git_clone(project, tmp_path):
    """Commit the baked project as its owner does, then clone it as a teammate does."""
    git = need_tool("git")
    origin = tmp_path / "origin"
    shutil.copytree(project, origin, symlinks=True)
    run(git, "init", "-q", cwd=origin)
    run(git, "add", "-A", cwd=origin)
    run(git, "-c", "user.name=Owner", "-c", "user.email=owner@example.org", "commit", "-q", "-m", "JupyterHub", cwd=origin)
    clone = tmp_path / "clone"
    run(git, "clone", "-q", origin, clone, cwd=tmp_path)
    return clone


def render(project, overlay):
    return run(need_tool("kubectl"), "kustomize", project / "k8s" / "overlays" / overlay, cwd=project, check=False)


def snapshot(project):
    """Every file's bytes, mode and modification time: what "changes nothing" compares."""
    state = {}
    for path in sorted(project.rglob("*")):
        if ".git" in path.relative_to(project).parts or not path.is_file():
            continue
        info = path.stat()
        state[str(path.relative_to(project))] = (path.read_bytes(), info.st_mode, info.st_mtime_ns)
    return state


def env_keys(text):
    return [line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")]


def hub_container(objects):
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


# --- 1. Secrets in a fresh clone ---------------------------------------------------------


@pytest.mark.parametrize("authenticator", SECRETS_NEEDED)
def test_env_file_fresh_clone_init_secrets_then_every_overlay_renders(bake, tmp_path, authenticator):
    clone = git_clone(bake(authenticator=authenticator, hub_secrets="env-file"), tmp_path)
    assert not list(clone.glob("k8s/overlays/*/hub-secrets.env")), "secrets files were committed"
    # What the teammate met before scripts/init-secrets existed.
    failed = render(clone, "development")
    assert failed.returncode != 0 and "hub-secrets.env" in failed.stderr

    # It works from any directory of the repository.
    first = run(clone / "scripts" / "init-secrets", cwd=clone / "k8s")
    example = (clone / "hub-secrets.env.example").read_text()
    for overlay in OVERLAYS:
        secrets = clone / "k8s" / "overlays" / overlay / "hub-secrets.env"
        assert f"init-secrets: created k8s/overlays/{overlay}/hub-secrets.env (mode 600" in first.stdout
        assert secrets.stat().st_mode & 0o777 == 0o600
        text = secrets.read_text()
        assert env_keys(text) == env_keys(example)
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        if authenticator == "dummy":
            assert len(values["JUPYTERHUB_USER_PASSWORD"]) >= 8
            assert len(values["JUPYTERHUB_ADMIN_PASSWORD"]) >= 32
        elif authenticator == "native":
            assert len(values["JUPYTERHUB_ADMIN_PASSWORD"]) >= 32
        else:
            assert values["OAUTH_CLIENT_ID"] == values["OAUTH_CLIENT_SECRET"] == ""
            assert "left empty: OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET" in first.stdout
        result = render(clone, overlay)
        assert result.returncode == 0, result.stderr
        secret = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Secret")
        assert sorted(secret["data"]) == sorted(env_keys(example))
    if authenticator in ("dummy", "native"):
        stated = {"dummy": "JUPYTERHUB_USER_PASSWORD, JUPYTERHUB_ADMIN_PASSWORD", "native": "JUPYTERHUB_ADMIN_PASSWORD"}
        assert f"random {stated[authenticator]})" in first.stdout
        files = [clone / "k8s" / "overlays" / o / "hub-secrets.env" for o in OVERLAYS]
        assert files[0].read_text() != files[1].read_text(), "every file gets its own passwords"
    assert run("git", "status", "--porcelain", cwd=clone).stdout == "", "the new files are git-ignored"

    # A second run changes nothing, and says so.
    before = snapshot(clone)
    second = run(clone / "scripts" / "init-secrets", cwd=clone)
    assert snapshot(clone) == before
    assert [line.split(" (")[0] for line in second.stdout.splitlines()] == [
        f"init-secrets: kept k8s/overlays/{overlay}/hub-secrets.env" for overlay in OVERLAYS
    ]

    # A filled-in file is never overwritten; only the missing one is made.
    development = clone / "k8s" / "overlays" / "development" / "hub-secrets.env"
    development.write_text(development.read_text() + "# edited by hand\n")
    edited = development.read_bytes()
    (clone / "k8s" / "overlays" / "production" / "hub-secrets.env").unlink()
    third = run(clone / "scripts" / "init-secrets", cwd=clone)
    assert development.read_bytes() == edited
    assert "created k8s/overlays/production/hub-secrets.env" in third.stdout


@pytest.mark.parametrize("authenticator", SECRETS_NEEDED)
def test_existing_secret_fresh_clone_renders_with_no_step(bake, tmp_path, authenticator):
    project = bake(authenticator=authenticator, hub_secrets="existing-secret", namespace="team-hub")
    clone = git_clone(project, tmp_path)
    assert not (clone / "scripts" / "init-secrets").exists()
    for overlay in OVERLAYS:
        result = render(clone, overlay)
        assert result.returncode == 0, result.stderr
        objects = [d for d in yaml.safe_load_all(result.stdout) if d]
        assert not [o for o in objects if o["kind"] == "Secret"], "the repository must not make the Secret"
        # Not optional: a missing Secret stops the pod with CreateContainerConfigError
        # ('secret "hub-secrets" not found'), which the README tells where to find.
        # Each hub its own Secret: production hub-secrets, development hub-secrets-dev.
        name = {"production": "hub-secrets", "development": "hub-secrets-dev"}[overlay]
        assert hub_container(objects)["envFrom"] == [{"secretRef": {"name": name, "optional": False}}]

    # The README's command makes a Secret with the keys the authenticator needs.
    readme = (clone / "README.md").read_text()
    section = readme.split("## Secrets", 1)[1].split("\n## ", 1)[0]
    needed = re.findall(r'require_env\(\s*"([A-Z_]+)"', (clone / "hub-config/authenticator_config.py").read_text())
    for key in needed:
        assert f"| `{key}` | required" in section, key
    for text in ("CreateContainerConfigError", 'secret "hub-secrets" not found', "describe pod", "get events",
                 "kubeseal", "ExternalSecret", "ksops", "logs deployment/hub"):
        assert text in section, text
    command = "kubectl -n team-hub create secret generic hub-secrets --from-env-file=hub-secrets.env"
    assert command in section
    env_file = clone / "hub-secrets.env"
    env_file.write_text(
        "".join(f"{line}value-for-{line[:-1].lower()}-0123456789abcdef0123456789\n" if line.endswith("=") else line + "\n"
                for line in (clone / "hub-secrets.env.example").read_text().splitlines())
    )
    assert run("git", "check-ignore", "-q", "hub-secrets.env", cwd=clone, check=False).returncode == 0
    made = run("bash", "-c", command + " --dry-run=client -o json", cwd=clone)
    secret = json.loads(made.stdout)
    assert secret["metadata"] == {"name": "hub-secrets", "namespace": "team-hub"} | (
        {"creationTimestamp": None} if "creationTimestamp" in secret["metadata"] else {}
    )
    assert set(needed) <= set(secret["data"])


def test_existing_secret_authenticator_without_secrets_has_nothing_to_do(bake):
    project = bake(authenticator="tmp", hub_secrets="existing-secret")
    assert not (project / "scripts" / "init-secrets").exists()
    assert not (project / "hub-secrets.env.example").exists()
    objects = [d for d in yaml.safe_load_all(render(project, "production").stdout) if d]
    assert "envFrom" not in hub_container(objects)


# --- 2. scripts/check --------------------------------------------------------------------


@pytest.fixture(scope="session")
def check_env():
    """The environment scripts/check runs in: one tools venv for every run (CHECK_VENV).

    scripts/check --install-tools makes it (install-test-tools did already, normally).
    """
    venv = Path(os.environ.get("CHECK_VENV") or TOOLS / "check-venv")
    venv.parent.mkdir(parents=True, exist_ok=True)
    # kubectl, the one prerequisite, from wherever the tests found it.
    kubectl_dir = str(Path(need_tool("kubectl")).parent)
    env = dict(os.environ, CHECK_VENV=str(venv), PATH=f"{kubectl_dir}{os.pathsep}{os.environ['PATH']}")
    with open(f"{venv}.lock", "w") as lock:  # xdist workers: one installs, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        run(sys.executable, TEMPLATE_CHECK, "--install-tools", cwd=ROOT, env=env)
    return env


def check(project, env):
    return run(project / "scripts" / "check", cwd=project, env=env, check=False)


CHECK_OK = "check: ok: 2 overlays render and are valid for Kubernetes 1.25.0 and 1.37.0"


@pytest.mark.slow
# Every combination of the matrix, the choices of what users get among themselves included (conftest.FEATURES).
@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_check_passes_on_every_combination(bake, check_env, combo):
    """scripts/check judges each input on its own (an overlay from k8s/, skaffold.yaml
    against the renders, the Dockerfile, each Python file), so it runs once per distinct
    input: on this combination only if it holds a file, or a k8s/ tree, that no earlier
    run has seen; otherwise the verdicts of the runs that saw them stand for it."""
    project = bake(**combo)

    def judge():
        result = check(project, check_env)
        return {"ok": result.returncode == 0 and result.stdout.startswith(CHECK_OK), "output": result.stdout + result.stderr}

    units = project_units(project)
    verdicts = judge_once(session_bakery().shared / "check-verdicts", units, judge, combo_id(combo))
    failed = {unit: v for unit, v in verdicts.items() if not (v["verdict"].get("ok"))}
    assert not failed, "\n".join(
        f"{unit}: scripts/check on {v['who']}: {v['verdict'].get('output') or v['verdict'].get('error')}"
        for unit, v in failed.items()
    )


def test_judge_once_runs_for_new_inputs_only_and_spreads_failures(tmp_path):
    """The bookkeeping behind the test above: a run for each new input, none for seen ones,
    and a failure reaches every project that holds the failing input."""
    runs = []

    def judge(verdict):
        return lambda: runs.append(verdict) or verdict

    first = judge_once(tmp_path, {"a": "1", "b": "1"}, judge({"ok": True}), "first")
    assert runs == [{"ok": True}] and {v["who"] for v in first.values()} == {"first"}
    judge_once(tmp_path, {"a": "1", "b": "1"}, judge({"ok": False}), "same inputs")
    assert len(runs) == 1, "a run although every input had a verdict"
    mixed = judge_once(tmp_path, {"a": "1", "b": "2"}, judge({"ok": False}), "new b")
    assert len(runs) == 2 and mixed["a"]["who"] == "first" and mixed["b"]["who"] == "new b"
    later = judge_once(tmp_path, {"a": "2", "b": "2"}, judge({"ok": True}), "new a")
    assert later["b"]["verdict"] == {"ok": False}, "a seen failing input passed for another project"

    def broken():
        raise RuntimeError("the judge broke")

    crashed = judge_once(tmp_path, {"c": "1"}, broken, "crash")
    assert "the judge broke" in crashed["c"]["verdict"]["error"]


def test_project_units_name_every_file_and_the_k8s_tree_once(bake):
    project = bake()
    units = project_units(project)
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    assert set(units) == {f for f in files if not f.startswith("k8s/") and f != "README.md"} | {"k8s/", "(file names)"}
    other = bake(authenticator="github", hub_secrets="existing-secret")  # no secrets files
    changed = {u for u, d in project_units(other).items() if units.get(u) != d}
    assert {"hub-config/authenticator_config.py", "k8s/", "(file names)"} <= changed, changed


@pytest.mark.parametrize(
    "answers", [{"authenticator": "dummy"}, {"authenticator": "github", "hub_secrets": "existing-secret"}], ids=str
)
def test_check_passes_in_a_fresh_clone(bake, check_env, tmp_path, answers):
    """CI's view: a clone without the git-ignored secrets files; nothing is written into it."""
    clone = git_clone(bake(**answers), tmp_path)
    result = check(clone, check_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run("git", "status", "--porcelain", "--ignored", cwd=clone).stdout == ""


def replace(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# name -> (how to break the project, a line scripts/check must print)
BREAKAGES = {
    "overlay deploys another image": (
        lambda p: replace(p / "k8s/overlays/production/kustomization.yaml", "newName: \"", "newName: \"other.example.org/"),
        "check: k8s/overlays/production: deploys other.example.org/jupyterhub-registry.127.0.0.1.nip.io/jupyterhub,"
        " not Skaffold's artifact jupyterhub-registry.127.0.0.1.nip.io/jupyterhub",
    ),
    "overlay deploys another tag": (
        lambda p: replace(p / "k8s/overlays/production/kustomization.yaml", 'newTag: "production"', 'newTag: "development"'),
        "check: skaffold.yaml: profile production: tags jupyterhub-registry.127.0.0.1.nip.io/jupyterhub 'production',"
        " but k8s/overlays/production deploys",
    ),
    "profile names a missing overlay": (
        lambda p: replace(p / "skaffold.yaml", "- k8s/overlays/production", "- k8s/overlays/prod"),
        "check: skaffold.yaml: profile production: names k8s/overlays/prod, which is not an overlay",
    ),
    "broken YAML in the base": (
        lambda p: replace(p / "k8s/base/hub-service.yaml", "kind: Service", "kind: Service\n  bad: [unclosed"),
        "check: k8s/overlays/development: kubectl kustomize failed:",
    ),
    "broken YAML in skaffold.yaml": (
        lambda p: replace(p / "skaffold.yaml", "kind: Config", "kind: Config\n  bad: [unclosed"),
        "check: skaffold.yaml:",
    ),
    "field Kubernetes does not know": (
        lambda p: replace(p / "k8s/overlays/production/hub-deployment-patch.yaml", "spec:", "spec:\n  replica: 1"),
        "check: k8s/overlays/production: Deployment/hub: invalid for Kubernetes 1.25.0",
    ),
    "Python syntax error": (
        lambda p: replace(p / "hub-config/jupyterhub_config.py", "c = get_config()", "c = get_config(("),
        "check: hub-config/jupyterhub_config.py:",
    ),
    "users' memory limit beyond the overcommit ratio": (
        lambda p: replace(p / "hub-config/jupyterhub_config.py", '"mem_limit": "4G"}', '"mem_limit": "8G"}'),
        "check: hub-config/jupyterhub_config.py: USER_RESOURCES: ",
    ),
    "Dockerfile lint error": (
        lambda p: replace(p / "Dockerfile", "WORKDIR /srv/jupyterhub", "RUN cd /srv && pip install jupyterhub\nWORKDIR /srv/jupyterhub"),
        "check: hadolint Dockerfile:",
    ),
}


def test_check_holds_the_profiles_to_the_rules_the_hub_starts_with(bake, check_env, tmp_path):
    """A team edits hub-config/profiles.yaml: scripts/check finds what would stop the hub at
    its next start (hub_helpers.load_profiles), in the hub's own words, before a deploy."""
    project = tmp_path / "project"
    shutil.copytree(bake(profiles="profile_list"), project, symlinks=True)
    assert check(project, check_env).returncode == 0
    profiles = yaml.safe_load((project / "hub-config/profiles.yaml").read_text())
    large = next(p for p in profiles["profiles"] if not p.get("default") and "image" in p["kubespawner_override"])
    large["kubespawner_override"]["mem_limit"] = "64G"
    (project / "hub-config/profiles.yaml").write_text(yaml.safe_dump(profiles))
    result = check(project, check_env)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith(f"check: hub-config: profiles.yaml: ") and large["slug"] in line and "mem_limit" in line, line


# build_user_image=yes: the same, for what the users' image adds.
USER_IMAGE_BREAKAGES = {
    "users' Dockerfile lint error": (
        lambda p: replace(p / "user-image/Dockerfile", "USER 1000", "RUN pip install pandas\nUSER 1000"),
        "check: hadolint user-image/Dockerfile:",
    ),
    "overlay forgets the users' image": (
        lambda p: replace(p / "k8s/overlays/production/kustomization.yaml", "  - ../../components/user-image\n", ""),
        "check: k8s/overlays/production: never names jupyterhub-registry.127.0.0.1.nip.io/jupyterhub-user,"
        " which skaffold.yaml builds",
    ),
    "users' image with another tag": (
        lambda p: replace(p / "k8s/overlays/development/kustomization.yaml", 'user"\n    newTag: "development"', 'user"\n    newTag: "production"'),
        "check: skaffold.yaml: (no profile): tags jupyterhub-registry.127.0.0.1.nip.io/jupyterhub-user 'development',"
        " but k8s/overlays/development deploys",
    ),
}


@pytest.mark.parametrize(
    "answers, name",
    [({}, name) for name in BREAKAGES] + [({"build_user_image": "yes"}, name) for name in USER_IMAGE_BREAKAGES],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_check_fails_on_planted_breakage(bake, check_env, tmp_path, answers, name):
    project = tmp_path / "project"
    shutil.copytree(bake(**answers), project, symlinks=True)
    assert check(project, check_env).returncode == 0
    breakage, expected = {**BREAKAGES, **USER_IMAGE_BREAKAGES}[name]
    breakage(project)
    result = check(project, check_env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("check: ") for line in lines), result.stdout
    assert any(line.startswith(expected) for line in lines), f"expected {expected!r} in:\n{result.stdout}"
    assert f"check: {len(lines)} problem(s)" in result.stderr


# --- 2b. The pre-puller pulls what users run (pre_puller=yes) -------------------------------

# hub-config/profiles.yaml as the profiles option writes it (the profiles contract: KubeSpawner's
# profile_list under `profiles:`; a profile without an image runs the users' image). Put into a
# copy of the template, it stands for that option here.
PROFILES = """\
profiles:
  - display_name: "Default"
    slug: "default"
    default: true
    kubespawner_override: {cpu_limit: 2, mem_limit: "4G"}
  - display_name: "Larger, the users' image named again"
    slug: "large"
    kubespawner_override:
      cpu_guarantee: 1
      cpu_limit: 4
      mem_guarantee: "4G"
      mem_limit: "16G"
      image: "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"
      tolerations: [{key: hub.jupyter.org/dedicated, operator: Equal, value: user, effect: NoSchedule}]
  - display_name: "GPU (PyTorch)"
    slug: "gpu"
    kubespawner_override:
      image: "quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06"
      extra_resource_limits: {nvidia.com/gpu: "1"}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  - display_name: "R, by digest"
    slug: "r-stats"
    kubespawner_override:
      image: "quay.io/jupyter/r-notebook:2025-01-06@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
"""
PROFILE_PULLS = [
    ("pull-user-image", "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"),
    ("pull-profile-gpu", "quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06"),
    ("pull-profile-r-stats", "quay.io/jupyter/r-notebook:2025-01-06@sha256:" + "0123456789abcdef" * 4),
]


def bake_with_profiles(tmp_path, **answers):
    """A project baked with profiles=profile_list from a copy of the template whose
    hub-config/profiles.yaml is PROFILES."""
    from conftest import run_cookiecutter
    from support.bakery import copy_template, hermetic_env

    template = copy_template(tmp_path / "template")
    (template / "{{cookiecutter.project}}" / "hub-config" / "profiles.yaml").write_text(PROFILES)
    out = tmp_path / "out"
    out.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    answers = {"project": "with-profiles", "profiles": "profile_list", "pre_puller": "yes", **answers}
    args = [f"{k}={v}" for k, v in answers.items()]
    result = run_cookiecutter(*args, cwd=out, env=hermetic_env(scratch), template=template)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "with-profiles"


PROFILE_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},  # the template's own: covers the GPU profile's
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]


def pre_puller_pulls(project):
    daemonset = yaml.safe_load((project / "k8s/components/pre-puller/pre-puller-daemonset.yaml").read_text())
    return [(c["name"], c["image"]) for c in daemonset["spec"]["template"]["spec"]["initContainers"]]


def test_the_pre_puller_pulls_every_profiles_own_image_once_after_the_users(tmp_path):
    """post_gen reads hub-config/profiles.yaml: each profile's own image gets an initContainer like
    the users' image's (a profile without one, or naming the users' image, adds none), and each
    toleration of a profile that the pre-puller's do not cover joins them."""
    project = bake_with_profiles(tmp_path)
    assert pre_puller_pulls(project) == PROFILE_PULLS
    daemonset = yaml.safe_load((project / "k8s/components/pre-puller/pre-puller-daemonset.yaml").read_text())
    assert daemonset["spec"]["template"]["spec"]["tolerations"] == PROFILE_TOLERATIONS
    daemonset = yaml.safe_load((project / "k8s/components/pre-puller/pre-puller-daemonset.yaml").read_text())
    first, *others = daemonset["spec"]["template"]["spec"]["initContainers"]
    for other in others:
        assert {k: v for k, v in other.items() if k not in ("name", "image")} == {k: v for k, v in first.items() if k not in ("name", "image")}
    for overlay in OVERLAYS:
        assert render(project, overlay).returncode == 0


def test_check_passes_with_the_pre_puller(bake, check_env, tmp_path):
    """pre_puller=yes beside proxy=separate (two Components), and with profiles of their own images."""
    for project in (bake(pre_puller="yes", proxy="separate"), bake_with_profiles(tmp_path)):
        result = check(project, check_env)
        assert result.returncode == 0 and result.stdout.startswith(CHECK_OK), result.stdout + result.stderr
        assert "the pre-puller pulls the users' images" in result.stdout


def test_check_names_each_image_the_pre_puller_misses_or_pulls_for_nobody(check_env, tmp_path):
    """A team adds a profile (an image and a node pool of its own) and removes another, Renovate
    bumps USER_IMAGE alone, an overlay drops the Component: one line each."""
    project = bake_with_profiles(tmp_path)
    daemonset = "check: k8s/components/pre-puller/pre-puller-daemonset.yaml: "
    profiles = yaml.safe_load(PROFILES)
    profiles["profiles"] = [p for p in profiles["profiles"] if p["slug"] != "gpu"]
    highmem = {"key": "example.org/highmem", "operator": "Exists", "effect": "NoSchedule"}
    profiles["profiles"].append({"display_name": "Julia", "slug": "julia", "kubespawner_override": {
        "image": "quay.io/jupyter/julia-notebook:2025-01-06", "tolerations": [highmem]}})  # fmt: skip
    (project / "hub-config/profiles.yaml").write_text(yaml.safe_dump(profiles))
    replace(project / "hub-config/jupyterhub_config.py", 'USER_IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"', 'USER_IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.5.0"')
    replace(project / "k8s/overlays/production/kustomization.yaml", "  - ../../components/pre-puller\n", "")
    result = check(project, check_env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        daemonset + "does not pull quay.io/jupyter/julia-notebook:2025-01-06 (the profile julia in hub-config/profiles.yaml): add an initContainer for it",
        daemonset + "does not pull quay.io/jupyterhub/k8s-singleuser-sample:4.5.0 (USER_IMAGE in hub-config/jupyterhub_config.py): add an initContainer for it",
        daemonset + "pulls quay.io/jupyter/pytorch-notebook:cuda12-2025-01-06, which neither USER_IMAGE nor a profile names: remove its initContainer",
        daemonset + f"does not tolerate {json.dumps(highmem, sort_keys=True)}, which the profile julia tolerates: its nodes would not get the images;"
        " add the toleration to the pre-puller",
        "check: k8s/overlays/production: deploys no pre-puller: list ../../components/pre-puller under components:",
    ], result.stdout


def test_check_says_when_kubectl_is_missing(bake, check_env):
    python = Path(check_env["CHECK_VENV"]) / "bin" / "python"
    env = dict(check_env, PATH=str(Path(python).parent))
    result = run(python, bake() / "scripts" / "check", cwd=bake(), env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["check: kubectl: not found; install it (https://kubernetes.io/docs/tasks/tools/)"]


def test_check_installs_its_tools_on_first_use_and_they_are_git_ignored(bake):
    """The default venv is .venv-check/, which git ignores; the pins are the template's."""
    project = bake()
    assert "\n.venv-check/\n" in (project / ".gitignore").read_text()
    pins = (project / "scripts" / "check-requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    for line in pins.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line), line
            assert line in dev.splitlines(), f"{line}: keep the template's own tools at the same pins"


# --- 3. The CI workflow --------------------------------------------------------------------


def workflow(project):
    return project / ".github" / "workflows" / "check.yaml"


def test_workflow_is_valid_pinned_and_least_privileged(bake):
    project = bake()
    path = workflow(project)
    result = run(need_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", path, cwd=project, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(need_tool("zizmor"), "--offline", "--persona=pedantic", "--no-progress", path, cwd=project, check=False)
    assert result.returncode == 0 and "No findings to report" in result.stdout, result.stdout + result.stderr

    text = path.read_text()
    flow = yaml.safe_load(text)
    assert set(flow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    assert flow["permissions"] == {"contents": "read"}
    (job,) = flow["jobs"].values()
    assert job["timeout-minutes"] <= 30
    assert "permissions" not in job
    uses = re.findall(r"uses: (\S+)@(\S+) # (v\d+\.\d+\.\d+)$", text, re.M)
    assert len(uses) == text.count("uses:") >= 1, "every action is pinned by commit, with its version"
    for _, sha, _ in uses:
        assert re.fullmatch(r"[0-9a-f]{40}", sha), sha
    checkout = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert [step["run"] for step in job["steps"] if "run" in step] == ["scripts/check"]


def test_zizmor_finds_a_planted_weakness(bake, tmp_path):
    """An action pinned by tag and credentials left in the checkout: zizmor says so."""
    path = tmp_path / ".github" / "workflows" / "check.yaml"
    path.parent.mkdir(parents=True)
    text = workflow(bake()).read_text()
    text = re.sub(r"actions/checkout@[0-9a-f]{40} # (v[0-9.]+)", r"actions/checkout@\1", text)
    without = text.replace("        with:\n          persist-credentials: false\n", "")
    assert without != text
    path.write_text(without)
    result = run(need_tool("zizmor"), "--offline", "--no-progress", path, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout and "artipacked" in result.stdout, result.stdout


# --- 4. Renovate ---------------------------------------------------------------------------


def renovate_tool(name):
    path = RENOVATE.parent / ".bin" / name
    if not path.exists():
        pytest.skip(f"{path} is missing (scripts/install-test-tools installs Renovate)")
    return path


def validate_renovate(project):
    validator = renovate_tool("renovate-config-validator")
    # Without arguments it finds renovate.json where Renovate does, and reads it as repository config.
    return run(validator, "--strict", cwd=project, env=dict(os.environ, LOG_LEVEL="info"), check=False)


def test_renovate_config_is_valid(bake):
    project = bake()
    result = validate_renovate(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validating renovate.json" in result.stdout + result.stderr
    result = run(need_tool("check-jsonschema"), "--builtin-schema", "vendor.renovate", project / "renovate.json", cwd=project, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renovate_validator_rejects_a_planted_mistake(bake, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    config = json.loads((bake() / "renovate.json").read_text())
    config["customManagers"][0]["datasourceTemplate"] = "dockerr"
    config["packageRules"][0]["matchPackageName"] = "typo"
    (project / "renovate.json").write_text(json.dumps(config))
    result = validate_renovate(project)
    assert result.returncode != 0, result.stdout + result.stderr


def renovate_finds(project):
    """What Renovate's own managers extract from the project (tests/renovate_extract.mjs)."""
    renovate_tool("renovate")
    result = run(need_tool("node"), ROOT / "tests" / "renovate_extract.mjs", RENOVATE, project, cwd=project)
    return json.loads(result.stdout)


def only_dep(found, manager):
    (entry,) = [e for e in found if e["manager"] == manager]
    (dep,) = entry["deps"]
    return entry["file"], dep


def the_line(project, file, start):
    (line,) = [line for line in (project / file).read_text().splitlines() if line.startswith(start)]
    return line


USER_IMAGE_DIGEST = "quay.io/jupyter/scipy-notebook:2025-01-06@sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "answers",
    [{}, {"user_image": USER_IMAGE_DIGEST, "hub_version": "4.3.0"}, {"user_image": "localhost:5000/team/notebook:1.2"},
     {"profiles": "profile_list"}],
    ids=["default", "digest", "registry-port", "profiles"],
)
def test_renovate_managers_match_exactly_the_intended_lines(bake, answers):
    project = bake(**answers)
    found = renovate_finds(project)
    hub_version = answers.get("hub_version", "4.4.0")
    user_image = answers.get("user_image", f"quay.io/jupyterhub/k8s-singleuser-sample:{hub_version}")

    # Built-in managers where they fit: the dockerfile manager follows ARG K8S_HUB_VERSION
    # into the FROM lines; pip_requirements reads both requirements files; github-actions the workflow.
    (dockerfile,) = [e for e in found if e["manager"] == "dockerfile"]
    hub = [d for d in dockerfile["deps"] if d["depName"] == "quay.io/jupyterhub/k8s-hub"]
    assert hub and all(d["currentValue"] == hub_version for d in hub)
    assert {d["replaceString"] for d in hub} == {the_line(project, "Dockerfile", "ARG K8S_HUB_VERSION=") + "\n"}
    pip = {e["file"]: [(d["depName"], d["currentValue"]) for d in e["deps"]] for e in found if e["manager"] == "pip_requirements"}
    assert set(pip) == {"requirements.txt", "scripts/check-requirements.txt"}
    assert ("kubernetes-validate", "==1.37.0") in pip["scripts/check-requirements.txt"]
    actions = [e for e in found if e["manager"] == "github-actions"]
    assert [e["file"] for e in actions] == [".github/workflows/check.yaml"]
    assert any(d["depName"] == "actions/checkout" and len(d.get("currentDigest", "")) == 40 for d in actions[0]["deps"])
    assert not [e for e in found if e["manager"] == "kustomize"], "the overlays' own image is no dependency"
    assert not [e for e in found if e["manager"] == "kubernetes"], "pre_puller=no: no manifest for the kubernetes manager"

    # Each custom manager: exactly one file, one dependency, the line it is meant for.
    config = json.loads((project / "renovate.json").read_text())
    expected = [
        ("skaffold.yaml", "          K8S_HUB_VERSION:", "quay.io/jupyterhub/k8s-hub", hub_version),
        ("Dockerfile", "ARG CHP_VERSION_BOOKWORM=", "configurable-http-proxy", dockerfile_arg(project, "CHP_VERSION_BOOKWORM")),
        ("Dockerfile", "ARG CHP_VERSION_TRIXIE=", "configurable-http-proxy", dockerfile_arg(project, "CHP_VERSION_TRIXIE")),
        ("hub-config/jupyterhub_config.py", "USER_IMAGE = ", *user_image.split("@")[0].rsplit(":", 1)),
        ("skaffold.yaml", "        image: ", "ghcr.io/osscontainertools/kaniko", "v1.28.3"),
    ]
    assert len(config["customManagers"]) == len(expected) + 1
    # The last: each profile's own image in hub-config/profiles.yaml, with profiles=profile_list
    # only (the file is not generated otherwise), every image: line and nothing else.
    profiles = [e for e in found if e["manager"] == f"customManagers[{len(expected)}]"]
    if answers.get("profiles") == "profile_list":
        [entry] = profiles
        assert entry["file"] == "hub-config/profiles.yaml"
        lines = [line for line in (project / entry["file"]).read_text().splitlines() if line.strip().startswith("image:")]
        images = [p["kubespawner_override"]["image"] for p in yaml.safe_load((project / entry["file"]).read_text())["profiles"]
                  if "image" in p["kubespawner_override"]]  # fmt: skip
        assert len(images) >= 2 and len(lines) == len(images), lines
        assert [d["replaceString"].strip("\n") for d in entry["deps"]] == lines
        assert [f"{d['depName']}:{d['currentValue']}" for d in entry["deps"]] == images
    else:
        assert profiles == [], profiles
    for index, (file, start, name, value) in enumerate(expected):
        where, dep = only_dep(found, f"customManagers[{index}]")
        assert where == file
        assert (dep["depName"], dep["currentValue"]) == (name, value)
        assert dep["replaceString"].strip("\n") == the_line(project, file, start)
        if "@" in user_image and file == "hub-config/jupyterhub_config.py":
            assert dep["currentDigest"] == user_image.split("@")[1]


def docker_deps(found, manager, file):
    return [d for e in found if e["manager"] == manager and e["file"] == file for d in e["deps"] if d.get("datasource") == "docker"]


def test_renovate_moves_the_pre_pullers_images_with_the_users_image(bake, tmp_path):
    """pre_puller=yes: Renovate's kubernetes manager reads the DaemonSet's images, and the group
    rule puts its copy of the users' image in the pull request that bumps USER_IMAGE (the pause
    image gets pull requests of its own); without the rule it would not; the placeholder of a
    built users' image is no dependency."""
    project = bake(pre_puller="yes")
    found = renovate_finds(project)
    daemonset = "k8s/components/pre-puller/pre-puller-daemonset.yaml"
    assert {e["file"] for e in found if e["manager"] == "kubernetes"} == {
        "k8s/components/pre-puller/kustomization.yaml", daemonset, "k8s/components/pre-puller/pre-puller-networkpolicy.yaml"}
    pulled = {d["depName"]: d for d in docker_deps(found, "kubernetes", daemonset)}
    assert set(pulled) == {"quay.io/jupyterhub/k8s-singleuser-sample", "registry.k8s.io/pause"}
    [user] = docker_deps(found, "customManagers[3]", "hub-config/jupyterhub_config.py")
    copy = pulled["quay.io/jupyterhub/k8s-singleuser-sample"]
    assert (copy["currentValue"], copy["replaceString"]) == ("4.4.0", "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0")
    assert user["rules"]["groupName"] == copy["rules"]["groupName"] == "users' images"
    assert pulled["registry.k8s.io/pause"]["rules"]["groupName"] is None

    ungrouped = tmp_path / "ungrouped"
    shutil.copytree(project, ungrouped, symlinks=True)
    config = json.loads((ungrouped / "renovate.json").read_text())
    [group] = [rule for rule in config["packageRules"] if rule.get("groupName") == "users' images"]
    group["matchFileNames"].remove(daemonset)
    (ungrouped / "renovate.json").write_text(json.dumps(config))
    copies = {d["depName"]: d["rules"] for d in docker_deps(renovate_finds(ungrouped), "kubernetes", daemonset)}
    assert copies["quay.io/jupyterhub/k8s-singleuser-sample"]["groupName"] is None, "the group rule is not what groups them"

    built = tmp_path / "built"
    shutil.copytree(project, built, symlinks=True)
    replace(built / daemonset, 'image: "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"', 'image: "jupyterhub-user"')
    copies = {d["depName"]: d["rules"] for d in docker_deps(renovate_finds(built), "kubernetes", daemonset)}
    assert copies["jupyterhub-user"]["enabled"] is False


def test_renovate_compares_jupyter_date_tags_as_dates(bake):
    """The packageRule for Jupyter Docker Stacks' date tags, through Renovate's own versioning
    code: a later week is an update, a CUDA build stays a CUDA build; Docker's versioning
    (Renovate's default for images) sees no update at all."""
    renovate_tool("renovate")
    config = json.loads((bake(profiles="profile_list") / "renovate.json").read_text())
    [rule] = [r for r in config["packageRules"] if r.get("versioning", "").startswith("regex:")]
    images = [p["kubespawner_override"]["image"] for p in yaml.safe_load((bake(profiles="profile_list") / "hub-config/profiles.yaml").read_text())["profiles"]
              if "image" in p["kubespawner_override"]]  # fmt: skip
    pattern = rule["versioning"][len("regex:"):]
    program = f"""
const regex = await import({json.dumps(str(RENOVATE / "dist/modules/versioning/regex/index.js"))});
const docker = (await import({json.dumps(str(RENOVATE / "dist/modules/versioning/docker/index.js"))})).api;
const v = new regex.RegExpVersioningApi({json.dumps(pattern)});
const [current, later, other] = JSON.parse(process.argv[1]);
console.log(JSON.stringify([v.isValid(current), v.isCompatible(later, current) && v.isGreaterThan(later, current),
  v.isCompatible(other, current), docker.isCompatible(later, current) && docker.isGreaterThan(later, current)]));
"""
    for image in images:
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert re.fullmatch(rule["matchCurrentValue"].strip("/"), tag), tag
        later = tag[:-10] + "2099-01-05"
        other = ("2099-01-05" if tag.startswith("cuda") else "cuda12-2099-01-05")
        result = run(need_tool("node"), "--input-type=module", "-e", program, json.dumps([tag, later, other]), cwd=ROOT)
        assert json.loads(result.stdout) == [True, True, False, False], (tag, result.stdout)


@pytest.mark.parametrize("user_image", ["quay.io/jupyterhub/k8s-singleuser-sample:4.4.0", USER_IMAGE_DIGEST], ids=["tag", "digest"])
def test_renovate_keeps_the_built_users_images_base_pinned(bake, user_image):
    """build_user_image=yes: the users' image is built from user-image/Dockerfile, whose FROM
    the dockerfile manager pins (tag and digest alike); jupyterhub_config.py names no image for
    the USER_IMAGE manager (the overlay's images: entry does, for the image built here, which is
    no dependency), and every other manager still finds its one line."""
    project = bake(build_user_image="yes", user_image=user_image)
    found = renovate_finds(project)
    dockerfiles = {e["file"]: e["deps"] for e in found if e["manager"] == "dockerfile"}
    assert set(dockerfiles) == {"Dockerfile", "user-image/Dockerfile"}
    name, _, digest = user_image.partition("@")
    # Besides the `# syntax=` line's frontend, as in the hub's Dockerfile: the base.
    assert {d["depName"] for d in dockerfiles["user-image/Dockerfile"]} == {"docker/dockerfile", name.rsplit(":", 1)[0]}
    (base,) = [d for d in dockerfiles["user-image/Dockerfile"] if d["depName"] != "docker/dockerfile"]
    assert (base["depName"], base["currentValue"]) == tuple(name.rsplit(":", 1))
    assert base.get("currentDigest", "") == digest
    assert base["replaceString"] == user_image
    assert the_line(project, "user-image/Dockerfile", "FROM ") == f"FROM {user_image}"
    config = json.loads((project / "renovate.json").read_text())
    # (A manager whose file pattern fits user-image/Dockerfile too but finds no line there reports it without deps.)
    by_manager = {e["manager"]: e for e in found if e["deps"]}
    for index, manager in enumerate(config["customManagers"]):
        matched = by_manager.get(f"customManagers[{index}]")
        if "jupyterhub_config" in json.dumps(manager["managerFilePatterns"]):
            assert matched is None, matched
        elif "profiles" in json.dumps(manager["managerFilePatterns"]):
            assert matched is None, matched  # profiles=none: no hub-config/profiles.yaml
        elif "kaniko executor" in manager["description"]:
            # Both artifacts' executor, moved together.
            assert [d["depName"] for d in matched["deps"]] == ["ghcr.io/osscontainertools/kaniko"] * 2, matched
        else:
            assert matched and len(matched["deps"]) == 1, (index, matched)
    assert not [e for e in found if e["manager"] == "kustomize"], "the overlays' own images are no dependency"


def dockerfile_arg(project, name):
    """The default of an ARG of the baked Dockerfile."""
    return re.search(rf"^ARG {name}=(\S+)$", (project / "Dockerfile").read_text(), re.M).group(1)


# --- 6. The README's Day two section ------------------------------------------------------


@pytest.mark.parametrize("hub_secrets", ["env-file", "existing-secret"])
def test_day_two_section_names_what_exists(bake, hub_secrets):
    project = bake(hub_secrets=hub_secrets)
    readme = (project / "README.md").read_text()
    section = readme.split("## Day two", 1)[1].split("\n## ", 1)[0]
    for text in ("scripts/check", "skaffold run -p development", "scripts/smoke-test", "pvc_name_template", "renovate.json"):
        assert text in section, text
    assert ("scripts/init-secrets" in section) == (hub_secrets == "env-file")
    skaffold = yaml.safe_load((project / "skaffold.yaml").read_text())
    assert "development" in [p["name"] for p in skaffold["profiles"]]
    for script in ("check", *(["init-secrets"] if hub_secrets == "env-file" else [])):
        assert os.access(project / "scripts" / script, os.X_OK), script


def test_user_volume_names_are_pinned_to_kubespawner_7s_default(bake):
    """A KubeSpawner upgrade that changed its default must not orphan home directories."""
    from kubespawner import KubeSpawner

    config = (bake(user_storage="yes") / "hub-config/jupyterhub_config.py").read_text()
    (pinned, named) = re.findall(r'^\s*c\.KubeSpawner\.pvc_name_template = USER_OBJECT_PREFIX \+ "([^"]+)"$', config, re.M)
    assert pinned == KubeSpawner.pvc_name_template.default_value == "claim-{user_server}"
    # With named servers, the same name for a default server (test_hub.py holds it to that for
    # several user names), written with {servername}: KubeSpawner deletes a named server's claim
    # only then.
    assert named == "claim-{username}--{servername}" and re.search(r"^    if NAMED_SERVERS:\n(        #.*\n)*        c\.KubeSpawner\.pvc_name_template", config, re.M)
    (pod,) = re.findall(r'^c\.KubeSpawner\.pod_name_template = USER_OBJECT_PREFIX \+ "([^"]+)"$', config, re.M)
    assert pod == KubeSpawner.pod_name_template.default_value == "jupyter-{user_server}"
    # Production's prefix is empty: its names are KubeSpawner's own, as before the overlays split.
    objects = [d for d in yaml.safe_load_all(render(bake(user_storage="yes"), "production").stdout) if d]
    assert {e["name"]: e["value"] for e in hub_container(objects)["env"] if "value" in e}["HUB_USER_OBJECT_PREFIX"] == ""
