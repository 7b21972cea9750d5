"""Shared fixtures: baking the template, finding tools, the option matrix, and the CI rule.

The CI rule: under a truthy CI variable (`CI=true`, `CI=1`, `CI=yes`, ...: anything but
empty, 0, false, no, off), a skipped test fails, whatever skipped it (pytest.skip,
pytest.importorskip, a skip mark, a missing tool). CI installs everything, so a skip
there means a check did not run. Outside CI, tests skip with their reason.
"""

import atexit
import functools
import gc
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from binaryornot import check as binaryornot_check
from kubernetes_validate import utils as kubernetes_validate_utils

from support import jinja_memo, rewrite_cache, scratch
from support.bakery import SHARED_VARIABLE, copy_template, session_bakery
from support.tools import TOOLS  # the one place that says where the test tools live

# pytest keeps the test modules and hypothesis rewritten under the tools' directory
# (support/rewrite_cache.py says why): 3 to 4 s of CPU less for each pytest process.
rewrite_cache.install(TOOLS / "pytest-rewrites")

# kubernetes-validate reads its schema files (megabytes of JSON) on every call; read each
# once per process (the generated scripts/check does the same): 30 ms a document become 3.
kubernetes_validate_utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate_utils.schema_contents)
# Jinja compiles each template source once per process, not once per bake (support/jinja_memo.py).
jinja_memo.install()
# cookiecutter asks binaryornot whether each template file is binary, every bake: the
# answer is a pure function of the file's first bytes, so it is kept per distinct chunk.
binaryornot_check.is_binary_string = functools.lru_cache(maxsize=4096)(binaryornot_check.is_binary_string)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
OVERLAYS = ("development", "production")

# Every choice and yes/no variable (cookiecutter.json lists their values).
CHOICE_VARIABLES = {k: v for k, v in TEMPLATE.items() if isinstance(v, list) and not k.startswith("_")}
# Choices whose effect is confined to a few files that nothing else changes in its own way:
# crossing them with the rest would double the matrix, and every test over it, for nothing.
# tests/test_bake_matrix.py shows each changes only these files (whatever the rest), and the
# tests of those files take both values.
CONFINED = {
    "create_namespace": ("skaffold.yaml", "k8s/namespace.yaml", "README.md"),
    # How kaniko gets to the registry: Skaffold's build section, and the README's words on it.
    "kaniko_credentials": ("skaffold.yaml", "README.md"),
    "registry_insecure": ("skaffold.yaml", "README.md"),
    # The users' image built here: its build context, Skaffold's second artifact, the Component
    # that tells the hub its name, the overlays' images: entries, and the hub's config reading it.
    "build_user_image": (
        "skaffold.yaml", "README.md", "hub-config/jupyterhub_config.py",
        "k8s/overlays/development/kustomization.yaml", "k8s/overlays/production/kustomization.yaml",
        "k8s/components/user-image/kustomization.yaml", "k8s/components/user-image/images-in-env.yaml",
        "k8s/components/user-image/hub-deployment-patch.yaml", "user-image/Dockerfile", "user-image/requirements.txt",
        # With the pre-puller, its DaemonSet pulls the built image.
        "k8s/components/pre-puller/pre-puller-daemonset.yaml",
    ),
    # A DaemonSet that pulls the users' images on every node: its Component, the overlays that
    # list it, and the README's words on it.
    "pre_puller": (
        "k8s/components/pre-puller/kustomization.yaml",
        "k8s/components/pre-puller/pre-puller-daemonset.yaml",
        "k8s/components/pre-puller/pre-puller-networkpolicy.yaml",
        "k8s/overlays/development/kustomization.yaml",
        "k8s/overlays/production/kustomization.yaml",
        "README.md",
    ),
    # The users' environments: the hub's configuration (its flag, and the file it loads, which
    # the ConfigMap lists) and the README's section on them.
    # With the pre-puller, its DaemonSet pulls each profile's image too (post_gen adds them).
    "profiles": (
        "hub-config/jupyterhub_config.py",
        "hub-config/profiles.yaml",
        "hub-config/kustomization.yaml",
        "k8s/components/pre-puller/pre-puller-daemonset.yaml",
        "README.md",
    ),
    "named_servers": ("hub-config/jupyterhub_config.py", "README.md"),
}
CROSSED = {k: v for k, v in CHOICE_VARIABLES.items() if k not in CONFINED}
# The bake matrix: all combinations of the other choices (the confined ones at their default).
MATRIX = [
    dict(zip(CROSSED, values))
    for values in itertools.product(*CROSSED.values())
]
# What users get (profiles, named servers, their own image, the pre-puller): each is confined
# to its files, but they touch one another (the pre-puller pulls the built image and every
# profile's), so every combination of them is in the matrix too, over its first and its last
# combination (opposite in every crossed choice): 2 x 15 combinations more, not 16 times as many.
FEATURES = tuple(
    name for name in ("build_user_image", "profiles", "named_servers", "pre_puller") if name in CHOICE_VARIABLES
)
MATRIX += [
    {**base, **dict(zip(FEATURES, values))}
    for base in (MATRIX[0], MATRIX[-1])
    for values in itertools.product(*(CHOICE_VARIABLES[name] for name in FEATURES))
    if any(value != CHOICE_VARIABLES[name][0] for name, value in zip(FEATURES, values))
]


