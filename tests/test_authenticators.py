"""Each authenticator is one folder, complete, and cookiecutter.json offers exactly those.

cookiecutter reads its menu from cookiecutter.json only, so the names and labels live
there and in the folders (CONTRIBUTING.md, "Adding an authenticator"), and so do the
authenticators whose user names come from outside the hub (the hooks read
cookiecutter.json's _external_user_names, which cruft hands them too); these checks keep
the two in step.
"""

import json
import re
import shutil

import yaml

from conftest import ROOT

REQUIRED = {"authenticator.yaml", "authenticator_config.py", "requirements.txt", "README-login.md"}
WITH_SECRETS = {"hub-secrets.env.example", "README-secrets.md"}
ABOUT_KEYS = {"label", "next_step", "generated_secrets", "external_user_names"}


def env_names(text):
    """NAME of each NAME=value line of an env file."""
    return {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")}


def authenticator_problems(template_root):
    """Where the authenticator folders and cookiecutter.json disagree, or a folder is incomplete."""
    template = json.loads((template_root / "cookiecutter.json").read_text(encoding="utf-8"))
    folders = template_root / "{{cookiecutter.project}}" / "authenticators"
    names = sorted(p.name for p in folders.iterdir() if p.is_dir())
    offered = template["authenticator"]
    labels = {k: v for k, v in template["__prompts__"]["authenticator"].items() if k != "__prompt__"}
    external = template.get("_external_user_names")
    problems = []
    if not isinstance(external, dict):
        problems.append(f"cookiecutter.json's _external_user_names is {external!r}, not a mapping")
        external = {}
    if sorted(offered) != names:
        problems.append(f"cookiecutter.json offers {sorted(offered)}, the folders are {names}")
    if sorted(labels) != sorted(offered):
        problems.append(f"cookiecutter.json labels {sorted(labels)}, offers {sorted(offered)}")
    for name in names:
        folder = folders / name
        files = {p.name for p in folder.iterdir()}
        for missing in sorted(REQUIRED - files):
            problems.append(f"{name}: no {missing}")
        if ("hub-secrets.env.example" in files) != ("README-secrets.md" in files):
            problems.append(f"{name}: hub-secrets.env.example and README-secrets.md go together")
        for extra in sorted(files - REQUIRED - WITH_SECRETS):
            problems.append(f"{name}: {extra} is not part of an authenticator's folder")
        if "authenticator.yaml" not in files:
            continue
        about = yaml.safe_load((folder / "authenticator.yaml").read_text(encoding="utf-8")) or {}
        for key in sorted(set(about) - ABOUT_KEYS):
            problems.append(f"{name}: authenticator.yaml has {key!r}, which nothing reads")
        if about.get("label") != labels.get(name):
            problems.append(f"{name}: label {about.get('label')!r}, cookiecutter.json says {labels.get(name)!r}")
        if not about.get("next_step"):
            problems.append(f"{name}: no next_step")
        # Every folder says it, false included: an authenticator added without thinking about
        # it would otherwise accept "admin" as its admin.
        names_from = about.get("external_user_names")
        if names_from is not False and not (isinstance(names_from, str) and names_from.strip()):
            problems.append(f"{name}: external_user_names is {names_from!r}; false, or what to give as admin_user")
        elif names_from != external.get(name, False):
            problems.append(
                f"{name}: external_user_names {names_from!r}, cookiecutter.json's _external_user_names says"
                f" {external.get(name, False)!r}"
            )
        example = folder / "hub-secrets.env.example"
        declared = env_names(example.read_text(encoding="utf-8")) if example.exists() else set()
        config = (folder / "authenticator_config.py").read_text(encoding="utf-8") if "authenticator_config.py" in files else ""
        for variable in sorted(set(re.findall(r"require_env\(\s*\"([A-Z0-9_]+)\"", config)) - declared):
            problems.append(f"{name}: the config requires {variable}, hub-secrets.env.example does not list it")
        for variable in sorted(set(about.get("generated_secrets") or {}) - declared):
            problems.append(f"{name}: generated_secrets names {variable}, hub-secrets.env.example does not")
        if "requirements.txt" in files:
            for line in (folder / "requirements.txt").read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.startswith("#") and not re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", line):
                    problems.append(f"{name}: requirements.txt line {line!r} is not name==version")
    for name in sorted(set(external) - set(names)):
        problems.append(f"cookiecutter.json's _external_user_names names {name}, which has no folder")
    return problems


def test_folders_and_cookiecutter_json_agree():
    assert authenticator_problems(ROOT) == []


def test_disagreements_are_found(tmp_path):
    """Plant each kind of fault in a copy: the check names it."""
    copy = tmp_path / "template"
    (copy / "{{cookiecutter.project}}").mkdir(parents=True)
    shutil.copy2(ROOT / "cookiecutter.json", copy)
    folders = copy / "{{cookiecutter.project}}" / "authenticators"
    shutil.copytree(ROOT / "{{cookiecutter.project}}" / "authenticators", folders)
    assert authenticator_problems(copy) == []

    about = folders / "github" / "authenticator.yaml"
    about.write_text(about.read_text().replace('label: "github: GitHub OAuth"', 'label: "github: OAuth"'))
    (folders / "tmp" / "README-secrets.md").write_text("stray\n")
    (folders / "dummy" / "hub-secrets.env.example").write_text("# nothing\n")
    shutil.copytree(folders / "tmp", folders / "tmp2")
    about = folders / "native" / "authenticator.yaml"
    about.write_text(about.read_text().replace("external_user_names: false\n", ""))
    about = folders / "generic-oauth" / "authenticator.yaml"
    about.write_text(re.sub(r"(?m)^external_user_names: .*$", "external_user_names: false", about.read_text()))
    problems = "\n".join(authenticator_problems(copy))
    assert "github: label 'github: OAuth'" in problems
    assert "tmp: hub-secrets.env.example and README-secrets.md go together" in problems
    assert "dummy: the config requires JUPYTERHUB_USER_PASSWORD" in problems
    assert "dummy: generated_secrets names JUPYTERHUB_ADMIN_PASSWORD" in problems
    assert "the folders are ['dummy', 'generic-oauth', 'github', 'native', 'tmp', 'tmp2']" in problems
    assert "native: external_user_names is None; false, or what to give as admin_user" in problems
    assert "generic-oauth: external_user_names False, cookiecutter.json's _external_user_names says 'the user name" in problems

    template = json.loads((copy / "cookiecutter.json").read_text())
    template["_external_user_names"]["pam"] = "a login"
    (copy / "cookiecutter.json").write_text(json.dumps(template))
    assert "cookiecutter.json's _external_user_names names pam, which has no folder" in authenticator_problems(copy)
