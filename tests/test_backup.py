"""The generated scripts/hub-db: a backup of the hub's state made while the hub runs and
writes, and its restore into a new hub, on the emulated cluster.

The script calls kubectl; with no API server here, a strict stand-in on its PATH
(tests/support/kubectl_standin.py) carries out the calls on the test's hubs (exec in the
hub's container, rollout restart, rollout status), refuses anything else, and logs every
call, so that the test sees the script use kubectl as a real one accepts it.

- A hub (development overlay) gets users, a browser session and API tokens. A write is in
  progress (a transaction of the test's, spilled into the database file, then rolled back)
  while `scripts/hub-db backup` runs: a plain copy of the file taken meanwhile holds the
  uncommitted rows (the negative control: such a copy is wrong), the backup holds none,
  passes PRAGMA integrity_check, waited for the write to end, and is a file of mode 600.
- A new hub of the same overlay, on a cluster of its own (a fresh volume), does not know
  the token or the session; `scripts/hub-db restore` stages the backup, restarts the hub,
  and afterwards the token authenticates as its user, the admin's lists every user, the
  browser session of the first hub is still logged in (the cookie secret came along), and
  the files the restore replaced are kept beside the database.
- Refusals before any kubectl call: a damaged archive, something that is not one, an
  output file that exists; `--overlay production` names the production hub, and a hub
  that is not there fails in one line with kubectl's message; the stand-in's own strictness.
"""

import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import requests

from conftest import need_tool
from hubrunner import CHP_BIN, HubDeployment
from journey import api, form_login, secrets_env
from support.kubectl_standin import KubectlStandin, Usage, parse

NAMESPACE = "lab-ns-2"  # not the template's default: the script must carry the baked one
ADMIN = "hubadmin"
STATE = "/srv/jupyterhub"
DATABASE = f"{STATE}/jupyterhub.sqlite"
POD_USER = "1000:1000"  # the Deployment's runAsUser and runAsGroup
PROBE_ROWS = 200


def bake_project(bake):
    return bake(authenticator="dummy", admin_user=ADMIN, namespace=NAMESPACE)


def need_hub_tools():
    """What booting a hub on the emulated cluster needs (tests/test_hub.py, `chp`)."""
    need_tool("node")
    need_tool("tini")
    need_tool("nsenter")
    if not (CHP_BIN / "configurable-http-proxy").exists():
        pytest.skip(f"{CHP_BIN / 'configurable-http-proxy'} is missing: run scripts/install-test-tools")
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")


def hub_db(project, standin, *args, timeout=900):
    """The generated scripts/hub-db as an operator runs it (the script itself, on the system's
    python3), with the kubectl stand-in on its PATH, under the common umask 022."""
    return subprocess.run(
        [str(project / "scripts" / "hub-db"), *args], cwd=standin.directory, env=standin.env(),
        capture_output=True, text=True, timeout=timeout, check=False, preexec_fn=lambda: os.umask(0o022),
    )  # fmt: skip


