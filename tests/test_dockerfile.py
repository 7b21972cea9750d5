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
    assert re.search(r"^ARG CHP_VERSION=4\.6\.3$", dockerfile, re.M)
    assert re.search(r"^ARG K8S_HUB_VERSION=4\.4\.0$", dockerfile, re.M)
