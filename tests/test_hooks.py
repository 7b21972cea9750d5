"""The hooks: validation rules, defaults from the environment, and what a bad run leaves behind."""

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, clean_template, need_tool, run_cookiecutter
from conftest import TEMPLATE as TEMPLATE_JSON


def load_hook(name):
    """Import a hook file as it is in the template: the hooks are valid Python unrendered."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = load_hook("pre_gen_project")
pre_prompt = load_hook("pre_prompt")


# --- The rules, one by one --------------------------------------------------------

GOOD = {
    "check_namespace": ["lab-ns-1", "a", "ws-7", "x" * 63, "default", "0abc"],
    "check_subdomain": [
        "apps.example.org",
        "127.0.0.1.nip.io",
        "lab-ns-1-jupyterhub.apps.example.org",
        "localhost",
        ".".join(["a" * 63] * 3),
    ],
    "check_registry": [
        "lab-ns-1-registry.apps.example.org",
        "localhost:5000",
        "registry.example.org:443/team/sub",
        "10.0.0.5:5000",
        "ghcr.io/some-org",
    ],
    "check_image_name": ["jupyterhub", "team/hub", "hub.v2", "a__b", "a-b--c"],
    "check_project": ["jupyterhub-deploy", "My_Hub.2", "x"],
    "check_quantity": ["10Gi", "1", "500M", "1.5Ti", "0.5Gi"],
    "check_tag": ["4.4.0", "4.4.0-0.dev.git.1.h1234", "latest", "_x"],
    "check_hub_version": [
        "4.0.0",
        "4.4.0",
        "4.3.0",
        "10.0.0",
        "4.0.1-0.dev.git.6790.h0b6cd7f2",  # a development build after 4.0.0
        "4.4.1-0.dev.git.7157.h1a2b3c4d",
        "5.0.0-0.dev.trixie-standin",  # the image tests' trixie stand-in
        "5.0.0-beta.1",
    ],
    "check_pinned_image": [
        "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0",
        "jupyter/base-notebook:2025-06-30",
        "localhost:5000/nb:1",
        "quay.io/jupyter/scipy-notebook@sha256:" + "a" * 64,
        "quay.io/jupyter/scipy-notebook:latest@sha256:" + "0" * 64,
    ],
    "check_username": ["admin", "jovyan", "a.b-c_d", "x"],
    "check_https_url": [
        "https://auth.example.org/realms/x/protocol/openid-connect/auth",
        "https://idp.example.org:8443/oauth2/authorize?x=1",
    ],
    "check_seconds": ["60", "3600", "86400"],
    "check_named_server_limit": ["1", "3", "100", "010"],
}

BAD = {
    "check_namespace": [
        ("", "RFC 1123 label"),
        ("Lab", "RFC 1123 label"),
        ("-lab", "RFC 1123 label"),
        ("lab-", "RFC 1123 label"),
        ("lab_ns", "RFC 1123 label"),
        ("lab.ns", "RFC 1123 label"),
        ("x" * 64, "at most 63"),
        ("kube-system", "system namespace"),
        ("kube-public", "system namespace"),
        ("a\nb", "RFC 1123 label"),
    ],
    "check_subdomain": [
        ("", "empty"),
        ("https://apps.example.org", "scheme"),
        ("apps.example.org/path", "path"),
        ("apps.example.org:8443", "port"),
        ("*.apps.example.org", "wildcard"),
        ("192.168.1.10", "IP address"),
        ("::1", "IP address"),
        ("Apps.Example.org", "RFC 1123 subdomain"),
        ("apps..example.org", "RFC 1123 subdomain"),
        ("apps.example.org.", "RFC 1123 subdomain"),
        ("a_b.example.org", "RFC 1123 subdomain"),
        ("a" * 64 + ".org", "at most 63"),
        (".".join(["a" * 60] * 5), "at most 253"),
    ],
    "check_registry": [
        ("https://registry.example.org", "scheme"),
        ("Registry.example.org", "lower case"),
        ("registry.example.org:0", "1 to 65535"),
        ("registry.example.org:65536", "1 to 65535"),
        ("registry.example.org:http", "1 to 65535"),
        ("registry.example.org/Team", "lower case"),
        ("registry.example.org/team/", "path component"),
        ("registry.example.org//x", "path component"),
        ("reg istry.example.org", "host"),
        ("*.example.org", "host"),
    ],
    "check_image_name": [
        ("", "1 to 255"),
        ("JupyterHub", "repository name"),
        ("hub:latest", "repository name"),
        ("/hub", "repository name"),
        ("hub/", "repository name"),
        ("-hub", "repository name"),
        ("a" * 256, "1 to 255"),
    ],
    "check_project": [
        ("", "plain directory name"),
        ("../escape", "plain directory name"),
        ("a/b", "plain directory name"),
        (".hidden", "plain directory name"),
        ("my hub", "plain directory name"),
        ("x" * 101, "at most 100"),
    ],
    "check_quantity": [
        ("10GB", "quantity"),
        ("ten", "quantity"),
        ("-1Gi", "quantity"),
        ("0", "larger than zero"),
        ("0Gi", "larger than zero"),
        ("", "quantity"),
    ],
    "check_tag": [("", "image tag"), ("-x", "image tag"), ("a b", "image tag"), ("x" * 129, "image tag")],
    "check_hub_version": [
        ("3.3.8", "KubeSpawner 6"),
        ("3.99.99", "4.0.0 or newer"),
        ("0.9.0", "4.0.0 or newer"),
        ("4.0.0-beta.1", "a pre-release of 4.0.0 comes before it"),
        ("4.0.0-0.dev.git.6607.h2d1ad0d0", "KubeSpawner 6"),
        ("latest", "chart version such as 4.4.0"),
        ("4.4", "chart version"),
        ("v4.4.0", "chart version"),
        ("04.4.0", "chart version"),
        ("4.4.0-", "chart version"),
        ("4.4.0-a..b", "chart version"),
        ("4.4.0 ", "image tag"),
        ("", "image tag"),
    ],
    "check_pinned_image": [
        ("quay.io/jupyter/base-notebook", "pinned"),
        ("quay.io/jupyter/base-notebook:latest", "pinned"),
        ("quay.io/jupyter/base-notebook@sha256:abc", "digest"),
        ("quay.io/Jupyter/base-notebook:1", "image reference"),
        ("quay.io:99999/x:1", "registry"),
    ],
    "check_username": [("", "user name"), ("Admin", "user name"), ("a b", "user name"), ("-a", "user name"),
                       ("smoke-test", "smoke test's own user")],
    "check_https_url": [
        ("http://auth.example.org/x", "https://"),
        ("https://", "https://"),
        ('https://auth.example.org/x"y', "quotes"),
        ("https://auth.example.org:99999/x", "port"),
        ("https://auth_example/x", "DNS name"),
    ],
    "check_seconds": [("59", "at least 60"), ("1h", "whole number"), ("", "whole number")],
    "check_named_server_limit": [
        ("0", "from 1 to 100"),  # JupyterHub reads 0 as no limit at all
        ("101", "from 1 to 100"),
        ("-1", "whole number"),
        ("3.5", "whole number"),
        (" 3", "whole number"),
        ("3\n", "whole number"),
        ("\u0663", "whole number"),  # int() takes an Arabic-Indic 3
        ("", "whole number"),
    ],
}


@pytest.mark.parametrize(
    "rule,value", [(rule, value) for rule, values in GOOD.items() for value in values]
)
def test_rule_accepts(rule, value):
    assert getattr(rules, rule)(value) is None


@pytest.mark.parametrize(
    "rule,value,says", [(rule, value, says) for rule, cases in BAD.items() for value, says in cases]
)
def test_rule_rejects_with_reason(rule, value, says):
    problem = getattr(rules, rule)(value)
    assert problem is not None, f"{rule} accepted {value!r}"
    assert says.lower() in problem.lower()
    assert "\n" not in problem


def test_problems_names_variable_value_and_rule_one_line_each():
    lines = rules.problems(
        {"namespace": "Bad NS", "registry": "https://r.example.org", "image_name": 'a"\nb', "tls": "maybe"}
    )
    assert len(lines) == 4
    assert lines[0].startswith('namespace="Bad NS" must be an RFC 1123 label')
    assert lines[1].startswith('registry="https://r.example.org" must be host[:port][/path]')
    assert lines[2].startswith('image_name="a\\"\\nb" must be a repository name')
    assert lines[3] == "tls=\"maybe\" must be one of no, yes"


def test_template_defaults_pass_every_rule():
    from conftest import TEMPLATE

    plain = {k: v for k, v in TEMPLATE.items() if isinstance(v, str) and "{{" not in v}
    assert rules.problems(plain) == []


def test_every_validated_variable_exists_in_the_template():
    from conftest import TEMPLATE

    assert set(rules.RULES) | set(rules.CHOICES) <= set(TEMPLATE)
    for name, choices in rules.CHOICES.items():
        assert tuple(TEMPLATE[name]) == choices, name


def test_pre_gen_hook_holds_a_single_jinja_expression():
    """Anything else in it that looks like Jinja would be rendered by cookiecutter."""
    text = (ROOT / "hooks" / "pre_gen_project.py").read_text()
    assert re.findall(r"\{\{.*?\}\}|\{%.*?%\}|\{#", text) == ["{{ cookiecutter | jsonify | tojson }}"]


def test_hooks_import_only_the_standard_library():
    """Users have cookiecutter and nothing else (`pipx install cookiecutter`): the
    standard library, and PyYAML, which cookiecutter itself depends on."""
    import sys

    for hook in (ROOT / "hooks").glob("*.py"):
        imported = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", hook.read_text(), re.M)
        foreign = [m for m in imported if m not in sys.stdlib_module_names and m != "yaml"]
        assert not foreign, f"{hook.name} imports {foreign}"


def test_authenticator_must_name_a_folder_of_the_template():
    """cookiecutter gives the hook the template's directory: the folders there are the choices."""
    assert rules.authenticators(ROOT) == tuple(sorted(TEMPLATE_JSON["authenticator"]))
    assert rules.problems({"authenticator": "github", "_repo_dir": str(ROOT)}) == []
    assert rules.problems({"authenticator": "pam", "_repo_dir": str(ROOT)}) == [
        'authenticator="pam" must be one of dummy, generic-oauth, github, native, tmp'
    ]


