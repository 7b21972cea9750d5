"""Port 8081 of this machine, shared between the image tests and the journeys.

The image tests run the hub image as its pod does, on the host's network with the
config's fixed ports (8000, 8001, 8081), so they need those ports on every address; each
journey's emulated cluster has its Service listen on 8081 of an address of its own
(127.X.Y.1). A lock file in the test run's shared directory keeps the two apart: the
journeys hold it shared (side by side), an image run holds it alone. Outside a test run
(the benchmark scripts) there is nothing to share with, and no lock.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from support.bakery import SHARED_VARIABLE


@contextlib.contextmanager
def hub_ports(alone):
    shared = os.environ.get(SHARED_VARIABLE)
    if not shared:
        yield
        return
    with open(Path(shared) / "hub-ports.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
