"""Several processes and users on a ramfs mounted through the FUSE bridge:
- concurrent writers: fio with 4 processes writing disjoint ranges of one file (sequential and random
  4 KiB writes), each verifying its range afterwards (--verify=crc32c);
- a permission matrix: users run with setpriv (owner, a supplementary-group member, a primary-group
  member, another user) read, write, create, list and search files and directories of every mode;
  each exit status must equal the one the same command gets on a kernel tmpfs directory.

usage: multiuser_test.py RAMFS_FUSE_BINARY [ramfs_fuse options...]
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusemount import check, finish, mounted, run  # noqa: E402

USERS = {"owner": (1000, 1000, "1000"), "suppl": (1001, 1001, "1001,2000"), "prim": (1002, 2000, "2000"), "other": (1003, 1003, "1003")}
MODES = [0o600, 0o640, 0o604, 0o660, 0o666, 0o000, 0o750, 0o705, 0o070]
CMDS = {"read": "cat {f} >/dev/null", "write": "echo x >> {f}", "list": "ls {d} >/dev/null", "create": "touch {d}/new.$$ && rm {d}/new.$$",
        "search": "stat {d}/inner >/dev/null", "exec": "{f}"}


def setup(root):
    for m in MODES:
        f = os.path.join(root, "f%o" % m)
        with open(f, "w") as fh:
            fh.write("#!/bin/sh\nexit 0\n")
        os.chown(f, 1000, 2000)
        os.chmod(f, m)
        d = os.path.join(root, "d%o" % m)
        os.mkdir(d)
        open(os.path.join(d, "inner"), "w").close()
        os.chown(d, 1000, 2000)
        os.chmod(d, m)


def matrix(root):
    out = {}
    for user, (uid, gid, groups) in USERS.items():
        for m in MODES:
            for name, cmd in CMDS.items():
                c = cmd.format(f=os.path.join(root, "f%o" % m), d=os.path.join(root, "d%o" % m))
                r = run(["setpriv", "--reuid", str(uid), "--regid", str(gid), "--groups", groups, "sh", "-c", c], check_rc=False, timeout=30)
                out[(user, oct(m), name)] = r.returncode == 0
    return out


def main():
    binary, opts = sys.argv[1], sys.argv[2:]
    if os.geteuid() != 0:
        print("SKIP: setpriv to other users needs root")
        sys.exit(77)
    if shutil.which("fio") is None or shutil.which("setpriv") is None:
        print("SKIP: fio (Debian fio) or setpriv (util-linux) is missing")
        sys.exit(77)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with mounted(binary, *opts) as m, tempfile.TemporaryDirectory(dir=shm) as t:
        os.chmod(t, 0o755)
        for rw in ("write", "randwrite"):
            r = run(["fio", "--name=w" + rw, "--directory=" + m, "--filename=shared", "--ioengine=psync", "--rw=" + rw, "--bs=4k",
                     "--numjobs=4", "--size=4m", "--offset_increment=4m", "--verify=crc32c", "--do_verify=1",
                     "--verify_fatal=1", "--group_reporting"], timeout=240)
            check("verify: bad" not in r.stdout + r.stderr and "err=" in r.stdout and "err= 0" in r.stdout,
                  "fio %s: %s" % (rw, (r.stdout + r.stderr)[-800:]))
        check(os.stat(m + "/shared").st_size == 16 << 20, "fio: the shared file covers the four ranges")
        os.unlink(m + "/shared")
        got, want = {}, {}
        for root, res in ((m, got), (t, want)):
            base = os.path.join(root, "perm")
            os.mkdir(base, 0o755)
            setup(base)
            res.update(matrix(base))
        for k in sorted(want):
            check(got.get(k) == want[k], "permission %s: fuse %s, tmpfs %s" % (k, got.get(k), want[k]))
        allowed = sum(want.values())
        check(0 < allowed < len(want), "the matrix has allowed and refused cells (%d of %d allowed)" % (allowed, len(want)))
        print("permission matrix: %d cells compared, %d allowed" % (len(want), allowed))
    finish("fuse_multiuser")


if __name__ == "__main__":
    main()
