"""Each authenticator is one folder, complete, and cookiecutter.json offers exactly those.

cookiecutter reads its menu from cookiecutter.json only, so the names and labels live
there and in the folders (CONTRIBUTING.md, "Adding an authenticator"); these checks
keep the two in step.
"""

import json
import re
import shutil

import yaml

from conftest import ROOT

REQUIRED = {"authenticator.yaml", "authenticator_config.py", "requirements.txt", "README-login.md"}
WITH_SECRETS = {"hub-secrets.env.example", "README-secrets.md"}
ABOUT_KEYS = {"label", "next_step", "generated_secrets"}


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
    problems = []
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
    problems = "\n".join(authenticator_problems(copy))
    assert "github: label 'github: OAuth'" in problems
    assert "tmp: hub-secrets.env.example and README-secrets.md go together" in problems
    assert "dummy: the config requires JUPYTERHUB_USER_PASSWORD" in problems
    assert "dummy: generated_secrets names JUPYTERHUB_ADMIN_PASSWORD" in problems
    assert "the folders are ['dummy', 'generic-oauth', 'github', 'native', 'tmp', 'tmp2']" in problems
