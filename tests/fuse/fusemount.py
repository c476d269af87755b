"""Test support for the FUSE bridge tests: mounts examples/ramfs_fuse on a temporary directory, runs
real programs on it under a watchdog, and always unmounts.

- mounted(binary, *args) is a context manager yielding the mountpoint. It exits the test with 77 (CTest's
  skip code) only when /dev/fuse cannot be used, saying why; any other mount failure fails the test.
- run(cmd, ...) runs a program with a timeout: a program hung on the mount fails the test (it is
  killed, the mount is detached with `fusermount3 -uz` on the way out, the server is killed).
- check(cond, what) records a failure; finish() exits 1 if any check failed.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED: " + what, file=sys.stderr, flush=True)
    return cond


def finish(name):
    if failures:
        print("%s: %d check(s) failed" % (name, len(failures)), file=sys.stderr)
        sys.exit(1)
    print("%s: all checks passed" % name)
    sys.exit(0)


def skip_unless_fuse():
    """Exits 77 when /dev/fuse cannot be opened or fusermount3 is missing (says why)."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        print("SKIP: /dev/fuse cannot be used: %s" % e, flush=True)
        sys.exit(SKIP)
    if shutil.which("fusermount3") is None:
        print("SKIP: fusermount3 (Debian fuse3) is not installed", flush=True)
        sys.exit(SKIP)


def is_mounted(path):
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == real:
                return True
    return False


def run(cmd, timeout=60, check_rc=True, **kw):
    """Runs cmd (list or shell string) with a watchdog; returns CompletedProcess. A timeout fails."""
    shell = isinstance(cmd, str)
    try:
        r = subprocess.run(cmd, shell=shell, timeout=timeout, capture_output=True, text=kw.pop("text", True), **kw)
    except subprocess.TimeoutExpired:
        check(False, "HUNG (watchdog %ss): %s" % (timeout, cmd))
        raise
    if check_rc:
        check(r.returncode == 0, "%s -> rc %d: %s" % (cmd, r.returncode, (r.stderr or "")[-500:]))
    return r


def _terminate(signum, frame):
    raise SystemExit("killed by signal %d (CTest's timeout?): unmounting" % signum)


@contextlib.contextmanager
def mounted(binary, *args, timeout=15):
    skip_unless_fuse()
    signal.signal(signal.SIGTERM, _terminate)  # CTest's timeout: the finally below still unmounts
    base = tempfile.mkdtemp(prefix="faultsafe-fuse-")
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    os.chmod(base, 0o755)
    log = open(os.path.join(base, "server.log"), "w+")
    proc = subprocess.Popen([binary, *args, mnt], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mnt):
            if proc.poll() is not None:
                log.seek(0)
                out = log.read()
                if "/dev/fuse" in out:
                    print("SKIP: the mount failed: " + out, flush=True)
                    sys.exit(SKIP)
                raise RuntimeError("ramfs_fuse exited with %d before mounting: %s" % (proc.returncode, out))
            if time.monotonic() > deadline:
                raise RuntimeError("ramfs_fuse did not mount within %ss" % timeout)
            time.sleep(0.02)
        yield mnt
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", mnt], timeout=30)
        try:
            rc = proc.wait(timeout=20)
            check(rc == 0, "ramfs_fuse exit status %s after unmount" % rc)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            check(False, "ramfs_fuse did not exit after unmount")
        log.seek(0)
        out = log.read()
        if failures:
            print("--- ramfs_fuse log ---\n" + out[-4000:], file=sys.stderr)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
