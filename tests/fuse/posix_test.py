"""python3's os.* and mmap on a ramfs mounted through the FUSE bridge, compared with a kernel tmpfs.

Every scenario below runs on the mount and on a tmpfs directory and logs each call's result (value or
errno); the logs must be equal. Scenarios cover each operation the bridge serves (mkdir, rmdir, unlink,
rename and renameat2 flags, link, symlink, readlink, mknod of FIFOs/sockets/devices, access, chmod,
chown/lchown, utimensat with UTIME_NOW/UTIME_OMIT and nanoseconds, truncate/ftruncate, fsync/fdatasync,
fallocate modes, statvfs, scandir, lseek, O_APPEND/O_EXCL/O_TRUNC/O_DIRECTORY/O_NOFOLLOW, ELOOP,
ENAMETOOLONG, sticky and setgid directories, set-id bits cleared by write/chown, open-unlinked files);
some also assert the expected value outright. The mmap module: writes through a MAP_SHARED mapping are
seen by read(), writes by write() are seen in the mapping, and read() into a mapping of the same file.
conformance_scenarios.py adds the rules of POSIX file system suites, per file type (see there).
POSIX_TEST_ONLY=<scenario name> runs one scenario.

usage: posix_test.py RAMFS_FUSE_BINARY [ramfs_fuse options...]
"""
import ctypes
import errno
import mmap
import os
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusemount import check, finish, mounted  # noqa: E402
import conformance_scenarios  # noqa: E402

from conformance_scenarios import UTIME_NOW, UTIME_OMIT, _err, libc, renameat2, utimensat  # noqa: E402,F401


def fallocate(fd, mode, off, n):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(n)) != 0:
        _err()


class Log:
    def __init__(self, root):
        self.root, self.lines = root, []

    def p(self, rel):
        return os.path.join(self.root, rel)

    def __call__(self, what, fn, *args):
        try:
            v = fn(*args)
            if isinstance(v, os.stat_result):
                v = (oct(v.st_mode), v.st_nlink, v.st_uid, v.st_gid, v.st_size)
            self.lines.append("%s -> %r" % (what, v))
            return v
        except OSError as e:
            self.lines.append("%s -> %s" % (what, errno.errorcode.get(e.errno, e.errno)))
            return None


def as_user(uid, gid, groups, fn):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


