"""Bakes and kustomize renders, each computed once per test run, whichever xdist worker asks first.

A bake is keyed by the digest of what cookiecutter reads (the template's files) and the
answers; a render by the digest of what `kubectl kustomize` reads (the project's k8s/ tree).
Results live in one directory shared by the workers of a run (`$TEMPLATE_TESTS_SHARED`,
made by tests/conftest.py), guarded by file locks; each process also keeps what it read.

Renders of projects whose k8s/ trees differ only in secret values (the random passwords of
the git-ignored hub-secrets.env) share one render unless exact=True: only the keys of those
files enter the digest. That is what lets the matrix's combinations come down to a few dozen renders.

These bakes must succeed, so their hooks run in the test process (support/hook_runner.py):
the tests that check how hooks fail run them as processes, as cookiecutter does.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from support import fast_yaml
from support.envfile import env_file
from support.hook_runner import in_process_hooks

ROOT = Path(__file__).resolve().parents[2]
SHARED_VARIABLE = "TEMPLATE_TESTS_SHARED"

# The admin the tests name where the template wants one named: with an authenticator whose
# user names come from outside the hub (cookiecutter.json's _external_user_names), the
# pre_gen hook refuses the default, "admin", and other placeholders.
NAMED_ADMIN = "ada-lovelace"
EXTERNAL_USER_NAMES = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))["_external_user_names"]


def with_named_admin(answers):
    """The answers, with admin_user=NAMED_ADMIN where the authenticator's user names come
    from outside the hub and the answers name no admin; else the answers as they are."""
    if answers.get("authenticator") in EXTERNAL_USER_NAMES and "admin_user" not in answers:
        return {**answers, "admin_user": NAMED_ADMIN}
    return answers


def copy_template(dest):
    """The template's own files, without .venv, .git or caches."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "cookiecutter.json", dest / "cookiecutter.json")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("hooks", "templates", "{{cookiecutter.project}}"):
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    return dest


def tree_digest(root, files, transform=None):
    """sha256 over the relative names and contents of files under root."""
    digest = hashlib.sha256()
    for path in sorted(files):
        data = transform(path) if transform else path.read_bytes()
        digest.update(str(path.relative_to(root)).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:24]


def hermetic_env(scratch):
    """The environment for a cookiecutter run: no workshop variables, no kube config."""
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_NAMESPACE", "INGRESS_DOMAIN", "REGISTRY_HOST")}
    env["KUBECONFIG"] = str(scratch / "no-kubeconfig")
    # cookiecutter leaves its copy of the template in TMPDIR when a hook fails.
    env["TMPDIR"] = str(scratch)
    return env


@contextlib.contextmanager
def locked(lock_path):
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def patched_environ(env):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def patched_tempdir(path):
    saved = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = saved


# What kustomize reads: the k8s/ tree and hub-config/, whose files become the hub's ConfigMap.
KUSTOMIZE_INPUTS = ("k8s", "hub-config")


def k8s_digest(project, exact=False):
    """The content of what kustomize reads (KUSTOMIZE_INPUTS); of the secrets files only their
    keys (values are random) unless exact."""
    project = Path(project)

    def content(path):
        if path.name == "hub-secrets.env" and not exact:
            return "\n".join(sorted(env_file(path))).encode()
        return path.read_bytes()

    files = [p for top in KUSTOMIZE_INPUTS for p in (project / top).rglob("*") if p.is_file()]
    return tree_digest(project, files, content) + ("-exact" if exact else "")


