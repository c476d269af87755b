"""Conformance scenarios for posix_test.py: the rules a POSIX file system test suite checks, per file
type, run on the mount and on a tmpfs directory and compared call by call (values, errno names, which of
atime/mtime/ctime an operation changed, for the file and its directory).

Covered: chmod (all types, through symlinks, ctime on success only, S_ISGID of a non-member), chown and
lchown (root, group changes by the owner within its groups, -1/-1, set-id clearing by root and by the
owner, EPERM, ctime), link (link counts, attributes shared, times, EACCES), mkdir/mkfifo/mknod/open
(umask, owner and group, times of the new node and its directory, mknod types and EPERM/EINVAL), open
flags (O_CREAT|O_EXCL on a symlink, O_TRUNC times and permission, O_RDONLY|O_TRUNC, O_DIRECTORY,
O_NOFOLLOW, O_ACCMODE 3, mode 0 with O_RDWR), rename (every type pair, inode kept, nlink, times, sticky
directories, a directory into itself, EISDIR/ENOTDIR/ENOTEMPTY), rmdir (".", "..", EEXIST/ENOTEMPTY,
sticky, times), symlink, truncate/ftruncate (sizes, times, EINVAL, EBADF, EISDIR, EACCES),
unlink (types, ctime of the remaining link, directory times, sticky), utimensat (UTIME_NOW/UTIME_OMIT,
who may set which times), directory link counts and sizes, st_blocks, ENAMETOOLONG (255/256 bytes per
component, PATH_MAX paths), ELOOP, ENOTDIR and EEXIST for every operation and type, posix_fallocate.

Users are switched as a test program does it: a forked child calls setgroups, setegid (the first group)
and seteuid, with the umask it is given.
"""
import ctypes
import errno
import os
import shutil
import socket
import stat
import time

libc = ctypes.CDLL(None, use_errno=True)
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _err():
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


def renameat2(a, b, flags):
    if libc.syscall(316, -100, a.encode(), -100, b.encode(), flags) != 0:
        _err()


def utimensat(p, times, nofollow=False):
    ts = (Timespec * 2)(*[Timespec(s, n) for s, n in times])
    if libc.utimensat(-100, p.encode(), ts, 0x100 if nofollow else 0) != 0:
        _err()


TYPES = ["regular", "dir", "fifo", "block", "char", "socket", "symlink"]
NOBODY = 65534


def make(p, kind, mode=None):
    """Creates a node of `kind` at path p (as the suite does: 0644 files, 0755 directories)."""
    if kind == "regular":
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif kind == "dir":
        os.mkdir(p, 0o755)
    elif kind == "fifo":
        os.mkfifo(p, 0o644)
    elif kind == "block":
        os.mknod(p, stat.S_IFBLK | 0o644, os.makedev(1, 2))
    elif kind == "char":
        os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 2))
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(p)
        finally:
            s.close()
    elif kind == "symlink":
        os.symlink("test", p)
    if mode is not None and kind != "symlink":
        os.chmod(p, mode)


def remove(p):
    if stat.S_ISDIR(os.lstat(p).st_mode):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def rm(p):
    if os.path.lexists(p):
        remove(p)


def ids(p, follow=False):
    st = os.stat(p) if follow else os.lstat(p)
    return (oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)


