"""A changed Secret restarts what reads it, in both hub_secrets modes, and an unchanged one
restarts nothing.

env-file: kustomize (the real `kubectl kustomize`) names the generated Secret after its
content, so a changed value in hub-secrets.env is a new name in the pod template of every
Deployment that reads it (the hub; with proxy=separate the proxy too, for its token).

existing-secret: the repository holds no secret, so the generated scripts/reload-secrets
does it in the cluster; it runs here against a strict kubectl stand-in
(tests/support/kubectl_state_standin.py) holding the overlay's render, and every call it made is
also put to the real kubectl's parser.
"""

import base64
import copy
import hashlib
import json
import shutil
import subprocess

import pytest

from conftest import OVERLAYS, need_tool
from hubrunner import hub_container, hub_deployment, proxy_deployment, render
from support import fast_yaml
from support.kubectl_state_standin import calls, install, read_state, real_kubectl_accepts

PROXIES = ("in-hub", "separate")


def kubectl_kustomize_bytes(project, overlay):
    out = subprocess.run([need_tool("kubectl"), "kustomize", str(project / "k8s" / "overlays" / overlay)],
                         capture_output=True, check=True)  # fmt: skip
    return out.stdout


def env_lines(text):
    return [line for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")]


def secret_readers(objects, secret_name):
    """{Deployment name: its pod template} of every Deployment whose pod template names the
    Secret (envFrom, or an env var's secretKeyRef), read from the render."""
    readers = {}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        template = deployment["spec"]["template"]
        for container in template["spec"]["containers"]:
            names = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if "secretRef" in e]
            names += [e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
            if secret_name in names:
                readers[deployment["metadata"]["name"]] = template
    return readers


# --- env-file: kustomize's generated names ------------------------------------------------


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_file_a_changed_value_rolls_every_reader_and_an_unchanged_render_does_not(bake, tmp_path, overlay, proxy):
    project = tmp_path / "project"
    shutil.copytree(bake(proxy=proxy, hub_secrets="env-file"), project)
    first = kubectl_kustomize_bytes(project, overlay)
    assert kubectl_kustomize_bytes(project, overlay) == first, "two renders of the same files differ"

    def parts(rendered):
        objects = [o for o in fast_yaml.load_all(rendered.decode()) if o]
        [secret] = [o for o in objects if o["kind"] == "Secret"]
        return secret, secret_readers(objects, secret["metadata"]["name"])

    secret, readers = parts(first)
    expected_readers = {hub_deployment(render(project, overlay))["metadata"]["name"]}
    if proxy == "separate":
        expected_readers.add(proxy_deployment(render(project, overlay))["metadata"]["name"])
    assert set(readers) == expected_readers, f"the Secret's readers: {sorted(readers)}"
    # Labelled as every other object of this hub (scripts/uninstall finds it by them).
    hub_labels = hub_deployment(render(project, overlay))["metadata"]["labels"]
    assert secret["metadata"]["labels"] == hub_labels, secret["metadata"]["labels"]

    env_file = project / "k8s" / "overlays" / overlay / "hub-secrets.env"
    original = env_file.read_text()
    keys = [line.split("=", 1)[0] for line in env_lines(original)]
    assert ("CONFIGPROXY_AUTH_TOKEN" in keys) == (proxy == "separate")
    for key in keys:
        env_file.write_text("".join(
            f"{line}-changed\n" if line.split("=", 1)[0] == key and "=" in line and not line.startswith("#") else line + "\n"
            for line in original.splitlines()
        ))  # fmt: skip
        try:
            changed, changed_readers = parts(kubectl_kustomize_bytes(project, overlay))
        finally:
            env_file.write_text(original)
        old_name, new_name = secret["metadata"]["name"], changed["metadata"]["name"]
        assert new_name != old_name, f"a changed {key} kept the Secret's name {old_name}"
        differ = sorted(k for k in set(secret["data"]) | set(changed["data"]) if secret["data"].get(k) != changed["data"].get(k))
        assert differ == [key], differ
        assert base64.b64decode(changed["data"][key]).decode().endswith("-changed")
        assert set(changed_readers) == set(readers)
        for name, template in readers.items():
            before, after = json.dumps(template, sort_keys=True), json.dumps(changed_readers[name], sort_keys=True)
            assert after != before, f"a changed {key} left the pod template of {name} as it was: it keeps the old values"
            assert after.replace(new_name, old_name) == before, f"{name}: the pod template changed in more than the Secret's name"
    assert kubectl_kustomize_bytes(project, overlay) == first, "the file restored, the render is not the first one"


# --- existing-secret: scripts/reload-secrets ---------------------------------------------


def made_secret(project, objects, uid="3f2b4c1e-0000-4000-8000-000000000001", **values):
    """The Secret an operator makes from hub-secrets.env.example (README, Secrets), with the
    name the render's hub reads and a value for every key (or as given)."""
    [name] = [e["secretRef"]["name"] for e in hub_container(objects)["envFrom"]]
    keys = [line.split("=", 1)[0] for line in env_lines((project / "hub-secrets.env.example").read_text())]
    data = {k: f"value-of-{k.lower()}-0123456789abcdef0123456789" for k in keys}
    data.update(values)
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": hub_deployment(objects)["metadata"]["namespace"], "uid": uid},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }  # fmt: skip


def set_secret(state_file, secret):
    state = read_state(state_file)
    state["objects"] = [o for o in state["objects"] if not (o["kind"] == "Secret" and o["metadata"]["name"] == secret["metadata"]["name"])] + [secret]
    state_file.write_text(json.dumps(state))


def reload_secrets(project, env, *args):
    return subprocess.run([str(project / "scripts" / "reload-secrets"), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def annotations(state_file, name):
    [deployment] = [o for o in read_state(state_file)["objects"] if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return (deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}


def assert_real_kubectl_accepts(log, workdir):
    kubectl = need_tool("kubectl")
    for argv in {json.dumps(c): c for c in calls(log)}.values():
        verdict = real_kubectl_accepts(kubectl, argv, workdir)
        assert verdict is None, f"real kubectl refuses `kubectl {' '.join(argv)}`: {verdict}"


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reload_secrets_restarts_what_reads_a_changed_key_and_nothing_else(bake, tmp_path, overlay, proxy):
    project = bake(proxy=proxy, hub_secrets="existing-secret")
    objects = render(project, overlay)
    namespace = hub_deployment(objects)["metadata"]["namespace"]
    secret = made_secret(project, objects)
    secret_name = secret["metadata"]["name"]
    assert secret_name == {"production": "hub-secrets", "development": "hub-secrets-dev"}[overlay]
    readers = secret_readers(objects, secret_name)
    hub = hub_deployment(objects)["metadata"]["name"]
    proxy_name = proxy_deployment(objects)["metadata"]["name"] if proxy == "separate" else None
    assert set(readers) == {hub, proxy_name} - {None}
    # Which key each reader reads: the hub all (envFrom), the proxy the keys of its secretKeyRefs.
    proxy_keys = {e["valueFrom"]["secretKeyRef"]["key"] for c in (readers.get(proxy_name) or {"spec": {"containers": []}})["spec"]["containers"]
                  for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}  # fmt: skip
    env, state_file, log = install(tmp_path / "cluster", [*objects, secret])
    ordered = [n for n in (proxy_name, hub) if n]  # the proxy first: the hub's start checks it

    def run_and_calls(*args):
        start = len(calls(log))
        result = reload_secrets(project, env, "--overlay", overlay, *args)
        assert result.returncode == 0, result.stderr
        assert not read_state(state_file).get("usage_errors"), read_state(state_file)["usage_errors"]
        return result, calls(log)[start:]

    def expected(restarted):
        return [
            ["-n", namespace, "get", "secret", secret_name, "-o", "json"],
            *(["-n", namespace, "get", "deployment", n, "-o", "json"] for n in ordered),
            *(["-n", namespace, "patch", "deployment", n, "--type=merge", "-p",
               json.dumps({"spec": {"template": {"metadata": {"annotations": {"checksum/hub-secrets": annotations(state_file, n)["checksum/hub-secrets"]}}}}})]
              for n in restarted),
            *(["-n", namespace, "rollout", "status", f"deployment/{n}", "--timeout=600s"] for n in restarted),
        ]  # fmt: skip

    # First run: nothing recorded, every reader restarts once.
    result, made = run_and_calls()
    assert read_state(state_file)["rolled"] == ordered
    assert made == expected(ordered), made
    recorded = {n: annotations(state_file, n)["checksum/hub-secrets"] for n in ordered}
    # The checksum says nothing about the values to whoever reads Deployments: not a plain hash.
    plain = hashlib.sha256(json.dumps(secret["data"], sort_keys=True).encode()).hexdigest()
    assert plain not in recorded.values() and all(len(v) == 64 for v in recorded.values())

    # Unchanged: only reads, nothing restarts.
    result, made = run_and_calls()
    assert made == expected([]), made
    assert read_state(state_file)["rolled"] == ordered
    assert result.stderr.count("left running") == len(ordered), result.stderr

    # A key the hub alone reads: the hub restarts; with a separate proxy, users stay connected.
    hub_only = next(k for k in sorted(secret["data"]) if k not in proxy_keys)
    changed = copy.deepcopy(secret)
    changed["data"][hub_only] = base64.b64encode(b"a-new-value-0123456789abcdef0123456789").decode()
    set_secret(state_file, changed)
    result, made = run_and_calls()
    assert made == expected([hub]), made
    assert read_state(state_file)["rolled"] == [*ordered, hub]

    if proxy == "separate":
        # The proxy's token: both restart, the proxy first.
        assert proxy_keys == {"CONFIGPROXY_AUTH_TOKEN"}
        changed["data"]["CONFIGPROXY_AUTH_TOKEN"] = base64.b64encode(b"a-new-token-0123456789abcdef0123456789").decode()
        set_secret(state_file, changed)
        result, made = run_and_calls()
        assert made == expected(ordered), made
        assert read_state(state_file)["rolled"] == [*ordered, hub, *ordered]

    # --dry-run reads and says, and changes nothing.
    changed["data"][hub_only] = base64.b64encode(b"yet-another-value-0123456789abcdef0123456789").decode()
    set_secret(state_file, changed)
    before = read_state(state_file)["objects"]
    result, made = run_and_calls("--dry-run")
    assert [c[2] for c in made] == ["get"] * (1 + len(ordered)), made
    assert read_state(state_file)["objects"] == before
    assert f"would run: kubectl -n {namespace} patch deployment {hub} --type=merge -p " in result.stderr, result.stderr
    assert f"would run: kubectl -n {namespace} rollout status deployment/{hub} --timeout=600s" in result.stderr

    assert_real_kubectl_accepts(log, tmp_path)


@pytest.mark.parametrize("authenticator", ["github", "dummy"])
def test_reload_secrets_never_replaces_a_running_hub_by_a_broken_secret(bake, tmp_path, authenticator):
    """Refusals: one line naming what is wrong, and no patch (the Deployments are Recreate: a
    restart into a broken Secret would stop a working hub)."""
    proxy = "separate" if authenticator == "dummy" else "in-hub"
    project = bake(authenticator=authenticator, proxy=proxy, hub_secrets="existing-secret")
    objects = render(project, "production")
    # The keys the hub requires, from its configuration as it runs: those whose absence stops it
    # (tests/test_hub.py shows that stop); optional ones may be empty.
    required = {"github": ["OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET"],
                "dummy": ["JUPYTERHUB_USER_PASSWORD", "JUPYTERHUB_ADMIN_PASSWORD", "CONFIGPROXY_AUTH_TOKEN"]}[authenticator]  # fmt: skip
    optional = {"github": ["GITHUB_ALLOWED_ORGANIZATIONS"], "dummy": []}[authenticator]
    cases = {
        "no Secret": (None, "the Secret hub-secrets is not in namespace jupyterhub"),
        **{f"empty {k}": (made_secret(project, objects, **{k: ""}), f"the Secret hub-secrets has an empty {k}") for k in required},
        **{f"no {k}": ({**made_secret(project, objects), "data": {x: v for x, v in made_secret(project, objects)["data"].items() if x != k}},
                       f"the Secret hub-secrets has no key {k}") for k in required},
    }  # fmt: skip
    for case, (secret, says) in cases.items():
        env, state_file, log = install(tmp_path / case.replace(" ", "-"), objects + ([secret] if secret else []))
        result = reload_secrets(project, env, "--overlay", "production")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"reload-secrets: {says}"), f"{case}: {result.stderr}"
        assert "nothing was restarted" in lines[0]
        assert [c for c in calls(log) if c[2] != "get"] == [], f"{case}: it changed something"
    for key in optional:
        env, state_file, log = install(tmp_path / f"optional-{key}", [*objects, made_secret(project, objects, **{key: ""})])
        result = reload_secrets(project, env, "--overlay", "production")
        assert result.returncode == 0, f"an empty {key} is allowed (the hub reads it with a default): {result.stderr}"

    # No Deployment (the hub not deployed yet), a rollout that does not finish, bad arguments.
    secret = made_secret(project, objects)
    hub = hub_deployment(objects)["metadata"]["name"]
    env, state_file, log = install(tmp_path / "no-hub", [o for o in objects if o["kind"] != "Deployment"] + [secret])
    result = reload_secrets(project, env, "--overlay", "production")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"reload-secrets: deployment/{proxy_deployment(objects)['metadata']['name'] if proxy == 'separate' else hub} is not in namespace"
        " jupyterhub: deploy the production hub first (kubectl apply -k k8s/overlays/production)"), result.stderr  # fmt: skip
    env, state_file, log = install(tmp_path / "stuck", [*objects, secret])
    state = read_state(state_file)
    state_file.write_text(json.dumps(dict(state, failing_rollouts=[hub])))
    result = reload_secrets(project, env, "--overlay", "production")
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        f"reload-secrets: kubectl -n jupyterhub rollout status deployment/{hub} --timeout=600s failed: error: timed out waiting for the condition"), result.stderr  # fmt: skip
    for args, says in ((["--overlay", "staging"], "argument --overlay: invalid choice: 'staging'"),
                       (["--timeout", "0"], "--timeout 0 is not a positive number of seconds")):  # fmt: skip
        result = reload_secrets(project, env, *args)
        assert result.returncode != 0 and result.stderr.strip().splitlines() == [result.stderr.strip()] and says in result.stderr, result.stderr
    assert_real_kubectl_accepts(log, tmp_path)


def test_the_real_kubectl_check_refuses_what_kubectl_refuses(tmp_path):
    """The check every script test ends with: real kubectl's verdict on syntax the stand-in
    may have let through (a duration without its unit, an unknown flag, a missing argument)."""
    kubectl = need_tool("kubectl")
    assert real_kubectl_accepts(kubectl, ["-n", "ns", "rollout", "status", "deployment/hub", "--timeout=600s"], tmp_path) is None
    assert real_kubectl_accepts(kubectl, ["-n", "ns", "delete", "deployment", "-l", "a=b", "--cascade=foreground", "--wait=true"], tmp_path) is None
    for argv, says in (
        (["-n", "ns", "rollout", "status", "deployment/hub", "--timeout=600"], "missing unit in duration"),
        (["-n", "ns", "delete", "pod", "-l", "a=b", "--wait-for-it=true"], "unknown flag: --wait-for-it"),
        (["-n", "ns", "patch", "deployment", "hub", "--type=merge", "-p"], "flag needs an argument"),
    ):  # fmt: skip
        verdict = real_kubectl_accepts(kubectl, argv, tmp_path)
        assert verdict is not None and says in verdict, verdict
