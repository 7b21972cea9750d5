"""Hostile answers: quotes, newlines, backslashes, YAML/shell/Jinja metacharacters,
unicode and very long values, fed into every validated variable.

Through cookiecutter's command line (`cookiecutter --no-input`: the executable for the
kept examples, its entry point called in the test process for the property tests, see
Runner), each run ends one of three ways, and never with a traceback from a hook:
  - refused by the pre_gen hook: exit status not 0, an `error: <variable>=...` line,
    and nothing at all in the output directory;
  - refused by cookiecutter itself, before any hook runs, because the value holds
    Jinja that does not render (cookiecutter renders every answer as a template):
    exit status not 0 and nothing in the output directory;
  - accepted: every overlay renders with `kubectl kustomize`, and every object
    validates against the newest Kubernetes schema (strict) and the API server's
    own rules for names and labels, which the schema does not carry.
An existing project is left byte for byte when a refused run targets it with -f.
The rule functions of hooks/pre_gen_project.py, imported as they are in the
template, are checked directly with many more examples: they never raise, answer
in one line, and what they accept is safe where the template puts it.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import OVERLAYS, ROOT, kustomize, need_tool, run_cookiecutter, run_cookiecutter_in_process
from support.bakery import NAMED_ADMIN, copy_template, hermetic_env


def load_hook(name):
    """Import a hook file as it is in the template: the hooks are valid Python unrendered."""
    spec = importlib.util.spec_from_file_location(f"hostile_{name}", ROOT / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = load_hook("pre_gen_project")
VALIDATED = list(rules.RULES)

CLI_SETTINGS = settings(
    deadline=None,
    max_examples=40,
    derandomize=True,  # the same examples on every run and in CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RULE_SETTINGS = settings(
    deadline=None,
    max_examples=500,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- Strategies -------------------------------------------------------------------------

# Good values, for the accepted path and as material to mutate.
GOOD = {
    "project": ["jupyterhub-deploy", "My_Hub.2", "x"],
    "namespace": ["jupyterhub", "lab-ns-1", "a", "x" * 63],
    "ingress_domain": ["127.0.0.1.nip.io", "apps.example.org"],
    "hostname": ["hub.apps.example.org", "localhost", "x" * 63 + ".example.org"],
    "__development_hostname": ["dev-hub.apps.example.org", "hub-dev.example.org", "x" * 63 + ".example.net"],
    "registry": ["registry.example.org:5000/team", "localhost:5000", "10.0.0.5:5000", "[fd00::1]:5000", "ghcr.io/x"],
    "image_name": ["jupyterhub", "team/hub", "a__b.c-d"],
    "admin_user": [NAMED_ADMIN, "a.b-c_d", "x"],  # not "admin": a placeholder with ALL_ON's generic-oauth
    "__oauth_authorize_url": ["https://auth.example.org/realms/x/protocol/openid-connect/auth"],
    "__oauth_token_url": ["https://idp.example.org:8443/oauth2/token?x=1"],
    "__oauth_userdata_url": ["https://auth.example.org/userinfo"],
    "hub_version": ["4.4.0", "4.4.0-0.dev.git.1.h1234"],
    "user_image": ["quay.io/jupyterhub/k8s-singleuser-sample:4.4.0", "quay.io/jupyter/scipy-notebook@sha256:" + "a" * 64],
    "user_storage_size": ["10Gi", "500M", "1.5Ti", "1"],
    "hub_storage_size": ["1Gi", "0.5Gi", "100Mi"],
    "storage_class": ["", "standard", "csi.example-rbd"],
    "ingress_class": ["", "nginx", "contour"],
    "ingress_controller_namespace": ["", "ingress-nginx", "kube-system"],
    "__cert_manager_issuer": ["", "letsencrypt-prod"],
    "__kaniko_secret_name": ["kaniko-docker-config", "regcred"],
    "__image_pull_secret": ["", "ghcr-pull", "regcred.team"],
    "kaniko_image": ["ghcr.io/osscontainertools/kaniko:v1.28.3", "gcr.io/kaniko-project/executor:v1.23.2"],
    "idle_timeout": ["60", "3600", "86400"],
    "named_server_limit": ["1", "3", "100"],
}
assert set(GOOD) == set(VALIDATED), set(GOOD) ^ set(VALIDATED)

# Pieces of trouble: YAML, shell and Jinja syntax, quotes, escapes, control characters,
# unicode that looks like ASCII (or like digits), and words that YAML reads as non-strings.
METACHARACTERS = [
    ":", ": ", "#", " #", "&", "*", "!", "|", ">", "'", '"', "%", "@", "`", "\\", "\\n", "\n", "\r", "\t", " ",
    "{", "}", "[", "]", ",", "?", "-", "- ", "---", "...", "$(id)", "${HOME}", ";", "=", "/", "../", "~", "^",
    "<", "\x01", "\x1b[31m", "\x7f", "\u00a0", "\u200b", "\u202e", "\ufeff",
    "\u0130", "\u00e9", "\u00b2", "\u0663", "\uff11", "\U0001f984", "K\u0301",
    "true", "null", "0x1F", "1e3", "&anchor", "*alias", "!!python/object/apply:os.system ['id']",
    "{{ 7*7 }}", "{{", "}}", "{%", "%}", "{#", "#}", "{{ cookiecutter.namespace }}", "{% raw %}",
    "{{ undefined_thing }}", "{% if true %}x{% endif %}",
]  # fmt: skip

# Characters a command-line argument can hold (no NUL, no lone surrogates).
ARGUMENT_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@st.composite
def hostile_value(draw, name):
    good = draw(st.sampled_from(GOOD[name]))
    how = draw(st.sampled_from(["good", "insert", "wrap", "pieces", "text", "long"]))
    if how == "good":
        return good
    if how == "insert":  # one piece of trouble somewhere inside a good value
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from(METACHARACTERS)) + good[at:]
    if how == "wrap":
        return draw(st.sampled_from(METACHARACTERS)) + good + draw(st.sampled_from(METACHARACTERS + [""]))
    if how == "pieces":
        parts = draw(st.lists(st.sampled_from(METACHARACTERS + GOOD[name] + ["a", "0"]), min_size=1, max_size=6))
        return "".join(parts)
    if how == "text":
        return draw(ARGUMENT_TEXT)
    # Very long: just over the limits that matter (63, 100, 128, 253, 255) or far beyond.
    length = draw(st.sampled_from([64, 101, 129, 254, 256, 1000, 20000]))
    return (good or "a") * (length // max(len(good), 1) + 1)


def cli_safe_project(value):
    """Leave out project values that cookiecutter acts on before any hook can run.

    cookiecutter creates the project directory, output_dir/<project>, *before* the
    pre_gen hook: a '/' makes it create the intermediate directories, which stay
    behind when the hook refuses (`project=a/b` leaves output_dir/a); a name of
    more than 255 bytes crashes it with OSError "File name too long"; '', '.' and
    '..' name the output directory or its parent and are refused as "already
    exists" without naming the variable. No hook can prevent these, and check_project
    refuses all of them when it gets to see them (test_rules_never_raise_... below).
    """
    return "/" not in value and len(value.encode("utf-8", "surrogatepass")) <= 255 and value not in ("", ".", "..")


def values_for(name):
    strategy = hostile_value(name)
    if name == "project":
        strategy = strategy.filter(cli_safe_project)
    return strategy


# --- Running cookiecutter -----------------------------------------------------------------

# Every validated variable in use: these choices switch on the ones that are optional
# (generic-oauth's user names come from outside the hub: it needs an admin named).
ALL_ON = [
    "authenticator=generic-oauth",
    f"admin_user={NAMED_ADMIN}",
    "tls=yes",
    "user_storage=yes",
    "kaniko_credentials=secret",
    "registry_insecure=yes",
    "idle_culling=yes",
    "profiles=profile_list",
    "named_servers=yes",
]


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """The template without .venv: cookiecutter copies the whole template dir for pre_prompt."""
    return copy_template(tmp_path_factory.mktemp("template") / "template")


class Runner:
    """cookiecutter runs, each in a scratch directory of its own (config, TMPDIR, cwd).

    With capfd, the runs go through cookiecutter's command line in this process
    (conftest.run_cookiecutter_in_process): the property tests make some 120 runs, and
    starting Python and importing cookiecutter for each was a third of their time. The
    examples kept below (test_known_hostile_values) and the overwrite test still run the
    `cookiecutter` executable."""

    def __init__(self, template, base, capfd=None):
        self.template = template
        self.base = base
        self.capfd = capfd
        self.count = 0

    def run(self, *args, output_dir):
        self.count += 1
        scratch = self.base / f"scratch-{self.count}"
        scratch.mkdir()
        env = hermetic_env(scratch)
        config = scratch / "config.yaml"
        config.write_text(f"cookiecutters_dir: {scratch / 'cc'}\nreplay_dir: {scratch / 'replay'}\n")
        env["COOKIECUTTER_CONFIG"] = str(config)
        args = ("-o", str(output_dir), *args)
        if self.capfd is not None:
            result = run_cookiecutter_in_process(*args, cwd=scratch, env=env, capfd=self.capfd, template=self.template)
        else:
            result = run_cookiecutter(*args, cwd=scratch, env=env, template=self.template)
        shutil.rmtree(scratch, ignore_errors=True)  # a refused run leaves its template copy here
        return result


@pytest.fixture
def runner(template, tmp_path_factory):
    return Runner(template, tmp_path_factory.mktemp("runs"))


@pytest.fixture
def runner_in_process(template, tmp_path_factory, capfd):
    return Runner(template, tmp_path_factory.mktemp("runs"), capfd)


# Both spellings of each prefix: a virtual environment reached through a symlink
# reports the link in sys.prefix, and tracebacks name the real files.
TRUSTED_CODE = tuple(
    {p for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix) for p in (prefix, os.path.realpath(prefix))} | {"<"}
)


def foreign_frames(stderr):
    """Traceback frames from anything but Python, cookiecutter and its libraries: a hook crashed."""
    return [f for f in re.findall(r'^\s*File "([^"]+)", line \d+', stderr, re.MULTILINE) if not f.startswith(TRUSTED_CODE)]


def has_jinja(value):
    return any(mark in value for mark in ("{{", "{%", "{#"))


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def outcome(result, name, value, output_dir):
    """Classify a run; fail on anything but the three allowed endings."""
    stderr = result.stderr
    frames = foreign_frames(stderr)
    assert not frames, f"a hook crashed on {name}={value!r}:\n{stderr[-3000:]}"
    if result.returncode == 0:
        return "accepted"
    left = tree(output_dir)
    assert left == [], f"refused {name}={value!r} but left {left[:10]} in the output directory:\n{stderr[-2000:]}"
    if re.search(rf"^error: {re.escape(name)}=", stderr, re.MULTILINE):
        return "refused by the hook"
    said = result.stdout + stderr  # cookiecutter's own messages go to stdout
    if has_jinja(value) and (f"Unable to render variable '{name}'" in said or "jinja2.exceptions." in said):
        return "refused by cookiecutter (Jinja)"
    pytest.fail(f"{name}={value!r}: exit status {result.returncode} without an 'error: {name}=' line:\n{stderr[-3000:]}")


# --- What the API server would say, beyond the OpenAPI schema ---------------------------------

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# k8s.io/apimachinery resource.Quantity
QUANTITY = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
# distribution/reference: [host[:port]/]component[/component...][:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:(?:\[[0-9a-f:]+\]|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


def api_server_problems(doc):
    """Object names, namespaces, labels, quantities and hosts as the API server checks them."""
    problems = []
    meta = doc["metadata"]
    where = f"{doc['kind']}/{meta.get('name')}"
    if not (DNS_SUBDOMAIN.fullmatch(meta["name"]) and len(meta["name"]) <= 253):
        problems.append(f"{where}: invalid name")
    namespace = meta.get("namespace", "")
    if not (DNS_LABEL.fullmatch(namespace) and len(namespace) <= 63):
        problems.append(f"{where}: invalid namespace {namespace!r}")
    labels = dict(meta.get("labels") or {})
    labels.update(((doc.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})
    for key, value in labels.items():
        prefix, _, label = key.rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.fullmatch(prefix)) or not (LABEL_NAME.fullmatch(label) and len(label) <= 63):
            problems.append(f"{where}: invalid label key {key!r}")
        if not (isinstance(value, str) and LABEL_VALUE.fullmatch(value) and len(value) <= 63):
            problems.append(f"{where}: invalid label value {key}={value!r}")
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        if not IMAGE_REFERENCE.fullmatch(container["image"]):
            problems.append(f"{where}: container {container['name']} has an invalid image {container['image']!r}")
    if doc["kind"] == "PersistentVolumeClaim":
        size = doc["spec"]["resources"]["requests"]["storage"]
        if not QUANTITY.fullmatch(str(size)):
            problems.append(f"{where}: invalid quantity {size!r}")
    if doc["kind"] == "Ingress":
        for rule in doc["spec"]["rules"]:
            if not (DNS_SUBDOMAIN.fullmatch(rule["host"]) and len(rule["host"]) <= 253):
                problems.append(f"{where}: invalid host {rule['host']!r}")
        if doc["spec"].get("ingressClassName") and not DNS_SUBDOMAIN.fullmatch(doc["spec"]["ingressClassName"]):
            problems.append(f"{where}: invalid ingressClassName")
    for selector in (doc.get("spec") or {}).get("ingress") or []:
        for peer in selector.get("from") or []:
            for value in ((peer.get("namespaceSelector") or {}).get("matchLabels") or {}).values():
                if not (LABEL_VALUE.fullmatch(value) and len(value) <= 63):
                    problems.append(f"{where}: invalid selector value {value!r}")
    return problems


def check_accepted(output_dir, name, value):
    """An accepted value: a project whose overlays render, validate, and whose Python compiles."""
    import kubernetes_validate
    import yaml

    entries = list(output_dir.iterdir())
    assert len(entries) == 1 and entries[0].is_dir(), entries
    project = entries[0]
    if name == "project" and not has_jinja(value):
        assert project.name == value
    version = kubernetes_validate.latest_version()
    problems = []
    for overlay in OVERLAYS:
        for doc in kustomize(project, overlay):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{overlay} {doc['kind']}/{doc['metadata'].get('name')}: {error.message}")
            problems += [f"{overlay} {p}" for p in api_server_problems(doc)]
    for source in ("hub-config/jupyterhub_config.py", "hub-config/authenticator_config.py"):
        compile((project / source).read_text(encoding="utf-8"), source, "exec")
    yaml.safe_load((project / "skaffold.yaml").read_text(encoding="utf-8"))
    assert not problems, f"{name}={value!r} was accepted but:\n" + "\n".join(problems)


# --- The command line, property-based ---------------------------------------------------------

# Three shards, so that xdist runs them side by side; 40 examples each.
SHARDS = [VALIDATED[i::3] for i in range(3)]


@pytest.mark.parametrize("names", SHARDS, ids=[f"shard{i}" for i in range(len(SHARDS))])
def test_hostile_values_are_refused_cleanly_or_render_valid_manifests(names, runner_in_process, tmp_path_factory):
    need_tool("kubectl")
    seen = {}

    @CLI_SETTINGS
    @given(data=st.data())
    def run(data):
        name = data.draw(st.sampled_from(names), label="variable")
        value = data.draw(values_for(name), label="value")
        output_dir = tmp_path_factory.mktemp("out")
        result = runner_in_process.run(*ALL_ON, f"{name}={value}", output_dir=output_dir)
        how = outcome(result, name, value, output_dir)
        if how == "accepted":
            check_accepted(output_dir, name, value)
        seen[how] = seen.get(how, 0) + 1
        shutil.rmtree(output_dir, ignore_errors=True)

    run()
    # The strategies reach both sides of the rules, not only the refusals.
    assert seen.get("accepted") and seen.get("refused by the hook"), seen


@pytest.mark.parametrize(
    "argument",
    [
        "namespace=abc\n",  # a trailing newline: `$` in a Python regex matches before it
        "hostname=hub.example.org\n",
        "registry=registry.example.org:\u00b2",  # '²'.isdigit() is True, int('²') raises
        "__oauth_token_url=https://auth.example.org:\u00b2/token",
        "registry=registry.example.org:\u0663",  # an Arabic-Indic 3: int() takes it, a port it is not
        "project=hub-",  # a valid directory, but also the part-of label value, which must end alphanumeric
        "project=" + "h" * 64,
        "idle_timeout=3600\n",
        "named_server_limit=3\n",
        "named_server_limit=0",  # JupyterHub's "no limit"
        "named_server_limit=\u0663",  # an Arabic-Indic 3: int() takes it, the rule must not
        "user_storage_size=10Gi\n",
        "admin_user=admin\n",
        "image_name=hub\n",
        'registry=[fe80::1%"x]:5000',  # an IPv6 zone may hold any character, quotes too
        "namespace={{ 7*7 }}",  # rendered by cookiecutter to 49: accepted, and fine
        "namespace={% if %}",
        "hostname={{ nothing }}",
    ],
    ids=lambda a: json.dumps(a, ensure_ascii=True),
)
def test_known_hostile_values(argument, runner, tmp_path):
    """Cases found by the property test above, kept as plain examples."""
    need_tool("kubectl")
    name, _, value = argument.partition("=")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    result = runner.run(*ALL_ON, argument, output_dir=output_dir)
    if outcome(result, name, value, output_dir) == "accepted":
        check_accepted(output_dir, name, value)


@pytest.mark.xfail(
    strict=True,
    reason="cookiecutter creates output_dir/a for project=a/b before any hook runs (see cli_safe_project)",
)
def test_project_with_a_slash_leaves_nothing_behind(runner, tmp_path):
    """Documents a cookiecutter limitation; strict, so a cookiecutter that fixes it shows up here."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    result = runner.run("project=a/b", output_dir=output_dir)
    assert result.returncode != 0 and "error: project=" in result.stderr
    assert tree(output_dir) == [], tree(output_dir)


