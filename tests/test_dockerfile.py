"""The generated Dockerfile passes hadolint, and keeps the layer order that makes rebuilds cheap."""

import re
import subprocess

import pytest

from conftest import need_tool

VARIANTS = [{}, {"authenticator": "github"}, {"authenticator": "native", "idle_culling": "no"}, {"hub_version": "4.3.0"}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_hadolint_passes(bake, variant):
    hadolint = need_tool("hadolint")
    project = bake(**variant)
    result = subprocess.run([hadolint, "--no-color", str(project / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (project / ".hadolint.yaml").exists(), "no rules switched off"


def test_hadolint_can_fail(tmp_path):
    hadolint = need_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True).returncode != 0


def test_layer_order_and_final_user(bake):
    dockerfile = (bake() / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    steps = [line.split()[0] for line in final_stage.splitlines() if re.match(r"^[A-Z]+ ", line)]
    order = [i for i, line in enumerate(final_stage.splitlines()) if line.startswith(("COPY", "RUN"))]
    text_order = [final_stage.splitlines()[i] for i in order]
    config_copy = next(i for i, line in enumerate(text_order) if "jupyterhub_config.py" in line)
    requirements_copy = next(i for i, line in enumerate(text_order) if "requirements.txt" in line)
    proxy_copy = next(i for i, line in enumerate(text_order) if "/opt/chp" in line)
    assert proxy_copy < requirements_copy < config_copy == len(text_order) - 1
    assert steps[-1] == "CMD" and "USER 1000" in final_stage
    assert "curl" not in dockerfile and "| bash" not in dockerfile and "| sh" not in dockerfile
    assert re.search(r"^ARG K8S_HUB_VERSION=4\.4\.0$", dockerfile, re.M)


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