def kubectl_kustomize(project, overlay):
    """`kubectl kustomize` of an overlay, as a list of objects."""
    from conftest import need_tool

    out = subprocess.run(
        [need_tool("kubectl"), "kustomize", str(Path(project) / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in fast_yaml.load_all(out.stdout) if doc]


class Bakery:
    """Bakes and renders once per test run, whichever xdist worker asks first."""

    def __init__(self, shared):
        self.shared = Path(shared)
        self.renders = {}
        self.hub_configs = {}
        self.k8s_digests = {}
        with locked(self.shared / "template.lock"):
            if not (self.shared / "template" / "cookiecutter.json").exists():
                copy_template(self.shared / "template.tmp")
                (self.shared / "template.tmp").rename(self.shared / "template")
        self.template = self.shared / "template"
        self.template_digest = tree_digest(self.template, [p for p in self.template.rglob("*") if p.is_file()])
        self.scratch = self.shared / "scratch"
        self.scratch.mkdir(exist_ok=True)
        for part in ("bakes", "renders"):
            (self.shared / part).mkdir(exist_ok=True)
        config = self.shared / "cookiecutter-config.yaml"
        config.write_text(f"cookiecutters_dir: {self.shared / 'cookiecutters'}\nreplay_dir: {self.shared / 'replay'}\n")
        self.config = config

    def project(self, context):
        """The project baked with these answers (extra_context); the same directory for every caller."""
        key = hashlib.sha256(f"{self.template_digest}\0{json.dumps(context, sort_keys=True)}".encode()).hexdigest()[:20]
        out = self.shared / "bakes" / key
        with locked(self.shared / "bakes" / f"{key}.lock"):
            if not (out / "done").exists():
                shutil.rmtree(out, ignore_errors=True)
                path = self.bake_into(out, context)
                (out / "done").write_text(Path(path).name)
        return out / (out / "done").read_text()

    def bake_into(self, output_dir, context):
        """cookiecutter with these answers (an admin named where the authenticator needs one:
        with_named_admin), the hooks in this process (support/hook_runner.py)."""
        from cookiecutter.main import cookiecutter

        # Hook scripts are rendered into, and left in, the temp dir.
        with patched_environ(hermetic_env(self.scratch)), patched_tempdir(self.scratch), in_process_hooks():
            return cookiecutter(
                str(self.template),
                no_input=True,
                extra_context=with_named_admin(context),
                output_dir=str(output_dir),
                config_file=str(self.config),
            )

    def render(self, project, overlay, exact=False):
        """kubectl kustomize, cached by the content of k8s/ (secret values left out unless exact).

        The list returned is shared: copy it before changing it."""
        key = self.render_key(project, overlay, exact)
        if key not in self.renders:
            cached = self.shared / "renders" / f"{key}.json"
            with locked(self.shared / "renders" / f"{key}.lock"):
                if not cached.exists():
                    tmp = cached.with_suffix(".tmp")
                    tmp.write_text(json.dumps(kubectl_kustomize(project, overlay)))
                    tmp.rename(cached)
            self.renders[key] = json.loads(cached.read_text())
        return self.renders[key]

    def render_key(self, project, overlay, exact=False):
        """What render() keys its result by: projects with the same key have the same render."""
        return f"{self.k8s_digest(project, exact)}-{overlay}"

    def k8s_digest(self, project, exact=False):
        """k8s_digest, read once per process for the bakes, which nobody changes (callers copy)."""
        project = Path(project)
        if not project.is_relative_to(self.shared / "bakes"):
            return k8s_digest(project, exact)
        if (project, exact) not in self.k8s_digests:
            self.k8s_digests[project, exact] = k8s_digest(project, exact)
        return self.k8s_digests[project, exact]

    def hub_config(self, project, overlay="development"):
        """The hub's configuration as the overlay's pod loads it (its Deployment's environment)."""
        key = (project, overlay)
        if key not in self.hub_configs:
            from hubrunner import pod_environment

            # The Secret's keys the hub must have whatever the authenticator (proxy=separate's
            # token), as stand-ins; the authenticator's are read from the files by the tests.
            secrets = {"CONFIGPROXY_AUTH_TOKEN": "stand-in-proxy-token"}
            env = {k: v for k, v in pod_environment(self.render(project, overlay), secrets=secrets).items() if not v.startswith("/")}
            self.hub_configs[key] = load_hub_config(project, env)
        return self.hub_configs[key]


_SESSION = {}


def session_bakery():
    """This process's Bakery over the run's shared directory (one per process)."""
    shared = os.environ.get(SHARED_VARIABLE)
    if not shared:
        # Outside a pytest run that set it up (a script importing the helpers): a private one.
        shared = os.environ[SHARED_VARIABLE] = tempfile.mkdtemp(prefix="template-tests-")
    if shared not in _SESSION:
        _SESSION[shared] = Bakery(shared)
    return _SESSION[shared]


def load_hub_config(project, pod_env=None):
    """Execute the generated jupyterhub_config.py the way JupyterHub does, into a Config, with
    the pod's environment (paths into its volumes left out: the pid file goes elsewhere)."""
    from traitlets.config import Config

    config = Config()
    path = project / "hub-config/jupyterhub_config.py"
    namespace = {
        "__file__": str(path),
        "__name__": "jupyterhub_config",
        "get_config": lambda: config,
        "load_subconfig": lambda _path: None,  # authenticator_config.py: checked by text
    }
    saved_path = list(sys.path)
    # The pid file the config removes when stale: in a directory of our own (gone again
    # once the config is loaded), not the pod's path.
    with tempfile.TemporaryDirectory(prefix="hub-config-") as pid_dir:
        pid_file = Path(pid_dir) / "jupyterhub-proxy.pid"
        env = {**os.environ, "POD_NAMESPACE": "checked-namespace", **(pod_env or {})}
        env["JUPYTERHUB_PROXY_PID_FILE"] = str(pid_file)
        with patched_environ(env):
            try:
                exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102
            finally:
                # It imports hub_helpers from its own directory: the next project has its own.
                sys.path[:] = saved_path
                sys.modules.pop("hub_helpers", None)
    return config