def scenario_names(L):
    L("mkdir", os.mkdir, L.p("d"), 0o755)
    L("mkdir again", os.mkdir, L.p("d"), 0o755)
    L("mkdir under file", lambda: (open(L.p("f"), "w").close(), os.mkdir(L.p("f/x"))))
    L("rmdir file", os.rmdir, L.p("f"))
    L("unlink dir", os.unlink, L.p("d"))
    L("mkdir d/e", os.mkdir, L.p("d/e"))
    L("rmdir nonempty", os.rmdir, L.p("d"))
    L("rmdir dot", os.rmdir, L.p("d/e/."))
    L("rename file over dir", os.rename, L.p("f"), L.p("d"))
    L("rename dir over file", os.rename, L.p("d"), L.p("f"))
    L("rename dir into itself", os.rename, L.p("d"), L.p("d/e/x"))
    L("mkdir empty", os.mkdir, L.p("empty"))
    L("rename dir onto empty dir", os.rename, L.p("d"), L.p("empty"))
    L("stat moved", os.lstat, L.p("empty/e"))
    L("rename onto nonempty", lambda: (os.mkdir(L.p("d2")), os.rename(L.p("d2"), L.p("empty"))))
    L("noreplace", renameat2, L.p("f"), L.p("d2"), 1)
    L("exchange", renameat2, L.p("f"), L.p("d2"), 2)
    L("after exchange f", os.lstat, L.p("f"))
    L("after exchange d2", os.lstat, L.p("d2"))
    L("exchange missing", renameat2, L.p("f"), L.p("nothere"), 2)
    L("link", os.link, L.p("d2"), L.p("hard"))
    L("link count", lambda: os.lstat(L.p("hard")).st_nlink)
    L("link to dir", os.link, L.p("f"), L.p("hard2"))
    L("link exists", os.link, L.p("d2"), L.p("hard"))
    L("symlink", os.symlink, "d2", L.p("sym"))
    L("readlink", os.readlink, L.p("sym"))
    L("readlink file", os.readlink, L.p("d2"))
    L("stat via symlink", os.stat, L.p("sym"))
    L("lstat symlink", lambda: stat.S_ISLNK(os.lstat(L.p("sym")).st_mode))
    L("dangling create", lambda: (os.symlink("target", L.p("dang")), os.close(os.open(L.p("dang"), os.O_CREAT | os.O_WRONLY, 0o600))))
    L("dangling made target", os.lstat, L.p("target"))
    L("O_CREAT|O_EXCL on symlink", os.open, L.p("dang"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    L("O_NOFOLLOW", os.open, L.p("sym"), os.O_RDONLY | os.O_NOFOLLOW)
    L("O_DIRECTORY on file", os.open, L.p("d2"), os.O_RDONLY | os.O_DIRECTORY)
    L("loop", lambda: (os.symlink("loop2", L.p("loop1")), os.symlink("loop1", L.p("loop2")), os.stat(L.p("loop1"))))
    L("long name", os.mkdir, L.p("n" * 256))
    L("255 name", os.mkdir, L.p("n" * 255))
    L("long path", os.stat, L.p("/".join(["a"] * 2100)))
    L("scandir", lambda: sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(L.root)))
    L("mkfifo", os.mkfifo, L.p("fifo"), 0o640)
    L("fifo stat", os.lstat, L.p("fifo"))
    L("mknod sock", os.mknod, L.p("sock"), 0o600 | stat.S_IFSOCK)
    L("mknod chr", os.mknod, L.p("chr"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    L("chr rdev", lambda: os.lstat(L.p("chr")).st_rdev == os.makedev(1, 3))
    L("mknod reg", os.mknod, L.p("reg"), 0o600 | stat.S_IFREG)
    L("statvfs namemax", lambda: os.statvfs(L.root).f_namemax)


def scenario_attrs(L):
    fd = os.open(L.p("f"), os.O_CREAT | os.O_RDWR, 0o644)
    L("write", os.write, fd, b"hello world")
    L("chmod", os.chmod, L.p("f"), 0o4755)
    L("fchmod", os.fchmod, fd, 0o6750)
    L("mode", lambda: oct(os.fstat(fd).st_mode))
    L("chown", os.chown, L.p("f"), 1000, 1000)
    L("mode after chown", lambda: oct(os.fstat(fd).st_mode))
    L("fchown", os.fchown, fd, 1001, -1)
    L("lchown symlink", lambda: (os.symlink("f", L.p("fl")), os.lchown(L.p("fl"), 1002, 1002), os.lstat(L.p("fl")).st_uid, os.stat(L.p("fl")).st_uid))
    L("utimensat ns", utimensat, L.p("f"), [(1000000000, 123456789), (2000000000, 987654321)])
    L("times", lambda: (os.stat(L.p("f")).st_atime_ns, os.stat(L.p("f")).st_mtime_ns))
    L("utimensat omit atime", utimensat, L.p("f"), [(0, UTIME_OMIT), (3000000000, 5)])
    L("times omit", lambda: (os.stat(L.p("f")).st_atime_ns, os.stat(L.p("f")).st_mtime_ns))
    L("utimensat nofollow", utimensat, L.p("fl"), [(5, 6), (7, 8)], True)
    L("symlink times", lambda: (os.lstat(L.p("fl")).st_atime_ns, os.lstat(L.p("fl")).st_mtime_ns))
    L("now", lambda: (utimensat(L.p("f"), [(0, UTIME_NOW), (0, UTIME_NOW)]), os.stat(L.p("f")).st_mtime_ns > 3000000000 * 10**9)[1])
    L("truncate", os.truncate, L.p("f"), 5)
    L("ftruncate", os.ftruncate, fd, 100000)
    L("size", lambda: os.fstat(fd).st_size)
    L("pread hole", lambda: os.pread(fd, 10, 50000))
    L("pread head", lambda: os.pread(fd, 10, 0))
    L("negative truncate", os.ftruncate, fd, -1)
    L("fsync", os.fsync, fd)
    L("fdatasync", os.fdatasync, fd)
    L("fallocate 0", fallocate, fd, 0, 200000, 4096)
    L("size after fallocate", lambda: os.fstat(fd).st_size)
    L("fallocate keep size", fallocate, fd, 1, 300000, 4096)
    L("size keep", lambda: os.fstat(fd).st_size)
    L("punch", lambda: (os.pwrite(fd, b"x" * 8192, 0), fallocate(fd, 3, 4096, 4096), os.pread(fd, 8, 4096), os.pread(fd, 2, 8190)))
    L("lseek end", os.lseek, fd, 0, os.SEEK_END)
    L("lseek bad", os.lseek, fd, -1, os.SEEK_SET)
    os.close(fd)
    fd = os.open(L.p("app"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    L("append 1", os.write, fd, b"abc")
    L("append pwrite ignored offset", lambda: (os.lseek(fd, 0, os.SEEK_SET), os.write(fd, b"def"), open(L.p("app"), "rb").read())[2])
    os.close(fd)
    L("O_TRUNC", lambda: (os.close(os.open(L.p("app"), os.O_WRONLY | os.O_TRUNC)), os.stat(L.p("app")).st_size)[1])
    L("O_RDONLY|O_TRUNC", lambda: (open(L.p("app"), "wb").write(b"12345"), os.close(os.open(L.p("app"), os.O_RDONLY | os.O_TRUNC)),
                                  os.stat(L.p("app")).st_size)[2])
    L("O_EXCL", os.open, L.p("app"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    L("EISDIR write dir", lambda: (os.mkdir(L.p("dd")), os.open(L.p("dd"), os.O_WRONLY)))
    L("O_TRUNC dir", os.open, L.p("dd"), os.O_RDONLY | os.O_TRUNC)
    L("access", os.access, L.p("app"), os.R_OK | os.W_OK)
    L("access x", os.access, L.p("app"), os.X_OK)
    L("open-unlinked", lambda: _open_unlinked(L))
    L("statvfs", lambda: os.statvfs(L.root).f_bsize > 0)


def _open_unlinked(L):
    fd = os.open(L.p("gone"), os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"still here")
    os.unlink(L.p("gone"))
    os.fchmod(fd, 0o640)
    os.ftruncate(fd, 5)
    st = os.fstat(fd)
    r = (os.pread(fd, 100, 0), st.st_nlink, oct(st.st_mode), os.path.exists(L.p("gone")))
    os.close(fd)
    return r


def scenario_users(L):
    """Sticky and setgid directories, set-id bits cleared by a write of another user, permissions."""
    os.mkdir(L.p("sticky"), 0o777)
    os.chmod(L.p("sticky"), 0o1777)
    os.mkdir(L.p("sgid"), 0o777)
    os.chown(L.p("sgid"), 0, 3000)
    os.chmod(L.p("sgid"), 0o2777)
    os.mkdir(L.p("grp"), 0o770)
    os.chown(L.p("grp"), 0, 3001)
    results = {}

    def user(uid, gid, groups, name, fn):
        r, w = os.pipe()

        def body():
            os.close(r)
            os.write(w, conformance_scenarios.outcome(fn).encode())
        code = as_user(uid, gid, groups, body)
        os.close(w)
        out = os.read(r, 65536).decode()
        os.close(r)
        L("user %d %s" % (uid, name), lambda: (code, out))
        results[name] = out

    user(1000, 1000, [1000], "create in sticky", lambda: open(L.p("sticky/mine"), "w").close())
    user(1001, 1001, [1001], "unlink other's in sticky", lambda: os.unlink(L.p("sticky/mine")))
    user(1001, 1001, [1001], "rename other's in sticky", lambda: os.rename(L.p("sticky/mine"), L.p("sticky/x")))
    user(1000, 1000, [1000], "unlink own in sticky", lambda: os.unlink(L.p("sticky/mine")))
    user(1000, 1000, [1000], "mkdir in setgid", lambda: (os.mkdir(L.p("sgid/sub")), os.stat(L.p("sgid/sub")).st_gid,
                                                         oct(os.stat(L.p("sgid/sub")).st_mode)))
    user(1000, 1000, [1000], "file in setgid", lambda: (open(L.p("sgid/file"), "w").close(), os.stat(L.p("sgid/file")).st_gid))
    user(1000, 1000, [1000], "no group access", lambda: os.listdir(L.p("grp")))
    user(1000, 1000, [1000, 3001], "supplementary group access", lambda: (open(L.p("grp/g"), "w").close(), os.listdir(L.p("grp"))))
    user(1000, 1000, [1000, 3001], "chgrp to supplementary group", lambda: (os.chown(L.p("grp/g"), -1, 3001), os.stat(L.p("grp/g")).st_gid))
    user(1000, 1000, [1000], "chgrp to foreign group", lambda: os.chown(L.p("sgid/file"), -1, 3001))
    user(1000, 1000, [1000], "chown to other user", lambda: os.chown(L.p("sgid/file"), 1001, -1))
    # setuid/setgid bits cleared when another user writes
    open(L.p("suid"), "w").close()
    os.chmod(L.p("suid"), 0o6777)
    user(1001, 1001, [1001], "write clears set-id", lambda: (open(L.p("suid"), "a").write("x"), oct(os.stat(L.p("suid")).st_mode)))
    os.chown(L.p("suid"), 1000, 1000)
    os.chmod(L.p("suid"), 0o6777)
    user(1000, 1000, [1000], "owner chgrp clears set-id", lambda: (os.chown(L.p("suid"), -1, 1000), oct(os.stat(L.p("suid")).st_mode)))
    os.chmod(L.p("suid"), 0o2770)
    user(1000, 1000, [1000], "chmod sgid outside group", lambda: (os.chown(L.p("suid"), -1, 1000), os.chmod(L.p("suid"), 0o2770),
                                                                  oct(os.stat(L.p("suid")).st_mode)))
    os.chown(L.p("suid"), 1000, 3001)
    user(1000, 1000, [1000], "chmod keeps sgid only in group", lambda: (os.chmod(L.p("suid"), 0o2770), oct(os.stat(L.p("suid")).st_mode)))
    user(1001, 1001, [1001], "chmod by non-owner", lambda: os.chmod(L.p("suid"), 0o777))
    user(1001, 1001, [1001], "utime now by non-owner without write", lambda: utimensat(L.p("suid"), [(0, UTIME_NOW), (0, UTIME_NOW)]))
    user(1001, 1001, [1001], "utime explicit by non-owner", lambda: utimensat(L.p("suid"), [(1, 1), (1, 1)]))
    user(1002, 1002, [1002], "access denied", lambda: os.access(L.p("suid"), os.R_OK))
    user(1002, 1002, [1002], "open denied", lambda: open(L.p("suid")).read())
    user(1002, 1002, [1002], "search denied", lambda: os.stat(L.p("grp/g")))
    return results


def scenario_mmap(L):
    size = 3 * 4096 + 100
    data = bytes((i * 7 + 3) & 0xff for i in range(size))
    with open(L.p("m"), "wb") as f:
        f.write(data)
    fd = os.open(L.p("m"), os.O_RDWR)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
    check(L("mapping reads file", lambda: mm[:size] == data) is True, "mmap: the mapping shows the file")
    mm[10:20] = b"X" * 10
    mm[4095:4097] = b"YZ"
    v = L("mapping writes visible to read()", lambda: os.pread(fd, 12, 9) + os.pread(fd, 4, 4094))
    check(v == data[9:10] + b"X" * 10 + data[20:21] + data[4094:4095] + b"YZ" + data[4097:4098], "mmap: stores seen by pread: %r" % v)
    os.pwrite(fd, b"written", 8000)
    check(L("write() visible in mapping", lambda: mm[8000:8007]) == b"written", "mmap: pwrite seen in the mapping")
    mv = memoryview(mm)
    # read(fd, p) where p is the mapping of the same file: aligned, unaligned, crossing pages, same range
    L("read into mapping aligned", lambda: (os.preadv(fd, [mv[4096:8192]], 0), mm[4096:4106]))
    L("read into mapping unaligned", lambda: (os.preadv(fd, [mv[5003:5003 + 3000]], 11), mm[5003:5013]))
    L("read into mapping same range", lambda: (os.preadv(fd, [mv[100:9000]], 100), mm[100:110]))
    L("write from mapping", lambda: (os.pwrite(fd, mv[0:4096], 8192), os.pread(fd, 20, 8192)))
    L("write from mapping unaligned", lambda: (os.pwrite(fd, mv[17:17 + 5000], 3), os.pread(fd, 20, 3)))
    check(L("whole file", lambda: os.pread(fd, size, 0) == mm[:size]) is True, "mmap: file and mapping agree after the copies")
    mv.release()
    mm.flush()
    mm.close()
    os.close(fd)
    with open(L.p("m"), "rb") as f:
        L("final contents", lambda: hash(f.read()))


def _conformance(sc):
    def run(L):
        sc(conformance_scenarios.Conf(L))
    run.__name__ = sc.__name__
    return run


SCENARIOS = [scenario_names, scenario_attrs, scenario_users, scenario_mmap] + [_conformance(s) for s in conformance_scenarios.SCENARIOS]


def main():
    binary, opts = sys.argv[1], sys.argv[2:]
    if os.geteuid() != 0:
        print("SKIP: the test switches users and makes devices: it must run as root")
        sys.exit(77)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with mounted(binary, *opts) as m, tempfile.TemporaryDirectory(dir=shm) as t:
        os.chmod(t, 0o755)
        only = os.environ.get("POSIX_TEST_ONLY")  # a scenario name, to run one while debugging
        total = 0
        for sc in SCENARIOS:
            if only and sc.__name__ != only:
                continue
            logs = []
            for base in (m, t):
                root = os.path.join(base, sc.__name__)
                os.mkdir(root)
                os.chmod(root, 0o777)
                L = Log(root)
                sc(L)
                logs.append(L.lines)
            fl, tl = logs
            for i in range(max(len(fl), len(tl))):
                a = fl[i] if i < len(fl) else None
                b = tl[i] if i < len(tl) else None
                check(a == b, "%s: fuse %r, tmpfs %r" % (sc.__name__, a, b))
            print("%s: %d calls compared" % (sc.__name__, len(tl)))
            total += len(tl)
        print("%d calls compared in all" % total)
    finish("fuse_posix")


if __name__ == "__main__":
    main()
