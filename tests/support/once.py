"""Judge each distinct input once per test run, whichever xdist worker meets it first.

A check that reads several inputs (units: a file, a directory tree) and judges each on
its own can be run on one project and its verdict stand for every project holding the
same bytes in those units. `judge_once` runs the check only when the project holds a
unit no earlier run has judged, and returns, for every unit, the verdict of the run that
judged it (waiting for that run if it is still going). So the work grows with the number
of distinct inputs, not with the number of projects: a new choice variable that changes
one file adds runs only where that file differs.

Verdicts live in the run's shared directory (tests/conftest.py), one file per unit,
guarded by file locks, so every worker sees every verdict.
"""

import fcntl
import hashlib
import json
import traceback
from pathlib import Path

from support.bakery import locked, session_bakery


def _file_name(unit, digest):
    return hashlib.sha256(f"{unit}\0{digest}".encode()).hexdigest()[:24] + ".json"


def judge_once(directory, units, judge, who):
    """{unit: verdict} for units ({unit name: digest of its content}).

    judge() runs (at most once per call) if some unit has no verdict yet in directory; it
    returns a JSON-able verdict, which is stored, with `who` (what was judged), for those
    units. A judge that raises is stored as a verdict {"error": traceback}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {unit: directory / _file_name(unit, digest) for unit, digest in units.items()}
    mine = []
    # Claim the unjudged units, each locked until its verdict is written: the others wait.
    with locked(directory / "claims.lock"):
        for unit, path in files.items():
            if not path.exists():
                handle = open(path, "w", encoding="utf-8")
                fcntl.flock(handle, fcntl.LOCK_EX)
                mine.append(handle)
    try:
        if mine:
            try:
                verdict = judge()
            except Exception:  # noqa: BLE001  (stored, and reported by every project holding the unit)
                verdict = {"error": traceback.format_exc()}
            for handle in mine:
                handle.write(json.dumps({"who": who, "verdict": verdict}))
                handle.flush()
    finally:
        for handle in mine:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
    verdicts = {}
    for unit, path in files.items():
        with open(path, encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            verdicts[unit] = json.loads(handle.read())
    return verdicts


def project_units(project, leave_out=("README.md",)):
    """A project's units: what kustomize reads (the k8s/ tree and hub-config/) as a whole, under
    the name "k8s/" (of the secrets files only their keys: Bakery.k8s_digest, which reads a
    bake's tree once per process), every other file on its own (hub-config's too), and the list of file names (a missing file is an input
    too). Files in leave_out are documentation the checks never open."""
    project = Path(project)
    units, names = {}, []
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        relative = path.relative_to(project)
        names.append(str(relative))
        if relative.parts[0] == "k8s" or str(relative) in leave_out:
            continue
        units[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    units["k8s/"] = session_bakery().k8s_digest(project)
    units["(file names)"] = hashlib.sha256("\n".join(names).encode()).hexdigest()[:24]
    return units
