"""Every combination of the choice and yes/no variables bakes into a clean project."""

import hashlib
import itertools
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import (
    AUTHENTICATORS,
    CHOICE_VARIABLES,
    CONFINED,
    CROSSED,
    MATRIX,
    OVERLAYS,
    ROOT,
    TEMPLATE,
    clean_template,
    combo_id,
    needs_secrets,
    run_cookiecutter,
)
from support import fast_yaml, hook_runner, jinja_memo
from support.bakery import hermetic_env, with_named_admin

# Jinja that survived rendering: an expression, a statement or a comment
# (`${{ ... }}` is a GitHub Actions expression, meant to be there).
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%|%\}|\{#|cookiecutter\.[a-z_]")


def project_files(project):
    return sorted(p for p in project.rglob("*") if p.is_file())


_CLEAN_TEXTS = set()  # (name, digest) of the texts that passed file_is_clean in this process


def file_is_clean(name, data):
    """Asserts that a baked file's text is fully rendered, has no CR, and parses (YAML, Python).

    A verdict on a name and its bytes: most files are the same in many combinations, so each
    distinct text is judged once per process."""
    key = (name, hashlib.sha256(data).digest())
    if key in _CLEAN_TEXTS:
        return
    text = data.decode("utf-8")
    assert not UNRENDERED.search(text), f"{name}: unrendered template text {UNRENDERED.search(text)[0]!r}"
    assert "\r" not in text, f"{name}: CR line ending"
    if name.endswith((".yaml", ".yml")):
        assert list(fast_yaml.load_all(text)), f"{name} is empty"
    if name.endswith(".py"):
        compile(text, name, "exec")
    _CLEAN_TEXTS.add(key)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("k8s/base/x.yaml", b"a: {{ cookiecutter.namespace }}\n", "unrendered template text"),
        ("README.md", b"see {% raw %}\n", "unrendered template text"),
        ("README.md", b"line one\r\nline two\n", "CR line ending"),
        ("k8s/base/x.yaml", b"# only a comment\n", "is empty"),
        ("k8s/base/x.yaml", b"a: [\n", ""),
        ("hub_helpers.py", b"def f(:\n", ""),
    ],
)
def test_file_is_clean_refuses_each_fault(name, data, message):
    """The checks test_bakes_clean makes of every file fail on each fault, even after the
    same name passed with another text (the memo is keyed by the bytes, not the name)."""
    good = {"k8s/base/x.yaml": b"a: 1\n", "README.md": b"fine\n", "hub_helpers.py": b"x = 1\n"}[name]
    file_is_clean(name, good)
    with pytest.raises((AssertionError, yaml.YAMLError, SyntaxError), match=re.escape(message) if message else None):
        file_is_clean(name, data)


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_bakes_clean(bake, combo):
    project = bake(**combo)
    files = {str(p.relative_to(project)): p for p in project_files(project)}

    # The chosen authenticator became hub-config/authenticator_config.py; the others are gone.
    assert "hub-config/authenticator_config.py" in files
    assert not (project / "authenticators").exists()
    chosen = AUTHENTICATORS / combo["authenticator"] / "authenticator_config.py"
    assert re.search(r"authenticator_class = \S+", files["hub-config/authenticator_config.py"].read_text())[0] == (
        re.search(r"authenticator_class = \S+", chosen.read_text())[0]
    )

    for name, path in files.items():
        file_is_clean(name, path.read_bytes())

    # Every overlay has the secrets file its kustomization reads, and only then:
    # with hub_secrets=existing-secret the Secret lives in the cluster, not here.
    from_files = needs_secrets(combo["authenticator"], combo["proxy"]) and combo["hub_secrets"] == "env-file"
    for overlay in OVERLAYS:
        secrets = project / "k8s" / "overlays" / overlay / "hub-secrets.env"
        kustomization = fast_yaml.load((project / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        assert secrets.exists() == from_files
        assert ("secretGenerator" in kustomization) == from_files
    assert (project / "scripts" / "init-secrets").exists() == from_files
    # A Secret made in the cluster changes nothing in git: scripts/reload-secrets restarts the
    # hub for it (a generated Secret's name changes with its content, which restarts it).
    in_cluster = needs_secrets(combo["authenticator"], combo["proxy"]) and combo["hub_secrets"] == "existing-secret"
    assert (project / "scripts" / "reload-secrets").exists() == in_cluster
    assert (project / "scripts" / "uninstall").exists()
    assert (project / "hub-secrets.env.example").exists() == needs_secrets(combo["authenticator"], combo["proxy"])


def test_files_copied_without_rendering_hold_no_template_text():
    """cookiecutter.json's _copy_without_render (files Jinja need not read, which makes
    every bake faster) lists only files without Jinja, and each pattern still matches."""
    import fnmatch

    template_dir = ROOT / "{{cookiecutter.project}}"
    files = [str(p.relative_to(template_dir)) for p in template_dir.rglob("*") if p.is_file()]
    for pattern in TEMPLATE["_copy_without_render"]:
        matched = [f for f in files if fnmatch.fnmatch(f, pattern)]
        assert matched, f"_copy_without_render: {pattern!r} matches no file"
        for name in matched:
            text = (template_dir / name).read_text(encoding="utf-8")
            assert not re.search(r"\{\{|\{%|\{#", text), f"{name} holds Jinja but is copied without rendering ({pattern!r})"


# A test of a choice variable in the template's text, Jinja or Python:
# `cookiecutter.x == "v"`, `cookiecutter.x != "v"`, `cookiecutter.x in ("v", "w")`.
CHOICE_TEST = re.compile(r'cookiecutter\.(\w+)\s*(?:[!=]=\s*"([^"]*)"|(?:not\s+)?in\s*\(([^)]*)\))')


def test_the_matrix_holds_every_value_the_template_tests_for():
    """Read from the template's files, not from the lists the matrix is made of: every
    variable they branch on varies in the matrix, every value they compare it with is
    one of its choices (a misspelt value would silently never match), and every choice
    variable is branched on somewhere."""
    tested = {}
    template = clean_template()
    for path in sorted(p for p in template.rglob("*") if p.is_file() and p.name != "cookiecutter.json"):
        for name, value, values in CHOICE_TEST.findall(path.read_text(encoding="utf-8")):
            found = [value] if value else re.findall(r'"([^"]*)"', values)
            tested.setdefault(name, set()).update(found)
    assert tested, "no choice variable is tested anywhere: the pattern above no longer fits the template"
    # The authenticator is chosen by folder, not by a test in the text: post_gen keeps
    # authenticators/<choice>/ (CONTRIBUTING.md).
    tested.setdefault("authenticator", set()).update(
        path.parent.name for path in template.glob("*/authenticators/*/authenticator.yaml")
    )
    in_matrix = {}
    for combo in MATRIX:
        for name, value in combo.items():
            in_matrix.setdefault(name, set()).add(value)
    in_matrix.update({name: set(CHOICE_VARIABLES[name]) for name in CONFINED})  # tested apart, below
    for name, values in sorted(tested.items()):
        assert name in in_matrix, f"the template branches on {name}, which the matrix does not vary"
        assert values <= in_matrix[name], f"{name}: the template tests for {values - in_matrix[name]}, not a choice"
    assert set(in_matrix) <= set(tested), f"choices nothing branches on: {set(in_matrix) - set(tested)}"


def tree(project):
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file() and p.name != "hub-secrets.env"}


@pytest.mark.parametrize("name", list(CONFINED))
def test_a_confined_choice_changes_only_its_files(bake, name):
    """Not crossed with the matrix (conftest.CONFINED): each of its values changes only its
    files, whatever the other answers; here over every value of each choice that also changes
    those files, and two opposite combinations of the rest."""
    files = set(CONFINED[name])
    sharing = [other for other in CROSSED if any(
        f"cookiecutter.{other}" in (ROOT / "{{cookiecutter.project}}" / f).read_text(encoding="utf-8")
        for f in files if (ROOT / "{{cookiecutter.project}}" / f).exists())]  # fmt: skip
    combos = [dict(zip(sharing, values)) for values in itertools.product(*(CROSSED[o] for o in sharing))]
    combos += [MATRIX[0], MATRIX[-1]]
    for combo in combos:
        baked = {value: tree(bake(**{**combo, name: value})) for value in CHOICE_VARIABLES[name]}
        first, *others = baked.values()
        for other in others:
            differ = {f for f in first.keys() | other.keys() if first.get(f) != other.get(f)}
            assert differ and differ <= files, f"{name} changed {sorted(differ - files) or 'nothing'} with {combo}"


def pinned(requirements_file):
    """{package: version} of the name==version lines of a requirements file."""
    lines = (ROOT / requirements_file).read_text(encoding="utf-8").splitlines()
    return dict(line.split("#")[0].strip().split("==") for line in lines if "==" in line.split("#")[0])


def test_requirements_follow_the_options(bake):
    """The hub's extra packages per option, at the versions the hub tests boot
    (requirements-dev.txt: the versions k8s-hub ships)."""
    tested = pinned("requirements-dev.txt")
    lines = lambda project: [  # noqa: E731
        line for line in (project / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    expect = lambda *packages: [f"{package}=={tested[package]}" for package in packages]  # noqa: E731
    assert lines(bake(authenticator="dummy", idle_culling="no")) == []
    assert lines(bake(authenticator="native", idle_culling="yes")) == expect(
        "jupyterhub-nativeauthenticator", "jupyterhub-idle-culler"
    )
    assert lines(bake(authenticator="github", idle_culling="no")) == expect("oauthenticator")
    assert lines(bake(authenticator="generic-oauth", idle_culling="no")) == expect("oauthenticator")
    assert lines(bake(authenticator="tmp", idle_culling="no")) == expect("jupyterhub-tmpauthenticator")


def test_dummy_secrets_are_random_and_long_enough(bake, cookies):
    """Two projects never share a password; JupyterHub's minimum lengths hold."""
    first = (bake(authenticator="dummy") / "k8s/overlays/development/hub-secrets.env").read_text()
    again = cookies.bake(extra_context={"authenticator": "dummy"}, template=str(clean_template()))
    second = (again.project_path / "k8s/overlays/development/hub-secrets.env").read_text()
    assert first != second
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line and not line.startswith("#"))
    assert len(values["JUPYTERHUB_USER_PASSWORD"]) >= 8
    assert len(values["JUPYTERHUB_ADMIN_PASSWORD"]) >= 32
    assert values["JUPYTERHUB_USER_PASSWORD"] != values["JUPYTERHUB_ADMIN_PASSWORD"]
    mode = (again.project_path / "k8s/overlays/development/hub-secrets.env").stat().st_mode & 0o777
    assert mode == 0o600


def digest_tree(project):
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in project_files(project)
        if p.name != "hub-secrets.env"  # git-ignored, random by design
    }


@pytest.mark.parametrize("authenticator", TEMPLATE["authenticator"])
def test_same_context_bakes_identical_bytes(cookies, authenticator):
    """cruft update regenerates old and new template versions and diffs them."""
    context = with_named_admin({"authenticator": authenticator, "namespace": "lab-ns-1", "ingress_domain": "apps.example.org"})
    first = cookies.bake(extra_context=context, template=str(clean_template()))
    second = cookies.bake(extra_context=context, template=str(clean_template()))
    assert first.exit_code == second.exit_code == 0
    assert digest_tree(first.project_path) == digest_tree(second.project_path)


# --- The test processes' Jinja memo (support/jinja_memo.py) -------------------------------


@pytest.mark.parametrize("combo", [MATRIX[0], MATRIX[-1]], ids=combo_id)
def test_memoized_bakes_equal_the_real_command(bakery, combo, tmp_path):
    """The tests bake in process, with Jinja's compilations kept between bakes and the hooks
    run in the test process; the real `cookiecutter` command, a process of its own without
    the memo, its hooks processes of their own, makes the same files."""
    runs = hook_runner.in_process_runs()
    baked = Path(bakery.bake_into(tmp_path / "in-process", combo))
    assert jinja_memo.installed() and jinja_memo.compiled_count(), "the memo is not in use"
    assert hook_runner.in_process_runs() - runs == 3, "pre_prompt, pre_gen and post_gen did not run in process"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    answers = [f"{name}={value}" for name, value in combo.items()]
    result = run_cookiecutter("-o", str(tmp_path / "out"), *answers, cwd=scratch, env=hermetic_env(scratch))
    assert result.returncode == 0, result.stderr
    (made,) = (tmp_path / "out").iterdir()
    assert digest_tree(made) == digest_tree(baked)


# A hook as cookiecutter runs it: the output, the exit status, where it ran, as what.
HOOK_CASES = {
    "succeeds": "import os, sys\nprint(__name__, os.getcwd() == {cwd!r}, sys.path[0] == {here!r})\n",
    "exits with a message": "import sys\nprint('out')\nsys.exit('error: namespace=\"X\" is refused')\n",
    "exits with a status": "import sys\nsys.exit(3)\n",
    "exits with zero": "import sys\nsys.exit(0)\n",
    "raises": "def main():\n    raise ValueError('broken hook')\n\nmain()\n",
    "syntax error": "def main(:\n",
}


@pytest.mark.parametrize("case", HOOK_CASES)
def test_hooks_in_process_behave_as_hook_processes(case, tmp_path, capfd):
    """support/hook_runner.py against cookiecutter's own run_script (a process per hook):
    the same stdout, the same stderr up to the traceback's frames, the same failure."""
    from cookiecutter.exceptions import FailedHookException

    workdir = tmp_path / "project"
    workdir.mkdir()
    script = tmp_path / "hooks" / "post_gen_project.py"
    script.parent.mkdir()
    script.write_text(HOOK_CASES[case].format(cwd=str(workdir), here=str(script.parent)))
    outcomes = []
    for run in (hook_runner.ORIGINAL_RUN_SCRIPT, hook_runner.run_script_in_process):
        cwd, path = Path.cwd(), list(sys.path)
        try:
            run(str(script), str(workdir))
            failure = None
        except FailedHookException as error:
            failure = str(error)
        out, err = capfd.readouterr()
        assert (Path.cwd(), sys.path) == (cwd, path), "the hook changed the test process"
        # A traceback in process also has the runner's frames: compare the hook's own
        # frames and the lines that are not part of a traceback.
        err_lines = [
            line.strip()
            for line in err.splitlines()
            if line.strip().startswith(f'File "{script}"') or not (line[:1].isspace() or line.startswith("Traceback"))
        ]
        outcomes.append((out, err_lines, failure))
    assert outcomes[0] == outcomes[1]
    if case == "succeeds":
        assert outcomes[0][0] == "__main__ True True\n"
    else:
        assert outcomes[0][2] is not None or case == "exits with zero"


def test_the_memo_keeps_compile_errors_and_environment_settings_apart():
    import jinja2

    for _ in range(2):  # a syntax error is raised each time, never kept
        with pytest.raises(jinja2.TemplateSyntaxError):
            jinja2.Environment().from_string("{{ unclosed")
    source = "{% if true %}\n  x{% endif %}\n"
    plain = jinja2.Environment().from_string(source).render()
    trimmed = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    assert (plain, trimmed.from_string(source).render()) == ("\n  x", "  x")
    assert jinja2.Environment(variable_start_string="[[", variable_end_string="]]").from_string("[[ 1 ]]").render() == "1"


def test_the_memo_keeps_each_files_own_name(tmp_path):
    """cookiecutter reads the template from a new temporary copy each bake: the same source
    under a new path is compiled once, and errors still name the path it was read from."""
    import traceback

    import jinja2

    before = jinja_memo.compiled_count()
    for copy in ("first-copy", "second-copy"):
        folder = tmp_path / copy
        folder.mkdir()
        (folder / "values.yaml").write_text("a: {{ 1 // divisor }}\n")
        template = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder))).get_template("values.yaml")
        assert template.filename == str(folder / "values.yaml")
        with pytest.raises(ZeroDivisionError) as error:
            template.render(divisor=0)
        assert f'File "{folder / "values.yaml"}", line 1' in "".join(traceback.format_tb(error.tb))
    assert jinja_memo.compiled_count() - before == 1
