"""Where a test run keeps its temporary files: in memory, where the machine has room for them.

The suite makes hundreds of thousands of small files (bakes, clones, hub databases,
build contexts) and removes them again. On this project's machines /tmp is ext4 on a
virtual disk, where making, writing and removing a small file costs about 1 ms of
processor time in the kernel; on a tmpfs it costs a tenth of that (measured: 2000 of
them 1.8-3.1 s against 0.27 s). tests/conftest.py therefore points TMPDIR, and with it
pytest's tmp_path, the bakes and every tool the tests start, at a directory of the run's
own on a tmpfs: $TEMPLATE_TESTS_TMPDIR if set (any directory), else /dev/shm when it is a
tmpfs that allows executables and has MIN_FREE_BYTES free, else the system's temporary
directory as before.
"""

import os

VARIABLE = "TEMPLATE_TESTS_TMPDIR"
CANDIDATES = ("/dev/shm",)
# A run holds some hundreds of megabytes at once; an image build adds its layers.
MIN_FREE_BYTES = 4 << 30


def mount_type(path, mounts_text):
    """The file system type of the mount that holds path, from /proc/self/mounts' text."""
    path = os.path.realpath(path)
    best, kind = "", None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and other characters in mount points are written as octal escapes.
        point = fields[1].encode().decode("unicode_escape")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def usable_tmpfs(path, mounts_text, statvfs=os.statvfs):
    """A reason why path cannot hold the run's files, or None if it can."""
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not a directory this user can write"
    if mount_type(path, mounts_text) != "tmpfs":
        return f"{path} is not a tmpfs"
    info = statvfs(path)
    if info.f_flag & os.ST_NOEXEC:
        return f"{path} does not allow executables (the tests run scripts they write)"
    if info.f_bavail * info.f_frsize < MIN_FREE_BYTES:
        return f"{path} has less than {MIN_FREE_BYTES >> 30} GiB free"
    return None


def scratch_root(environ, mounts_text, statvfs=os.statvfs, candidates=CANDIDATES):
    """The directory to make the run's temporary directory in, or None for the system's."""
    chosen = environ.get(VARIABLE, "").strip()
    if chosen:
        return chosen
    for candidate in candidates:
        if usable_tmpfs(candidate, mounts_text, statvfs) is None:
            return candidate
    return None


def read_mounts():
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            return mounts.read()
    except OSError:  # not Linux: no tmpfs is chosen
        return ""