# One folder per authenticator (CONTRIBUTING.md, "Adding an authenticator").
AUTHENTICATORS = ROOT / "{{cookiecutter.project}}" / "authenticators"


def needs_secrets(authenticator, proxy="in-hub", authenticators=AUTHENTICATORS):
    """The rule the template applies: the folder comes with a hub-secrets.env.example, or the
    proxy is separate (its token is one of the hub's secrets)."""
    return proxy == "separate" or (authenticators / authenticator / "hub-secrets.env.example").exists()


def authenticator_packages(authenticator, authenticators=AUTHENTICATORS):
    """The pinned packages of the authenticator's requirements.txt."""
    text = (authenticators / authenticator / "requirements.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# --- The CI rule ---------------------------------------------------------------------


def ci_is_on(environ=os.environ):
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _skip_fails_under_ci(report):
    if ci_is_on() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI={os.environ['CI']}: a skip is a failure here (CI installs every tool). {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return _skip_fails_under_ci((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips as a whole (pytest.importorskip at import time, say) fails too."""
    return _skip_fails_under_ci((yield))


# --- The order: the longest tests first ----------------------------------------------

# Modules whose tests take the longest, mostly waiting (for a hub, a user server, the idle
# culler, a build): started first, they run beside the quick ones instead of trailing
# after them (xdist hands out tests in this order; its groups go first anyway).
LONGEST_FIRST = ("test_journey.py", "test_hub.py", "test_checkov.py", "test_hostile_input.py", "test_interactive.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """The modules and the ten thousand collected items live as long as the run: moved
    out of the cyclic garbage collector's sight, they are not walked again at every
    collection of the oldest generation (measured: 9% of the CPU of the security and
    network tests, a third of it with this)."""
    gc.collect()
    gc.freeze()


# --- One directory of bakes and renders per run, shared by the xdist workers ---------


RUN_TMPDIR = pytest.StashKey[str]()
RUN_PASSED = pytest.StashKey[bool]()


def use_run_tmpdir(config):
    """TMPDIR for the whole run (this process, the workers, every tool they start): a
    directory of the run's own, on a tmpfs where there is one (support/scratch.py says why),
    removed when the run passes. Like /tmp it is open to every user: the emulated
    cluster's pods run as uid 1000."""
    root = scratch.scratch_root(os.environ, scratch.read_mounts())  # None: the system's
    run_dir = tempfile.mkdtemp(prefix="template-tests-run-", dir=root)
    os.chmod(run_dir, 0o1777)
    os.environ["TMPDIR"] = tempfile.tempdir = run_dir
    # A pytest run inside this one (test_repository's) makes its directory in here.
    os.environ[scratch.VARIABLE] = run_dir
    config.stash[RUN_TMPDIR] = run_dir


def use_own_cookiecutter_config():
    """A cookiecutter config of this process's own for every run it starts: cookiecutter
    writes each run's answers to its replay_dir (~/.cookiecutter_replay/<template dir>.json
    by default), and the tests' templates are all called `template`. Without this the suite
    overwrote a file in the developer's home, a ~/.cookiecutterrc's default_context changed
    what the tests baked, and two workers' runs replaced each other's replay file between
    cookiecutter writing it and the pre_gen hook naming it."""
    own = Path(tempfile.mkdtemp(prefix="cookiecutter-config-"))
    config_file = own / "cookiecutterrc.yaml"
    # JSON is YAML, the format cookiecutter reads, and quotes any path safely.
    config_file.write_text(
        json.dumps({"default_context": {}, "replay_dir": str(own / "replay"), "cookiecutters_dir": str(own / "cookiecutters")})
    )
    os.environ["COOKIECUTTER_CONFIG"] = str(config_file)


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        # hypothesis's summary imports hypothesis here at the end anyway; imported now, it is
        # rewritten and kept before the workers start, and they find it ready.
        import hypothesis  # noqa: F401

        use_run_tmpdir(config)
        shared = tempfile.mkdtemp(prefix="template-tests-")
        os.environ[SHARED_VARIABLE] = shared  # the workers inherit it
        config.add_cleanup(lambda: shutil.rmtree(shared, ignore_errors=True))
    use_own_cookiecutter_config()  # in the run's TMPDIR, which the workers inherited


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[RUN_PASSED] = exitstatus == 0


def pytest_terminal_summary(terminalreporter, config):
    run_dir = config.stash.get(RUN_TMPDIR, None)
    if run_dir and not config.stash.get(RUN_PASSED, False):
        terminalreporter.write_line(
            f"temporary files of this run kept in {run_dir} (tmp_path of each test under pytest-of-*/):"
            " it is in memory, remove it when done"
        )


def pytest_unconfigure(config):
    """A run that passed leaves nothing in memory; a failed one keeps its files to look at."""
    run_dir = config.stash.get(RUN_TMPDIR, None)
    if run_dir and config.stash.get(RUN_PASSED, False):
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bakery():
    return session_bakery()


def combo_id(combo):
    return "-".join(f"{k}={v}" for k, v in combo.items())


@functools.lru_cache(maxsize=None)
def clean_template():
    """A copy of just the template (no .venv, no build/): what a user's clone holds.

    cookiecutter copies the whole template directory for the pre_prompt hook, so
    baking from the checkout itself would copy the virtual environment every time.
    """
    dest = copy_template(Path(tempfile.mkdtemp(prefix="template-")) / "template")
    atexit.register(shutil.rmtree, dest.parent, True)
    return dest


def need_tool(name):
    """The path of a system tool (or one in the virtual environment); skip where it is missing."""
    path = shutil.which(name) or (
        str(Path(sys.executable).parent / name)
        if (Path(sys.executable).parent / name).exists()
        else None
    )
    if not path:
        pytest.skip(f"{name} is not installed (scripts/install-test-tools installs it)")
    return path


@pytest.fixture(scope="session")
def bake(bakery):
    """bake(**extra_context) -> path of the baked project; each context is baked once per run.

    The directory is shared with every test (and xdist worker) that asks for the same
    answers: copy it before changing anything in it."""

    def _bake(**extra_context):
        return bakery.project(extra_context)

    return _bake


def run_cookiecutter_in_process(*args, cwd, env, capfd, template=None):
    """cookiecutter's command line (cookiecutter.cli.main, the entry point of the
    `cookiecutter` command), called in this process: the same argument parsing, messages,
    exit statuses and hook processes as run_cookiecutter, without starting Python and
    importing cookiecutter again for every run (about 0.5 s of CPU each). capfd captures
    at the file descriptors, so the hooks' output (their own processes) is seen too. An
    exception that escapes is printed as the interpreter would print it, with status 1."""
    import traceback

    from cookiecutter.cli import main

    from support.bakery import patched_environ, patched_tempdir

    template = template or clean_template()
    argv = ["--no-input", str(template), *args]
    capfd.readouterr()  # what came before is not this run's
    saved_cwd = os.getcwd()
    with patched_environ(env), patched_tempdir(env.get("TMPDIR") or tempfile.gettempdir()):
        os.chdir(cwd)
        try:
            main.main(args=argv, prog_name="cookiecutter", standalone_mode=True)
            returncode = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                returncode = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                returncode = 1
        except Exception as error:  # noqa: BLE001  (what the interpreter does with it)
            # Without the frames of this harness (this function, support/jinja_memo.py),
            # which a `cookiecutter` process would not have.
            frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(str(ROOT / "tests"))]
            print("Traceback (most recent call last):", file=sys.stderr)
            print("".join(traceback.format_list(frames) + traceback.format_exception_only(error)), end="", file=sys.stderr)
            returncode = 1
        finally:
            os.chdir(saved_cwd)
            sys.stdout.flush()
            sys.stderr.flush()
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["cookiecutter", *argv], returncode, out, err)


def kustomize(project, overlay):
    """The overlay rendered by `kubectl kustomize`, as a list of objects (a fresh copy).

    Cached by the exact content of the project's k8s/ tree, across the run's workers."""
    import copy

    return copy.deepcopy(session_bakery().render(Path(project), overlay, exact=True))


def run_cookiecutter(*args, cwd, env=None, template=None):
    """cookiecutter's own command line, as a user runs it."""
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    template = template or clean_template()
    return subprocess.run(
        [str(cookiecutter), "--no-input", str(template), *args],
        cwd=cwd,
        env=env if env is not None else os.environ.copy(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
