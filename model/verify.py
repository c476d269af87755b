#!/usr/bin/env python3
"""Runs SPIN on model/faultsafe.pml for one configuration (or all) and checks the verdict.

  verify.py CONFIG [CONFIG...] [--workdir DIR] [--long] [--table]
  verify.py --all ...

For a configuration expected to deadlock (the seed's naive designs, and the findings), SPIN must
report an invalid end state; the trail is replayed and turned into a wait chain (trail2chain.py).
For a configuration expected to be free, the exhaustive search must end with no error, and so must
the non-progress-cycle search and the liveness check (ltl `replies`: every client's request returns,
with a reply or a documented error, under weak fairness). Prints one line per check with states
stored, depth reached and time; exits 0 when every verdict is the expected one, 1 otherwise, and 77
(CTest's skip code) when spin or a C compiler is missing.

--long: the exhaustive cross-check (README, "Long run"): the same checks of the same configurations
with -DINTERLEAVE_ALL (every statement interleaves, no run-until-block reduction), pan built with
-O2; minutes and gigabytes instead of seconds.
"""
import os
import re
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (spin -D defines, expectation, description)
CONFIGS = {
    "brian_naive": (["BRIAN_NAIVE"], "deadlock", "seed's Brian: one exclusive attr lock, no guard"),
    "colin_naive": (["COLIN_NAIVE"], "deadlock", "seed's Colin: one aspace lock, single-threaded io_pkt"),
    "faultsafe": (["FAULTSAFE"], "free", "defaults: Colin's bob1+bob2, Brian's read via the direct copy"),
    "faultsafe_guard": (["FAULTSAFE_GUARD"], "free", "defaults, Brian's write(fd, p) via the page-in guard"),
    "faultsafe_pool1": (["FAULTSAFE_GUARD", "POOLMAX0=1"], "free", "as guard, nfs pinned to 1 thread: the reserve thread"),
    "faultsafe_fail": (["FAULTSAFE_FAIL", "POOLMAX0=1"], "free", "policies fail: EDEADLK replies instead of grants"),
    "cross": (["CROSS"], "free", "cross-process: the server's own pager serves its copies' faults"),
    "pool_wait": (["FAULTSAFE_GUARD", "POOLMAX0=1", "POOL_SELF_WAIT"], "deadlock",
                  "as pool1 without the pool guard: the reserve thread is needed"),
    "guard_wait": (["FAULTSAFE_GUARD", "PAGE_IN_SELF_WAIT"], "deadlock",
                   "as guard without the page-in guard: the guard is needed"),
    "single_lock": (["FAULTSAFE", "SINGLE_LOCK_ON"], "deadlock",
                    "as faultsafe with one aspace lock: per-region locks are needed"),
    "finding_pager": (["FINDING_PAGER"], "free", "finding 1, fixed: two nfs faults busy, the fault pool grows for io_pkt's"),
    "pager_fixed": (["FINDING_PAGER", "PAGER_FIXED"], "deadlock",
                    "finding 1 with the old fixed pool of two fault threads: the growth is needed"),
    "finding_writer": (["FINDING_WRITER"], "free", "finding 2 fixed: a queued writer between a reader and its page-in"),
    "finding_writer_fifo": (["FINDING_WRITER", "STRICT_FIFO"], "deadlock",
                            "as finding_writer under strict FIFO (before the fix): the queued-writer rule is needed"),
}

PAN_DEPTH = "-m200000"
# pan.c compiles in ~1 s at -O0 against ~3-6 s at -O1/-O2, and the searches here are small: -O0 costs
# the least CPU in all. --long uses -O2.
OPT = "-O0"


def have_tools():
    return shutil.which("spin") and (shutil.which("cc") or shutil.which("gcc"))


def run(cmd, cwd, timeout=None):
    """(exit code, output, CPU seconds of the child: user + system, robust on a shared machine)"""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p.returncode, p.stdout, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def stats(out, cpu):
    g = lambda rx, conv=int: (lambda m: conv(m.group(1)) if m else None)(re.search(rx, out))
    return {
        "errors": g(r"errors: (\d+)"),
        "states": g(r"(\d+) states, stored"),
        "depth": g(r"depth reached (\d+)"),
        "time": g(r"pan: elapsed time ([\d.e+]+) seconds", float),
        "cpu": cpu,
        "vector": g(r"State-vector (\d+) byte"),
        "invalid_end": "invalid end state" in out,
        "assertion": "assertion violated" in out,
        "acceptance": "acceptance cycle" in out,
        "nonprogress": "non-progress cycle" in out,
        "depth_limit": "max search depth too small" in out,
        "incomplete_hash": "hash table is full" in out or "out of memory" in out.lower(),
        "collapse": "+ Compression" in out,
        "bitstate": "Bit statespace search" in out,
    }


def fmt(st):
    return "%s states stored, depth %s, %.2f s CPU" % (st["states"], st["depth"], st["cpu"])


def compile_pan(wd, cflags, exe):
    cc = shutil.which("cc") or shutil.which("gcc")
    rc, out, _ = run([cc, OPT, "-w"] + cflags + ["-o", exe, "pan.c"], wd)
    if rc != 0:
        raise RuntimeError("compiling pan failed:\n" + out)


