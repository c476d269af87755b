"""Brian through the kernel: a program does read(fd, p) and write(fd, p) where p lies in a mapping of the
same file on a ramfs mounted through the FUSE bridge, at aligned and unaligned offsets, for thousands of
random ranges; the file must hold exactly what a model says and nothing may hang (each run is under a
watchdog). Modes:
  page-cache                 MAP_SHARED mappings (the kernel's page cache)
  direct-io-no-shared-mmap   FOPEN_DIRECT_IO: MAP_SHARED must fail with ENODEV; MAP_PRIVATE mappings
  direct-io                  FOPEN_DIRECT_IO with FUSE_DIRECT_IO_ALLOW_MMAP: MAP_SHARED; when this
                             libfuse cannot negotiate it, ramfs_fuse must refuse to mount with a clear
                             error naming it (checked instead)

usage: brian_test.py RAMFS_FUSE_BINARY MODE
"""
import errno
import mmap
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusemount import check, finish, mounted, skip_unless_fuse  # noqa: E402

SIZE = 256 * 1024
ROUNDS = 3000


def brian(path, shared, seed):
    rng = random.Random(seed)
    model = bytearray(rng.randbytes(SIZE))
    with open(path, "wb") as f:
        f.write(model)
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE)
    mv = memoryview(mm)
    view = bytearray(model)  # what the mapping holds (a private mapping diverges from the file)
    for i in range(ROUNDS):
        aligned = rng.random() < 0.4
        n = rng.choice([1, 7, 512, 4096, 4096 * 3, 10000, 65536]) if not aligned else 4096 * rng.randint(1, 8)
        a = rng.randrange(0, SIZE - n + 1)
        b = rng.randrange(0, SIZE - n + 1)
        if aligned:
            a, b = a // 4096 * 4096, b // 4096 * 4096
        if a != b and abs(a - b) < n:
            b = a  # overlapping copies have no defined result: same range instead
        if rng.random() < 0.5:
            got = os.preadv(fd, [mv[b:b + n]], a)  # read file [a, a+n) into the mapping at b
            check(got == n, "read into mapping: %d of %d" % (got, n))
            view[b:b + n] = model[a:a + n] if shared else (model[a:a + n])
            if shared:
                model[b:b + n] = view[b:b + n]
        else:
            got = os.pwrite(fd, mv[b:b + n], a)  # write the mapping's [b, b+n) to the file at a
            check(got == n, "write from mapping: %d of %d" % (got, n))
            model[a:a + n] = view[b:b + n]
            if shared:
                view[a:a + n] = model[a:a + n]
        if not shared:
            # the private mapping shows the file where it was never written (pages not yet copied),
            # so only the file is compared below; refresh the view from the mapping itself.
            view[:] = mm[:]
        if i % 500 == 0 or i == ROUNDS - 1:
            if not check(os.pread(fd, SIZE, 0) == bytes(model), "round %d: the file differs from the model" % i):
                break
            if shared:
                check(mm[:] == bytes(model), "round %d: the mapping differs from the file" % i)
    mv.release()
    mm.close()
    os.close(fd)


def main():
    binary, mode = sys.argv[1], sys.argv[2]
    if mode == "direct-io":
        skip_unless_fuse()
        with tempfile.TemporaryDirectory() as t:
            r = subprocess.run([binary, "--direct-io", t], capture_output=True, text=True, timeout=30)
            if r.returncode == 1 and "DIRECT_IO_ALLOW_MMAP" in r.stderr:
                print("direct-io with shared mmap is refused clearly on this libfuse: " + r.stderr.strip())
                check(not os.path.ismount(t), "nothing mounted")
                finish("fuse_brian_direct_io")
            subprocess.run(["fusermount3", "-uz", t])
    opts = {"page-cache": [], "direct-io-no-shared-mmap": ["--direct-io-no-shared-mmap"], "direct-io": ["--direct-io"]}[mode]
    shared = mode != "direct-io-no-shared-mmap"
    with mounted(binary, *opts) as m:
        if not shared:
            fd = os.open(m + "/probe", os.O_CREAT | os.O_RDWR, 0o600)
            os.ftruncate(fd, 4096)
            try:
                mmap.mmap(fd, 4096, mmap.MAP_SHARED)
                check(False, "MAP_SHARED on a direct-io file without FUSE_DIRECT_IO_ALLOW_MMAP succeeded")
            except OSError as e:
                check(e.errno == errno.ENODEV, "MAP_SHARED: errno %d, want ENODEV" % e.errno)
            os.close(fd)
        # Two processes at once, each on its own file, plus one on a shared file with disjoint work.
        pids = []
        for k in range(2):
            pid = os.fork()
            if pid == 0:
                try:
                    brian(os.path.join(m, "brian%d" % k), shared, k + 1)
                    os._exit(1 if __import__("fusemount").failures else 0)
                except BaseException as e:  # noqa: BLE001
                    print("brian process %d: %r" % (k, e), file=sys.stderr)
                    os._exit(2)
            pids.append(pid)
        for pid in pids:
            _, st = os.waitpid(pid, 0)
            check(os.waitstatus_to_exitcode(st) == 0, "a Brian process failed (status %d)" % st)
    finish("fuse_brian_" + mode.replace("-", "_"))


if __name__ == "__main__":
    main()
