#!/usr/bin/env python3
"""Turns the end of a SPIN trail of model/faultsafe.pml into a wait chain shaped like the wait-for
graph's report (activity/wait_graph.hpp):

  thread -lock wait-> 'lock' -held by-> thread -reply wait-> thread -send wait-> channel -served by-> ...

Input: the output of `spin -t -D<CONFIG> faultsafe.pml` (spin prints every global variable's final
value at the end of a replay). Output: the cycle of blocked threads, one hop per wait, then the
threads stuck behind it. Exit status 0 if a cycle was found, 1 if not (e.g. an assertion trail).

Usage: trail2chain.py [replay-output-file]   (default: stdin)
"""
import re
import sys
from collections import defaultdict

# Must match model/faultsafe.pml
W_NONE, W_RANGE, W_MAP, W_REGION, W_SEND, W_REPLY, W_PAGE = range(7)
RS_NONE, RS_WAIT, RS_GRANTED, RS_FAILED = range(4)
NONE = 255
NS, NO = 2, 2
SERVER = ["nfs", "io_pkt"]
FILE = ["nfs:/a", "io_pkt:/b"]
REGION = ["Bob's MAP_SHARED mapping of nfs:/a", "Bob's anonymous buffer"]


def parse(text):
    """Final global values: {name: value} for scalars, {name: {idx: value}} for arrays, and
    {name: {idx: {field: value}}} for arrays of structures; queues as lists."""
    g = {}
    queues = {}
    for line in text.splitlines():
        mq = re.match(r"\s+queue \d+ \((\w+)(?:\[(\d+)\])?\):\s*(.*)$", line)
        if mq:
            items = [int(x) for x in re.findall(r"\[(\d+)\]", mq.group(3))]
            key = mq.group(1) if mq.group(2) is None else (mq.group(1), int(mq.group(2)))
            queues[key] = items
            continue
        m = re.match(r"\s+(\w+)(?:\[(\d+)\])?(?:\.(\w+))?\s*=\s*(-?\d+)\s*$", line)
        if not m:
            continue
        name, idx, field, val = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if idx is None:
            g[name] = val
        elif field is None:
            g.setdefault(name, {})[int(idx)] = val
        else:
            g.setdefault(name, {}).setdefault(int(idx), {})[field] = val
    return g, queues