# --- The admin is chosen, not defaulted ---------------------------------------------

GIVE_GITHUB = TEMPLATE_JSON["_external_user_names"]["github"]


def test_admin_rule_refuses_placeholders_where_user_names_come_from_outside():
    for value in rules.PLACEHOLDER_ADMIN_USERS:
        problem = rules.check_admin_user(value, "github", GIVE_GITHUB)
        assert problem == (
            "is a placeholder, and with authenticator=github user names come from outside the hub:"
            " whoever owns that name there would be the hub's admin; give the GitHub login of the person deploying"
        ), value
    for value in ("", " "):
        assert rules.check_admin_user(value, "github", GIVE_GITHUB) == (
            "must be given with authenticator=github, whose user names come from outside the hub:"
            " give the GitHub login of the person deploying"
        )
    for value in ("ada-lovelace", "admin2", "octo.cat", "x"):
        assert rules.check_admin_user(value, "github", GIVE_GITHUB) is None, value


def test_admin_rule_leaves_local_user_names_alone():
    """dummy, native, tmp: the hub makes its user names, so "admin" is nobody else's."""
    for value in ("admin", "root", "user", ""):
        assert rules.check_admin_user(value, "dummy", None) is None


def test_placeholders_are_names_the_hub_would_accept():
    """Each entry of the list is a valid user name (else the username rule refuses it already,
    without saying what to give), and the template's default is one of them."""
    assert TEMPLATE_JSON["admin_user"] in rules.PLACEHOLDER_ADMIN_USERS
    assert [v for v in rules.PLACEHOLDER_ADMIN_USERS if rules.check_username(v)] == []


