"""Randomized differential test: the same random sequence of file operations, run by several users
(root and three ordinary users with supplementary groups), on a ramfs mounted through the FUSE bridge
and on a kernel tmpfs directory. Every result (value or errno) must agree, and at the end both trees
(names, types, modes, owners, link counts, sizes, symlink targets, file contents) must be equal.

usage: differential_test.py RAMFS_FUSE_BINARY [--ops N] [--seed S] [ramfs_fuse options...]
"""
import ctypes
import errno
import hashlib
import os
import pickle
import random
import select
import signal
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusemount import check, finish, mounted  # noqa: E402

USERS = [(0, 0, []), (1000, 1000, [1000, 3000]), (1001, 3000, [3000]), (1002, 1002, [1002, 3000, 3001])]
NAMES = ["a", "b", "c", "d", "sub", "x" * 255]
libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(a, b, flags):
    if libc.syscall(316, -100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def rand_path(rng, depth=3):
    parts = [rng.choice(NAMES[:5]) for _ in range(rng.randint(1, depth))]
    if rng.random() < 0.03:
        parts[-1] = NAMES[5] + ("y" if rng.random() < 0.5 else "")  # 255 and 256 bytes
    if rng.random() < 0.03:
        parts.insert(rng.randint(0, len(parts)), rng.choice([".", ".."]))
    return "/".join(parts)


def gen_ops(rng, n):
    ops = []
    for _ in range(n):
        user = rng.randrange(len(USERS)) if rng.random() < 0.6 else 0
        k = rng.choice(["mkdir", "mkdir", "rmdir", "unlink", "rename", "rename2", "link", "symlink", "readlink", "open",
                        "open", "open", "stat", "lstat", "chmod", "chown", "lchown", "access", "truncate", "utime",
                        "mkfifo", "listdir", "append"])
        args = {"p": rand_path(rng), "q": rand_path(rng),
                "mode": rng.choice([0o777, 0o755, 0o700, 0o644, 0o600, 0o000, 0o1777, 0o2775, 0o4755, 0o6755, 0o070, 0o007]),
                "flags": rng.choice([os.O_RDONLY, os.O_WRONLY, os.O_RDWR]) | rng.choice(
                    [0, os.O_CREAT, os.O_CREAT | os.O_EXCL, os.O_TRUNC, os.O_CREAT | os.O_TRUNC, os.O_APPEND, os.O_DIRECTORY,
                     os.O_NOFOLLOW, os.O_CREAT | os.O_NOFOLLOW]),
                "uid": rng.choice([-1, 0, 1000, 1001, 1002]), "gid": rng.choice([-1, 0, 1000, 3000, 3001, 1002]),
                "len": rng.choice([0, 1, 100, 5000, 70000]), "data": rng.randbytes(rng.choice([0, 1, 17, 4096, 9000])),
                "amode": rng.choice([os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK]),
                "rflags": rng.choice([RENAME_NOREPLACE, RENAME_EXCHANGE]),
                "times": (rng.randint(0, 2 ** 33), rng.randint(0, 999999999)),
                # An absolute target must never name a real file: the operations follow symlinks as root
                # (chown, chmod, open with O_APPEND/O_TRUNC), and both runs would act on that one file.
                "target": rng.choice(["a", "../a", "sub/b", "nowhere", "/nonexistent-faultsafe-dir/f"])}
        ops.append((user, k, args))
    return ops


def do_op(root, k, a):
    p = os.path.join(root, a["p"])
    q = os.path.join(root, a["q"])
    if k == "mkdir":
        os.mkdir(p, a["mode"])
    elif k == "rmdir":
        os.rmdir(p)
    elif k == "unlink":
        os.unlink(p)
    elif k == "rename":
        os.rename(p, q)
    elif k == "rename2":
        renameat2(p, q, a["rflags"])
    elif k == "link":
        os.link(p, q)
    elif k == "symlink":
        os.symlink(a["target"], p)
    elif k == "readlink":
        return os.readlink(p)
    elif k in ("open", "append"):
        flags = a["flags"] if k == "open" else (a["flags"] & ~os.O_ACCMODE) | os.O_WRONLY | os.O_APPEND
        fd = os.open(p, flags | os.O_NONBLOCK, a["mode"] & 0o777)  # a FIFO must not block the test
        try:
            out = []
            if flags & os.O_ACCMODE != os.O_RDONLY:
                out.append(os.write(fd, a["data"]))
            if flags & os.O_ACCMODE != os.O_WRONLY and not stat.S_ISDIR(os.fstat(fd).st_mode):
                out.append(hashlib.sha1(os.read(fd, 1 << 20)).hexdigest()[:8])
            st = os.fstat(fd)
            out.append((oct(st.st_mode), st.st_size, st.st_uid, st.st_gid))
            return out
        finally:
            os.close(fd)
    elif k in ("stat", "lstat"):
        st = os.stat(p) if k == "stat" else os.lstat(p)
        return (oct(st.st_mode), st.st_nlink, st.st_uid, st.st_gid, st.st_size)
    elif k == "chmod":
        os.chmod(p, a["mode"])
    elif k == "chown":
        os.chown(p, a["uid"], a["gid"])
    elif k == "lchown":
        os.lchown(p, a["uid"], a["gid"])
    elif k == "access":
        return os.access(p, a["amode"])
    elif k == "truncate":
        os.truncate(p, a["len"])
    elif k == "utime":
        ns = a["times"][0] * 10 ** 9 + a["times"][1]
        os.utime(p, ns=(ns, ns))
        st = os.stat(p)
        return (st.st_atime_ns, st.st_mtime_ns)
    elif k == "mkfifo":
        os.mkfifo(p, a["mode"] & 0o777)
    elif k == "listdir":
        return sorted(os.listdir(p))
    return None


class Worker:
    """A child process with one user's credentials that runs do_op calls sent over a pipe and answers
    ('ok', repr(value)) or ('err', errno name)."""

    def __init__(self, user):
        self.rq, wq = os.pipe()
        rr, self.wr = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.rq)
            os.close(self.wr)
            try:
                uid, gid, groups = USERS[user]
                os.setgroups(groups)
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                os.umask(0o022)
                fin, fout = os.fdopen(rr, "rb", buffering=0), os.fdopen(wq, "wb")
                while True:
                    try:
                        root, k, a = pickle.load(fin)
                    except EOFError:
                        break
                    try:
                        res = ("ok", repr(do_op(root, k, a)))
                    except OSError as e:
                        res = ("err", errno.errorcode.get(e.errno, str(e.errno)))
                    pickle.dump(res, fout)
                    fout.flush()
            finally:
                os._exit(0)
        os.close(wq)
        os.close(rr)
        self.fin, self.fout = os.fdopen(self.rq, "rb", buffering=0), os.fdopen(self.wr, "wb")

    def call(self, root, k, a):
        pickle.dump((root, k, a), self.fout)
        self.fout.flush()
        if not select.select([self.fin], [], [], 60)[0]:  # watchdog: a call hung on the mount fails
            check(False, "HUNG: %s %s in %s" % (k, a["p"], root))
            raise RuntimeError("a file operation hung")
        return pickle.load(self.fin)

    def close(self):
        self.fout.close()
        self.fin.close()
        os.kill(self.pid, signal.SIGKILL)  # later workers hold copies of its pipe: it sees no EOF
        os.waitpid(self.pid, 0)