def script_module(project):
    """The generated scripts/hub-db as a module (for its in-container programs)."""
    path = str(project / "scripts" / "hub-db")
    loader = importlib.machinery.SourceFileLoader("generated_hub_db", path)
    spec = importlib.util.spec_from_loader("generated_hub_db", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def archive_files(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


# --- The write in progress, and what a copy of the database shows of it -----------------------

PROBE_SETUP = r"""
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
con.execute("CREATE TABLE backup_probe (n INTEGER, payload BLOB)")
con.executemany("INSERT INTO backup_probe VALUES (?, ?)", [(i, os.urandom(3000)) for i in range(int(sys.argv[2]))])
con.commit()
"""

# A transaction that rewrites every probe row, held open for a while, then rolled back. Its
# page cache holds ten pages, so SQLite writes the changed pages into the database file
# before the end (a cache spill, as any big transaction does): the file is then not a
# database anyone committed. Prints the time of the rollback.
PROBE_WRITER = r"""
import os, sqlite3, sys, time
db, flag, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
con = sqlite3.connect(db, timeout=30, isolation_level=None)
con.execute("PRAGMA cache_size = 10")
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE backup_probe SET n = -1")
open(flag, "w").close()
time.sleep(hold)
con.execute("ROLLBACK")
print(time.time())
os.unlink(flag)
"""


def probe(database_bytes, workdir):
    """(integrity_check, committed probe rows, uncommitted probe rows) of a copy of the database."""
    path = workdir / f"probe-{time.monotonic_ns()}.sqlite"
    path.write_bytes(database_bytes)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = "; ".join(row[0] for row in con.execute("PRAGMA integrity_check"))
        try:
            rows = dict(con.execute("SELECT n >= 0, count(*) FROM backup_probe GROUP BY n >= 0").fetchall())
        except sqlite3.DatabaseError as error:
            return f"{check} / {error}", None, None
        return check, rows.get(1, 0), rows.get(0, 0)
    finally:
        con.close()


@contextlib.contextmanager
def write_in_progress(hub, hold=4.0):
    """PROBE_WRITER in the hub's container, as the pod's user; inside the block its
    transaction holds changed pages in the database file. Yields a dict that gets
    "rolled_back_at" (time.time()) once the block has ended and the writer with it."""
    flag = "/tmp/backup-probe-writing"
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(done=hub.exec(["python3", "-c", PROBE_WRITER, DATABASE, flag, str(hold)], POD_USER, timeout=120)),
    )
    thread.start()
    try:
        hub.cluster.wait_for(lambda: hub.host_path(flag).exists() or "done" in result, 60, "the probe's write")
        assert "done" not in result, f"the probe's writer ended early: {result['done'].stderr}"
        yield result
    finally:
        thread.join()
    done = result["done"]
    assert done.returncode == 0, f"the probe's writer failed: {done.stderr}"
    result["rolled_back_at"] = float(done.stdout.strip())


# --- The tests ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_backup_while_the_hub_writes_and_restore_into_a_new_hub(bake, tmp_path, record_property):
    need_hub_tools()
    project = bake_project(bake)
    secrets = secrets_env(project, "dummy")
    output = tmp_path / "kubectl" / "hub.tar"

    with KubectlStandin(tmp_path / "kubectl") as kubectl:
        # --- The first hub: users, a session, tokens; a backup while it writes ---
        with HubDeployment(project, tmp_path / "hub-a", overlay="development") as hub:
            assert (hub.namespace, hub.deployment_name) == (NAMESPACE, "hub-dev")
            alice = form_login(hub, "alice", secrets["JUPYTERHUB_USER_PASSWORD"])
            form_login(hub, "bob", secrets["JUPYTERHUB_USER_PASSWORD"])
            admin = form_login(hub, ADMIN, secrets["JUPYTERHUB_ADMIN_PASSWORD"])
            resp = api(alice, hub, "POST", "/users/alice/tokens", json={"note": "backup test"})
            assert resp.status_code == 201, f"alice's token: {resp.status_code} {resp.text[:300]}"
            token = resp.json()["token"]
            resp = api(admin, hub, "POST", f"/users/{ADMIN}/tokens", json={"note": "backup test"})
            assert resp.status_code == 201, f"the admin's token: {resp.status_code} {resp.text[:300]}"
            admin_token = resp.json()["token"]
            login_cookie = alice.cookies.get("jupyterhub-hub-login")
            assert login_cookie, f"no login cookie: {alice.cookies.keys()}"

            setup = hub.exec(["python3", "-c", PROBE_SETUP, DATABASE, str(PROBE_ROWS)], POD_USER)
            assert setup.returncode == 0, setup.stderr
            kubectl.serve(hub)
            with write_in_progress(hub) as writer:
                # The negative control: a plain copy of the file now (`kubectl exec cat`, as
                # `kubectl cp` copies) holds what nobody committed, or is damaged.
                plain = hub.exec(["cat", DATABASE], POD_USER, text=False)
                assert plain.returncode == 0, plain.stderr
                started = time.monotonic()
                backup = hub_db(project, kubectl, "backup", "--output", str(output))
                finished_at = time.time()
            record_property("backup_seconds", round(time.monotonic() - started, 2))
            assert backup.returncode == 0, f"scripts/hub-db backup: {backup.stdout}{backup.stderr}"
            check, committed, uncommitted = probe(plain.stdout, tmp_path)
            print(f"\n{backup.stdout}a plain copy during the write: integrity {check!r}, {committed} committed rows,"
                  f" {uncommitted} uncommitted (of {PROBE_ROWS})")
            assert check != "ok" or uncommitted or committed != PROBE_ROWS, (
                "the write in progress did not reach the database file: the probe cannot tell a file copy from a backup"
            )
            assert finished_at >= writer["rolled_back_at"], "the backup ended before the write in progress did"

        # The archive: mode 600, the manifest's checksums, a consistent database without the
        # uncommitted rows, the cookie secret as the hub had it.
        assert output.stat().st_mode & 0o777 == 0o600, oct(output.stat().st_mode)
        files = archive_files(output.read_bytes())
        assert sorted(files) == ["hub-db-backup.json", "jupyterhub.sqlite", "jupyterhub_cookie_secret"], sorted(files)
        assert probe(files["jupyterhub.sqlite"], tmp_path) == ("ok", PROBE_ROWS, 0)
        manifest = json.loads(files["hub-db-backup.json"])
        assert manifest["counts"]["users"] == 3, manifest
        assert [c["argv"] for c in kubectl.calls()] == [
            ["-n", NAMESPACE, "exec", "deployment/hub-dev", "-c", "hub", "--", "python3", "-c",
             script_module(project).BACKUP_PROGRAM, STATE],
        ]  # fmt: skip

        # --- A new hub of the same overlay, on a cluster of its own: a fresh volume ---
        with HubDeployment(project, tmp_path / "hub-b", overlay="development") as new:
            assert (new.namespace, new.deployment_name) == (NAMESPACE, "hub-dev")
            me = requests.get(f"{new.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
            assert me.status_code == 403, f"the new hub knew alice's token before the restore: {me.status_code}"
            before = new.pod
            kubectl.serve(new)
            restore = hub_db(project, kubectl, "restore", str(output))
            assert restore.returncode == 0, f"scripts/hub-db restore: {restore.stdout}{restore.stderr}\n{new.log_tail()}"
            print(restore.stdout)
            assert new.pod != before, "the restore did not restart the hub"
            new.wait_ready()

            me = requests.get(f"{new.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
            assert me.status_code == 200 and me.json()["name"] == "alice", f"alice's token after the restore: {me.status_code} {me.text[:200]}"
            users = requests.get(f"{new.url}/hub/api/users", headers={"Authorization": f"token {admin_token}"}, timeout=10)
            assert users.status_code == 200, f"the admin's token after the restore: {users.status_code}"
            assert sorted(u["name"] for u in users.json()) == sorted(["alice", "bob", ADMIN])
            # The first hub's browser session: the cookie secret was restored, and read.
            me = requests.get(f"{new.url}/hub/api/user", cookies={"jupyterhub-hub-login": login_cookie}, timeout=10)
            assert me.status_code == 200 and me.json()["name"] == "alice", f"alice's session after the restore: {me.status_code}"
            assert new.db_rows("SELECT count(*) FROM backup_probe WHERE n >= 0") == [(PROBE_ROWS,)]
            # What the restore replaced is kept; nothing is left staged.
            kept = list(new.host_path(STATE).glob("before-restore-*/jupyterhub.sqlite"))
            assert len(kept) == 1, list(new.host_path(STATE).iterdir())
            assert not new.host_path(f"{STATE}/restore-staged").exists()

        restore_calls = [c["argv"] for c in kubectl.calls()[1:]]
        module = script_module(project)
        assert restore_calls == [
            ["-n", NAMESPACE, "exec", "-i", "deployment/hub-dev", "-c", "hub", "--", "python3", "-c", module.STAGE_PROGRAM, STATE],
            ["-n", NAMESPACE, "rollout", "restart", "deployment/hub-dev"],
            ["-n", NAMESPACE, "rollout", "status", "deployment/hub-dev", "--timeout=600s"],
            ["-n", NAMESPACE, "exec", "deployment/hub-dev", "-c", "hub", "--", "python3", "-c", module.VERIFY_PROGRAM, STATE],
        ]  # fmt: skip
        assert kubectl.calls()[1]["stdin_bytes"] == output.stat().st_size
        assert not kubectl.errors, kubectl.errors


def local_archive(project, tmp_path):
    """An archive as the script's backup program writes it, from a small database here."""
    state = tmp_path / "state"
    state.mkdir()
    con = sqlite3.connect(state / "jupyterhub.sqlite")
    con.execute("CREATE TABLE users (name TEXT)")
    con.execute("INSERT INTO users VALUES ('alice')")
    con.commit()
    con.close()
    (state / "jupyterhub_cookie_secret").write_text("00" * 32)
    made = subprocess.run([sys.executable, "-c", script_module(project).BACKUP_PROGRAM, str(state)],
                          capture_output=True, check=True)  # fmt: skip
    return made.stdout


def test_restore_and_backup_refuse_before_any_kubectl_call(bake, tmp_path):
    """A damaged archive, a file that is not one, an existing output: one line, exit 1, and
    the cluster never asked."""
    project = bake_project(bake)
    data = local_archive(project, tmp_path)
    files = archive_files(data)
    assert sorted(files) == ["hub-db-backup.json", "jupyterhub.sqlite", "jupyterhub_cookie_secret"]
    offset = data.index(files["jupyterhub_cookie_secret"])
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(data[:offset] + b"1" + data[offset + 1:])
    not_one = tmp_path / "notes.txt"
    not_one.write_text("hello\n")
    existing = tmp_path / "existing.tar"
    existing.write_bytes(b"keep me")
    with KubectlStandin(tmp_path / "kubectl") as kubectl:
        for args, message in (
            (["restore", str(damaged)], "damaged backup: jupyterhub_cookie_secret does not match its sha256"),
            (["restore", str(not_one)], "not a hub-db backup"),
            (["backup", "--output", str(existing)], f"{existing} exists"),
        ):
            result = hub_db(project, kubectl, *args)
            assert result.returncode == 1, (args, result.stdout, result.stderr)
            assert result.stderr.count("\n") == 1 and message in result.stderr, (args, result.stderr)
        assert kubectl.calls() == []
    assert existing.read_bytes() == b"keep me"


def test_the_overlay_names_the_hub_and_a_missing_hub_fails_in_one_line(bake, tmp_path):
    project = bake_project(bake)
    with KubectlStandin(tmp_path / "kubectl") as kubectl:  # serving no hub at all
        for overlay, deployment in (("production", "hub"), ("development", "hub-dev")):
            result = hub_db(project, kubectl, "backup", "--overlay", overlay, "--output", str(tmp_path / f"{overlay}.tar"))
            assert result.returncode == 1, (result.stdout, result.stderr)
            assert result.stderr == f'hub-db: backup FAILED: Error from server (NotFound): deployments.apps "{deployment}" not found\n'
            assert not (tmp_path / f"{overlay}.tar").exists()
        assert [c["argv"][:5] for c in kubectl.calls()] == [
            ["-n", NAMESPACE, "exec", f"deployment/{name}", "-c"] for name in ("hub", "hub-dev")
        ]


def test_the_kubectl_standin_accepts_kubectls_syntax_and_refuses_the_rest():
    """The stand-in is only worth its log if it refuses what a real kubectl would not take, and
    what it does not implement."""
    accepted = {
        ("-n", "ns", "exec", "-i", "deployment/hub", "-c", "hub", "--", "python3", "-c", "x"): ("exec", True, "hub"),
        ("--namespace=ns", "exec", "deploy/hub", "--container=hub", "--", "cat", "f"): ("exec", False, "hub"),
        ("exec", "--stdin", "deployments/hub", "-n", "ns", "--", "true"): ("exec", True, None),
        ("-n", "ns", "rollout", "restart", "deployment/hub"): ("rollout restart", None, None),
        ("-n", "ns", "rollout", "status", "deployment/hub", "--timeout=5m"): ("rollout status", None, None),
    }
    for argv, (verb, stdin, container) in accepted.items():
        request = parse(list(argv))
        assert request["verb"] == verb and request["namespace"] == "ns", (argv, request)
        if verb == "exec":
            assert (request["stdin"], request["container"]) == (stdin, container), (argv, request)
    assert parse(["-n", "ns", "rollout", "status", "deployment/hub", "--timeout=5m"])["timeout"] == 300
    refused = {
        ("exec", "deployment/hub", "--", "true"): "no namespace",
        ("-n", "ns", "exec", "deployment/hub", "python3"): "Use exec [POD] -- [COMMAND]",
        ("-n", "ns", "exec", "-it", "deployment/hub", "--", "sh"): "no terminal",
        ("-n", "ns", "exec", "-t", "deployment/hub", "--", "sh"): "no terminal",
        ("-n", "ns", "exec", "--pod-running-timeout=1m", "deployment/hub", "--", "sh"): "unsupported flag",
        ("-n", "ns", "exec", "deployment/hub", "--"): "at least one command",
        ("-n", "ns", "exec", "statefulset/hub", "--", "true"): "deployment/NAME only",
        ("-n", "ns", "cp", "hub-0:/srv/jupyterhub/jupyterhub.sqlite", "x"): "not implemented",
        ("-n", "ns", "rollout", "status", "deployment/hub", "--timeout=soon"): "invalid --timeout",
        ("-n", "ns", "rollout", "undo", "deployment/hub"): "not implemented",
        ("-n", "ns", "scale", "deployment/hub", "--replicas=0"): "not implemented",
    }
    for argv, message in refused.items():
        with pytest.raises(Usage, match=re.escape(message)):
            parse(list(argv))
