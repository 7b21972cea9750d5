"""Build the generated Dockerfile with buildah, run the image the way the hub's pod does,
push it to a registry and read it back with skopeo.

- The bases, one per Debian release the Dockerfile knows (it pairs Node.js and CHP per
  release): bookworm is quay.io/jupyterhub/k8s-hub:<hub_version> (k8s-hub 4.x) if it is
  already in buildah's storage or can be pulled, otherwise the local stand-in
  tests/image/build_standin_base.sh builds (cached in k8s-hub-standin/ of the test tools' directory,
  tests/support/tools.py); trixie,
  the base of the next k8s-hub, is always that script's trixie stand-in, under a tag of
  its own (TRIXIE_STANDIN_VERSION), baked in as hub_version.
- Builds: the default project on each base, and on bookworm one project for every
  distinct requirements.txt across the option matrix (the Dockerfile itself depends on
  hub_version only).
- Runs: the image as the hub's pod, on the emulated cluster (tests/hubrunner.py,
  tests/emulated_cluster.py): the development overlay is applied with this image for the
  hub's, and the node runs it with its own ENTRYPOINT and CMD, unchanged, under the
  Deployment's user, groups, environment (the Secret's variables, the downward API's),
  volumes (the claim, the emptyDir at /tmp, the configuration ConfigMap, the service
  account token) and read-only root file system, with a network namespace and address
  of its own (the config's ports, as they are). Nothing of the pod's surroundings is
  supplied by the tests.
- Nothing is timed against a goal here: scripts/benchmark-image reports the figures.

The helpers are plain functions: scripts/benchmark-image uses them too.
"""

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import CHOICE_VARIABLES, ROOT, TEMPLATE, ci_is_on, need_tool, run_cookiecutter
from hubrunner import HubDeployment, free_port, hub_container, process_ids, read_env_file, render, xsrf_form
from support.kubelet import BuildahImage
from support.tools import STANDIN_CACHE

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("image")]

TEMPLATE_DIR = ROOT / "{{cookiecutter.project}}"
STANDIN_SCRIPT = ROOT / "tests" / "image" / "build_standin_base.sh"
IMAGE_REPO = "localhost/jupyterhub-template-test"
CONTAINER_PREFIX = "jupyterhub-template-test"
CONFIG_DIR = "/usr/local/etc/jupyterhub"
EXPECTED_CMD = ["jupyterhub", "--config", f"{CONFIG_DIR}/jupyterhub_config.py"]
EXPECTED_ENTRYPOINT = ["tini", "--"]
# The Debian releases the Dockerfile pairs Node.js and CHP for, with the Node.js major
# each one ships. bookworm: k8s-hub 4.x; trixie: Zero to JupyterHub's next hub image.
NODE_MAJOR = {"bookworm": 18, "trixie": 20}
# hub_version of the trixie stand-in: a chart version (the hook accepts it) that no
# real k8s-hub has, so it can never be mistaken for one.
TRIXIE_STANDIN_VERSION = "5.0.0-0.dev.trixie-standin"
AUTHENTICATOR_CLASSES = {
    "dummy": "SharedPasswordAuthenticator",
    "native": "NativeAuthenticator",
    "github": "GitHubOAuthenticator",
    "generic-oauth": "GenericOAuthenticator",
    "tmp": "TmpAuthenticator",
}
OAUTH_TEST_VALUES = {"OAUTH_CLIENT_ID": "image-test-client", "OAUTH_CLIENT_SECRET": "image-test-secret"}
BUILDAH = ("buildah",)


