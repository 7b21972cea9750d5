"""CONTRIBUTING.md's "Adding an authenticator", followed in a copy of the template.

The test adds `demo` (JupyterHub's built-in DummyAuthenticator with one password from
the Secret) by writing exactly the files CONTRIBUTING.md lists, then checks that the
files it had to touch are the files listed, and that the copy bakes with the real
cookiecutter command and passes the matrix's key checks: every overlay renders, the
Python compiles and configures the hub, no template text is left, the README and the
next steps speak of it.
"""

import hashlib
import json
import os
import re
import shutil

import yaml

from conftest import OVERLAYS, ROOT, clean_template, kustomize, run_cookiecutter
from hubrunner import read_env_file
from test_authenticators import authenticator_problems
from test_bake_matrix import UNRENDERED

NAME = "demo"
LABEL = "demo: one password for everybody (how CONTRIBUTING.md adds an authenticator)"

# The folder's files, as CONTRIBUTING.md describes them.
FOLDER = {
    "authenticator.yaml": f"""\
# The demo authenticator (tests/test_contributing.py).
label: "{LABEL}"
external_user_names: false
generated_secrets:
  DEMO_PASSWORD: 16
next_step: >-
  Log in at {{public_url}}/hub/login under any name, {{admin_user}} too, with
  DEMO_PASSWORD from k8s/overlays/development/hub-secrets.env.
""",
    "authenticator_config.py": '''\
"""Anyone logs in, under any name, with one password: JupyterHub's DummyAuthenticator."""

from hub_helpers import require_env

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = require_env("DEMO_PASSWORD", "the password everybody logs in with")
c.Authenticator.allow_all = True
''',
    "requirements.txt": "",  # built into JupyterHub
    "README-login.md": """\
{%- from "derived.jinja" import public_url with context -%}
Open {{ public_url }}/hub/login and log in under any name with the demo password `DEMO_PASSWORD`.
""",
    "hub-secrets.env.example": """\
# The password everybody logs in with.
DEMO_PASSWORD=
""",
    "README-secrets.md": """\
The template filled them in with a random demo password; on a fresh clone, write
`DEMO_PASSWORD=` and a long random string into each.
""",
}


def files_to_touch():
    """The paths CONTRIBUTING.md lists under "Files to touch", with <name> filled in."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- files-to-touch.*?-->\n(.*?)<!-- end of files-to-touch -->", text, re.S).group(1)
    paths = re.findall(r"^- `([^`]+)`", block, re.M)
    assert paths, "no files listed between the files-to-touch markers"
    return {path.replace("<name>", NAME) for path in paths}


def snapshot(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def add_demo_authenticator(template):
    """What CONTRIBUTING.md says to do, step by step."""
    folder = template / "{{cookiecutter.project}}" / "authenticators" / NAME
    folder.mkdir()
    for name, text in FOLDER.items():
        (folder / name).write_text(text, encoding="utf-8")
    path = template / "cookiecutter.json"
    context = json.loads(path.read_text(encoding="utf-8"))
    context["authenticator"].append(NAME)
    context["__prompts__"]["authenticator"][NAME] = LABEL
    path.write_text(json.dumps(context, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def hermetic_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_NAMESPACE", "INGRESS_DOMAIN", "REGISTRY_HOST")}
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    return env


def section(readme, title):
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def configure(project, env):
    """Run authenticator_config.py as JupyterHub does (after jupyterhub_config.py put hub_helpers.py on the path)."""
    import sys

    from traitlets.config import Config

    config = Config()
    saved_path, saved_environ = list(sys.path), dict(os.environ)
    sys.path.insert(0, str(project / "hub-config"))
    os.environ.update(env)
    try:
        path = project / "hub-config/authenticator_config.py"
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), {"get_config": lambda: config})  # noqa: S102
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.modules.pop("hub_helpers", None)
    return config


def test_contributing_lists_every_file_an_authenticator_needs(tmp_path):
    template = tmp_path / "template"
    shutil.copytree(clean_template(), template)
    before = snapshot(template)
    add_demo_authenticator(template)
    after = snapshot(template)
    touched = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert touched == files_to_touch(), "CONTRIBUTING.md's list differs from what adding an authenticator takes"
    assert authenticator_problems(template) == []

    for answers in ([], ["tls=yes", "user_storage=no", "idle_culling=no", "hostname=hub.example.org"]):
        out = tmp_path / f"out{len(answers)}"
        result = run_cookiecutter(
            "-o", str(out), f"authenticator={NAME}", "admin_user=boss", *answers,
            cwd=tmp_path, env=hermetic_env(tmp_path), template=template,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        project = out / "jupyterhub-deploy"
        public_url = "https://hub.example.org" if answers else "http://jupyterhub-jupyterhub.127.0.0.1.nip.io"
        # The next steps follow `skaffold run`, which deploys the development hub: its own host.
        development_url = public_url.replace("://", "://dev-", 1)

        # No template text left, every YAML file parses, every Python file compiles.
        for path in (p for p in project.rglob("*") if p.is_file()):
            text = path.read_text(encoding="utf-8")
            assert not UNRENDERED.search(text), f"{path.relative_to(project)}: {UNRENDERED.search(text)[0]!r}"
            if path.suffix == ".yaml":
                assert list(yaml.safe_load_all(text)), path
            if path.suffix == ".py":
                compile(text, str(path), "exec")
        assert not (project / "authenticators").exists()

        # The secrets: a random password in each git-ignored file, a Secret in each overlay.
        assert (project / "hub-secrets.env.example").read_text() == FOLDER["hub-secrets.env.example"]
        for overlay in OVERLAYS:
            values = read_env_file(project / "k8s" / "overlays" / overlay / "hub-secrets.env")
            assert len(values["DEMO_PASSWORD"]) >= 16, values
            objects = kustomize(project, overlay)
            secret = next(o for o in objects if o["kind"] == "Secret")
            assert secret["metadata"]["name"].startswith("hub-secrets-") and "DEMO_PASSWORD" in secret["data"]
            deployment = next(o for o in objects if o["kind"] == "Deployment")
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"], "optional": False}}]

        # The hub's configuration takes the password from the environment.
        config = configure(project, {"DEMO_PASSWORD": values["DEMO_PASSWORD"]})
        assert config.JupyterHub.authenticator_class == "dummy"
        assert config.DummyAuthenticator.password == values["DEMO_PASSWORD"]

        # The README and the next steps speak of it.
        readme = (project / "README.md").read_text(encoding="utf-8")
        assert (
            f"Open {public_url}/hub/login and log in under any name with the demo password `DEMO_PASSWORD`."
            in section(readme, "Log in")
        )
        assert "The template filled them in with a random demo password" in section(readme, "Secrets")
        assert "how users log in (`demo`)" in readme
        assert (
            f"Log in at {development_url}/hub/login under any name, boss too, with DEMO_PASSWORD from"
            " k8s/overlays/development/hub-secrets.env." in result.stderr
        ), result.stderr
        packages = [line for line in (project / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
        assert packages == ([] if answers else ["jupyterhub-idle-culler==1.4.0"])  # demo's own: none