@pytest.mark.parametrize("authenticator", sorted(TEMPLATE_JSON["_external_user_names"]))
def test_the_default_admin_is_refused_for_every_authenticator_with_outside_user_names(authenticator):
    lines = rules.problems(answers(authenticator=authenticator))
    give = TEMPLATE_JSON["_external_user_names"][authenticator]
    assert lines == [
        f'admin_user="admin" is a placeholder, and with authenticator={authenticator} user names come from outside'
        f" the hub: whoever owns that name there would be the hub's admin; give {give}"
    ]
    assert rules.problems(answers(authenticator=authenticator, admin_user="ada-lovelace")) == []
    # Empty: one line, the one that says what to give (not also the user-name rule's).
    [line] = rules.problems(answers(authenticator=authenticator, admin_user=""))
    assert line.startswith(f'admin_user="" must be given with authenticator={authenticator}'), line


@pytest.mark.parametrize("authenticator", [a for a in TEMPLATE_JSON["authenticator"] if a not in TEMPLATE_JSON["_external_user_names"]])
def test_the_default_admin_stays_for_authenticators_with_local_user_names(authenticator):
    assert rules.problems(answers(authenticator=authenticator)) == []
    assert rules.problems(answers(authenticator=authenticator, admin_user="root")) == []


def test_admin_rule_reads_its_authenticators_from_the_answers():
    """The authenticators come from cookiecutter.json's _external_user_names (the data, not a
    list in the hook): another template's answers may name others."""
    context = answers(authenticator="dummy", _external_user_names={"dummy": "a name of your choice"})
    assert rules.problems(context) == [
        'admin_user="admin" is a placeholder, and with authenticator=dummy user names come from outside the hub:'
        " whoever owns that name there would be the hub's admin; give a name of your choice"
    ]
    assert rules.problems(answers(authenticator="github", _external_user_names={})) == []


