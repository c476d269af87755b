"""coreutils on a ramfs mounted through the FUSE bridge: cp of a 64 MiB file and cmp, mv, ln, ln -s, ls -l,
stat, chmod, chown, touch -d, truncate, dd with various block sizes, rm -r of a deep tree, find. Each
program's effect is checked with another program or with os.* calls.

usage: coreutils_test.py RAMFS_FUSE_BINARY [ramfs_fuse options...]
"""
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusemount import check, finish, mounted, run  # noqa: E402


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    binary, opts = sys.argv[1], sys.argv[2:]
    with mounted(binary, *opts) as m:
        src = os.path.join(os.path.dirname(m), "src.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(64 << 20))
        # cp of a 64 MiB file and cmp
        run(["cp", src, m + "/big"], timeout=120)
        run(["cmp", src, m + "/big"], timeout=120)
        check(os.stat(m + "/big").st_size == 64 << 20, "big: size")
        # The bridge widened the mount's read-ahead window (fuse_bridge_options::read_ahead_kb, default
        # 1024 KiB) once INIT was done: root may write /sys, so it must have.
        if os.geteuid() == 0:
            dev = [l.split()[2] for l in open("/proc/self/mountinfo") if l.split()[4] == os.path.realpath(m)][-1]
            with open("/sys/class/bdi/%s/read_ahead_kb" % dev) as f:
                ra = f.read().strip()
            check(ra == "1024", "read_ahead_kb of the mount's bdi %s is %s, not 1024" % (dev, ra))
        run(["cp", m + "/big", m + "/big2"], timeout=120)
        check(sha(m + "/big2") == sha(src), "cp within the mount")
        # mv (rename within and across directories), ln, ln -s, ls -l, stat
        os.mkdir(m + "/dir")
        run(["mv", m + "/big2", m + "/dir/moved"])
        check(not os.path.exists(m + "/big2") and os.path.exists(m + "/dir/moved"), "mv")
        run(["ln", m + "/dir/moved", m + "/hard"])
        check(os.stat(m + "/hard").st_nlink == 2 and os.stat(m + "/hard").st_ino == os.stat(m + "/dir/moved").st_ino, "ln: link count and inode")
        run(["ln", "-s", "dir/moved", m + "/soft"])
        check(os.readlink(m + "/soft") == "dir/moved" and os.path.samefile(m + "/soft", m + "/hard"), "ln -s")
        ls = run(["ls", "-l", m]).stdout
        check("soft -> dir/moved" in ls and " hard" in ls and " dir" in ls, "ls -l lists the entries: " + ls)
        st = run(["stat", "-c", "%s %h %F", m + "/hard"]).stdout.split()
        check(st == [str(64 << 20), "2", "regular", "file"], "stat: %s" % st)
        # chmod, chown, touch -d, truncate
        run(["chmod", "u=rwx,g=rx,o=", m + "/hard"])
        check(os.stat(m + "/hard").st_mode & 0o7777 == 0o750, "chmod")
        run(["chown", "1234:5678", m + "/hard"])
        check((os.stat(m + "/hard").st_uid, os.stat(m + "/hard").st_gid) == (1234, 5678), "chown")
        run(["touch", "-d", "2001-02-03 04:05:06.789", m + "/hard"])
        check(run(["stat", "-c", "%y", m + "/hard"]).stdout.startswith("2001-02-03 04:05:06.789"), "touch -d")
        run(["truncate", "-s", "1000", m + "/hard"])
        check(os.stat(m + "/dir/moved").st_size == 1000, "truncate (seen through the other name)")
        with open(m + "/dir/moved", "rb") as f:
            with open(src, "rb") as g:
                check(f.read() == g.read(1000), "truncate kept the first bytes")
        run(["truncate", "-s", "5M", m + "/hard"])
        with open(m + "/hard", "rb") as f:
            f.seek(1000)
            check(f.read() == bytes(5 * 1024 * 1024 - 1000), "truncate up reads zeros")
        # dd with various block sizes, aligned and not
        for bs in ["1", "7", "512", "4096", "65536", "1M", "3000"]:
            out = m + "/dd." + bs
            count = {"1": 5000, "7": 3000}.get(bs, 9)
            run(["dd", "if=" + src, "of=" + out, "bs=" + bs, "count=%d" % count, "status=none"], timeout=120)
            run(["dd", "if=" + out, "of=" + out + ".back", "bs=" + ("4096" if bs == "1" else "1"), "status=none"] if bs in ("7",) else
                ["dd", "if=" + out, "of=" + out + ".back", "bs=" + bs, "status=none"], timeout=120)
            n = os.stat(out).st_size
            with open(src, "rb") as f:
                want = f.read(n)
            with open(out + ".back", "rb") as f:
                check(f.read() == want, "dd bs=%s round trip" % bs)
        run(["dd", "if=/dev/zero", "of=" + m + "/dd.seek", "bs=4096", "seek=100", "count=3", "status=none"])
        check(os.stat(m + "/dd.seek").st_size == 103 * 4096, "dd seek= size")
        run(["dd", "if=" + src, "of=" + m + "/dd.seek", "bs=1000", "seek=7", "count=2", "conv=notrunc", "status=none"])
        with open(m + "/dd.seek", "rb") as f, open(src, "rb") as g:
            f.seek(7000)
            check(f.read(2000) == g.read(2000), "dd conv=notrunc in the middle")
        # rm -r of a deep tree, find
        d = m + "/deep"
        path = d
        for i in range(60):
            path = os.path.join(path, "level%02d" % i)
        os.makedirs(path)
        for i in range(0, 60, 6):
            p = d + "".join("/level%02d" % j for j in range(i + 1))
            with open(p + "/file", "w") as f:
                f.write("x" * i)
            os.symlink("file", p + "/link")
        found = run(["find", d]).stdout.split()
        check(len(found) == 1 + 60 + 10 + 10, "find lists the deep tree: %d" % len(found))
        found_f = run(["find", d, "-type", "f", "-size", "+0"]).stdout.split()
        check(len(found_f) == 9, "find -type f -size +0: %d" % len(found_f))
        run(["rm", "-r", d])
        check(not os.path.exists(d), "rm -r removed the deep tree")
        run(["rm", "-rf", m + "/dir", m + "/hard", m + "/soft"])
        left = sorted(os.listdir(m))
        check(all(n.startswith("dd.") or n == "big" for n in left), "what is left: %s" % left)
        run(["sh", "-c", "rm -f %s/dd.*" % m])
        check(sorted(os.listdir(m)) == ["big"], "rm of a glob")
        os.unlink(src)
    finish("fuse_coreutils")


if __name__ == "__main__":
    main()