def test_bad_choices_are_refused_by_cookiecutter_before_anything_is_written(runner, tmp_path):
    """Choice variables never reach the hook: cookiecutter refuses values outside the list."""
    for argument in ['authenticator=pam', 'tls=yes\n', 'user_storage="yes"', "idle_culling={{ 'yes' }}x"]:
        output_dir = tmp_path / f"out-{hashlib.sha1(argument.encode()).hexdigest()[:8]}"
        output_dir.mkdir()
        result = runner.run(argument, output_dir=output_dir)
        name = argument.split("=")[0]
        assert result.returncode != 0, argument
        assert not foreign_frames(result.stderr), result.stderr
        assert f"choice variable {name}" in result.stderr, result.stderr[-2000:]
        assert tree(output_dir) == []


# --- Overwriting an existing project ------------------------------------------------------------


def digest_tree(path):
    """Every file and directory with its mode, and every file's bytes."""
    return {
        str(p.relative_to(path)): (
            stat.S_IMODE(p.lstat().st_mode),
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
        )
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture(scope="module")
def good_project(template, tmp_path_factory):
    base = tmp_path_factory.mktemp("good")
    result = Runner(template, base).run(*ALL_ON, output_dir=base / "out")
    assert result.returncode == 0, result.stderr
    project = base / "out" / "jupyterhub-deploy"
    (project / "my-notes.txt").write_text("mine\n")  # a file of the user's own
    return project


def refused_values(name):
    """Values the rule refuses and cookiecutter passes on unchanged (no Jinja)."""
    strategy = hostile_value(name).filter(lambda v: not has_jinja(v) and rules.RULES[name](v) is not None)
    return strategy


@settings(CLI_SETTINGS, max_examples=12)
@given(data=st.data())
def test_refused_run_with_overwrite_leaves_the_project_byte_for_byte(data, good_project, runner, tmp_path_factory):
    name = data.draw(st.sampled_from([n for n in VALIDATED if n != "project"]), label="variable")
    value = data.draw(refused_values(name), label="value")
    out = tmp_path_factory.mktemp("overwrite")
    shutil.copytree(good_project.parent, out, dirs_exist_ok=True, symlinks=True)
    project = out / good_project.name
    before = digest_tree(project)
    result = runner.run("-f", *ALL_ON, f"{name}={value}", output_dir=out)
    assert result.returncode != 0, f"{name}={value!r} was accepted"
    assert re.search(rf"^error: {re.escape(name)}=", result.stderr, re.MULTILINE), result.stderr[-2000:]
    assert not foreign_frames(result.stderr), result.stderr
    assert digest_tree(project) == before, f"{name}={value!r} with -f changed the existing project"
    assert sorted(p.name for p in out.iterdir()) == [good_project.name]
    shutil.rmtree(out, ignore_errors=True)


# --- The rule functions, directly ------------------------------------------------------------

RULE_NAMES = sorted({rule.__name__ for rule in rules.RULES.values()})
VARIABLE_OF_RULE = {rule.__name__: name for name, rule in reversed(list(rules.RULES.items()))}

# What an accepted value must be, written from the specifications in words, character
# by character, not as the hook's regular expressions (which would only agree with
# themselves).
LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
DIGITS = frozenset("0123456789")
ALNUM_LOWER = LOWER | DIGITS


def is_label(value):
    """RFC 1123 label (Kubernetes): at most 63 characters, lower-case alphanumerics or '-',
    starting and ending with an alphanumeric."""
    return (
        0 < len(value) <= 63
        and set(value) <= ALNUM_LOWER | {"-"}
        and value[0] in ALNUM_LOWER
        and value[-1] in ALNUM_LOWER
    )


def is_subdomain(value):
    return len(value) <= 253 and all(is_label(part) for part in value.split("."))


def is_port(text):
    return 0 < len(text) <= 5 and set(text) <= DIGITS and 1 <= int(text) <= 65535


def is_path_component(value):
    """distribution/reference: lower-case alphanumeric runs joined by one separator each,
    a separator being '.', '_', '__' or one or more '-'."""
    runs, separators, current = [], [], ""
    for char in value:
        if char in ALNUM_LOWER:
            if current and current[0] not in ALNUM_LOWER:
                separators.append(current)
                current = ""
            current += char
        elif char in "._-":
            if current and current[0] in ALNUM_LOWER:
                runs.append(current)
                current = ""
            current += char
        else:
            return False
    if not current or current[0] not in ALNUM_LOWER:
        return False  # empty, or ends with a separator
    runs.append(current)
    return len(runs) == len(separators) + 1 and all(sep in (".", "_", "__") or set(sep) == {"-"} for sep in separators)


def is_tag(value):
    """distribution/reference: 1 to 128 word characters, '.' or '-'; not starting with '.' or '-'."""
    word = LOWER | {c.upper() for c in LOWER} | DIGITS | {"_"}
    return 0 < len(value) <= 128 and set(value) <= word | {".", "-"} and value[0] in word


def is_hub_version(value):
    """A tag that is a semantic version (chart versions are) of 4.0.0 or newer; a
    pre-release of 4.0.0 comes before 4.0.0 (semver.org, item 11)."""
    core, dash, _ = value.partition("-")
    parts = core.split(".")
    if not is_tag(value) or len(parts) != 3 or not all(p and set(p) <= DIGITS for p in parts):
        return False
    release = tuple(int(p) for p in parts)
    return release > (4, 0, 0) or (release == (4, 0, 0) and not dash)


def is_registry(value):
    host_port, _, path = value.partition("/")
    host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
    return (
        (not colon or is_port(port))
        and host != ""
        and set(host) <= ALNUM_LOWER | set(".-[]:")
        and (not path or all(is_path_component(c) for c in path.split("/")))
    )


def is_whole_seconds(value):
    return 0 < len(value) <= 9 and set(value) <= DIGITS and int(value) >= 60


def is_named_server_limit(value):
    return 0 < len(value) <= 3 and set(value) <= DIGITS and 1 <= int(value) <= 100


def is_username(value):
    """A JupyterHub user name the template can put in YAML, Python and a pod's labels unquoted:
    lower-case alphanumerics, '.', '_', '-', at most 64, alphanumeric at both ends."""
    return (
        0 < len(value) <= 64
        and set(value) <= ALNUM_LOWER | set("._-")
        and value[0] in ALNUM_LOWER
        and value[-1] in ALNUM_LOWER
    )


# What the template may rely on for every accepted value: one printable ASCII line.
def one_clean_line(value):
    return value.isascii() and value.isprintable() and value == value.strip()


ACCEPTED_MEANS = {
    "check_namespace": lambda v: is_label(v) and not v.startswith("kube-"),
    "check_optional_label": lambda v: v == "" or is_label(v),
    "check_subdomain": is_subdomain,
    "check_optional_subdomain": lambda v: v == "" or is_subdomain(v),
    "check_registry": is_registry,
    "check_image_name": lambda v: len(v) <= 255 and all(is_path_component(c) for c in v.split("/")),
    # A directory name and the app.kubernetes.io/part-of label value of every object.
    "check_project": lambda v: bool(LABEL_VALUE.fullmatch(v)) and 0 < len(v) <= 63 and v not in (".", ".."),
    "check_quantity": lambda v: bool(QUANTITY.fullmatch(v)) and float(re.match(r"[0-9.]*", v).group(0) or 0) > 0,
    "check_hub_version": is_hub_version,
    "check_pinned_image": lambda v: (":" in v.rsplit("/", 1)[-1] or "@sha256:" in v)
    and not re.search(r"[\s\"'\\{}]", v),
    "check_username": is_username,
    "check_https_url": lambda v: v.startswith("https://") and not re.search(r"[\s\"'\\]", v),
    "check_seconds": is_whole_seconds,
    "check_named_server_limit": is_named_server_limit,
}
assert set(ACCEPTED_MEANS) == set(RULE_NAMES), set(ACCEPTED_MEANS) ^ set(RULE_NAMES)


@pytest.mark.parametrize(
    "predicate, good, bad",
    [
        (is_label, ["a", "a-b", "0", "x" * 63], ["", "-a", "a-", "A", "a_b", "x" * 64, "a.b"]),
        (is_path_component, ["a", "a.b", "a_b", "a__b", "a---b", "a1.b2"], ["", "a.", ".a", "a..b", "a___b", "a._b", "A"]),
        (is_tag, ["a", "_x", "1.0-rc", "A" * 128], ["", ".a", "-a", "a b", "A" * 129, "a:b"]),
        (is_port, ["1", "65535", "8080"], ["", "0", "65536", "\u00b2", "\u0663", "+1", "123456"]),
        (is_username, ["a", "a.b-c_d", "x" * 64], ["", "A", "a b", "-a", "a-", "x" * 65]),
        (is_whole_seconds, ["60", "3600", "999999999"], ["", "59", "1h", "\u0663\u0660", "1000000000"]),
        (is_named_server_limit, ["1", "7", "100"], ["", "0", "101", "1000", "-1", "+3", "3.0", "\u0663"]),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_the_oracles_themselves(predicate, good, bad):
    """The predicates above, on examples taken from the specifications' own wording."""
    assert [v for v in good if not predicate(v)] == []
    assert [v for v in bad if predicate(v)] == []


ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


def rule_inputs(rule_name):
    variable = VARIABLE_OF_RULE[rule_name]
    return st.one_of(hostile_value(variable), ANY_TEXT, st.from_regex(r"[a-z0-9.:/@_-]{0,30}", fullmatch=True))


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_rules_never_raise_and_what_they_accept_is_safe(rule_name):
    rule = getattr(rules, rule_name)

    @RULE_SETTINGS
    @given(value=rule_inputs(rule_name))
    @example(value="abc\n")
    @example(value="x:\u00b2")
    @example(value="https://a.example.org:\u00b2/x")
    @example(value="x:\u0663")
    @example(value='[fe80::1%"\nx]:5000')  # an IPv6 zone may hold any character
    @example(value='https://[fe80::1%"]/x')
    @example(value="https://auth.example.org/\u202ex\x01")
    def check(value):
        answer = rule(value)
        assert answer is None or (isinstance(answer, str) and answer and "\n" not in answer and "\r" not in answer)
        if answer is None:
            assert one_clean_line(value) or value == "", f"{rule_name} accepted {value!r}"
            assert ACCEPTED_MEANS[rule_name](value), f"{rule_name} accepted {value!r}"

    check()


@settings(deadline=None, max_examples=200, derandomize=True, database=None)
@given(context=st.dictionaries(st.sampled_from(VALIDATED + list(rules.CHOICES)), st.one_of(ANY_TEXT, st.integers(), st.none())))
def test_problems_are_one_line_each_and_name_their_variable(context):
    lines = rules.problems(context)
    assert all("\n" not in line and "\r" not in line for line in lines)
    named = [line.split("=", 1)[0] for line in lines]
    assert named == [n for n in list(rules.RULES) + list(rules.CHOICES) if n in named]  # in a stable order
    assert set(named) <= set(context)
    for line in lines:
        json.JSONDecoder().raw_decode(line.split("=", 1)[1])  # the value, JSON-quoted


HUGE_VALUES = ["a" * 100_000 + "!", "a-" * 50_000 + "!", "a." * 50_000, "1" * 100_000 + "x", "https://" + "a" * 100_000 + " "]
# A linear match of 100 000 characters takes milliseconds, a backtracking one hours or
# more: anything in between is a bound, not a measurement, and a busy machine is far from it.
HUGE_VALUE_BOUND_SECONDS = 60


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_rules_answer_on_huge_values(rule_name):
    """No regular expression backtracks itself into hours on 100 000 characters: the rule
    runs in a child process, killed if it has not answered within the bound."""
    program = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('rules', {str(ROOT / 'hooks' / 'pre_gen_project.py')!r})\n"
        "rules = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(rules)\n"
        f"rule = getattr(rules, {rule_name!r})\n"
        "print(json.dumps([rule(value) is not None for value in json.load(sys.stdin)]))\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", program], input=json.dumps(HUGE_VALUES), capture_output=True, text=True,
            timeout=HUGE_VALUE_BOUND_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{rule_name} had not answered on {len(HUGE_VALUES)} huge values after {HUGE_VALUE_BOUND_SECONDS} s")
    assert result.returncode == 0, result.stderr
    refused = json.loads(result.stdout)
    assert all(refused), f"{rule_name} accepted a value of 100 000 characters: {refused}"


def test_metacharacters_are_what_they_say():
    """The pieces of trouble really are troublesome: none survives the namespace rule."""
    for piece in METACHARACTERS:
        assert rules.check_namespace("ns" + piece + "x") is not None or re.fullmatch(r"[a-z0-9-]*", piece), piece
    assert any(unicodedata.category(c) == "Nd" and not c.isascii() for piece in METACHARACTERS for c in piece)
