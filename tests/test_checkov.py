"""checkov, a scanner this project did not write, over what the template generates.

- Every distinct render of every overlay of the bake matrix (plus the extra cases
  of the security and network tests) and every distinct Dockerfile, in a few checkov
  runs (RENDERS_PER_RUN says why not one): no check fails but those the generated
  repository's .checkov.yaml skips, and each of those skips is still needed (it fails
  somewhere without it).
- checkov as a user runs it, in a baked project's root, where it reads .checkov.yaml:
  nothing fails; without the skip list, exactly the skipped checks fail.

checkov lives in a virtual environment of its own, the test tools' checkov/ (tests/support/tools.py) (it pins
networkx<2.7), installed by scripts/install-test-tools; it runs with
--skip-download, so it needs no network.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import OVERLAYS, ROOT, need_tool
from test_network_policies import OAUTH_CASES
from support.tools import CHECKOV as CHECKOV_ENV
from test_security import CASES

pytestmark = pytest.mark.slow

CHECKOV = CHECKOV_ENV / "bin" / "checkov"
SHIPPED_CONFIG = ROOT / "{{cookiecutter.project}}" / ".checkov.yaml"


@pytest.fixture(scope="module")
def checkov():
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} is missing: run scripts/install-test-tools")
    return CHECKOV


def skip_list():
    return set(yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))["skip-check"])


def run_checkov(checkov, *args, cwd):
    """checkov with the kubectl the tests use on its PATH (its kustomize framework calls it)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(need_tool("kubectl")).parent), os.environ["PATH"]]))
    return subprocess.run(
        [str(checkov), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False
    )


def failures_and_files(stdout):
    """{(check id, file path)} of the failed checks and the set of files checkov judged, from -o json."""
    reports = json.loads(stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed, files = set(), set()
    for report in reports:
        for check in report["results"]["failed_checks"]:
            failed.add((check["check_id"], check["file_path"]))
            files.add(check["file_path"])
        for check in report["results"]["passed_checks"]:
            files.add(check["file_path"])
    return failed, files


def test_every_skip_says_why():
    """Each entry of skip-check comes right after a comment that names it and gives a reason."""
    lines = SHIPPED_CONFIG.read_text(encoding="utf-8").splitlines()
    skips = skip_list()
    assert skips, "an empty skip list"
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\s*- (CKV\w+)", line)
        if not match:
            continue
        comment = []
        for previous in reversed(lines[:index]):
            if not previous.strip().startswith("#"):
                break
            comment.insert(0, previous.strip("# "))
        text = " ".join(comment)
        assert match.group(1) in text and len(text) > 80, f"{match.group(1)}: no reason given above it ({text!r})"


# A render with a real fault, scanned along with the others: checkov must report it.
PLANTED_FAULTS = {
    "privileged.yaml": ("CKV_K8S_16", lambda pod: pod["spec"]["containers"][0]["securityContext"].update(privileged=True)),
    "no-memory-limit.yaml": ("CKV_K8S_13", lambda pod: pod["spec"]["containers"][0]["resources"].pop("limits")),
}


# checkov builds one graph of every resource of a run, and its time grows faster than the
# number of files (measured here: 10 renders 5 s, 30 renders 9 s, 62 renders 49 s). Runs of
# at most this many renders keep it linear; a render is one overlay, so nothing that
# belongs together is split, and resources of different renders are not mixed up.
RENDERS_PER_RUN = 20


def test_checkov_fails_nothing_beyond_the_skip_list_on_any_render_or_dockerfile(checkov, bakery, tmp_path):  # noqa: F811
    renders, dockerfiles, seen = {}, {}, set()
    for case in CASES + OAUTH_CASES:
        project = bakery.project(case)
        for overlay in OVERLAYS:
            key = bakery.render_key(project, overlay)
            if key in seen:  # the same k8s/ tree: the same render, written out already
                continue
            seen.add(key)
            text = yaml.safe_dump_all(bakery.render(project, overlay), sort_keys=True)
            renders.setdefault(hashlib.sha256(text.encode()).hexdigest()[:16], text)
        dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
        dockerfiles.setdefault(hashlib.sha256(dockerfile.encode()).hexdigest()[:16], dockerfile)
    runs = -(-len(renders) // RENDERS_PER_RUN)
    scans = [tmp_path / f"scan{i}" for i in range(runs)]
    for i, (digest, text) in enumerate(sorted(renders.items())):
        (scans[i % runs] / "renders").mkdir(parents=True, exist_ok=True)
        (scans[i % runs] / "renders" / f"{digest}.yaml").write_text(text, encoding="utf-8")
    for digest, text in dockerfiles.items():
        (scans[0] / "dockerfiles" / digest).mkdir(parents=True)
        (scans[0] / "dockerfiles" / digest / "Dockerfile").write_text(text, encoding="utf-8")
    (scans[-1] / "planted").mkdir()
    sample = list(yaml.safe_load_all(next(iter(renders.values()))))
    for name, (_, plant) in PLANTED_FAULTS.items():
        docs = yaml.safe_load_all(yaml.safe_dump_all(sample))
        docs = [d for d in docs if d]
        plant(next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"])
        (scans[-1] / "planted" / name).write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    print(f"\ncheckov over {len(renders)} distinct renders and {len(dockerfiles)} distinct Dockerfiles, in {runs} runs")

    failed, files = set(), set()
    for scan in scans:
        result = run_checkov(
            checkov, "--directory", str(scan), "--framework", "kubernetes", "dockerfile",
            "--skip-download", "--compact", "--output", "json", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode in (0, 1), result.stderr[-3000:]
        run_failed, run_files = failures_and_files(result.stdout)
        failed |= run_failed
        files |= run_files

    expected_files = {f"/renders/{d}.yaml" for d in renders} | {f"/dockerfiles/{d}/Dockerfile" for d in dockerfiles}
    assert expected_files <= files, f"checkov did not judge {sorted(expected_files - files)}"
    for name, (check_id, _) in PLANTED_FAULTS.items():
        assert (check_id, f"/planted/{name}") in failed, f"checkov missed the planted fault {check_id} in {name}"

    skips = skip_list()
    real = {(check, path) for check, path in failed if not path.startswith("/planted/")}
    unexpected = sorted((check, path) for check, path in real if check not in skips)
    assert not unexpected, "checkov fails checks that .checkov.yaml does not skip:\n" + "\n".join(map(str, unexpected))
    stale = skips - {check for check, _ in real}
    assert not stale, f".checkov.yaml skips {sorted(stale)}, which fail nowhere: drop them"


SUMMARY = re.compile(r"^(\w+) scan results:\s+Passed checks: (\d+), Failed checks: (\d+)", re.M)


def test_checkov_in_a_generated_project_reads_its_skip_list(checkov, bakery, tmp_path):  # noqa: F811
    """As a user runs it: `checkov` in the project's root, nothing else."""
    project = shutil.copytree(bakery.project(CASES[0]), tmp_path / "project")
    result = run_checkov(checkov, cwd=project)
    summaries = {framework: (int(passed), int(failed)) for framework, passed, failed in SUMMARY.findall(result.stdout)}
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # checkov reads the rendered overlays, the Dockerfile and the CI workflow.
    assert set(summaries) == {"kustomize", "dockerfile", "github_actions"}, summaries
    for framework, (passed, failed) in summaries.items():
        assert passed > 0 and failed == 0, f"{framework}: {passed} passed, {failed} failed"

    # Without the skip list, exactly the skipped checks fail: the file is read, and
    # every skip is needed here too.
    config = project / ".checkov.yaml"
    config.write_text(re.sub(r"(?ms)^skip-check:.*", "", config.read_text(encoding="utf-8")), encoding="utf-8")
    result = run_checkov(checkov, "--compact", cwd=project)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    failed = set(re.findall(r"^Check: (CKV\w+):.*\n\s+FAILED", result.stdout, re.M))
    assert failed == skip_list(), result.stdout[-4000:]
