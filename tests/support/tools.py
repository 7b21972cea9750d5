"""Where the test tools live: the one place that says so.

`scripts/install-test-tools` installs the pinned Python tools (a virtual environment),
configurable-http-proxy and the image caches there, and `scripts/pytest` runs the tests
with that environment's Python; both ask this file (`python3 tests/support/tools.py`
prints the directory). It is outside the checkout on purpose: cookiecutter copies the
whole template directory for its pre_prompt hook, so a 444 MB virtual environment in the
checkout made every `cookiecutter .` there take some 40 s instead of under a second.

    $TEMPLATE_TEST_TOOLS                                  if set
    ${XDG_CACHE_HOME:-~/.cache}/jupyterhub-template-tests otherwise

Standard library only: it runs before the virtual environment exists.
"""

import os
import sys
from pathlib import Path

VARIABLE = "TEMPLATE_TEST_TOOLS"


def tools_dir(environ=os.environ):
    if environ.get(VARIABLE):
        return Path(environ[VARIABLE]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(cache).expanduser() / "jupyterhub-template-tests"


TOOLS = tools_dir()
VENV = TOOLS / "venv"  # the pinned Python tools (requirements-dev.txt)
CHP = TOOLS / "chp"  # configurable-http-proxy, at the version the Dockerfile pins
STANDIN_CACHE = TOOLS / "k8s-hub-standin"  # the image tests' stand-in base image
SCHEMA_CACHE = TOOLS / "skaffold-schemas"  # Skaffold schemas downloaded by the tests
CHECKOV = TOOLS / "checkov"  # checkov, in an environment of its own (requirements-checkov.txt)
# The journey tests' user image: a virtual environment the emulated pods run as uid 1000,
# so not under TOOLS, which is usually in root's home (mode 700).
SINGLEUSER = Path(os.environ.get("TEMPLATE_TEST_SINGLEUSER") or "/opt/jupyterhub-template-tests/singleuser")

if __name__ == "__main__":
    # `tools.py` prints TOOLS; `tools.py NAME` prints another of the paths above.
    sys.stdout.write(f"{globals()[sys.argv[1]] if len(sys.argv) > 1 else TOOLS}\n")