def stamps(p, follow=False):
    st = os.stat(p) if follow else os.lstat(p)
    return (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def nap():
    time.sleep(0.012)  # more than a clock tick: tmpfs takes its times from the coarse clock


def outcome(fn):
    """repr(fn()) or the errno name of the OSError it raised."""
    try:
        return repr(fn())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def as_ids(uid, gids, umask, fn):
    """fn() in a child with effective uid/gids (gids None: root's groups and gid); its value or errno."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.umask(umask)
            if gids is not None:
                os.setgroups(gids)
                os.setegid(gids[0])
            if uid is not None:
                os.seteuid(uid)
            os.write(w, outcome(fn).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


class Conf:
    """Wraps posix_test's Log: calls as users, and time changes of watched paths."""

    def __init__(self, L):
        self.L = L

    def p(self, rel):
        return self.L.p(rel)

    def do(self, what, fn, *args):
        return self.L(what, fn, *args)

    def user(self, what, fn, uid=NOBODY, gids=None, umask=0):
        out = as_ids(uid, gids, umask, fn)
        self.L.lines.append("%s [uid %s gids %s] -> %s" % (what, uid, gids, out))
        return out

    def timed(self, what, fn, watch, uid=None, gids=None, umask=0):
        """Runs fn (as uid/gids when given) and logs its result and which times of each watched
        (rel, follow) path changed: a subset of 'amc'."""
        before = [self._st(rel, f) for rel, f in watch]
        nap()
        if uid is None and gids is None:
            out = outcome(fn)
        else:
            out = as_ids(uid, gids, umask, fn)
        after = [self._st(rel, f) for rel, f in watch]
        ch = []
        for (rel, _), b, a in zip(watch, before, after):
            if b is None or a is None:
                ch.append("%s:%s" % (rel, "gone" if a is None else "new"))
            else:
                ch.append("%s:%s" % (rel, "".join(c for c, x, y in zip("amc", b, a) if x != y) or "-"))
        self.L.lines.append("%s -> %s %s" % (what, out, " ".join(ch)))
        return out

    def _st(self, rel, follow):
        try:
            return stamps(self.p(rel), follow)
        except OSError:
            return None


def for_types(C, d, fn, types=TYPES):
    for t in types:
        p = C.p(d + "/n0")
        fn(t, p)
        try:
            if os.path.lexists(p):
                remove(p)
        except OSError:
            pass


def sc_chmod(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)

    def body(t, p):
        q = C.p("w/n1")
        C.do("%s create" % t, make, p, t)
        if t != "symlink":
            C.do("%s chmod" % t, os.chmod, p, 0o111)
            C.do("%s mode" % t, ids, p)
            C.do("%s symlink" % t, os.symlink, "n0", q)
            C.do("%s chmod via symlink" % t, os.chmod, q, 0o222)
            C.do("%s modes" % t, lambda: (ids(q, True), ids(p), ids(q)[0]))
            os.unlink(q)
            C.timed("%s chmod ctime" % t, lambda: os.chmod(p, 0o755), [("w/n0", False)])
            C.timed("%s chmod EPERM" % t, lambda: os.chmod(p, 0o111), [("w/n0", False)], uid=NOBODY)
            os.chown(p, NOBODY, NOBODY)
            C.user("%s chmod sgid member" % t, lambda: (os.chmod(p, 0o2755), ids(p)), gids=[NOBODY])
            C.user("%s chmod sgid non-member" % t, lambda: (os.chmod(p, 0o2755), ids(p)), gids=[NOBODY - 1])
            C.user("%s chmod suid owner" % t, lambda: (os.chmod(p, 0o4755), ids(p)), gids=[NOBODY - 1])
            C.user("%s chmod sticky owner" % t, lambda: (os.chmod(p, 0o1644), ids(p)), gids=[NOBODY])
            C.do("%s chmod 01621 root" % t, lambda: (os.chmod(p, 0o1621), ids(p)))
    for_types(C, "w", body)


def sc_chown(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)

    def body(t, p):
        q = C.p("w/n1")
        C.do("%s create" % t, make, p, t)
        if t != "symlink":
            C.do("%s chown" % t, os.chown, p, 123, 456)
            C.do("%s ids" % t, ids, p)
            C.do("%s symlink" % t, os.symlink, "n0", q)
            C.do("%s chown via symlink" % t, lambda: (os.chown(q, 65534, 65533), ids(p), ids(q)[1:]))
            C.user("%s owner chgrp to own group" % t, lambda: (os.chown(p, -1, 65532), ids(p)), gids=[65532, 65531])
            C.user("%s owner chown self + group" % t, lambda: (os.chown(p, NOBODY, 65531), ids(p)), gids=[65532, 65531])
            C.user("%s owner chgrp via symlink" % t, lambda: (os.chown(q, -1, 65532), ids(p)), gids=[65532, 65531])
            os.unlink(q)
            os.chown(p, 0, 0)
            C.user("%s non-owner -1 -1" % t, lambda: (os.chown(p, -1, -1), ids(p)), gids=[NOBODY])
            # set-id bits: root's chown
            os.chown(p, 65534, 65533)
            C.do("%s chmod 06555" % t, lambda: (os.chmod(p, 0o6555), ids(p)))
            C.do("%s root chown set-id" % t, lambda: (os.chown(p, 65532, 65531), ids(p)))
            os.chmod(p, 0o6555)
            C.do("%s root chown 0 0 set-id" % t, lambda: (os.chown(p, 0, 0), ids(p)))
            # set-id bits: the owner's chown
            os.chown(p, 65534, 65533)
            os.chmod(p, 0o6555)
            C.user("%s owner chown set-id" % t, lambda: (os.chown(p, 65534, 65532), ids(p)), gids=[65533, 65532])
            os.chmod(p, 0o6555)
            C.user("%s owner chgrp set-id" % t, lambda: (os.chown(p, -1, 65533), ids(p)), gids=[65533, 65532])
            os.chmod(p, 0o6555)
            C.user("%s owner -1 -1 set-id" % t, lambda: (os.chown(p, -1, -1), ids(p)), gids=[65533, 65532])
            os.chmod(p, 0o6545)
            C.user("%s owner chgrp set-id not exec by group" % t, lambda: (os.chown(p, -1, 65532), ids(p)), gids=[65533, 65532])
            os.chown(p, 0, 0)
            os.chmod(p, 0o755)
            C.timed("%s chown ctime" % t, lambda: os.chown(p, 65534, 65533), [("w/n0", False)])
            C.timed("%s owner chown ctime" % t, lambda: os.chown(p, 65534, 65532), [("w/n0", False)], gids=[65532])
            C.timed("%s chown -1 -1 ctime" % t, lambda: (os.chown(p, -1, -1), ids(p)), [("w/n0", False)])
            os.chown(p, 0, 0)
            C.timed("%s chown EPERM uid" % t, lambda: os.chown(p, NOBODY, -1), [("w/n0", False)], uid=NOBODY)
            C.timed("%s chown EPERM gid" % t, lambda: os.chown(p, -1, NOBODY), [("w/n0", False)], gids=[NOBODY])
            C.user("%s chown EPERM both" % t, lambda: os.chown(p, NOBODY, NOBODY), gids=[NOBODY])
        C.do("%s lchown" % t, lambda: (os.lchown(p, 123, 456), ids(p)))
        os.lchown(p, 65534, 65533)
        C.user("%s owner lchgrp" % t, lambda: (os.lchown(p, -1, 65532), ids(p)), gids=[65532, 65531])
        C.user("%s owner lchown to other" % t, lambda: os.lchown(p, 65533, -1), gids=[65532, 65531])
        C.timed("%s lchown ctime" % t, lambda: os.lchown(p, 65534, 65533), [("w/n0", False)])
    for_types(C, "w", body)


def sc_link(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)

    def body(t, p):
        q, r = C.p("w/n1"), C.p("w/n2")
        C.do("%s create" % t, make, p, t)
        C.timed("%s link" % t, lambda: os.link(p, q), [("w/n0", False), ("w", False)])
        C.do("%s link 2" % t, os.link, q, r)
        C.do("%s nlink" % t, lambda: [os.lstat(x).st_nlink for x in (p, q, r)])
        if t != "symlink":
            C.do("%s chmod+chown via link" % t, lambda: (os.chmod(q, 0o201), os.chown(q, 65534, 65533), ids(p), ids(r)))
        C.timed("%s unlink one link" % t, lambda: os.unlink(p), [("w/n1", False), ("w", False)])
        C.do("%s nlink after unlink" % t, lambda: [os.lstat(x).st_nlink for x in (q, r)])
        os.unlink(r)
        os.rename(q, p)
        C.timed("%s link EACCES" % t, lambda: os.link(p, q), [("w/n0", False), ("w", False)], uid=NOBODY)
        C.do("%s link onto existing" % t, lambda: (make(q, "regular"), os.link(p, q)))
        os.unlink(q)
        C.do("%s link into missing dir" % t, os.link, p, C.p("w/none/n1"))
        C.do("%s link via file component" % t, os.link, C.p("w/n0/x") if t != "dir" else p + "/x", q)
    for_types(C, "w", body, [t for t in TYPES if t != "dir"])
    C.do("link dir EPERM", lambda: (os.mkdir(C.p("w/d")), os.link(C.p("w/d"), C.p("w/d2"))))
    C.do("dir nlink 2 + subdirs", lambda: (os.mkdir(C.p("w/d/s1")), os.mkdir(C.p("w/d/s2")), open(C.p("w/d/f"), "w").close(),
                                            os.lstat(C.p("w/d")).st_nlink, os.lstat(C.p("w")).st_nlink))
    C.do("dir nlink after rmdir", lambda: (os.rmdir(C.p("w/d/s1")), os.lstat(C.p("w/d")).st_nlink))
    C.do("dir nlink after rename out", lambda: (os.rename(C.p("w/d/s2"), C.p("w/s2")), os.lstat(C.p("w/d")).st_nlink,
                                                 os.lstat(C.p("w")).st_nlink))
    C.do("link EEXIST dir", os.link, C.p("w/d/f"), C.p("w/s2"))
    C.do("link 255", lambda: os.link(C.p("w/d/f"), C.p("w/" + "l" * 255)))
    C.do("link 256", lambda: os.link(C.p("w/d/f"), C.p("w/" + "l" * 256)))
    C.do("link from 256", lambda: os.link(C.p("w/" + "l" * 256), C.p("w/x")))
    C.user("link no search", lambda: (os.link(C.p("w/d/f"), C.p("w/d/g"))), uid=NOBODY)
    # a node named in a directory the caller may not search and in one it may: reached by the latter
    os.makedirs(C.p("w/hidden"), 0o700)
    os.makedirs(C.p("w/open"), 0o777)
    for t in ("regular", "symlink", "fifo"):
        make(C.p("w/hidden/x"), t)
        os.lchown(C.p("w/hidden/x"), NOBODY, NOBODY)
        os.link(C.p("w/hidden/x"), C.p("w/open/y"))
        os.lstat(C.p("w/hidden/x"))
        y = C.p("w/open/y")
        C.user("%s via accessible name" % t, lambda: (ids(y), os.readlink(y) if t == "symlink" else None,
                                                     os.lchown(y, -1, NOBODY), os.utime(y, ns=(5, 5), follow_symlinks=t != "symlink"),
                                                     (os.chmod(y, 0o640), os.truncate(y, 3), _fd_call(y, os.O_RDWR, 0, os.fstat).st_size)
                                                     if t == "regular" else None), gids=[NOBODY])
        C.user("%s link from accessible name" % t, lambda: (os.link(y, C.p("w/open/z")), os.lstat(C.p("w/open/z")).st_nlink), gids=[NOBODY])
        for x in ("w/hidden/x", "w/open/y", "w/open/z"):
            rm(C.p(x))


def sc_create(C):
    """mkdir, mkfifo, mknod and open(O_CREAT): modes under umasks, owners, times, errors."""
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    makers = {
        "mkdir": lambda p, m: os.mkdir(p, m),
        "mkfifo": lambda p, m: os.mkfifo(p, m),
        "mknod-fifo": lambda p, m: os.mknod(p, stat.S_IFIFO | m),
        "mknod-reg": lambda p, m: os.mknod(p, stat.S_IFREG | m),
        "mknod-0": lambda p, m: os.mknod(p, m),
        "mknod-chr": lambda p, m: os.mknod(p, stat.S_IFCHR | m, os.makedev(1, 2)),
        "mknod-blk": lambda p, m: os.mknod(p, stat.S_IFBLK | m, os.makedev(4, 5)),
        "open": lambda p, m: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, m)),  # a FIFO must not block
        "socket": lambda p, m: make(p, "socket"),
        "symlink": lambda p, m: os.symlink("test", p),
    }
    p = C.p("w/n0")
    for name, mk in makers.items():
        for umask, mode in [(0, 0o755), (0, 0o151), (0o077, 0o151), (0o070, 0o345), (0o501, 0o345)]:
            C.user("%s umask %o mode %o" % (name, umask, mode), lambda: (mk(p, mode), ids(p)[0], stat.S_IFMT(os.lstat(p).st_mode)),
                   uid=None, umask=umask)
            if os.path.lexists(p):
                rm(p)
        os.chown(C.p("w"), 65535, 65535)
        C.user("%s owner" % name, lambda: (mk(p, 0o755), ids(p)[1:]), uid=65535, gids=[65535])
        rm(p)
        C.user("%s owner other group" % name, lambda: (mk(p, 0o755), ids(p)[1:]), uid=65535, gids=[65534])
        rm(p)
        os.chmod(C.p("w"), 0o777)
        C.user("%s non-owner" % name, lambda: (mk(p, 0o755), ids(p)[1:]), uid=65534, gids=[65533])
        if os.path.lexists(p):
            rm(p)
        os.chown(C.p("w"), 0, 0)
        os.chmod(C.p("w"), 0o755)
        C.timed("%s times" % name, lambda: mk(p, 0o644), [("w", False)])
        C.do("%s new node times after dir" % name, lambda: stamps(p) >= stamps(C.p("w")) or stamps(p))
        C.do("%s EEXIST" % name, mk, p, 0o644)
        rm(p)
        for t in TYPES:
            make(p, t)
            if name != "open" or t not in ("block", "char"):  # the mount is nodev: opening a device is EACCES
                C.do("%s EEXIST over %s" % (name, t), mk, p, 0o644)
            rm(p)
        C.user("%s EACCES" % name, lambda: mk(p, 0o644), uid=NOBODY, gids=[NOBODY])
        C.do("%s ENOENT" % name, mk, C.p("w/none/n0"), 0o644)
        C.do("%s ENOTDIR" % name, lambda: (make(C.p("w/f"), "regular"), mk(C.p("w/f/n0"), 0o644)))
        rm(C.p("w/f"))
        C.do("%s 255" % name, lambda: (mk(C.p("w/" + "a" * 255), 0o644), remove(C.p("w/" + "a" * 255))))
        C.do("%s 256" % name, mk, C.p("w/" + "a" * 256), 0o644)
        C.do("%s ELOOP" % name, lambda: (os.symlink("l2", C.p("w/l1")), os.symlink("l1", C.p("w/l2")), mk(C.p("w/l1/x"), 0o644)))
        C.do("%s on dangling symlink" % name, lambda: (os.symlink("target", C.p("w/dang")), mk(C.p("w/dang"), 0o644),
                                                        os.path.lexists(C.p("w/target"))))
        for x in ("w/l1", "w/l2", "w/dang", "w/target"):
            if os.path.lexists(C.p(x)):
                remove(C.p(x))
        C.user("%s in setgid dir" % name, lambda: (os.mkdir(C.p("w/sg")), os.chown(C.p("w/sg"), 0, 4000), os.chmod(C.p("w/sg"), 0o2777),
                                                   mk(C.p("w/sg/x"), 0o2755), ids(C.p("w/sg/x"))), uid=None)
        C.user("%s in setgid dir as user" % name, lambda: (mk(C.p("w/sg/y"), 0o2755), ids(C.p("w/sg/y"))), uid=1000, gids=[1000])
        for x in ("w/sg/x", "w/sg/y", "w/sg"):
            if os.path.lexists(C.p(x)):
                remove(C.p(x))
    C.do("mknod dir", os.mknod, p, stat.S_IFDIR | 0o755)
    C.do("mknod bad type", os.mknod, p, 0o170000 | 0o755)
    C.user("mknod chr as user", lambda: os.mknod(C.p("w/u"), stat.S_IFCHR | 0o644, os.makedev(1, 2)), uid=NOBODY)
    C.do("mknod chr rdev", lambda: (os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(12, 34)), os.major(os.lstat(p).st_rdev),
                                     os.minor(os.lstat(p).st_rdev)))
    rm(p)
    C.do("mknod blk rdev", lambda: (os.mknod(p, stat.S_IFBLK | 0o644, os.makedev(4095, 1048575)), os.major(os.lstat(p).st_rdev),
                                     os.minor(os.lstat(p).st_rdev)))
    rm(p)


