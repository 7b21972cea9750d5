"""The generated Dockerfile passes hadolint, and keeps the layer order that makes rebuilds cheap."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TEMPLATE, need_tool
from hubrunner import CHP_BIN

VARIANTS = [{}, {"authenticator": "github"}, {"authenticator": "native", "idle_culling": "no"}, {"hub_version": "4.3.0"}]


def hadolint(dockerfile, workdir):
    """hadolint on a copy of dockerfile, with nothing around it that could switch a rule off.

    hadolint reads a .hadolint.yaml from its working directory and from HOME (or
    XDG_CONFIG_HOME), HADOLINT_* variables from the environment, and `# hadolint
    ignore=` comments from the file. Here: a fresh directory, a fresh HOME, an
    explicit empty configuration, no HADOLINT_* variables, pragmas disabled, and
    every severity down to "style" fails. CompletedProcess; its output names the rules.
    """
    binary = need_tool("hadolint")
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True)
    config = workdir / "no-rules-off.yaml"
    config.write_text("{}\n", encoding="utf-8")
    shutil.copyfile(dockerfile, workdir / "Dockerfile")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(
        [binary, "--no-color", "--config", str(config), "--disable-ignore-pragma", "--failure-threshold", "style",
         "Dockerfile"],
        cwd=workdir, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_hadolint_passes(bake, variant, tmp_path):
    project = bake(**variant)
    result = hadolint(project / "Dockerfile", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint" not in (project / "Dockerfile").read_text().lower(), "no rule switched off inline"
    assert not list(project.rglob("*hadolint*")), "no rules switched off"


def test_hadolint_can_fail(tmp_path):
    result = hadolint(write(tmp_path / "src" / "Dockerfile", "FROM debian\nRUN apt-get install curl\n"), tmp_path / "lint")
    assert result.returncode != 0


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# An apt-get install without version pins (DL3008), and the ways hadolint offers to switch it off.
VIOLATION = """\
FROM debian:12
RUN apt-get update \\
 && apt-get install -y --no-install-recommends curl \\
 && rm -rf /var/lib/apt/lists/*
"""
PRAGMA = "# hadolint ignore=DL3008\n"
IGNORE_DL3008 = "ignored:\n  - DL3008\n"


def plain_hadolint(cwd, home, extra_env=None):
    """`hadolint Dockerfile` as someone runs it: from cwd, with that HOME."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **(extra_env or {})}
    return subprocess.run(
        [need_tool("hadolint"), "--no-color", "Dockerfile"], cwd=cwd, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60, check=False,
    )


def test_hadolint_reports_what_a_pragma_a_config_file_or_the_environment_would_silence(tmp_path, monkeypatch):
    """The planted fault: a `# hadolint ignore=` pragma, .hadolint.yaml in the working directory
    and in HOME, HADOLINT_IGNORE; each one alone silences a plain `hadolint Dockerfile`."""
    lines = VIOLATION.split("\n", 1)
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    assert plain_hadolint(write(tmp_path / "bare" / "Dockerfile", VIOLATION).parent, empty_home).returncode != 0

    silencers = {
        "pragma": (lines[0] + "\n" + PRAGMA + lines[1], {}, {}, {}),
        "cwd": (VIOLATION, {".hadolint.yaml": IGNORE_DL3008}, {}, {}),
        "home": (VIOLATION, {}, {".hadolint.yaml": IGNORE_DL3008}, {}),
        "xdg": (VIOLATION, {}, {".config/hadolint.yaml": IGNORE_DL3008}, {}),
        "env": (VIOLATION, {}, {}, {"HADOLINT_IGNORE": "DL3008"}),
    }
    for name, (dockerfile, cwd_files, home_files, env) in silencers.items():
        cwd, home = tmp_path / name / "cwd", tmp_path / name / "home"
        write(cwd / "Dockerfile", dockerfile)
        home.mkdir(parents=True)
        for path, text in cwd_files.items():
            write(cwd / path, text)
        for path, text in home_files.items():
            write(home / path, text)
        plain = plain_hadolint(cwd, home, env)
        assert plain.returncode == 0, f"{name}: the plant does not silence hadolint: {plain.stdout}"

    # All at once, in the environment of the test process itself.
    cwd, home = tmp_path / "all" / "cwd", tmp_path / "all" / "home"
    dockerfile = write(cwd / "Dockerfile", lines[0] + "\n" + PRAGMA + lines[1])
    write(cwd / ".hadolint.yaml", IGNORE_DL3008)
    write(home / ".hadolint.yaml", IGNORE_DL3008)
    write(home / ".config" / "hadolint.yaml", IGNORE_DL3008)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("HADOLINT_IGNORE", "DL3008")
    result = hadolint(dockerfile, tmp_path / "lint")
    assert result.returncode != 0 and "DL3008" in result.stdout, result.stdout + result.stderr


def test_layer_order_and_final_user(bake):
    dockerfile = (bake() / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    steps = [line.split()[0] for line in final_stage.splitlines() if re.match(r"^[A-Z]+ ", line)]
    text_order = [line for line in final_stage.splitlines() if line.startswith(("COPY", "RUN"))]
    requirements_copy = next(i for i, line in enumerate(text_order) if "requirements.txt" in line)
    proxy_copy = next(i for i, line in enumerate(text_order) if "/opt/chp" in line)
    assert proxy_copy < requirements_copy
    assert steps[-1] == "CMD" and "USER 1000" in final_stage
    assert "curl" not in dockerfile and "| bash" not in dockerfile and "| sh" not in dockerfile


def test_the_image_holds_software_only(bake):
    """The hub's configuration is not built in: it reaches the pod as a ConfigMap (so a setting
    changes without a build), and the build context (.dockerignore) leaves it out, so editing
    it never makes Skaffold rebuild. The Dockerfile copies requirements.txt and nothing else."""
    project = bake()
    dockerfile = (project / "Dockerfile").read_text()
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith(("COPY ", "ADD "))]
    from_context = [args for args in copies if not any(a.startswith("--from=") for a in args)]
    assert from_context == [["requirements.txt", "/tmp/requirements.txt"]], from_context
    config = sorted(p.name for p in (project / "hub-config").glob("*.py"))
    assert config == ["authenticator_config.py", "hub_helpers.py", "jupyterhub_config.py"], config
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    for name in config:
        assert name not in instructions.replace("/usr/local/etc/jupyterhub/jupyterhub_config.py", ""), name
    # What the build context holds: what .dockerignore lets through (its last matching rule wins).
    rules = [line for line in (project / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*" and all(r.startswith("!") for r in rules[1:]), rules
    assert sorted(r[1:] for r in rules[1:]) == ["Dockerfile", "requirements.txt"], rules


@pytest.mark.parametrize("hub_version", [TEMPLATE["hub_version"], "4.3.0"])
def test_base_image_is_the_chosen_hub_version(bake, hub_version):
    dockerfile = (bake(hub_version=hub_version) / "Dockerfile").read_text()
    assert dockerfile_args(dockerfile)["K8S_HUB_VERSION"] == hub_version
    assert dockerfile.count("FROM quay.io/jupyterhub/k8s-hub:${K8S_HUB_VERSION}") == 2


def test_pinned_proxy_supports_the_pinned_node(bake):
    """The CHP the Dockerfile pins declares support for the Node.js major it installs
    (read from the package the test tools installed, which is also what test_hub boots)."""
    dockerfile = (bake() / "Dockerfile").read_text()
    package = CHP_BIN.parent / "configurable-http-proxy" / "package.json"
    if not package.exists():
        need_tool("configurable-http-proxy (scripts/install-test-tools installs it)")
    manifest = json.loads(package.read_text(encoding="utf-8"))
    assert manifest["version"] == dockerfile_args(dockerfile)["CHP_VERSION_BOOKWORM"], "the tools' CHP is not the pinned one"
    steps = [step for step in dockerfile.split("\nRUN ")[1:] if "VERSION_CODENAME" in step]
    node_majors = set(re.findall(r"(\d+)\.\*", release_arms(steps[1])["bookworm"]))
    assert len(node_majors) == 1, f"bookworm gets one Node.js major: {node_majors}"
    minimum = re.fullmatch(r">=\s*(\d+)(\.\d+)*", manifest["engines"]["node"].strip())
    assert minimum, f"engines.node {manifest['engines']['node']!r}: not a plain lower bound"
    assert int(node_majors.pop()) >= int(minimum.group(1)), manifest["engines"]


def dockerfile_args(dockerfile):
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))


def release_arms(step):
    """{codename: body} of the `case "$VERSION_CODENAME"` in one RUN step, without the `*)` arm."""
    case = step.split('case "$VERSION_CODENAME" in', 1)[1].split("esac", 1)[0]
    arms = dict(re.findall(r"(\w+)\)\s*([^;]*);;", case))
    assert "*)" in case and "exit 1" in case.split("*)", 1)[1], "an unknown Debian release must stop the build"
    return arms


def test_node_and_proxy_pinned_per_debian_release(bake):
    """Each Debian release the Dockerfile knows has its Node.js major and its own CHP pin
    (one ARG each, what Renovate updates); both stages know the same releases. bookworm
    (k8s-hub 4.x) keeps Node.js 18 with a CHP that runs on it (CHP 5.2+ need Node.js 20)."""
    dockerfile = (bake() / "Dockerfile").read_text()
    steps = [step for step in dockerfile.split("\nRUN ")[1:] if "VERSION_CODENAME" in step]
    assert len(steps) == 2, "one release switch in the proxy stage (CHP), one in the final stage (Node.js)"
    chp_arms, node_arms = (release_arms(step) for step in steps)
    assert chp_arms.keys() == node_arms.keys() == {"bookworm", "trixie"}
    pins = dict(re.findall(r"^ARG CHP_VERSION_(\w+)=(\S+)$", dockerfile, re.M))
    assert {release.lower() for release in pins} == set(chp_arms)
    for release, body in chp_arms.items():
        assert body.strip() == f'chp_version="$CHP_VERSION_{release.upper()}"', body
    assert node_arms == {"bookworm": "nodejs_version='18.*' ", "trixie": "nodejs_version='20.*' "}
    assert re.fullmatch(r"4\.\d+\.\d+|5\.[01]\.\d+", pins["BOOKWORM"]), "CHP 5.2+ need Node.js 20; bookworm has 18"
    assert re.fullmatch(r"5\.\d+\.\d+", pins["TRIXIE"])
    assert "nodejs=${nodejs_version}" in steps[1] and "npm" not in steps[1], "the final image gets no npm"
