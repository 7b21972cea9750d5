"""Every `name=value` the README documents really works on the command line.

cookiecutter silently ignores a name it does not know: a renamed or misspelt variable
would leave people's command lines doing nothing. For each documented name, one run of
`cookiecutter --no-input <template> name=value` must generate a project that differs
from the same run without it. The runs call cookiecutter's command line in this process
(conftest.run_cookiecutter_in_process): the same argument parsing as the executable,
without a Python start and an import of cookiecutter for each of some 40 runs. Every run
must succeed, so its hooks run in this process too (support/hook_runner.py), as the
bakery's do.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TEMPLATE, run_cookiecutter, run_cookiecutter_in_process
from support import hook_runner
from support.bakery import hermetic_env, with_named_admin

# A valid value other than the default for each variable that is not a choice, and the
# options it needs to matter (a setting only one option uses is compared with that option on).
PROBES = {
    "project": "probe-project",
    "namespace": "probe-ns",
    "ingress_domain": "probe.example.org",
    "hostname": "hub.probe.example.org",
    "__development_hostname": "hub-dev.probe.example.org",
    "registry": "registry.probe.example.org:5000/team",
    "image_name": "probe-image",
    "admin_user": "probe-admin",
    "__oauth_authorize_url": ("https://idp.probe.example.org/authorize", {"authenticator": "generic-oauth"}),
    "__oauth_token_url": ("https://idp.probe.example.org/token", {"authenticator": "generic-oauth"}),
    "__oauth_userdata_url": ("https://idp.probe.example.org/userinfo", {"authenticator": "generic-oauth"}),
    "hub_version": "4.3.2",
    "user_image": "quay.io/jupyter/base-notebook:2025-01-06",
    "user_storage_size": "7Gi",
    "hub_storage_size": "3Gi",
    "storage_class": "probe-class",
    "ingress_class": "probe-ingress",
    "ingress_controller_namespace": "probe-ingress-ns",
    "__cert_manager_issuer": ("probe-issuer", {"tls": "yes"}),
    "__kaniko_secret_name": ("probe-secret", {"kaniko_credentials": "secret"}),
    "__image_pull_secret": "probe-pull-secret",
    "kaniko_image": "gcr.io/kaniko-project/executor:v1.23.2",
    "idle_timeout": "7200",
    "named_server_limit": ("7", {"named_servers": "yes"}),
}

SETTABLE = [name for name in TEMPLATE if not name.startswith("_") or (name.startswith("__") and name != "__prompts__")]


def documented_names():
    """The names in the first column of the README's tables under '## Variables'."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Variables\n", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[1])
    return names


def probe(name):
    """(value, the other settings it needs)."""
    if isinstance(TEMPLATE[name], list):
        return TEMPLATE[name][-1], {}
    value = PROBES[name]
    return value if isinstance(value, tuple) else (value, {})


def bake(settings, capfd):
    """The generated files (relative path -> digest) of one command-line run."""
    out = Path(tempfile.mkdtemp(prefix="cli-"))
    (out / "home").mkdir()
    env = hermetic_env(out)  # TMPDIR too: what cookiecutter leaves behind goes with out
    env.update(HOME=str(out / "home"))
    args = [f"{k}={v}" for k, v in with_named_admin(settings).items()]
    with hook_runner.in_process_hooks():
        result = run_cookiecutter_in_process("-o", str(out / "o"), *args, cwd=out, env=env, capfd=capfd)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    tree = {
        str(p.relative_to(out / "o")): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "o").rglob("*"))
        if p.is_file() and p.name != "hub-secrets.env"  # random by design
    }
    shutil.rmtree(out, ignore_errors=True)
    return tree


def test_readme_documents_every_variable_and_nothing_else():
    documented = documented_names()
    assert sorted(documented) == sorted(set(documented)), "a name is documented twice"
    assert set(documented) == set(SETTABLE)


def test_every_variable_has_a_probe():
    missing = [n for n in SETTABLE if not isinstance(TEMPLATE[n], list) and n not in PROBES]
    assert not missing, f"add a valid non-default value to PROBES for {missing}"


@pytest.mark.slow
def test_every_documented_name_changes_the_output(capfd):
    runs = {}
    for name in documented_names():
        value, needs = probe(name)
        runs[name] = (dict(needs), dict(needs, **{name: value}))
    contexts = {tuple(sorted(c.items())) for pair in runs.values() for c in pair}
    trees = {context: bake(dict(context), capfd) for context in contexts}
    unchanged = [
        name for name, (base, probed) in runs.items()
        if trees[tuple(sorted(base.items()))] == trees[tuple(sorted(probed.items()))]
    ]
    assert not unchanged, f"these names change nothing on the command line: {unchanged}"


def test_runs_keep_their_answers_out_of_the_home(tmp_path, capfd):
    """cookiecutter saves every run's answers in its replay_dir, ~/.cookiecutter_replay by
    default, under the template directory's name (`template` in every test). conftest gives
    each test process a cookiecutter config of its own, so neither a run in this process
    nor a `cookiecutter` process started with the suite's environment writes to the home."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(hermetic_env(tmp_path), HOME=str(home))
    replay = Path(yaml.safe_load(Path(os.environ["COOKIECUTTER_CONFIG"]).read_text())["replay_dir"])
    assert not replay.is_relative_to(Path.home()), replay

    result = run_cookiecutter_in_process("-o", str(tmp_path / "in-process"), cwd=tmp_path, env=env, capfd=capfd)
    assert result.returncode == 0, result.stderr
    assert json.loads((replay / "template.json").read_text())["cookiecutter"]["_output_dir"] == str(tmp_path / "in-process")

    result = run_cookiecutter("-o", str(tmp_path / "process"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((replay / "template.json").read_text())["cookiecutter"]["_output_dir"] == str(tmp_path / "process")
    assert list(home.iterdir()) == []
