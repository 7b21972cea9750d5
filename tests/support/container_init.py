"""Start one container of an emulated pod, as a container runtime (runc) does. Run as root:

    python3 container_init.py <spec.json>

The emulated kubelet (tests/support/kubelet.py) writes the spec; this process then:

1. joins the pod sandbox's network, UTS and IPC namespaces (its "pause" process holds
   them: the pod's address, its hostname) and makes a mount namespace and, unless the
   spec says otherwise, a PID namespace of its own;
2. builds the container's root file system: an overlay whose lower layer is the image
   (a `buildah mount`ed image, or this machine's root for the test tools' stand-in
   images) and whose upper layer is the container's own writable layer, with the image's
   extra files (the stand-ins' "layer") put there;
3. mounts what a runtime gives every container (/proc of its own PID namespace, a
   read-only /sys, a /dev with the usual devices, its own devpts and /dev/shm), the
   kubelet's /etc/hosts, /etc/hostname and /etc/resolv.conf, and the pod's volumes at
   their mountPaths (read-only where the volumeMount says so);
4. with readOnlyRootFilesystem, remounts that root read-only: the volumes, /dev, /proc
   and the kubelet's files stay as they are, exactly the layout runc makes;
5. changes root to it and into the working directory, takes the container's supplementary
   groups (fsGroup and supplementalGroups), group and user, drops every capability not
   granted from the bounding set, sets no_new_privs for allowPrivilegeEscalation=false,
   and executes the command with exactly the container's environment.

With a PID namespace, this process stays outside it as the container's parent: it passes
SIGTERM and the other catchable signals on to the container's PID 1, and exits with its
status (128 + the signal's number when it was killed), as `kubectl` reports it. When PID 1
ends, the kernel ends every other process of the container, as on a node.

Seccomp is not applied (the admission checks that it is asked for; README, "What the
emulated cluster does not prove").
"""

import ctypes
import json
import os
import shutil
import signal
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
# The capabilities a runtime leaves a container by default (containerd's and Docker's list).
DEFAULT_CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
]  # fmt: skip
CAPABILITY_NUMBERS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags=0, data=None):
    _check(
        libc.mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {source or fstype} on {target}",
    )


def setns(path, kind):
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(libc.setns(fd, kind), f"setns {path}")
    finally:
        os.close(fd)


def capabilities(spec_caps, privileged):
    """The numbers of the capabilities the container keeps in its bounding set."""
    if privileged:
        return set(CAPABILITY_NUMBERS.values())
    keep = set(DEFAULT_CAPABILITIES)
    drop = set(spec_caps.get("drop") or [])
    keep = set() if "ALL" in drop else keep - drop
    keep |= set(spec_caps.get("add") or [])
    unknown = keep - set(CAPABILITY_NUMBERS)
    if unknown:
        raise SetupError(f"unknown capabilities {sorted(unknown)}")
    return {CAPABILITY_NUMBERS[name] for name in keep}