# --- buildah, skopeo -----------------------------------------------------------------
def run(argv, timeout=120, check=True, **kwargs):
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited with {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def image_exists(ref, buildah=BUILDAH):
    return run([*buildah, "inspect", "--type", "image", ref], check=False).returncode == 0


def image_inspect(ref, buildah=BUILDAH):
    return json.loads(run([*buildah, "inspect", "--type", "image", ref]).stdout)


def image_config(ref, buildah=BUILDAH):
    """The OCI image config's `config` part: User, Entrypoint, Cmd, Env, ..."""
    return image_inspect(ref, buildah)["OCIv1"]["config"]


def storage_ref(ref, buildah=BUILDAH):
    """containers-storage reference for skopeo, in the storage this buildah uses."""
    if "--root" in buildah:
        root = buildah[buildah.index("--root") + 1]
        runroot = buildah[buildah.index("--runroot") + 1]
        return f"containers-storage:[overlay@{root}+{runroot}]{ref}"
    return f"containers-storage:{ref}"


def layer_sizes(ref, buildah=BUILDAH):
    """[(digest, bytes)] of the image's layers as stored: uncompressed tar sizes."""
    manifest = json.loads(run(["skopeo", "inspect", "--raw", storage_ref(ref, buildah)]).stdout)
    return [(layer["digest"], layer["size"]) for layer in manifest["layers"]]


def is_standin(ref, buildah=BUILDAH):
    return image_config(ref, buildah).get("Labels", {}).get("k8s-hub-standin") == "true"


def _last_error(stderr):
    """The message of skopeo's/buildah's last log line (`... level=fatal msg="..."`)."""
    line = (stderr.strip().splitlines() or ["?"])[-1]
    if 'msg="' in line:
        line = line.split('msg="', 1)[1].rstrip('"').replace('\\"', '"')
    return line[-200:]


def base_version(release):
    """hub_version of the base image on that Debian release."""
    return {"bookworm": TEMPLATE["hub_version"], "trixie": TRIXIE_STANDIN_VERSION}[release]


def chp_version(release, dockerfile=TEMPLATE_DIR / "Dockerfile"):
    """The configurable-http-proxy version the Dockerfile pins for that Debian release."""
    match = re.search(rf"^ARG CHP_VERSION_{release.upper()}=(\S+)$", dockerfile.read_text(encoding="utf-8"), re.M)
    assert match, f"the Dockerfile pins no CHP for {release}"
    return match.group(1)


def ensure_base(hub_version, cache_dir=STANDIN_CACHE, log=print, before_standin=None, release="bookworm"):
    """Make quay.io/jupyterhub/k8s-hub:<hub_version> available in buildah's storage.

    Returns (name, "real" | "stand-in"). The real image wins where it is there or can
    be pulled; the probe has a short timeout, so an offline machine loses seconds only.
    The trixie base is always the stand-in: its tag is not a real one.
    before_standin() is called before the stand-in is built (or found ready).
    """
    name = f"quay.io/jupyterhub/k8s-hub:{hub_version}"
    if release == "trixie":
        return _standin(name, hub_version, cache_dir, log, before_standin, release), "stand-in"
    if image_exists(name) and not is_standin(name):
        return name, "real"
    probe = subprocess.run(
        ["skopeo", "inspect", "--retry-times", "0", "--command-timeout", "20s", f"docker://{name}"],
        capture_output=True, text=True, timeout=40, stdin=subprocess.DEVNULL, check=False,
    )
    if probe.returncode == 0:
        log(f"{name}: reachable, pulling the real image")
        pull = subprocess.run(
            ["buildah", "pull", "--retry", "0", name], capture_output=True, text=True, timeout=900, check=False
        )
        if pull.returncode == 0:
            return name, "real"
        log(f"{name}: pull failed, using the stand-in: {_last_error(pull.stderr)}")
    else:
        log(f"{name}: not reachable ({_last_error(probe.stderr)}); using the stand-in")
    return _standin(name, hub_version, cache_dir, log, before_standin, release), "stand-in"


def _standin(name, hub_version, cache_dir, log, before_standin, release):
    if before_standin is not None and not image_exists(name):
        before_standin()
    started = time.monotonic()
    # The finished stand-in is also saved to cache_dir, to be re-imported where buildah's
    # storage was wiped; CI starts from nothing and throws both away, so it skips that.
    env = {**os.environ, "STANDIN_CACHE_IMAGE": "0"} if ci_is_on() else None
    result = subprocess.run(
        ["bash", str(STANDIN_SCRIPT), hub_version, str(cache_dir), release],
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL, check=False, env=env,
    )
    if result.returncode != 0:
        raise AssertionError(f"{STANDIN_SCRIPT.name} failed ({result.returncode})\n{result.stderr[-4000:]}")
    log(f"{name}: {release} stand-in ready in {time.monotonic() - started:.1f} s")
    return name


def build_image(project, tag, log_path, no_cache=False, buildah=BUILDAH, timeout=1500):
    """buildah bud the project's Dockerfile as kaniko would (context: the project).

    Returns (image id, seconds). The base is never pulled; --layers keeps every step's
    result so that a rebuild redoes only what changed.
    """
    argv = [*buildah, "bud", "--pull-never", "--isolation", "chroot", "--layers", "--iidfile", f"{log_path}.iid", "-t", tag]
    if no_cache:
        argv.append("--no-cache")
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            [*argv, "-f", str(Path(project) / "Dockerfile"), str(project)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise AssertionError(f"buildah bud of {project} failed ({proc.returncode}):\n" + "\n".join(tail))
    return Path(f"{log_path}.iid").read_text().strip().removeprefix("sha256:"), seconds


def secrets_for(project, authenticator):
    """What the Secret hub-secrets would hold: the development overlay's file, with OAuth test values."""
    path = Path(project) / "k8s" / "overlays" / "development" / "hub-secrets.env"
    values = read_env_file(path) if path.exists() else {}
    if authenticator in ("github", "generic-oauth"):
        values.update({k: v for k, v in OAUTH_TEST_VALUES.items() if not values.get(k)})
    return values


def image_hub(project, tag, workdir, authenticator, buildah=BUILDAH):
    """The project's development overlay on the emulated cluster, its hub's pod running the built
    image `tag` (registered under the name the overlay gives the hub's image, as `skaffold run`
    deploys it); a HubDeployment, not yet started."""
    objects = render(project)
    image = BuildahImage(hub_container(objects)["image"], tag, buildah=buildah)
    secrets = secrets_for(project, authenticator) if authenticator in ("github", "generic-oauth") else None
    return HubDeployment(project, workdir, image=image, objects=objects, secrets=secrets)


def run_in_image(image, *argv, buildah=BUILDAH, user=None):
    """Run one command in a throw-away container of the image, as its user (or user); CompletedProcess."""
    name = f"{CONTAINER_PREFIX}-{os.getpid()}-{time.monotonic_ns()}"
    run([*buildah, "from", "--pull-never", "--name", name, image])
    try:
        as_user = ["--user", user] if user else []
        return run([*buildah, "run", "--isolation", "chroot", "--network", "host", *as_user, name, "--", *argv], check=False)
    finally:
        run([*buildah, "rm", name], check=False)


def remove_stale_containers():
    """Working containers these tests left behind in a run that was killed (its pid is gone)."""
    names = run(["buildah", "containers", "--format", "{{.ContainerName}}"], check=False).stdout.split()
    for name in names:
        match = re.fullmatch(rf"{CONTAINER_PREFIX}-(\d+)-\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            run(["buildah", "rm", name], check=False)


# --- the variants ------------------------------------------------------------------------
def template_variables(path):
    return set(re.findall(r"cookiecutter\.(\w+)", path.read_text(encoding="utf-8")))


def requirements_combos():
    """All combinations of the choice variables that requirements.txt's template reads."""
    names = sorted(template_variables(TEMPLATE_DIR / "requirements.txt") & set(CHOICE_VARIABLES))
    return [dict(zip(names, values)) for values in itertools.product(*(CHOICE_VARIABLES[n] for n in names))]


def variant_tag(combo):
    return "-".join(f"{k}-{v}" for k, v in combo.items()) or "default"


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools():
    for name in ("buildah", "skopeo"):
        need_tool(name)
    if os.geteuid() != 0:
        pytest.skip("the image tests run buildah as root (chroot isolation, overlay storage)")


@pytest.fixture(scope="module")
def bases(tools, request):
    """base(release) -> {"name", "kind", "layers", "release"}: each base made ready once.

    The bases of the releases the selected tests need are made ready side by side, in
    threads started here: a stand-in build waits mostly for the mirrors, so from nothing
    (as in CI) the two stand-ins build at once, and the trixie one goes on while the
    bookworm images are built and run.
    """
    remove_stale_containers()
    selected = [item.nodeid for item in request.session.items if item.module is request.module]
    # Tests not parametrized by release (the variants, the push) run on bookworm.
    wanted = [r for r in NODE_MAJOR if any(f"[{r}]" in i or (r == "bookworm" and "[" not in i) for i in selected)]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(NODE_MAJOR))
    futures = {}

    def start(release):
        futures[release] = pool.submit(
            ensure_base, base_version(release), log=lambda m: print(f"\n[base] {m}"),
            before_standin=lambda: need_tool("debootstrap"), release=release,
        )

    for release in wanted:
        start(release)
    ready = {}

    def base(release):
        if release not in ready:
            if release not in futures:
                start(release)
            name, kind = futures[release].result()
            print(f"\n[base] {name}: {kind} ({release})")
            ready[release] = {"name": name, "kind": kind, "layers": layer_sizes(name), "release": release}
        return ready[release]

    yield base
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def images(bake, bases, tmp_path_factory):
    """build(combo, release) -> {"id", "tag", "project", "seconds", "base"}; each distinct
    requirements.txt once per release."""
    logs = tmp_path_factory.mktemp("build-logs")
    built = {}

    def build(combo, release="bookworm"):
        base = bases(release)
        project = bake(**combo) if release == "bookworm" else bake(hub_version=base_version(release), **combo)
        key = (release, (project / "requirements.txt").read_text(encoding="utf-8"))
        if key not in built:
            name = variant_tag(combo) if release == "bookworm" else f"{release}-{variant_tag(combo)}"
            tag = f"{IMAGE_REPO}:{name}"
            image_id, seconds = build_image(project, tag, logs / f"{name}.log")
            print(f"\n[build] {tag}: {seconds:.1f} s")
            built[key] = {"id": image_id, "tag": tag, "project": project, "seconds": seconds, "combo": combo, "base": base}
        return built[key]

    return build


@pytest.fixture(scope="module", params=list(NODE_MAJOR))
def default_image(images, request):
    """The default project's image on each Debian release's base."""
    return images({}, request.param)


@pytest.fixture(scope="module")
def bookworm_default_image(images):
    return images({}, "bookworm")


# --- tests -------------------------------------------------------------------------------
def test_only_hub_version_changes_the_dockerfile():
    """So one Dockerfile build covers the matrix, and requirements.txt decides the rest."""
    assert template_variables(TEMPLATE_DIR / "Dockerfile") == {"hub_version"}
    assert not template_variables(TEMPLATE_DIR / ".dockerignore")
    assert {k for c in requirements_combos() for k in c} == {"authenticator", "idle_culling"}


def test_default_image_config(default_image):
    """The image's own settings: built on the base, runs as uid 1000 with tini and the hub's command."""
    base_image = default_image["base"]
    config = image_config(default_image["tag"])
    assert config["User"] == "1000"
    assert config["Entrypoint"] == EXPECTED_ENTRYPOINT
    assert config["Cmd"] == EXPECTED_CMD
    assert config["WorkingDir"] == "/srv/jupyterhub"
    assert {"8000/tcp", "8081/tcp"} <= {p if "/" in p else f"{p}/tcp" for p in config["ExposedPorts"]}
    base_layers = [digest for digest, _ in base_image["layers"]]
    layers = [digest for digest, _ in layer_sizes(default_image["tag"])]
    assert layers[: len(base_layers)] == base_layers, "the image is not built on the base's layers"
    added = sum(size for _, size in layer_sizes(default_image["tag"])[len(base_layers):])
    print(f"\n[size] the image adds {added / 1e6:.1f} MB (uncompressed) over {base_image['name']} ({base_image['kind']}, {base_image['release']})")


def test_image_contents(default_image):
    """On each Debian release: its pinned proxy on its Node.js, no npm, the proxy root's, and
    none of the project's configuration (a ConfigMap brings it: hub-config/)."""
    project = default_image["project"]
    release = default_image["base"]["release"]
    script = (
        ". /etc/os-release; echo $VERSION_CODENAME;"
        # Node.js's output through a pipe of its own: Node makes the pipe it writes to
        # non-blocking, and on the shared one the lines after it were lost under load.
        ' set -e; v=$(configurable-http-proxy --version); echo "$v"; v=$(node --version); echo "$v"; id -u;'
        " if command -v npm; then echo NPM-PRESENT; fi;"
        " stat -c '%u %a %n' /opt/chp;"
        " test ! -e /tmp/requirements.txt;"
        f" find {CONFIG_DIR} -type f -exec sha256sum {{}} + 2>/dev/null || true"
    )
    out = run_in_image(default_image["tag"], "sh", "-c", script)
    assert out.returncode == 0, out.stdout + out.stderr
    codename, *lines = out.stdout.splitlines()
    assert codename == release, f"the {release} base is Debian {codename}"
    # At least the proxy's version, Node's and the uid, before anything optional.
    assert len(lines) >= 3, f"buildah run returned 0 with the output cut short: {out.stdout!r} {out.stderr!r}"
    assert lines[0] == chp_version(release), lines
    assert re.fullmatch(rf"v{NODE_MAJOR[release]}\.\d+\.\d+", lines[1]), lines
    assert lines[2] == "1000", lines
    assert "NPM-PRESENT" not in out.stdout, "npm belongs in the build stage only"
    owner, mode, path = lines[3].split(" ", 2)
    assert owner == "0" and not int(mode, 8) & 0o022, f"{path}: the hub must not be able to change its proxy ({lines[3]})"
    # Where the ConfigMap is mounted, the image holds none of the project's files (k8s-hub's
    # own may be there; the mount hides them). The layers are searched in
    # test_one_image_serves_every_overlay.
    config = {hashlib.sha256(f.read_bytes()).hexdigest(): f.name for f in (project / "hub-config").iterdir()}
    found = [f"{line.split(None, 1)[1]} is hub-config/{config[line.split()[0]]}" for line in lines[4:] if line.split()[0] in config]
    assert not found, "\n".join(found)


def test_default_image_runs_as_the_pod_would(default_image, tmp_path, record_property):
    """The built image as the hub's pod: ready through its probes, serving the login page,
    state on the claim, the proxy's pid file on the emptyDir, a clean stop on SIGTERM."""
    project = default_image["project"]
    secrets = secrets_for(project, "dummy")
    assert secrets.get("JUPYTERHUB_ADMIN_PASSWORD"), "the baked hub-secrets.env has the generated passwords"
    hub = image_hub(project, default_image["tag"], tmp_path, "dummy")
    with hub:
        seconds = hub.wait_ready()
        print(f"\n[run] the pod was ready {seconds:.2f} s after the overlay was applied")
        record_property("hub_ready_seconds", round(seconds, 2))
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(lambda: print(hub.log_tail()))
            login = requests.get(f"{hub.url}/hub/login", timeout=10, allow_redirects=False)
            assert login.status_code == 200, login.status_code
            assert 'name="password"' in login.text

            # The generated admin password from the Secret logs the admin in.
            session = requests.Session()
            form = xsrf_form(session, f"{hub.url}/hub/login", username=TEMPLATE["admin_user"],
                             password=secrets["JUPYTERHUB_ADMIN_PASSWORD"])
            resp = session.post(f"{hub.url}/hub/login", data=form, timeout=10, allow_redirects=False)
            assert resp.status_code == 302, resp.status_code
            admin = session.get(f"{hub.url}/hub/admin", timeout=10, allow_redirects=False)
            assert admin.status_code == 200, (admin.status_code, admin.headers.get("Location"))

            processes = hub.processes()
            hub_pids = [p for p, a in processes.items() if any(x.endswith("/jupyterhub") or x == "jupyterhub" for x in a[:2])]
            assert hub_pids and all(process_ids(p)[0][0] == 1000 for p in hub_pids), processes
            chp = [p for p, a in processes.items() if any("configurable-http-proxy" in x for x in a)]
            assert chp and all(process_ids(p)[0][0] == 1000 for p in chp), "the hub started its proxy, as uid 1000"
            culler = [p for p, a in processes.items() if "jupyterhub_idle_culler" in a]
            assert culler, "idle_culling=yes: the culler runs as a hub-managed service"

            state = {p.name: p for p in hub.host_path("/srv/jupyterhub").iterdir()}
            assert {"jupyterhub.sqlite", "jupyterhub_cookie_secret"} <= set(state), state
            assert all(p.stat().st_uid == 1000 for p in state.values())
            assert state["jupyterhub_cookie_secret"].stat().st_mode & 0o077 == 0
            pid_file = hub.host_path("/tmp/jupyterhub-proxy.pid")
            assert pid_file.exists(), "the proxy's pid file goes to the emptyDir at /tmp"
            on_failure.pop_all()

        # SIGTERM to the container's PID 1 (tini), as the kubelet stops it.
        pod = hub.pod
        hub.cluster.delete_pod(hub.namespace, pod)
        [run] = [c for ns, name, c in hub.cluster.container_runs if name == pod]
        assert run.proc.returncode == 0 and not run.killed, (
            f"SIGTERM to tini: the container should exit 0 by itself, got {run.proc.returncode}"
            f"{' after SIGKILL' if run.killed else ''}\n{hub.log_tail()}"
        )


def test_every_requirements_variant_builds_and_starts(images, tmp_path):
    """One image per distinct requirements.txt of the matrix: it builds, and the hub in it
    starts with the chosen authenticator, and the culler only where it was chosen."""
    seen, failures = {images({})["tag"]}, []  # the default: booted in full above
    for combo in requirements_combos():
        image = images(combo)
        if image["tag"] in seen:
            continue
        seen.add(image["tag"])
        authenticator = combo["authenticator"]
        try:
            with image_hub(image["project"], image["tag"], tmp_path / variant_tag(combo), authenticator) as hub:
                seconds = hub.wait_ready()
                hub.wait_running()
                culler = any("jupyterhub_idle_culler" in a for a in hub.processes().values())
                used = re.search(r"Using Authenticator: (\S+)", hub.log_text())
                print(f"\n[variant] {image['tag']}: ready after {seconds:.2f} s, {used and used.group(1)}, culler={culler}")
                if not used or AUTHENTICATOR_CLASSES[authenticator] not in used.group(1):
                    failures.append(f"{image['tag']}: authenticator {used and used.group(1)}")
                if culler != (combo["idle_culling"] == "yes"):
                    failures.append(f"{image['tag']}: idle culler running={culler}")
        except AssertionError as error:
            failures.append(f"{image['tag']}: {error}")
    print(f"\n[variant] {len(seen)} distinct requirements.txt in {len(requirements_combos())} combinations")
    assert not failures, "\n".join(failures)


@pytest.fixture
def registry(tmp_path):
    """Distribution (Debian's docker-registry) on 127.0.0.1:<free port>, storage in tmp_path."""
    binary = need_tool("docker-registry")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    log = open(tmp_path / "registry.log", "w", encoding="utf-8")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_push_and_inspect_like_the_workshop(bookworm_default_image, registry, tmp_path):
    """buildah push to a plain-HTTP registry, then `skopeo inspect --tls-verify=false` as the
    workshop did: same digest as pushed, same image config (User 1000, ENTRYPOINT, CMD)."""
    reference = f"docker://{registry}/jupyterhub:image-test"
    digestfile = tmp_path / "digest"
    run(["buildah", "push", "--quiet", "--tls-verify=false", "--digestfile", digestfile, bookworm_default_image["tag"], reference], timeout=600)
    pushed = digestfile.read_text().strip()

    inspected = json.loads(run(["skopeo", "inspect", "--tls-verify=false", reference]).stdout)
    raw = run(["skopeo", "inspect", "--tls-verify=false", "--raw", reference]).stdout.encode()
    config = json.loads(run(["skopeo", "inspect", "--tls-verify=false", "--config", reference]).stdout)
    manifest = json.loads(raw)

    assert inspected["Digest"] == pushed == "sha256:" + hashlib.sha256(raw).hexdigest()
    # The config blob is the one built: its digest is the image ID in buildah's storage.
    assert manifest["config"]["digest"] == "sha256:" + bookworm_default_image["id"]
    assert len(inspected["Layers"]) == len(manifest["layers"]) == len(config["rootfs"]["diff_ids"])
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in manifest["layers"]), "pushed compressed"
    assert config["config"]["User"] == "1000"
    assert config["config"]["Entrypoint"] == EXPECTED_ENTRYPOINT
    assert config["config"]["Cmd"] == EXPECTED_CMD
    compressed = sum(layer["size"] for layer in manifest["layers"])
    print(f"\n[push] {reference.removeprefix('docker://')}@{pushed}: {len(manifest['layers'])} layers, {compressed / 1e6:.1f} MB compressed in all")


def test_one_image_serves_every_overlay(images, tmp_path):
    """Nothing in what the image adds over its base names a host, a namespace, a registry or
    an overlay: bake with answers found nowhere else, build, and read every file of every
    layer the build added (the overlays' Deployments tell the hub who it is)."""
    import tarfile

    answers = dict(namespace="probe-ns-7", hostname="hub-probe-7.example.org",
                   __development_hostname="dev-probe-7.example.org", registry="registry-probe-7.example.org/team")  # fmt: skip
    images({})  # the default image: its layers are the cache for this build
    project = run_cookiecutter("-o", str(tmp_path / "out"), *(f"{k}={v}" for k, v in answers.items()), cwd=tmp_path)
    assert project.returncode == 0, project.stderr
    project = tmp_path / "out" / TEMPLATE["project"]
    tag = f"{IMAGE_REPO}:probe-answers"
    try:
        build_image(project, tag, tmp_path / "build.log")
        base = {digest for digest, _ in images({})["base"]["layers"]}
        copy = tmp_path / "layers"
        run(["skopeo", "copy", "--quiet", storage_ref(tag), f"dir:{copy}"], timeout=600)
        manifest = json.loads((copy / "manifest.json").read_text())
        added = [layer["digest"] for layer in manifest["layers"] if layer["digest"] not in base]
        assert added, "the build added no layer"
        found = []
        config = {f.name: f.read_bytes() for f in (project / "hub-config").iterdir()}
        for digest in added:
            with tarfile.open(copy / digest.split(":", 1)[1]) as layer:
                for member in layer.getmembers():
                    if not member.isfile():
                        continue
                    data = layer.extractfile(member).read()
                    for value in answers.values():
                        if value.encode() in data or value.encode() in member.name.encode():
                            found.append(f"{member.name}: {value}")
                    # The project's configuration is the ConfigMap's, never the image's.
                    if data in config.values() or Path(member.name).name in config:
                        found.append(f"{member.name}: a file of hub-config/ in the image")
        assert not found, "\n".join(found)
    finally:
        run(["buildah", "rmi", tag], check=False)


# --- The users' image (build_user_image=yes): user-image/Dockerfile on k8s-singleuser-sample ----
SINGLEUSER_STANDIN = ROOT / "tests" / "image" / "singleuser-standin.Dockerfile"
# The package the tests add to user-image/requirements.txt, as the README tells a team to.
ADDED_PACKAGE = ("tabulate", "0.9.0")


def ensure_singleuser_base(name, hub_base, buildah=BUILDAH, log=print):
    """The user image's base: in buildah's storage already (the real image, or a stand-in built
    before), or the stand-in tests/image/singleuser-standin.Dockerfile builds on the k8s-hub
    stand-in, with the JupyterLab the journey tests' user image has."""
    if image_exists(name, buildah):
        return name
    (jupyterlab,) = [line.split("==")[1] for line in (ROOT / "tests" / "singleuser-requirements.txt").read_text().splitlines()
                     if line.startswith("jupyterlab==")]  # fmt: skip
    started = time.monotonic()
    run([*buildah, "bud", "--pull-never", "--isolation", "chroot", "--build-arg", f"HUB_STANDIN={hub_base}",
         "--build-arg", f"JUPYTERLAB_VERSION={jupyterlab}", "-t", name, "-f", SINGLEUSER_STANDIN, SINGLEUSER_STANDIN.parent],
        timeout=1500)  # fmt: skip
    log(f"{name}: stand-in built in {time.monotonic() - started:.1f} s")
    return name


@pytest.fixture(scope="module")
def user_image(bake, bases, tmp_path_factory):
    """The users' image of a project generated with build_user_image=yes, one package added to
    its requirements.txt, built as kaniko builds Skaffold's second artifact (context user-image/)."""
    import shutil

    project = tmp_path_factory.mktemp("user-image") / "project"
    shutil.copytree(bake(build_user_image="yes"), project)
    requirements = project / "user-image" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "{}=={}\n".format(*ADDED_PACKAGE))
    (base,) = re.findall(r"^FROM (\S+)$", (project / "user-image" / "Dockerfile").read_text(), re.M)
    ensure_singleuser_base(base, bases("bookworm")["name"])
    tag = f"{IMAGE_REPO}:user-image"
    log = tmp_path_factory.mktemp("user-image-log") / "build.log"
    argv = [*BUILDAH, "bud", "--pull-never", "--isolation", "chroot", "--layers", "-t", tag,
            "-f", project / "user-image" / "Dockerfile", project / "user-image"]  # fmt: skip
    with open(log, "w", encoding="utf-8") as out:
        built = subprocess.run([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=1500, check=False)
    assert built.returncode == 0, "buildah bud of user-image/ failed:\n" + "\n".join(log.read_text().splitlines()[-40:])
    return {"tag": tag, "project": project, "base": base}


def test_user_image_runs_as_uid_1000_with_the_added_package(user_image):
    """The image ends as uid 1000 by number (the restricted profile's kubelet can check it
    without /etc/passwd), runs the base's command through tini, has the added package, and
    leaves no pip cache or requirements file behind."""
    config = image_config(user_image["tag"])
    assert config["User"] == "1000"
    base = image_config(user_image["base"])
    assert (config["Entrypoint"], config.get("Cmd")) == (base["Entrypoint"], base.get("Cmd"))
    name, version = ADDED_PACKAGE
    out = run_in_image(user_image["tag"], "sh", "-c",
                       f"id -u; python3 -c 'import {name}; print({name}.__version__)';"
                       " jupyterhub-singleuser --version; test ! -e /tmp/requirements.txt && echo CLEAN;"
                       " test ! -d /root/.cache/pip && echo NO-PIP-CACHE")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["1000", version], lines
    assert "CLEAN" in lines and "NO-PIP-CACHE" in lines, lines


def test_the_hub_spawns_users_from_the_image_skaffold_built(user_image, tmp_path):
    """On the emulated cluster (restricted Pod Security): the development overlay as `skaffold
    run` deploys it (support/skaffold_images.py: the tags it built, by digest, in the hub's
    image and in USER_IMAGE); a user logs in and starts a server, whose pod the API received
    names the users' image by that digest, and whose kernel runs as uid 1000 with the package
    added to user-image/requirements.txt."""
    from hubrunner import HubDeployment, hub_container, read_env_file, render
    from journey import form_login, open_server, run_code, start_server
    from support import fast_yaml, skaffold_images

    project = user_image["project"]
    config = fast_yaml.load((project / "skaffold.yaml").read_text())
    digest = image_inspect(user_image["tag"])["FromImageDigest"]
    hub_artifact, user_artifact = (a["image"] for a in config["build"]["artifacts"])
    builds = [
        {"imageName": hub_artifact, "tag": f"{hub_artifact}:development@sha256:{'1' * 64}"},
        {"imageName": user_artifact, "tag": f"{user_artifact}:development@{digest}"},
    ]
    objects = skaffold_images.replace_images(render(project), builds, config)
    env = {e["name"]: e.get("value") for e in hub_container(objects)["env"]}
    assert env["USER_IMAGE"] == builds[1]["tag"]
    image = BuildahImage(builds[1]["tag"], user_image["tag"])
    password = read_env_file(project / "k8s" / "overlays" / "development" / "hub-secrets.env")["JUPYTERHUB_USER_PASSWORD"]
    with HubDeployment(project, tmp_path, objects=objects, extra_images=[image]) as hub:
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(lambda: print(hub.log_tail()))
            session = form_login(hub, "alice", password)
            start_server(session, hub, "alice")
            pod = hub.cluster.pods(hub.namespace)["dev-jupyter-alice"]
            (container,) = pod["spec"]["containers"]
            assert container["image"] == builds[1]["tag"]
            assert container["imagePullPolicy"] == "IfNotPresent", "by digest, a node's copy serves"
            open_server(session, hub, "alice")
            name, version = ADDED_PACKAGE
            assert run_code(session, hub, "alice", f"import os, {name}; (os.getuid(), {name}.__version__)") == f"(1000, '{version}')"
            on_failure.pop_all()
