#!/usr/bin/env python3
"""Writes the seed corpus of process_fuzzer (tests/fuzz/corpus/) from readable op scripts.

The byte encoding is the one process_harness.hpp decodes (one opcode byte, then its operands). Opcodes are
stable (harness::op_table): a new operation takes a new code; a code without an operation is skipped.
Run from anywhere: python3 tests/fuzz/make_corpus.py
"""
import os
import struct

OPEN, CLOSE, READ, WRITE, PREAD, PWRITE, LSEEK, FTRUNC, MMAP, MUNMAP, MPROT, LOAD, STORE = 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
RDONLY, WRONLY, RDWR, BADACC = 0, 1, 2, 3
CREAT, EXCL, TRUNC, APPEND = 4, 8, 16, 32
M644, M444, M200, M600 = 0, 64, 128, 192
PROT_R, PROT_W = 1, 2
SHARED, PRIVATE = 4, 8
ANON = 16
# Path operations (codes 15..32). Tree paths: D, D_P, D_Q, D_P_R, D_P_S, E; files A, B, C (link sources,
# stat/access/chmod/chown/utimens targets).
(STAT, MKDIR, RMDIR, UNLINK, RENAME, LINK, SYMLINK, READLINK, MKNOD, ACCESS, CHMOD, CHOWN, UTIMENS, FSYNC,
 STATVFS, READDIR, FCHMOD, READDIR_UNLINK) = range(15, 33)
D, D_P, D_Q, D_P_R, D_P_S, E, A, B, C = range(9)
DIR_755, DIR_700, DIR_555, DIR_644 = range(4)              # mkdir modes
CH_755, CH_700, CH_555, CH_644, CH_600, CH_444, CH_000, CH_200 = range(8)  # chmod modes
NOREPLACE, EXCHANGE, BADFLAGS = 1, 2, 3
REG, FIFO, SOCK, CHR, DIRNODE = range(5)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def op_open(f, flags):
    return bytes([OPEN, f, flags])


def op_close(fd):
    return bytes([CLOSE, fd & 0xFF])


def op_rw(code, fd, n, seed=7, kind=0, off=None):
    b = bytes([code, fd & 0xFF, kind]) + u16(n)
    if code in (PREAD, PWRITE):
        if off == -1:
            b += bytes([255])
        elif off == "huge":
            b += bytes([254])
        else:
            hi = 1 if off >= 65536 - 4096 else 0
            b += bytes([hi]) + u16(off - (65536 - 4096 if hi else 0))
    return b + bytes([seed])


def op_lseek(fd, whence, off):
    return bytes([LSEEK, fd, whence]) + u16(off)


def op_ftrunc(fd, length):
    if length == -1:
        return bytes([FTRUNC, fd, 255])
    if length == "big":
        return bytes([FTRUNC, fd, 254])
    return bytes([FTRUNC, fd, 0]) + u16(length)


def op_mmap(fd, pages, prot, kind, off_pages=0, odd_len=False, odd_off=False):
    b = prot | kind | (0x80 if odd_len else 0)
    return bytes([MMAP, b, fd & 0xFF, pages, off_pages | (0x80 if odd_off else 0)])


def op_munmap(i, partial=False, bad=False):
    b = i | (0x20 if partial else 0) | (0xC0 if bad else 0)
    return bytes([MUNMAP, b])


def op_mprotect(i, prot):
    return bytes([MPROT, i | (prot << 4)])


def op_mem(code, i, at, n, seed=3):
    return bytes([code, i]) + u16(at) + u16(n - 1) + bytes([seed])


def op_stat(path, nofollow=False):
    return bytes([STAT, path | (0x80 if nofollow else 0)])


def op_mkdir(path, mode=DIR_755):
    return bytes([MKDIR, path, mode])


def op_rename(frm, to, flags=0):
    return bytes([RENAME, frm, to, flags])


def op_access(path, mode_index):  # F_OK, R, W, X, RW, RWX, bad(8), WX
    return bytes([ACCESS, path | (mode_index << 4)])


def op_chmod(path, mode):
    return bytes([CHMOD, path | (mode << 4)])


def op_chown(path, ids, nofollow=False):  # ids: (-1,-1), (own), (own,-1), (0,-1), (-1,0)
    return bytes([CHOWN, path | (ids << 4) | (0x80 if nofollow else 0)])


def op_utimens(path, atime, mtime, nofollow=False):  # each (sec, nsec), or "now" / "omit"
    def enc(t):
        if t == "now":
            return struct.pack("<I", 1)
        if t == "omit":
            return struct.pack("<I", 2)
        sec, nsec = t  # v >> 2 is the seconds, v % 1e9 the nanoseconds: pick v with both (v & 3 == 0)
        v = sec << 2
        assert v % 1000000000 == nsec and v & 3 == 0
        return struct.pack("<I", v)
    return bytes([UTIMENS, path | (0x80 if nofollow else 0)]) + enc(atime) + enc(mtime)