def inside(root, path):
    """root + path, for an absolute path of the container, with the symbolic links on the way
    followed inside root (an absolute link is relative to the container's root: /var/run ->
    /run must not lead out of it), as runc resolves a mount's destination."""
    resolved = root
    todo = [part for part in path.split("/") if part]
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = os.path.dirname(resolved) if resolved != root else root
            continue
        candidate = os.path.join(resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise SetupError(f"{path}: too many levels of symbolic links")
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = root
            todo = [p for p in link.split("/") if p] + todo
            continue
        resolved = candidate
    return resolved


def make_mountpoint(target, is_file):
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if is_file:
        open(target, "a").close()
    else:
        os.makedirs(target)


def build_root(spec):
    base = spec["state_dir"]
    upper, work, root = (os.path.join(base, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.makedirs(d, exist_ok=True)
    mount("overlay", root, "overlay", 0, f"lowerdir={spec['lower']},upperdir={upper},workdir={work}")
    # The image's own files (the stand-ins' layer), written into the writable layer.
    for entry in spec.get("layer") or []:
        path = inside(root, entry["path"])
        if entry.get("kind") == "dir":
            os.makedirs(path, exist_ok=True)
        elif entry.get("kind") == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                os.unlink(path)
            shutil.copyfile(entry["source"], path)
        os.chmod(path, entry["mode"])
        os.chown(path, entry.get("uid", 0), entry.get("gid", 0))
    return root


def mount_system(root):
    """What every container gets: /proc, /sys, /dev."""
    proc = inside(root, "/proc")
    make_mountpoint(proc, False)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_dir = inside(root, "/sys")
    make_mountpoint(sys_dir, False)
    mount("sysfs", sys_dir, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = inside(root, "/dev")
    make_mountpoint(dev, False)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        open(target, "a").close()
        mount(f"/dev/{name}", target, None, MS_BIND)
    os.makedirs(os.path.join(dev, "pts"))
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def bind(source, target, read_only):
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def mount_volumes(root, spec):
    for path, source in sorted((spec.get("etc_files") or {}).items()):
        target = inside(root, path)
        make_mountpoint(target, True)
        bind(source, target, False)
    # Parents first: a volume at /a/b goes on top of one at /a.
    for item in sorted(spec.get("mounts") or [], key=lambda m: m["target"].rstrip("/").count("/")):
        target = inside(root, item["target"])
        make_mountpoint(target, not os.path.isdir(item["source"]))
        bind(item["source"], target, item.get("readOnly", False))


def become(spec):
    """The container's identity, then the command (never returns)."""
    workdir = spec.get("workdir") or "/"
    os.chroot(".")
    os.chdir(workdir)
    os.setgroups(sorted(set(spec.get("groups") or [])))
    os.setgid(spec["gid"])
    keep = capabilities(spec.get("capabilities") or {}, spec.get("privileged", False))
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for number in range(last + 1):
        if number not in keep:
            _check(libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0), f"drop capability {number}")
    if spec.get("no_new_privs"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setuid(spec["uid"])
    argv, env = spec["argv"], spec["env"]
    try:
        os.execve(executable(argv[0], env.get("PATH", "")), argv, env)
    except OSError as error:
        # What the kubelet reports as StartError: the runtime could not run the command.
        print(f"container_init: exec {argv[0]!r}: {error.strerror} (PATH={env.get('PATH', '')})", file=sys.stderr, flush=True)
        os._exit(127 if error.errno == 2 else 126)


def executable(name, path):
    """The command looked up in the container's PATH, as runc does (no import after chroot)."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, "executable file not found in $PATH", name)


def container(spec, root):
    """In the container's PID namespace (as its PID 1): the rest of the setup, then exec."""
    try:
        mount_system(root)
        mount_volumes(root, spec)
        workdir = inside(root, spec.get("workdir") or "/")
        if not os.path.isdir(workdir):
            os.makedirs(workdir)  # as runc does, before the root becomes read-only
        if spec.get("read_only_root"):
            mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.chdir(root)
        become(spec)
    except (SetupError, OSError) as error:
        print(f"container_init: {error}", file=sys.stderr, flush=True)
        os._exit(128)


def main():
    spec = json.loads(open(sys.argv[1]).read())
    try:
        pause = spec["pause_pid"]
        for kind, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("ipc", CLONE_NEWIPC)):
            setns(f"/proc/{pause}/ns/{kind}", flag)
        _check(libc.unshare(CLONE_NEWNS | (CLONE_NEWPID if spec.get("pid_namespace", True) else 0)), "unshare")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        root = build_root(spec)
    except (SetupError, OSError) as error:
        print(f"container_init: {error}", file=sys.stderr, flush=True)
        sys.exit(128)
    if not spec.get("pid_namespace", True):
        container(spec, root)
    child = os.fork()
    if child == 0:
        container(spec, root)
    # The container's parent: signals go on to its PID 1; its status is ours.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