def sc_open(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    p = C.p("w/n0")

    def opn(path, flags, mode=0o644):
        fd = os.open(path, flags, mode)
        st = os.fstat(fd)
        os.close(fd)
        return stat.S_IFMT(st.st_mode), st.st_size

    C.timed("O_CREAT new", lambda: opn(p, os.O_CREAT | os.O_WRONLY), [("w", False)])
    C.timed("O_CREAT existing", lambda: opn(p, os.O_CREAT | os.O_RDONLY), [("w", False), ("w/n0", False)])
    with open(p, "wb") as f:
        f.write(b"test\n")
    C.timed("O_TRUNC", lambda: opn(p, os.O_WRONLY | os.O_TRUNC), [("w/n0", False)])
    C.timed("O_TRUNC empty file", lambda: opn(p, os.O_WRONLY | os.O_TRUNC), [("w/n0", False)])
    with open(p, "wb") as f:
        f.write(b"test\n")
    C.timed("O_RDONLY|O_TRUNC", lambda: opn(p, os.O_RDONLY | os.O_TRUNC), [("w/n0", False)])
    C.do("O_ACCMODE 3", opn, p, 3)
    C.do("O_ACCMODE 3|O_TRUNC", opn, p, 3 | os.O_TRUNC)
    C.do("O_ACCMODE 3 read", lambda: _fd_call(p, 3, 0, lambda fd: os.read(fd, 1)))
    C.do("O_ACCMODE 3 write", lambda: _fd_call(p, 3, 0, lambda fd: os.write(fd, b"x")))
    os.chmod(p, 0o644)
    C.user("O_ACCMODE 3 needs read and write permission", lambda: opn(p, 3), uid=NOBODY)
    C.do("O_ACCMODE 3 dir", opn, C.p("w"), 3)
    os.chmod(p, 0o444)
    C.user("O_TRUNC without write permission", lambda: opn(p, os.O_RDONLY | os.O_TRUNC), uid=NOBODY)
    C.user("O_WRONLY EACCES", lambda: opn(p, os.O_WRONLY), uid=NOBODY)
    os.chmod(p, 0o644)
    for t in TYPES:
        if t in ("block", "char"):
            continue  # the mount is nodev (FUSE's default): opening a device node is EACCES there
        q = C.p("w/t")
        make(q, t)
        C.do("%s O_CREAT|O_EXCL" % t, opn, q, os.O_CREAT | os.O_EXCL | os.O_RDONLY)
        C.do("%s O_DIRECTORY" % t, opn, q, os.O_RDONLY | os.O_DIRECTORY)
        C.do("%s O_NOFOLLOW" % t, opn, q, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        C.do("%s O_WRONLY" % t, opn, q, os.O_WRONLY | os.O_NONBLOCK)
        C.do("%s O_RDWR" % t, opn, q, os.O_RDWR | os.O_NONBLOCK)
        C.do("%s as component" % t, opn, q + "/x", os.O_RDONLY)
        C.do("%s as component O_CREAT" % t, opn, q + "/x", os.O_CREAT | os.O_RDONLY)
        remove(q)
    os.symlink("n0", C.p("w/sym"))
    C.do("O_CREAT|O_EXCL on symlink to file", opn, C.p("w/sym"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    C.do("O_NOFOLLOW on symlink", opn, C.p("w/sym"), os.O_RDONLY | os.O_NOFOLLOW)
    C.do("O_NOFOLLOW|O_CREAT on symlink", opn, C.p("w/sym"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CREAT)
    C.do("O_CREAT|O_EXCL dangling", lambda: (os.symlink("nothere", C.p("w/dang")), opn(C.p("w/dang"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
    C.do("O_CREAT dir", opn, C.p("w"), os.O_CREAT | os.O_RDONLY)
    C.do("O_CREAT trailing slash", opn, C.p("w/new/"), os.O_CREAT | os.O_RDONLY)
    C.do("ENOENT trailing slash on file", opn, p + "/", os.O_RDONLY)
    C.do("O_CREAT mode 0 then ftruncate", lambda: _fd_call(C.p("w/z0"), os.O_CREAT | os.O_RDWR, 0, lambda fd: os.ftruncate(fd, 0)))
    os.chmod(C.p("w"), 0o777)
    C.user("O_CREAT mode 0 then ftruncate as user", lambda: _fd_call(C.p("w/z1"), os.O_CREAT | os.O_RDWR, 0, lambda fd: os.ftruncate(fd, 0)))
    C.user("O_CREAT mode 0 then write as user", lambda: _fd_call(C.p("w/z2"), os.O_CREAT | os.O_RDWR, 0, lambda fd: os.write(fd, b"x")))
    C.user("reopen mode 0 as user", lambda: opn(C.p("w/z2"), os.O_RDONLY))
    C.do("256 component", opn, C.p("w/" + "a" * 256), os.O_CREAT | os.O_RDONLY)
    C.do("ELOOP 41 links", lambda: (_chain(C.p("w"), 41), opn(C.p("w/c0"), os.O_RDONLY)))
    C.do("40 links ok", lambda: opn(C.p("w/c1"), os.O_RDONLY))
    C.do("ELOOP self", lambda: (os.symlink("self", C.p("w/self")), opn(C.p("w/self"), os.O_RDONLY)))
    C.do("ELOOP self O_CREAT", opn, C.p("w/self"), os.O_RDONLY | os.O_CREAT)
    C.do("append", lambda: _fd_call(p, os.O_WRONLY | os.O_APPEND, 0, lambda fd: (os.write(fd, b"ab"), os.lseek(fd, 0, os.SEEK_CUR))))
    C.do("read dir EISDIR", lambda: _fd_call(C.p("w"), os.O_RDONLY, 0, lambda fd: os.read(fd, 10)))


def _truncate_or_efbig(p, n):
    """A file system may refuse a size past its largest file (EFBIG or EINVAL) and must then be
    unchanged, or make the file that long."""
    before = os.lstat(p).st_size
    try:
        os.truncate(p, n)
    except OSError as e:
        return e.errno in (errno.EFBIG, errno.EINVAL) and os.lstat(p).st_size == before
    return os.lstat(p).st_size == n


def _fd_call(path, flags, mode, fn):
    fd = os.open(path, flags, mode)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def _chain(d, n):
    """c0 -> c1 -> ... -> c{n-1} -> target (a file): following c0 takes n links."""
    open(os.path.join(d, "target"), "w").close()
    for i in range(n):
        os.symlink("c%d" % (i + 1) if i + 1 < n else "target", os.path.join(d, "c%d" % i))


def sc_rename(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    p, q, r = C.p("w/n0"), C.p("w/n1"), C.p("w/n2")
    for t in TYPES:
        make(p, t)
        ino = os.lstat(p).st_ino
        C.timed("%s rename" % t, lambda: os.rename(p, q), [("w", False), ("w/n0", False)])
        C.do("%s after" % t, lambda: (os.lstat(q).st_ino == ino, ids(q), os.lstat(q).st_nlink))
        if t != "dir":
            C.do("%s link + rename" % t, lambda: (os.link(q, p), os.rename(q, r), os.lstat(p).st_nlink, os.lstat(r).st_ino == ino))
            C.do("%s rename onto own link" % t, lambda: (os.rename(p, r), os.path.lexists(p), os.lstat(r).st_nlink))
            os.rename(r, q)
            if os.path.lexists(p):
                os.unlink(p)
        C.timed("%s rename ctime" % t, lambda: os.rename(q, p), [("w/n1", False), ("w/n0", False), ("w", False)])
        C.timed("%s rename EACCES" % t, lambda: os.rename(p, q), [("w/n0", False), ("w", False)], uid=NOBODY)
        for t2 in TYPES:
            make(q, t2)
            C.timed("%s onto %s" % (t, t2), lambda: os.rename(p, q), [("w/n1", False), ("w", False)])
            C.do("%s onto %s state" % (t, t2), lambda: (os.path.lexists(p), stat.S_IFMT(os.lstat(q).st_mode)))
            if not os.path.lexists(p):
                os.rename(q, p)
            else:
                remove(q)
        remove(p)
    os.makedirs(C.p("w/a/b/c"))
    C.do("dir into itself", os.rename, C.p("w/a"), C.p("w/a/b/x"))
    C.do("dir into own child", os.rename, C.p("w/a"), C.p("w/a/b"))
    C.do("dir onto ancestor", os.rename, C.p("w/a/b/c"), C.p("w/a"))
    C.do("dir onto non-empty ancestor", os.rename, C.p("w/a/b"), C.p("w/a"))
    C.do("rename to .", os.rename, C.p("w/a/b"), C.p("w/a/."))
    C.do("rename from ..", os.rename, C.p("w/a/b/.."), C.p("w/z"))
    C.do("rename same", os.rename, C.p("w/a"), C.p("w/a"))
    C.do("rename missing", os.rename, C.p("w/none"), C.p("w/z"))
    C.do("rename 256", os.rename, C.p("w/a"), C.p("w/" + "b" * 256))
    C.do("rename 255", lambda: (os.rename(C.p("w/a"), C.p("w/" + "b" * 255)), os.rename(C.p("w/" + "b" * 255), C.p("w/a"))))
    C.do("rename dir link counts", lambda: (os.mkdir(C.p("w/e")), os.rename(C.p("w/a/b"), C.p("w/e/b")),
                                             os.lstat(C.p("w/a")).st_nlink, os.lstat(C.p("w/e")).st_nlink))
    C.timed("rename dir across parents", lambda: os.rename(C.p("w/e/b"), C.p("w/a/b")),
            [("w/e", False), ("w/a", False), ("w/e/b", False)])
    C.do("rename dir updates ..", lambda: (os.makedirs(C.p("w/sp/src")), os.mkdir(C.p("w/dp")),
                                           os.lstat(C.p("w/sp/src/..")).st_ino == os.lstat(C.p("w/sp")).st_ino,
                                           os.rename(C.p("w/sp/src"), C.p("w/dp/dst")), os.lstat(C.p("w/sp")).st_nlink,
                                           os.lstat(C.p("w/dp")).st_nlink,
                                           os.lstat(C.p("w/dp/dst/..")).st_ino == os.lstat(C.p("w/dp")).st_ino))
    for t in ("regular", "fifo", "socket", "symlink"):
        make(C.p("w/src"), t)
        make(C.p("w/dst"), t)
        os.link(C.p("w/dst"), C.p("w/dstlnk"))
        C.timed("%s rename onto multiply linked" % t, lambda: (os.rename(C.p("w/src"), C.p("w/dst")), os.lstat(C.p("w/dstlnk")).st_nlink),
                [("w/dstlnk", False)])
        rm(C.p("w/dst"))
        rm(C.p("w/dstlnk"))
    # sticky source and destination directories; a directory moved needs write access to itself
    for sticky in ("w/s", "w/t"):
        os.mkdir(C.p(sticky), 0o755)
        os.chmod(C.p(sticky), 0o1777)
    for uid_dir, uid_file in [(NOBODY, NOBODY), (NOBODY, 0), (0, NOBODY), (0, 0), (65533, 65533)]:
        os.chown(C.p("w/s"), uid_dir, uid_dir)
        for t in ("regular", "dir", "symlink"):
            make(C.p("w/s/f"), t)
            os.lchown(C.p("w/s/f"), uid_file, uid_file)
            C.user("sticky rename %s dir %d file %d" % (t, uid_dir, uid_file),
                   lambda: os.rename(C.p("w/s/f"), C.p("w/t/g")), gids=[NOBODY])
            C.user("sticky rename in place %s dir %d file %d" % (t, uid_dir, uid_file),
                   lambda: os.rename(C.p("w/s/f"), C.p("w/s/h")), gids=[NOBODY])
            for x in ("w/s/f", "w/s/h", "w/t/g"):
                if os.path.lexists(C.p(x)):
                    remove(C.p(x))
            make(C.p("w/t/g"), "regular")
            os.chown(C.p("w/t/g"), uid_file, uid_file)
            make(C.p("w/s/f"), "regular")
            os.chown(C.p("w/s/f"), NOBODY, NOBODY)
            C.user("sticky replace target owned by %d" % uid_file, lambda: os.rename(C.p("w/s/f"), C.p("w/t/g")), gids=[NOBODY])
            for x in ("w/s/f", "w/t/g"):
                if os.path.lexists(C.p(x)):
                    remove(C.p(x))
    C.do("RENAME_EXCHANGE dir/file", lambda: (os.mkdir(C.p("w/x1")), make(C.p("w/x2"), "regular"),
                                              renameat2(C.p("w/x1"), C.p("w/x2"), 2),
                                              stat.S_ISDIR(os.lstat(C.p("w/x2")).st_mode)))
    C.do("RENAME_NOREPLACE", renameat2, C.p("w/x1"), C.p("w/x2"), 1)
    C.do("RENAME bad flags", renameat2, C.p("w/x1"), C.p("w/x3"), 3)


def sc_rmdir_unlink(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    C.do("rmdir times", lambda: os.mkdir(C.p("w/d")))
    C.timed("rmdir", lambda: os.rmdir(C.p("w/d")), [("w", False)])
    for t in TYPES:
        make(C.p("w/d"), "dir")
        make(C.p("w/d/x"), t)
        C.timed("unlink %s" % t, lambda: os.unlink(C.p("w/d/x")), [("w/d", False)])
        C.do("rmdir %s" % t, lambda: (make(C.p("w/d/x"), t), os.rmdir(C.p("w/d/x"))))
        C.do("rmdir non-empty with %s" % t, os.rmdir, C.p("w/d"))
        C.do("unlink dir", os.unlink, C.p("w/d"))
        remove(C.p("w/d/x"))
        os.rmdir(C.p("w/d"))
        make(C.p("w/x"), t)
        C.timed("unlink EACCES %s" % t, lambda: os.unlink(C.p("w/x")), [("w/x", False), ("w", False)], uid=NOBODY)
        C.do("unlink via component %s" % t, os.unlink, C.p("w/x/y"))
        C.do("rmdir via component %s" % t, os.rmdir, C.p("w/x/y"))
        remove(C.p("w/x"))
    os.makedirs(C.p("w/d/e"))
    C.do("rmdir .", os.rmdir, C.p("w/d/."))
    C.do("rmdir ..", os.rmdir, C.p("w/d/e/.."))
    C.do("rmdir trailing .", os.rmdir, C.p("w/d/e/."))
    C.do("rmdir missing", os.rmdir, C.p("w/none"))
    C.do("rmdir 256", os.rmdir, C.p("w/" + "a" * 256))
    C.do("rmdir ELOOP", lambda: (os.symlink("l2", C.p("w/l1")), os.symlink("l1", C.p("w/l2")), os.rmdir(C.p("w/l1/x"))))
    C.do("rmdir symlink", os.rmdir, C.p("w/l1"))
    C.do("unlink ELOOP component", os.unlink, C.p("w/l1/x"))
    C.do("unlink symlink itself", os.unlink, C.p("w/l1"))
    os.chmod(C.p("w/d"), 0o1777)
    for uid_dir, uid_file in [(NOBODY, NOBODY), (NOBODY, 0), (0, NOBODY), (0, 0)]:
        os.chown(C.p("w/d"), uid_dir, uid_dir)
        for t in TYPES:
            make(C.p("w/d/f"), t)
            os.lchown(C.p("w/d/f"), uid_file, uid_file)
            C.user("sticky remove %s dir %d file %d" % (t, uid_dir, uid_file),
                   lambda: remove(C.p("w/d/f")), gids=[NOBODY])
            if os.path.lexists(C.p("w/d/f")):
                remove(C.p("w/d/f"))
    os.chmod(C.p("w/d"), 0o755)
    C.do("unlink open file keeps data", lambda: _open_unlink(C.p("w/o")))


def _open_unlink(p):
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"data")
    os.link(p, p + "2")
    os.unlink(p)
    a = os.fstat(fd).st_nlink
    os.unlink(p + "2")
    st = os.fstat(fd)
    r = (a, st.st_nlink, os.pread(fd, 10, 0))
    os.close(fd)
    return r


def sc_symlink(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    C.timed("symlink", lambda: os.symlink("test", C.p("w/s")), [("w", False)])
    C.do("symlink attrs", lambda: (ids(C.p("w/s")), os.lstat(C.p("w/s")).st_size, os.readlink(C.p("w/s"))))
    C.do("symlink EEXIST", os.symlink, "x", C.p("w/s"))
    C.do("symlink 1023 target", lambda: (os.symlink("t" * 1023, C.p("w/long")), len(os.readlink(C.p("w/long")))))
    C.do("symlink 4095 target", lambda: (os.symlink("/".join(["t" * 200] * 20)[:4095], C.p("w/long2")), os.lstat(C.p("w/long2")).st_size))
    C.do("symlink 4096 target", os.symlink, "t" * 4096, C.p("w/long3"))
    C.do("symlink empty target", os.symlink, "", C.p("w/empty"))
    C.do("symlink 256", os.symlink, "x", C.p("w/" + "s" * 256))
    C.user("symlink EACCES", lambda: os.symlink("x", C.p("w/u")), uid=NOBODY)
    C.do("readlink on file", lambda: (make(C.p("w/f"), "regular"), os.readlink(C.p("w/f"))))
    C.do("readlink ENOTDIR", os.readlink, C.p("w/f/x"))
    C.do("symlink blocks", lambda: os.lstat(C.p("w/s")).st_blocks)


def sc_truncate(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    p = C.p("w/f")
    make(p, "regular")
    C.timed("truncate grow", lambda: (os.truncate(p, 1234567), os.lstat(p).st_size), [("w/f", False)])
    C.timed("truncate shrink", lambda: (os.truncate(p, 567), os.lstat(p).st_size), [("w/f", False)])
    C.timed("truncate same size", lambda: (os.truncate(p, 567), os.lstat(p).st_size), [("w/f", False)])
    C.do("truncate negative", os.truncate, p, -1)
    C.do("truncate 999999999999999", lambda: _truncate_or_efbig(p, 999999999999999))
    os.truncate(p, 567)
    C.do("truncate dir", os.truncate, C.p("w"), 0)
    C.do("truncate missing", os.truncate, C.p("w/none"), 0)
    C.do("truncate ENOTDIR", os.truncate, C.p("w/f/x"), 0)
    C.do("truncate 256", os.truncate, C.p("w/" + "a" * 256), 0)
    C.user("truncate EACCES", lambda: os.truncate(p, 0), uid=NOBODY)
    C.do("truncate fifo", lambda: (os.mkfifo(C.p("w/fifo")), os.truncate(C.p("w/fifo"), 0)))
    C.do("truncate symlink", lambda: (os.symlink("f", C.p("w/sl")), os.truncate(C.p("w/sl"), 10), os.lstat(p).st_size))
    C.timed("ftruncate", lambda: _fd_call(p, os.O_RDWR, 0, lambda fd: os.ftruncate(fd, 123)), [("w/f", False)])
    C.do("ftruncate O_WRONLY", lambda: _fd_call(p, os.O_WRONLY, 0, lambda fd: (os.ftruncate(fd, 1), os.fstat(fd).st_size)))
    C.timed("ftruncate O_RDONLY", lambda: _fd_call(p, os.O_RDONLY, 0, lambda fd: os.ftruncate(fd, 123)), [("w/f", False)], uid=NOBODY)
    C.do("ftruncate O_RDONLY root", lambda: _fd_call(p, os.O_RDONLY, 0, lambda fd: os.ftruncate(fd, 123)))
    C.do("ftruncate negative", lambda: _fd_call(p, os.O_RDWR, 0, lambda fd: os.ftruncate(fd, -1)))
    C.do("ftruncate dir", lambda: _fd_call(C.p("w"), os.O_RDONLY, 0, lambda fd: os.ftruncate(fd, 0)))
    C.do("ftruncate bad fd", os.ftruncate, 1 << 20, 0)
    os.chmod(p, 0o444)
    C.user("ftruncate on fd after chmod", lambda: _fd_call(p, os.O_RDONLY, 0, lambda fd: os.ftruncate(fd, 0)))
    os.chmod(p, 0o644)
    for mode in (0o6777, 0o6767):  # set-id bits: cleared by a truncate or write of a caller other than root
        for name, fn in (("O_TRUNC", lambda: _fd_call(p, os.O_RDONLY | os.O_TRUNC, 0, lambda fd: None)),
                         ("O_CREAT|O_TRUNC", lambda: _fd_call(p, os.O_RDONLY | os.O_CREAT | os.O_TRUNC, 0o644, lambda fd: None)),
                         ("truncate", lambda: os.truncate(p, 7)), ("truncate same size", lambda: os.truncate(p, os.lstat(p).st_size)),
                         ("ftruncate", lambda: _fd_call(p, os.O_WRONLY, 0, lambda fd: os.ftruncate(fd, 3))),
                         ("write", lambda: _fd_call(p, os.O_WRONLY, 0, lambda fd: os.write(fd, b"x")))):
            os.chmod(p, mode)
            C.user("%s %o by user" % (name, mode), lambda: (fn(), ids(p)), gids=[NOBODY])
            os.chmod(p, mode)
            C.do("%s %o by root" % (name, mode), lambda: (fn(), ids(p)))
    os.chmod(p, 0o644)
    C.timed("write", lambda: _fd_call(p, os.O_WRONLY, 0, lambda fd: os.write(fd, b"abc")), [("w/f", False)])
    C.timed("read", lambda: _fd_call(p, os.O_RDONLY, 0, lambda fd: os.read(fd, 3)), [("w/f", False)])
    C.do("blocks", lambda: (os.truncate(p, 0), os.lstat(p).st_blocks, _fd_call(p, os.O_WRONLY, 0, lambda fd: os.write(fd, b"x" * 10000)),
                            os.lstat(p).st_blocks))
    C.do("pwrite past 2 GiB", lambda: (_fd_call(C.p("w/big"), os.O_CREAT | os.O_WRONLY, 0o755, lambda fd: os.pwrite(fd, b"a", (2 << 30) + 1)),
                                        os.lstat(C.p("w/big")).st_size,
                                        _fd_call(C.p("w/big"), os.O_RDONLY, 0, lambda fd: os.pread(fd, 1, (2 << 30) + 1)),
                                        os.unlink(C.p("w/big"))))
    C.do("posix_fallocate", lambda: _fd_call(p, os.O_RDWR, 0, lambda fd: (os.posix_fallocate(fd, 0, 100000), os.fstat(fd).st_size,
                                                                              os.fstat(fd).st_blocks)))
    C.do("posix_fallocate O_RDONLY", lambda: _fd_call(p, os.O_RDONLY, 0, lambda fd: os.posix_fallocate(fd, 0, 200000)))
    C.do("posix_fallocate bad len", lambda: _fd_call(p, os.O_RDWR, 0, lambda fd: os.posix_fallocate(fd, 0, 0)))
    C.do("posix_fallocate negative offset", lambda: _fd_call(p, os.O_RDWR, 0, lambda fd: os.posix_fallocate(fd, -1, 10)))
    C.do("posix_fallocate dir", lambda: _fd_call(C.p("w"), os.O_RDONLY, 0, lambda fd: os.posix_fallocate(fd, 0, 10)))


def sc_utimens(C):
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    p = C.p("w/f")
    make(p, "regular")
    now, omit = "now", "omit"

    def ut(path, a, m, nofollow=False):
        conv = {now: (0, UTIME_NOW), omit: (0, UTIME_OMIT)}
        times = [conv.get(a, a), conv.get(m, m)]
        utimensat(path, times, nofollow)
        st = os.lstat(path) if nofollow else os.stat(path)
        ns = (st.st_atime_ns, st.st_mtime_ns)
        return tuple(x if x < 10 ** 18 else "recent" for x in ns)

    C.do("explicit", ut, p, (1900000000, 123456789), (1950000000, 987654321))
    C.timed("omit both", lambda: ut(p, omit, omit), [("w/f", False)])
    C.timed("omit atime", lambda: ut(p, omit, (1, 2)), [("w/f", False)])
    C.do("negative", ut, p, (-1, 0), (-100000, 5))
    C.do("large", ut, p, (2 ** 33, 0), (2 ** 40, 999999999))
    C.do("bad nsec", ut, p, (1, 1000000000), (1, 0))
    C.do("bad nsec negative", ut, p, (1, -1), (1, 0))
    C.do("symlink nofollow", lambda: (os.symlink("f", C.p("w/s")), ut(C.p("w/s"), (5, 6), (7, 8), True), ut(p, omit, omit)))
    os.chmod(p, 0o644)
    C.user("now by other without write", lambda: ut(p, now, now), uid=NOBODY)
    C.user("omit by other", lambda: ut(p, omit, omit), uid=NOBODY)
    C.user("explicit by other", lambda: ut(p, (1, 1), (1, 1)), uid=NOBODY)
    os.chmod(p, 0o666)
    C.user("now by other with write", lambda: ut(p, now, now), uid=NOBODY)
    C.user("now/omit by other with write", lambda: ut(p, now, omit), uid=NOBODY)
    C.user("explicit by other with write", lambda: ut(p, (1, 1), (1, 1)), uid=NOBODY)
    C.user("omit/explicit by other with write", lambda: ut(p, omit, (1950000000, 0)), uid=NOBODY)
    C.user("explicit/omit by other with write", lambda: ut(p, (1900000000, 0), omit), uid=NOBODY)
    os.chown(p, NOBODY, NOBODY)
    os.chmod(p, 0o444)
    C.user("now by owner without write", lambda: ut(p, now, now), uid=NOBODY)
    C.user("explicit by owner without write", lambda: ut(p, (3, 3), (4, 4)), uid=NOBODY)
    C.do("root explicit", ut, p, (5, 5), (6, 6))
    C.timed("utime ctime", lambda: ut(p, (7, 7), (8, 8)), [("w/f", False)])
    C.do("missing", ut, C.p("w/none"), now, now)
    C.do("256", ut, C.p("w/" + "u" * 256), now, now)


def sc_dirs(C):
    """Directory sizes, link counts, readdir."""
    C.do("mkdir", os.mkdir, C.p("w"), 0o755)
    C.do("empty dir", lambda: (os.lstat(C.p("w")).st_nlink, os.lstat(C.p("w")).st_size))
    for i in range(5):
        make(C.p("w/e%d" % i), TYPES[i])
    C.do("dir with entries", lambda: (os.lstat(C.p("w")).st_nlink, os.lstat(C.p("w")).st_size))
    C.do("readdir", lambda: sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink(), e.inode() == os.lstat(e.path).st_ino)
                                   for e in os.scandir(C.p("w"))))
    C.do("readdir fd", lambda: sorted(_fd_call(C.p("w"), os.O_RDONLY | os.O_DIRECTORY, 0, os.listdir)))
    C.user("readdir no read permission", lambda: (os.chmod(C.p("w"), 0o311), sorted(os.listdir(C.p("w")))), uid=None)
    C.user("readdir no read permission as user", lambda: os.listdir(C.p("w")), uid=NOBODY)
    C.user("stat no search permission as user", lambda: (os.lstat(C.p("w/e0")).st_size), uid=NOBODY)
    os.chmod(C.p("w"), 0o644)
    C.user("stat no search permission", lambda: os.lstat(C.p("w/e0")).st_size, uid=NOBODY)
    C.user("chdir no search permission", lambda: os.chdir(C.p("w")), uid=NOBODY)
    os.chmod(C.p("w"), 0o755)
    C.do("deep path PATH_MAX", lambda: _deep(C.p("w")))
    C.do("statvfs", lambda: (os.statvfs(C.p("w")).f_namemax, os.pathconf(C.p("w"), "PC_NAME_MAX"), os.pathconf(C.p("w"), "PC_PATH_MAX")))


def _deep(base):
    """Nested 127-byte components up to a relative path of PATH_MAX - 1 bytes, walked from `base` as
    the current directory: create, stat and remove at that length; ENAMETOOLONG one byte longer."""
    cwd = os.getcwd()
    os.chdir(base)
    try:
        comps, total = [], 0
        while total < 4095:
            c = ("%03d" % len(comps)) + "x" * 124
            comps.append(c)
            total += len(c) + 1
        rel = "/".join(comps)[:4095]
        dirs = rel.split("/")[:-1]
        cur = ""
        for d in dirs:
            cur = d if not cur else cur + "/" + d
            os.mkdir(cur)
        out = []
        other = rel[:-1] + ("b" if rel[-1] != "b" else "c")
        for path in (rel, rel + "y"):
            out.append((len(path), outcome(lambda: (
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)), os.lstat(path).st_size,
                os.chmod(path, 0o600), os.chown(path, 1, 2), os.truncate(path, 5), os.utime(path, ns=(1, 2)), ids(path),
                os.link(path, other), os.unlink(other), os.rename(path, other), os.rename(other, path), os.unlink(path),
                os.mkdir(path), os.rmdir(path), os.mkfifo(path), os.unlink(path), os.mknod(path, stat.S_IFCHR | 0o600, 5),
                os.unlink(path), os.symlink(rel, path), len(os.readlink(path)), os.unlink(path)))))
        for i in range(len(dirs), 0, -1):
            os.rmdir("/".join(dirs[:i]))
        return out
    finally:
        os.chdir(cwd)


SCENARIOS = [sc_chmod, sc_chown, sc_link, sc_create, sc_open, sc_rename, sc_rmdir_unlink, sc_symlink, sc_truncate, sc_utimens, sc_dirs]