def op_readdir(dir_index, small=False):  # dirs: D, D_P, D_Q, E, A
    return bytes([READDIR, dir_index | (0x80 if small else 0)])


def op_readdir_unlink(dir_index, victim, after):  # removes victim after `after` records (. and .. count)
    return bytes([READDIR_UNLINK, dir_index, victim, after])


SCRIPTS = {
    "basic_rw": [op_open(0, RDWR | CREAT), op_rw(WRITE, 0, 5000, 1), op_lseek(0, 0, 0), op_rw(READ, 0, 6000),
                 op_rw(PWRITE, 0, 300, 2, off=4090), op_rw(PREAD, 0, 8000, off=0), op_close(0)],
    "errors": [op_close(3), op_rw(READ, 5, 10), op_open(1, RDONLY), op_open(1, BADACC | CREAT),
               op_open(1, RDWR | CREAT | EXCL), op_rw(PREAD, 0, 10, off=-1), op_rw(PREAD, 0, 100, off="huge"),
               op_rw(PWRITE, 0, 100, off=65000), op_ftrunc(0, -1), op_ftrunc(0, "big"), op_lseek(0, 3, 5),
               op_lseek(0, 1, 0xFFF0)],
    "permissions": [op_open(0, WRONLY | CREAT | M444), op_rw(WRITE, 0, 100), op_close(0), op_open(0, RDWR),
                    op_open(0, RDONLY | TRUNC), op_open(0, RDONLY), op_rw(WRITE, 0, 10), op_ftrunc(0, 10),
                    op_open(1, RDWR | CREAT | M200), op_close(1), op_open(1, RDONLY), op_open(1, WRONLY)],
    "append_trunc": [op_open(2, WRONLY | CREAT | APPEND), op_rw(WRITE, 0, 1000, 4), op_open(2, RDWR),
                     op_rw(PWRITE, 1, 50, 5, off=10), op_rw(WRITE, 0, 70, 6), op_ftrunc(1, 500),
                     op_rw(WRITE, 0, 20, 8), op_open(2, RDWR | TRUNC), op_rw(PREAD, 1, 4000, off=0)],
    "mmap_shared": [op_open(0, RDWR | CREAT), op_ftrunc(0, 9000), op_mmap(0, 3, PROT_R | PROT_W, SHARED),
                    op_mem(STORE, 0, 100, 5000, 9), op_rw(PREAD, 0, 9000, off=0), op_rw(PWRITE, 0, 700, 10, off=4000),
                    op_mem(LOAD, 0, 0, 8192), op_ftrunc(0, 2000), op_mem(LOAD, 0, 0, 12288), op_ftrunc(0, 12288),
                    op_mem(LOAD, 0, 0, 12288), op_munmap(0)],
    "mmap_private": [op_open(1, RDWR | CREAT), op_rw(PWRITE, 0, 8192, 11, off=0), op_mmap(0, 2, PROT_R | PROT_W, PRIVATE),
                     op_mem(LOAD, 0, 0, 10), op_rw(PWRITE, 0, 8192, 12, off=0), op_mem(LOAD, 0, 0, 8192),
                     op_mem(STORE, 0, 4000, 200, 13), op_rw(PREAD, 0, 8192, off=0), op_mem(LOAD, 0, 0, 8192),
                     op_close(0), op_mem(LOAD, 0, 4096, 100), op_munmap(0)],
    "mmap_errors": [op_open(0, RDONLY | CREAT), op_mmap(0, 0, PROT_R, SHARED), op_mmap(0, 1, PROT_R, 0),
                    op_mmap(0, 1, PROT_R, SHARED | PRIVATE), op_mmap(0, 1, PROT_R, SHARED, odd_off=True),
                    op_mmap(0, 1, PROT_R | PROT_W, SHARED), op_mmap(0, 1, PROT_R | PROT_W, PRIVATE),
                    op_mmap(7, 1, PROT_R, SHARED), op_mmap(0, 2, PROT_R, SHARED), op_mprotect(1, 3),
                    op_munmap(0, partial=True), op_munmap(0, bad=True), op_open(2, WRONLY | CREAT),
                    op_mmap(1, 1, PROT_R, SHARED), op_mmap(1, 1, PROT_W, SHARED)],
    "anon_buffers": [op_open(0, RDWR | CREAT), op_rw(WRITE, 0, 6000, 14), op_mmap(9, 2, PROT_R | PROT_W, PRIVATE | ANON),
                     op_rw(PREAD, 0, 8000, kind=1, off=0), op_mem(LOAD, 0, 0, 8192), op_mprotect(0, 1),
                     op_rw(PREAD, 0, 100, kind=1, off=0), op_rw(PWRITE, 0, 300, 15, kind=1, off=7000),
                     op_mprotect(0, 0), op_rw(PWRITE, 0, 300, kind=1, off=9000), op_rw(PREAD, 0, 20000, off=0),
                     op_mmap(9, 1, PROT_R | PROT_W, SHARED | ANON), op_mem(STORE, 1, 0, 4096, 16),
                     op_rw(PWRITE, 0, 4096, kind=3, off=100)],
    "tree_basic": [op_open(0, RDWR | CREAT), op_rw(WRITE, 0, 3000, 21), op_mkdir(D), op_mkdir(D_P),
                   bytes([MKNOD, FIFO, D_Q]), bytes([SYMLINK, 0, D_P_R]), bytes([LINK, A, D_P_S]), op_stat(D),
                   op_stat(D_P_R), op_stat(D_P_R, nofollow=True), bytes([READLINK, D_P_R, 39]), bytes([READLINK, D_P_R, 1]),
                   bytes([READLINK, D, 10]), op_readdir(0), op_readdir(1, small=True), op_stat(A), op_rw(WRITE, 0, 500, 22),
                   op_stat(D_P_S), op_access(A, 4), op_access(D_P_R, 0), bytes([UNLINK, D_P_S]), op_stat(A),
                   bytes([RMDIR, D_P]), bytes([UNLINK, D_P]), bytes([UNLINK, D_P_R]), bytes([RMDIR, D_P]),
                   bytes([RMDIR, D_Q]), bytes([UNLINK, D_Q]), bytes([MKNOD, CHR, E]), bytes([MKNOD, DIRNODE, E]),
                   bytes([MKNOD, SOCK, E]), op_readdir(3), op_readdir(4), op_readdir(0)],
    "tree_rename": [op_mkdir(D), op_mkdir(D_P), op_mkdir(D_Q), bytes([MKNOD, REG, D_P_R]), op_rename(D_P, D_Q),
                    op_rename(D_Q, D_P, NOREPLACE), op_mkdir(D_P), op_rename(D_P, D_Q), op_mkdir(D_P),
                    op_rename(D_Q, D_P_S), op_rename(D, D_P_R), op_rename(D_P, D), bytes([MKNOD, SOCK, E]),
                    op_rename(D, E), op_rename(E, D), op_rename(D, E, EXCHANGE), op_readdir(3), op_stat(E),
                    op_rename(E, D, EXCHANGE), op_rename(D_Q, D_Q), op_rename(D_Q, D_Q, NOREPLACE),
                    op_rename(D, E, BADFLAGS), bytes([LINK, E, D_P]), op_rename(E, D_P), op_rename(D_P, D_P_S, EXCHANGE),
                    op_readdir(0), op_readdir(1), bytes([LINK, D, E]), bytes([LINK, D_P_R, D_Q])],
    "tree_perms": [op_open(1, RDWR | CREAT), op_mkdir(D, DIR_555), op_mkdir(D_P), op_chmod(D, CH_700), op_mkdir(D_P),
                   op_chmod(D, CH_644), op_stat(D_P), op_mkdir(D_P_R), op_readdir(1), op_chmod(D, CH_755),
                   op_chmod(D_P, CH_000), op_readdir(1), op_chmod(B, CH_444), op_open(1, WRONLY), op_access(B, 2),
                   bytes([FCHMOD, 0x60, 0]), op_chown(B, 0), op_chown(B, 1), op_chown(B, 3), op_chown(B, 4),
                   op_chown(D_P, 2), op_utimens(B, (250000000, 0), "omit"), op_utimens(D, "now", (500000000, 0)),
                   bytes([SYMLINK, 1, E]), op_utimens(E, "now", "now"), op_utimens(E, (0, 0), "omit", nofollow=True),
                   op_chown(E, 1, nofollow=True), bytes([FSYNC, 0, 0]), bytes([FSYNC, 1, 5]), bytes([STATVFS, 0, 0]),
                   bytes([STATVFS, 1, 0]), bytes([STATVFS, 1, 6]), op_chmod(D_P, CH_200), op_access(D_P, 3)],
    "tree_readdir_unlink": [op_open(2, RDWR | CREAT), op_mkdir(D), op_mkdir(D_P), op_mkdir(D_Q), bytes([MKNOD, FIFO, D_P_R]),
                            bytes([LINK, C, D_P_S]), bytes([SYMLINK, 0, E]), op_readdir_unlink(0, D_P, 3),
                            op_readdir_unlink(1, D_P_R, 2), op_readdir_unlink(1, D_P_S, 3), op_readdir_unlink(0, D_Q, 2),
                            op_readdir_unlink(0, D_Q, 0), op_mkdir(D_Q), op_readdir_unlink(2, D_Q, 2), op_readdir_unlink(1, D_P, 1),
                            op_readdir(0, small=True), op_stat(C)],
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, ops in SCRIPTS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(ops))


if __name__ == "__main__":
    main()