def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            ent = [oct(st.st_mode), st.st_uid, st.st_gid, st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    ent += [st.st_size, hashlib.sha1(f.read()).hexdigest()]
            elif stat.S_ISLNK(st.st_mode):
                ent.append(os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                ent.append(st.st_size)
            out[rel] = ent
    return out


def main():
    argv = sys.argv[1:]
    binary = argv.pop(0)
    nops, seed = 1500, 1
    opts = []
    while argv:
        x = argv.pop(0)
        if x == "--ops":
            nops = int(argv.pop(0))
        elif x == "--seed":
            seed = int(argv.pop(0))
        else:
            opts.append(x)
    if os.geteuid() != 0:
        print("SKIP: the differential test switches users (setresuid): it must run as root")
        sys.exit(77)
    ops = gen_ops(random.Random(seed), nops)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with mounted(binary, *opts) as m, tempfile.TemporaryDirectory(dir=shm) as t:
        # The roots sit two root-owned 0755 directories deep on both sides, so symlinks and ".." that
        # climb out of them meet the same permissions.
        os.chmod(t, 0o755)
        fuse_root, tmp_root = os.path.join(m, "w1/w2/diff"), os.path.join(t, "w1/w2/diff")
        for r in (fuse_root, tmp_root):
            os.makedirs(r, 0o755)
            os.chmod(r, 0o1777)
        mismatches = 0
        workers = [Worker(u) for u in range(len(USERS))]
        for i, (user, k, a) in enumerate(ops):
            got = workers[user].call(fuse_root, k, a)
            want = workers[user].call(tmp_root, k, a)
            if got != want:
                mismatches += 1
                if mismatches <= 25:
                    check(False, "op %d user %s %s %s %s: fuse %s, tmpfs %s" % (
                        i, USERS[user][0], k, a["p"], a["q"] if k in ("rename", "rename2", "link") else "", got, want))
        for w in workers:
            w.close()
        check(mismatches == 0, "%d of %d operations differ" % (mismatches, nops))
        tf, tt = tree(fuse_root), tree(tmp_root)
        for rel in sorted(set(tf) | set(tt)):
            if tf.get(rel) != tt.get(rel):
                check(False, "final tree differs at %s: fuse %s, tmpfs %s" % (rel, tf.get(rel), tt.get(rel)))
        print("differential: %d operations, %d entries in the final tree" % (nops, len(tt)))
    finish("fuse_differential")


if __name__ == "__main__":
    main()