@pytest.mark.parametrize(
    "answers_given, line",
    [
        (["authenticator=github"], 'error: admin_user="admin" is a placeholder, and with authenticator=github'),
        (["authenticator=generic-oauth", "admin_user=root"], 'error: admin_user="root" is a placeholder, and with authenticator=generic-oauth'),
        (["authenticator=github", "admin_user="], 'error: admin_user="" must be given with authenticator=github'),
    ],
    ids=["github-default", "generic-oauth-root", "github-empty"],
)
def test_a_placeholder_admin_stops_the_run_with_one_line(tmp_path, answers_given, line):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter("-o", str(out), *answers_given, cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    errors = [e for e in result.stderr.splitlines() if e.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith(line), result.stderr
    assert errors[1] == "error: nothing was generated (1 problem(s) above)"
    assert list(out.iterdir()) == []
    # The way back names the variable to fix.
    assert "# fix: admin_user" in result.stderr


def test_a_named_admin_generates_with_github(tmp_path):
    result = run_cookiecutter("authenticator=github", "admin_user=ada-lovelace", cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    config = read(tmp_path / "jupyterhub-deploy", "hub-config/jupyterhub_config.py")
    assert 'ADMIN_USER = "ada-lovelace"' in config


# --- pre_prompt: the defaults -------------------------------------------------------

def test_defaults_from_environment_pure():
    env = {"SESSION_NAMESPACE": "ws-7", "INGRESS_DOMAIN": "training.example.net", "REGISTRY_HOST": "r:5000"}
    # A namespace from the environment exists already: "no", do not create it, comes first.
    assert pre_prompt.defaults_from_environment(env, "ignored") == {
        "namespace": "ws-7",
        "create_namespace": ["no", "yes"],
        "ingress_domain": "training.example.net",
        "registry": "r:5000",
    }
    assert pre_prompt.defaults_from_environment({}, "from-context") == {"namespace": "from-context", "create_namespace": ["no", "yes"]}
    assert pre_prompt.defaults_from_environment({"SESSION_NAMESPACE": " "}, None) == {}


def clean_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_NAMESPACE", "INGRESS_DOMAIN", "REGISTRY_HOST")}
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    env.update(extra)
    return env


def read(project, path):
    return (project / path).read_text(encoding="utf-8")


def test_session_environment_fills_namespace_domain_registry(tmp_path):
    env = clean_env(tmp_path, SESSION_NAMESPACE="ws-7", INGRESS_DOMAIN="training.example.net")
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "jupyterhub-deploy"
    assert 'namespace: "ws-7"' in read(project, "k8s/overlays/development/kustomization.yaml")
    assert '- host: "ws-7-jupyterhub.training.example.net"' in read(project, "k8s/base/hub-ingress.yaml")
    assert 'image: "ws-7-registry.training.example.net/jupyterhub"' in read(project, "skaffold.yaml")


def test_registry_host_from_environment(tmp_path):
    env = clean_env(tmp_path, REGISTRY_HOST="registry.session.example.net:5000")
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    skaffold = read(tmp_path / "jupyterhub-deploy", "skaffold.yaml")
    assert 'image: "registry.session.example.net:5000/jupyterhub"' in skaffold


def test_command_line_beats_environment(tmp_path):
    env = clean_env(tmp_path, SESSION_NAMESPACE="ws-7", INGRESS_DOMAIN="training.example.net")
    result = run_cookiecutter("namespace=lab-ns-1", "ingress_domain=apps.example.org", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    ingress = read(tmp_path / "jupyterhub-deploy", "k8s/base/hub-ingress.yaml")
    assert '- host: "lab-ns-1-jupyterhub.apps.example.org"' in ingress


def write_kubeconfig(path, namespace):
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
  - name: c
    cluster: {{server: "https://127.0.0.1:1"}}
users:
  - name: u
    user: {{token: not-a-real-token}}
contexts:
  - name: ctx
    context: {{cluster: c, user: u, namespace: {namespace}}}
current-context: ctx
"""
    )


def test_kube_context_namespace_fills_namespace(tmp_path):
    need_tool("kubectl")
    write_kubeconfig(tmp_path / "kubeconfig", "team-hub")
    env = clean_env(tmp_path, KUBECONFIG=str(tmp_path / "kubeconfig"))
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "jupyterhub-deploy"
    assert 'namespace: "team-hub"' in read(project, "k8s/overlays/production/kustomization.yaml")
    assert '"team-hub-jupyterhub.127.0.0.1.nip.io"' in read(project, "k8s/base/hub-ingress.yaml")


def test_session_namespace_beats_kube_context(tmp_path):
    need_tool("kubectl")
    write_kubeconfig(tmp_path / "kubeconfig", "team-hub")
    env = clean_env(tmp_path, KUBECONFIG=str(tmp_path / "kubeconfig"), SESSION_NAMESPACE="ws-7")
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert 'namespace: "ws-7"' in read(tmp_path / "jupyterhub-deploy", "k8s/overlays/development/kustomization.yaml")


def test_no_kubectl_no_cluster_still_generates(tmp_path):
    """Without kubectl on PATH the hook neither fails nor hangs: the defaults stay."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = clean_env(tmp_path, PATH=str(bin_dir))
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert 'namespace: "jupyterhub"' in read(tmp_path / "jupyterhub-deploy", "k8s/overlays/development/kustomization.yaml")


def test_kube_config_files_pure(tmp_path):
    present, absent = tmp_path / "present", tmp_path / "absent"
    present.write_text("")
    (tmp_path / ".kube").mkdir()
    assert pre_prompt.kube_config_files({"KUBECONFIG": f"{absent}:{present}:"}) == [str(present)]
    assert pre_prompt.kube_config_files({"KUBECONFIG": str(absent), "HOME": str(tmp_path)}) == []
    assert pre_prompt.kube_config_files({"HOME": str(tmp_path)}) == []
    (tmp_path / ".kube" / "config").write_text("")
    assert pre_prompt.kube_config_files({"HOME": str(tmp_path)}) == [str(tmp_path / ".kube" / "config")]


def test_without_a_kube_config_kubectl_is_not_started(tmp_path):
    """No kube config, no context to ask about: the hook does not spend a kubectl start on it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started_file = tmp_path / "kubectl-started"
    (bin_dir / "kubectl").write_text(f"#!/bin/sh\ntouch '{started_file}'\necho planted-ns\n")
    (bin_dir / "kubectl").chmod(0o755)
    env = clean_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path / "home"))
    result = run_cookiecutter(cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert not started_file.exists(), "the hook ran kubectl although no kube config exists"
    assert 'namespace: "jupyterhub"' in read(tmp_path / "jupyterhub-deploy", "k8s/overlays/development/kustomization.yaml")
    # The same fake with a kube config present is asked, and its answer is used.
    write_kubeconfig(tmp_path / "kubeconfig", "unused")
    env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    result = run_cookiecutter("project=second", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert started_file.exists()
    assert 'namespace: "planted-ns"' in read(tmp_path / "second", "k8s/overlays/development/kustomization.yaml")


# Far longer than any allowance: only the hook's own timeout can end the run in time.
FAKE_KUBECTL_HANG_SECONDS = 3600


def bake_with_hanging_kubectl(template, tmp_path):
    """Bake with a kubectl that never answers; seconds the whole run took.

    The allowance is the hook's timeout plus a generous margin for cookiecutter
    itself on a busy machine: a bound, not a measurement. The run has its own
    session, so that whatever it leaves behind (the fake, a hook stuck on it) is
    killed with it, whether it finished in time or not.
    """
    allowance = pre_prompt.KUBECTL_TIMEOUT_SECONDS + 20
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started_file = tmp_path / "kubectl-started"
    fake = bin_dir / "kubectl"
    # exec: the hook's kill reaches the sleeping process itself, not a shell above it.
    fake.write_text(f"#!/bin/sh\necho $$ > '{started_file}'\nexec sleep {FAKE_KUBECTL_HANG_SECONDS}\n")
    fake.chmod(0o755)
    # A kube config to ask about: without one the hook does not start kubectl at all.
    write_kubeconfig(tmp_path / "kubeconfig", "from-the-context")
    env = clean_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", KUBECONFIG=str(tmp_path / "kubeconfig"))
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(cookiecutter), "--no-input", str(template)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=allowance)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"cookiecutter was still running {allowance} s after it started, with a kubectl that hangs"
            f" (the hook gives kubectl {pre_prompt.KUBECTL_TIMEOUT_SECONDS} s)"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    elapsed = time.monotonic() - started
    assert started_file.exists(), "the hook never ran kubectl: this test proves nothing"
    assert proc.returncode == 0, err
    kubectl_pid = int(started_file.read_text())
    assert not Path(f"/proc/{kubectl_pid}").exists() or process_state(kubectl_pid) == "Z", (
        "the hook gave up on kubectl but left it running"
    )
    assert 'namespace: "jupyterhub"' in read(tmp_path / "jupyterhub-deploy", "k8s/overlays/development/kustomization.yaml")
    return elapsed


def process_state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_hanging_kubectl_is_given_up_on(tmp_path):
    elapsed = bake_with_hanging_kubectl(clean_template(), tmp_path)
    print(f"\nbaked in {elapsed:.1f} s with a kubectl that hangs")


def test_hanging_kubectl_check_fails_without_the_hooks_timeout(tmp_path):
    """The planted fault: the same check on a template whose hook waits for kubectl forever."""
    template = tmp_path / "template"
    shutil.copytree(clean_template(), template)
    hook = template / "hooks" / "pre_prompt.py"
    text = hook.read_text(encoding="utf-8")
    assert text.count("timeout=KUBECTL_TIMEOUT_SECONDS,") == 1
    hook.write_text(text.replace("timeout=KUBECTL_TIMEOUT_SECONDS,", ""), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(AssertionError, match="still running"):
        bake_with_hanging_kubectl(template, work)


# --- Bad input: one line per problem, nothing written, nothing changed ----------------

BAD_CLI = [
    "namespace=Kube_Bad",
    "ingress_domain=https://apps.example.org",
    "hostname=*.example.org",
    "registry=Registry.example.org:99999",
    "image_name=Hub:latest",
    "project=my hub",
]


def tree_digest(path):
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(path.rglob("*"))
    }


def test_bad_values_one_error_line_each_and_nothing_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter("-o", str(out), *BAD_CLI, cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    named = [line.split("=", 1)[0].removeprefix("error: ") for line in errors[:-1]]
    assert named == ["project", "namespace", "ingress_domain", "hostname", "registry", "image_name"], result.stderr
    assert "Traceback" not in result.stderr.split("error: ")[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("bad", BAD_CLI)
def test_each_bad_value_stops_the_run(tmp_path, bad):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter("-o", str(out), bad, cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    variable = bad.split("=")[0]
    assert f"error: {variable}=" in result.stderr
    assert list(out.iterdir()) == []


def test_bad_values_leave_an_existing_project_byte_for_byte(tmp_path):
    out = tmp_path / "out"
    good = run_cookiecutter("-o", str(out), cwd=tmp_path, env=clean_env(tmp_path))
    assert good.returncode == 0, good.stderr
    project = out / "jupyterhub-deploy"
    (project / "my-notes.txt").write_text("mine\n")
    before = tree_digest(project)
    bad = run_cookiecutter(
        "-o", str(out), "-f", "namespace=kube-system", 'admin_user=x"\n\\', cwd=tmp_path, env=clean_env(tmp_path)
    )
    assert bad.returncode != 0
    assert "error: namespace=" in bad.stderr and "error: admin_user=" in bad.stderr
    assert tree_digest(project) == before


def test_values_with_quotes_newlines_backslashes_do_not_break_the_hook(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    hostile = ["namespace=a'b", 'ingress_domain=x"y', "registry=a\\b", "image_name=a\nb"]
    result = run_cookiecutter("-o", str(out), *hostile, cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    for name in ("namespace", "ingress_domain", "registry", "image_name"):
        assert f"error: {name}=" in result.stderr
    assert "Traceback" not in result.stderr.split("error:")[0]
    assert list(out.iterdir()) == []


def test_hub_version_before_4_is_refused_with_its_reason(tmp_path):
    """k8s-hub 3.x has KubeSpawner 6: one line naming variable, value and rule; nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter("-o", str(out), "hub_version=3.3.8", cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0] == (
        'error: hub_version="3.3.8" must be 4.0.0 or newer: older k8s-hub images have KubeSpawner 6, whose user pod'
        " labels and volume claim names differ from what the NetworkPolicies and jupyterhub_config.py rely on"
    ), result.stderr
    assert errors[1:] == ["error: nothing was generated (1 problem(s) above)"], result.stderr
    assert list(out.iterdir()) == []


def test_bad_choice_from_the_command_line_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cookiecutter("-o", str(out), "authenticator=pam", cwd=tmp_path, env=clean_env(tmp_path))
    assert result.returncode != 0
    assert "authenticator" in result.stderr
    assert list(out.iterdir()) == []


def test_done_when_example(tmp_path):
    """The issue's own example: the ingress host and the registry follow namespace and domain."""
    result = run_cookiecutter(
        "namespace=lab-ns-1", "ingress_domain=apps.example.org", cwd=tmp_path, env=clean_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "jupyterhub-deploy"
    assert '- host: "lab-ns-1-jupyterhub.apps.example.org"' in read(project, "k8s/base/hub-ingress.yaml")
    assert 'image: "lab-ns-1-registry.apps.example.org/jupyterhub"' in read(project, "skaffold.yaml")
    assert Path(project / "k8s/overlays/development/hub-secrets.env").exists()


# --- After a failed check: the way back ----------------------------------------------

def answers(**changes):
    """A context as the pre_gen hook sees it: the defaults rendered, then the changes."""
    from conftest import TEMPLATE, clean_template

    # _repo_dir: a real copy of the template, where the authenticators' folders are.
    context = {"_template": "gh:owner/repo", "_output_dir": "/work/out", "_repo_dir": str(clean_template()), "_checkout": None}
    for name, raw in TEMPLATE.items():
        if name == "__prompts__":
            continue
        context[name] = raw[0] if isinstance(raw, list) and not name.startswith("_") else raw
    context.update(changes)
    for name, raw in TEMPLATE.items():  # derived defaults follow, unless changed
        if name not in changes and isinstance(raw, str) and "{{" in raw:
            context[name] = rules.derived_default(raw, context)[0]
    return context


def test_derived_answers_follow_their_sources():
    from conftest import TEMPLATE

    context = answers(namespace="Bad_NS")
    assert context["hostname"] == "Bad_NS-jupyterhub.127.0.0.1.nip.io"
    assert rules.follows("hostname", context, TEMPLATE) == {"namespace", "ingress_domain"}
    assert rules.follows("namespace", context, TEMPLATE) is None
    assert rules.follows("hostname", answers(hostname="hub.example.org"), TEMPLATE) is None


def test_a_bad_answer_is_reported_once_not_again_through_its_derived_defaults():
    from conftest import TEMPLATE

    context = answers(namespace="Bad_NS")
    found = {line.split("=", 1)[0]: line for line in rules.problems(context)}
    assert set(found) == {"namespace", "hostname", "__development_hostname", "registry"}
    assert set(rules.root_problems(found, context, TEMPLATE)) == {"namespace"}
    # A derived value typed by hand is the user's own mistake: reported.
    context = answers(namespace="Bad_NS", hostname="Bad.example.org")
    found = {line.split("=", 1)[0]: line for line in rules.problems(context)}
    assert set(rules.root_problems(found, context, TEMPLATE)) == {"namespace", "hostname"}


@pytest.mark.parametrize("bad", ["Bad_NS", "a b", "x'y", 'x"y', "a\nb", "$(id)", "-f", ""])
def test_retry_command_round_trips_through_the_shell(bad):
    import shlex

    from conftest import TEMPLATE

    context = answers(namespace=bad, admin_user="it's me")
    command = rules.retry_command(context, {"namespace"}, TEMPLATE, cwd="/work/out")
    assert command.endswith("  # fix: namespace")
    words = shlex.split(command, comments=True)
    assert words[:3] == ["cookiecutter", "--no-input", "gh:owner/repo"]
    assert words[-1] == f"namespace={bad}"  # the bad one last
    assert "admin_user=it's me" in words
    assert "authenticator=dummy" in words and "project=jupyterhub-deploy" in words
    # Derived from the bad value: left out, so that they follow the fix.
    assert not any(w.startswith(("hostname=", "registry=", "user_image=")) for w in words)
    # Settings that are not asked appear only when they were changed.
    assert not any(w.startswith("__") for w in words)
    assert "--output-dir" not in words


def test_retry_command_keeps_what_the_run_was_given():
    import shlex

    from conftest import TEMPLATE

    context = answers(hostname="hub.example.org", __kaniko_secret_name="regcred", _checkout="v2")
    words = shlex.split(rules.retry_command(context, set(), TEMPLATE, cwd="/elsewhere", overwrite=True))
    assert words[3:8] == ["--checkout", "v2", "--output-dir", "/work/out", "--overwrite-if-exists"]
    assert "hostname=hub.example.org" in words and "__kaniko_secret_name=regcred" in words


def test_replay_file_is_found_where_the_user_config_puts_it(tmp_path):
    import json

    context = answers(namespace="Bad_NS")
    context["_repo_dir"] = str(tmp_path / "cookiecutterabc" / "my-template")
    replay_dir = tmp_path / "replays"
    replay_dir.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"default_context: {{}}\nreplay_dir: '{replay_dir}'\n")
    environ = {"HOME": str(tmp_path / "home"), "COOKIECUTTER_CONFIG": str(config)}
    assert rules.replay_file(context, environ) is None  # nothing saved there
    (replay_dir / "my-template.json").write_text(json.dumps({"cookiecutter": context}))
    assert rules.replay_file(context, environ) == str(replay_dir / "my-template.json")
    # Another run's answers are not these answers.
    assert rules.replay_file(dict(context, namespace="other"), environ) is None
    # Without a config: ~/.cookiecutter_replay/.
    default_dir = tmp_path / "home" / ".cookiecutter_replay"
    default_dir.mkdir(parents=True)
    (default_dir / "my-template.json").write_text(json.dumps({"cookiecutter": context}))
    assert rules.replay_file(context, {"HOME": str(tmp_path / "home")}) == str(default_dir / "my-template.json")