def verify(name, workdir, long_run=False):
    defines, expect, desc = CONFIGS[name]
    if long_run:
        defines = defines + ["INTERLEAVE_ALL"]
    wd = os.path.join(workdir, name + ("_long" if long_run else ""))
    os.makedirs(wd, exist_ok=True)
    for f in os.listdir(wd):
        if f.endswith(".trail"):
            os.remove(os.path.join(wd, f))
    for f in ("faultsafe.pml", "params.pml"):
        shutil.copy(os.path.join(HERE, f), wd)
    dflags = ["-D" + d for d in defines]
    rc, out, _ = run(["spin", "-a"] + dflags + ["faultsafe.pml"], wd)
    if rc != 0 or not os.path.exists(os.path.join(wd, "pan.c")):
        raise RuntimeError("spin -a failed:\n" + out)
    rows, ok = [], True
    hashw = "-w26" if long_run else "-w22"
    collapse = ["-DCOLLAPSE"]   # lossless state compression: still exhaustive

    # 1. safety: invalid end states and assertions (the rank order, the send rule)
    compile_pan(wd, ["-DNOCLAIM", "-DSAFETY"] + collapse, "pan_safety")
    _, out, cpu = run(["./pan_safety", PAN_DEPTH, hashw], wd)
    st = stats(out, cpu)
    if expect == "deadlock":
        good = st["invalid_end"] and not st["assertion"]
        line = "model %s: safety: %s (%s)" % (name, "deadlock found" if st["invalid_end"] else "NO deadlock found", fmt(st))
        print(line)
        if good:
            _, rep, _ = run(["spin", "-t"] + dflags + ["faultsafe.pml"], wd)
            chain = subprocess.run([sys.executable, os.path.join(HERE, "trail2chain.py")], input=rep, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            print(chain.stdout.rstrip())
            good = chain.returncode == 0
            if not good:
                print("model %s: the trail's final state has no wait cycle" % name)
        rows.append((name, desc, "safety", "deadlock (invalid end state)" if st["invalid_end"] else "none", st))
        ok = ok and good
        if not good:
            print(out)
        return ok, rows
    good = st["errors"] == 0 and not st["depth_limit"] and not st["incomplete_hash"]
    print("model %s: safety (invalid end states, assertions): %s (%s%s)" %
          (name, "free" if good else "FAILED", fmt(st), ", COLLAPSE" if st["collapse"] else ""))
    rows.append((name, desc, "invalid end states + assertions", "none" if good else "ERROR", st))
    ok = ok and good
    if not good:
        print(out)
        if os.path.exists(os.path.join(wd, "faultsafe.pml.trail")):
            _, rep, _ = run(["spin", "-t"] + dflags + ["faultsafe.pml"], wd)
            chain = subprocess.run([sys.executable, os.path.join(HERE, "trail2chain.py")], input=rep, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            print(chain.stdout.rstrip())
        return ok, rows

    # 2. non-progress cycles
    compile_pan(wd, ["-DNOCLAIM", "-DNP"] + collapse, "pan_np")
    _, out, cpu = run(["./pan_np", "-l", PAN_DEPTH, hashw], wd)
    st = stats(out, cpu)
    good = st["errors"] == 0 and not st["depth_limit"] and not st["incomplete_hash"]
    print("model %s: non-progress cycles: %s (%s)" % (name, "none" if good else "FOUND", fmt(st)))
    rows.append((name, desc, "non-progress cycles", "none" if good else "ERROR", st))
    ok = ok and good
    if not good:
        print(out)

    # 3. liveness under weak fairness: every request returns
    compile_pan(wd, ["-DNFAIR=6"] + collapse, "pan_ltl")
    _, out, cpu = run(["./pan_ltl", "-a", "-f", "-N", "replies", PAN_DEPTH, hashw], wd)
    st = stats(out, cpu)
    good = st["errors"] == 0 and not st["depth_limit"] and not st["incomplete_hash"]
    print("model %s: liveness <>(every request returned), weak fairness: %s (%s)" %
          (name, "holds" if good else "VIOLATED", fmt(st)))
    rows.append((name, desc, "liveness (weak fairness)", "holds" if good else "VIOLATED", st))
    ok = ok and good
    if not good:
        print(out)
    return ok, rows


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    workdir = os.path.join(os.getcwd(), "model-work")
    if "--workdir" in argv:
        workdir = argv[argv.index("--workdir") + 1]
        args.remove(workdir)
    long_run = "--long" in argv
    if long_run:
        global OPT
        OPT = "-O2"
    names = list(CONFIGS) if "--all" in argv else args
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        print("usage: verify.py CONFIG... | --all [--workdir DIR] [--long] [--table]; configs: " + ", ".join(CONFIGS))
        return 2
    if not have_tools():
        print("verify.py: spin or a C compiler is missing (Debian: apt-get install spin gcc): skipped")
        return 77
    all_ok, table = True, []
    for n in names:
        ok, rows = verify(n, workdir, long_run)
        all_ok = all_ok and ok
        table += rows
    if "--table" in argv:
        print("\n| configuration | check | result | states stored | depth | CPU (s) |")
        print("|---|---|---|---|---|---|")
        for name, desc, check, res, st in table:
            print("| `%s` (%s) | %s | %s | %s | %s | %.2f |" % (name, desc, check, res, st["states"], st["depth"],
                                                            st["cpu"]))
        total = resource.getrusage(resource.RUSAGE_CHILDREN)
        print("\nCPU in all (spin, cc, pan): %.1f s" % (total.ru_utime + total.ru_stime))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