class Model:
    def __init__(self, g, queues):
        self.g, self.q = g, queues
        self.nt = len(g["act"])
        self.nc = len(g["replied"])
        self.slots = len(g["serving"]) // NS
        self.np = self.nt - self.nc - NS * self.slots

    def stid(self, s, k):
        return self.nc + s * self.slots + k

    def name(self, t):
        if t < self.nc:
            return "bob%d" % (t + 1)
        if t < self.nc + NS * self.slots:
            s, k = divmod(t - self.nc, self.slots)
            return "%s/%s" % (SERVER[s], "reserve" if k == self.slots - 1 else k)
        return "proc:Bob/%d" % (t - self.nc - NS * self.slots)

    def nodes_of(self, t):
        if t < self.nc:
            return []
        base = (t - self.nc) * 2
        return [(base + j, self.g["rn"][base + j]) for j in (0, 1) if self.g["rn"][base + j]["res"] != RS_NONE]

    @staticmethod
    def describe_range(n):
        pages = [p for p in range(NO) if n["mask"] >> p & 1]
        return "'%s' (rank 30) range [%d, %d) %s" % (FILE[n["file"]], pages[0], pages[-1] + 1,
                                                      "exclusive" if n["excl"] else "shared")

    def range_holders(self, t):
        """The threads of the ranges t's waiting node(s) wait for: granted conflicting ones and earlier
        waiting conflicting ones (what range_guard records in the wait-for graph)."""
        out, what = [], None
        for i, n in self.nodes_of(t):
            if n["res"] != RS_WAIT:
                continue
            what = self.describe_range(n)
            for u in range(self.nc, self.nt):
                if u == t:
                    continue
                for _, o in self.nodes_of(u):
                    if o["file"] != n["file"] or not (o["mask"] & n["mask"]) or not (o["excl"] or n["excl"]):
                        continue
                    if o["res"] == RS_GRANTED or (o["res"] == RS_WAIT and o["seq"] < n["seq"]):
                        out.append((u, "held by" if o["res"] == RS_GRANTED else "queued ahead by"))
        return what, out

    def wait_of(self, t):
        """(relation, resource name, [(holder, holder relation)]) or None if t is not blocked."""
        g = self.g
        k = g["wk"][t]
        if k == W_RANGE:
            what, hs = self.range_holders(t)
            return "lock wait", what, hs
        if k == W_MAP:
            hs = [(u, "held by") for u in range(self.nt) if g["ml_r"] >> u & 1]
            if g["ml_w"] != NONE:
                hs.append((g["ml_w"], "held by"))
            return "lock wait", "'aspace Bob' (rank 10)", hs
        if k == W_SEND:
            s = g["wres"][t]
            if s >= NS:
                s -= NS
                return "send wait", "channel '%s/reserve'" % SERVER[s], [(self.stid(s, self.slots - 1), "served by")]
            started = g["started"][s]
            return "send wait", "channel '%s'" % SERVER[s], [(self.stid(s, i), "served by") for i in range(started)]
        if k == W_REPLY:
            by = g["m"][t]["by"]
            return "reply wait", None, [(by, None)]
        if k == W_PAGE:
            pg = g["fpg"][t]
            r, p = divmod(pg, NO)
            desc = "fault on page %d of %s" % (p, REGION[r])
            if r == 0:
                desc += " (file %s offset %d)" % (FILE[0], p)
            by = g["fby"][t]
            if by == NONE:
                desc += ", queued: every fault thread is busy"
                return "page wait", desc, [(self.nc + NS * self.slots + j, "served by") for j in range(g.get("pstarted", self.np))]
            return "page wait", desc, [(by, "served by")]
        return None

    def chain(self):
        blocked = {t for t in range(self.nt) if self.wait_of(t) is not None}
        succ = defaultdict(list)
        for t in blocked:
            for u, _ in self.wait_of(t)[2]:
                if u in blocked:
                    succ[t].append(u)
        # the first cycle by depth-first search, starting from server threads (as the graph reports)
        order = sorted(blocked, key=lambda t: (t < self.nc, t))
        for start in order:
            path, onpath = [], {}

            def dfs(t):
                if t in onpath:
                    return path[onpath[t]:]
                onpath[t] = len(path)
                path.append(t)
                for u in succ[t]:
                    c = dfs(u)
                    if c:
                        return c
                path.pop()
                del onpath[t]
                return None

            c = dfs(start)
            if c:
                return c, blocked
        return None, blocked

    def render(self, cycle):
        parts = [self.name(cycle[0])]
        for i, t in enumerate(cycle):
            nxt = cycle[(i + 1) % len(cycle)]
            rel, what, hs = self.wait_of(t)
            hrel = dict(hs).get(nxt)
            if what is None:
                parts.append("-%s-> %s" % (rel, self.name(nxt)))
            else:
                parts.append("-%s-> %s -%s-> %s" % (rel, what, hrel, self.name(nxt)))
        return " ".join(parts)


def main():
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    g, queues = parse(text)
    if "act" not in g:
        print("trail2chain: no final state in the input (not a spin -t replay?)", file=sys.stderr)
        return 1
    mdl = Model(g, queues)
    cycle, blocked = mdl.chain()
    if not cycle:
        print("no wait cycle in the final state; blocked threads: %s" % ", ".join(mdl.name(t) for t in sorted(blocked)))
        return 1
    print("wait cycle (%d threads):" % len(cycle))
    print("  " + mdl.render(cycle))
    behind = sorted(blocked - set(cycle))
    for t in behind:
        rel, what, hs = mdl.wait_of(t)
        target = ", ".join(mdl.name(u) for u, _ in hs)
        print("  stuck behind it: %s -%s-> %s%s" % (mdl.name(t), rel, (what + " -> ") if what else "", target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
