"""Whether a process sits in read() on its standard input, from /proc (Linux).

A person presses Ctrl-C while the program waits for an answer. A test that types ^C the
moment the prompt appears can be faster than that: CPython notices a signal only between
bytecodes or when a system call returns EINTR, so a SIGINT that lands after input() last
looked and before its read() starts stays unseen until a line is read, and the program
waits forever. On a loaded machine the prompt's writer is often descheduled right there.
Waiting until the kernel reports the read makes the keystroke arrive as a person's would.
"""

import functools
import os
import subprocess
import sys
import time


def _syscall(pid):
    """(number, first argument) of the system call pid is in, or None while it runs."""
    with open(f"/proc/{pid}/syscall") as f:
        fields = f.read().split()
    if not fields or fields[0] == "running" or len(fields) < 2:
        return None
    return int(fields[0]), int(fields[1], 16)


def _wait_for(condition, timeout, failure):
    """condition()'s first true value, polled every 10 ms; AssertionError(failure()) after timeout."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(0.01)
    return value


@functools.cache
def read_syscall_number():
    """The number of read() on this machine's kernel, seen on a process blocked in os.read(0)."""
    probe = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); os.read(0, 1)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert probe.stdout.readline() == b"ready\n"

        def in_read_of_fd_0():
            # Past the write and the flush the probe has only the read of fd 0 left to enter.
            call = _syscall(probe.pid)
            return call if call is not None and call[1] == 0 else None

        number, _ = _wait_for(in_read_of_fd_0, 60, lambda: f"the probe never blocked in read(0): last seen {_syscall(probe.pid)}")
        return number
    finally:
        probe.stdin.close()
        probe.wait(timeout=30)


def reading_stdin(pid):
    """True while pid is blocked in read() on file descriptor 0."""
    return _syscall(pid) == (read_syscall_number(), 0)


def wait_until_reading_stdin(pid, timeout=60.0):
    """Return once pid waits in read() on its standard input; AssertionError after timeout."""

    def reading():
        if not os.path.exists(f"/proc/{pid}"):
            raise AssertionError(f"process {pid} ended before it read its standard input")
        return reading_stdin(pid)

    _wait_for(reading, timeout, lambda: f"process {pid} did not wait in read() on its standard input within {timeout} s")


def signal_state(pid):
    """What a report of a lost signal needs: pid's signal masks and its current system call."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = [" ".join(line.split()) for line in f if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))]
        call = _syscall(pid)
    except OSError as error:
        return f"process {pid}: {error}"
    return f"process {pid}: {', '.join(masks)}; system call (number, first argument) {call}"
