#!/usr/bin/env python3
"""Checks that the model and the headers agree (one source of truth: the headers).

1. Every value in model/params.pml (ranks, self_conflict enumerators, defaults, handler lock modes)
   is extracted from the header its comment names and compared.
2. The rules the model encodes in Promela (pool growth, route_for's reserve/EDEADLK decision, the
   range lock's verdict order) are still written the way the model reads them: each rule is a
   pattern in the header. A change there fails this check and names the model construct to revisit.
3. The faultsafe configurations of model/faultsafe.pml use the params.pml defaults (not literals).

Usage: check_params.py [repository root]   (default: the parent of this script's folder)
Exit 0: all agree; 1: a difference (each printed).
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INC = os.path.join(ROOT, "include", "faultsafe")
MODEL = os.path.join(ROOT, "model")
errors = []


def read(rel):
    with open(os.path.join(INC, rel)) as f:
        return f.read()


def one(rx, text, what):
    m = re.search(rx, text, re.S)
    if not m:
        errors.append("cannot find %s (pattern %r)" % (what, rx))
        return None
    return m.group(1)


def body(text, signature):
    """The text of a function from its signature to the next line that is just '}'."""
    i = text.find(signature)
    if i < 0:
        errors.append("cannot find %s" % signature)
        return ""
    j = text.find("\n}\n", i)
    return text[i:j]


config = read("config.hpp")
rl = read("sync/range_lock.hpp")
# The pool (its options, growth and self-deadlock routing) lives in thread_pool.hpp, the server in
# server.hpp: the rules below read both.
server = read("resmgr/server.hpp") + read("resmgr/thread_pool.hpp")
iofunc = read("resmgr/iofunc.hpp")
aspace = read("vm/aspace.hpp")
pager = read("vm/pager.hpp")
fpool = read("vm/fault_pool.hpp")

enum = one(r"enum class self_conflict\s*:\s*\w+(?:::\w+)?\s*\{([^}]*)\}", rl, "enum class self_conflict")
sc = {n.strip(): i for i, n in enumerate(enum.split(","))} if enum else {}


def sc_value(name):
    if name not in sc:
        errors.append("self_conflict has no enumerator %r" % name)
        return None
    return sc[name]


def mode_excl(fn_sig):
    """The mode of the first range a handler takes: in its body, or in the detail:: helper it calls
    to take it (lock_write_range)."""
    text = body(iofunc, fn_sig)
    helper = re.search(r"detail::(lock_\w+_range)\(", text)
    if helper:
        text = body(iofunc, "inline std::error_code %s(" % helper.group(1))
    # A handler that forwards to a shared implementation with a bool (detail::read_impl(..., false)):
    # the mode is the branch of `flag ? lock_mode::X : lock_mode::Y` that the bool selects.
    impl = re.search(r"detail::(\w+_impl)\([^;]*,\s*(true|false)\)\s*;", text)
    if impl:
        text = body(iofunc, "inline io_result %s(" % impl.group(1))
        pick = re.findall(r"\w+ \? lock_mode::(shared|exclusive) : lock_mode::(shared|exclusive)", text)
        if len(pick) != 1:
            errors.append("cannot find the lock-mode choice in detail::%s (for %s)" % (impl.group(1), fn_sig))
            return None
        return int(pick[0][0 if impl.group(2) == "true" else 1] == "exclusive")
    m = one(r"lock_mode::(shared|exclusive)", text, "the lock mode of " + fn_sig)
    return None if m is None else int(m == "exclusive")


expected = {
    "RANK_ASPACE_MAP": one(r"aspace_map\s*=\s*(\d+)", config, "rank::aspace_map"),
    "RANK_REGION": one(r"\bregion\s*=\s*(\d+)", config, "rank::region"),
    "RANK_ATTR_RANGE": one(r"attr_range\s*=\s*(\d+)", config, "rank::attr_range"),
    "RANK_ATTR_META": one(r"attr_meta\s*=\s*(\d+)", config, "rank::attr_meta"),
    "RANK_LEAF": one(r"\bleaf\s*=\s*(\d+)", config, "rank::leaf"),
    "SC_WAIT": sc_value("wait"),
    "SC_GRANT": sc_value("grant"),
    "SC_FAIL": sc_value("fail"),
    "DEF_POOL_MIN": one(r"struct thread_pool_options\s*\{.*?min_threads\s*=\s*(\d+)", server, "min_threads default"),
    "DEF_POOL_MAX": one(r"struct thread_pool_options\s*\{.*?max_threads\s*=\s*(\d+)", server, "max_threads default"),
    "DEF_POOL_SELF": "SC_" + (one(r"on_self_deadlock\s*=\s*self_conflict::(\w+)", server, "on_self_deadlock default") or "?").upper(),
    "DEF_PAGE_IN_SELF": "SC_" + (one(r"page_in_self_conflict\s*=\s*self_conflict::(\w+)", iofunc, "page_in_self_conflict default") or "?").upper(),
    "DEF_RANGE_SELF": "SC_" + (one(r"struct range_options\s*\{.*?on_self_conflict\s*=\s*self_conflict::(\w+)", rl, "range_options default") or "?").upper(),
    "DEF_SINGLE_LOCK": {"false": "0", "true": "1"}.get(one(r"bool single_lock\s*=\s*(\w+)", aspace, "single_lock default")),
    "DEF_FAULT_POOL_MIN": one(r"struct fault_pool_options\s*\{.*?unsigned min_threads\s*=\s*(\d+)", fpool, "fault_pool_options::min_threads default"),
    "MODE_READ_EXCL": mode_excl("inline io_result iofunc_read_default("),
    "MODE_WRITE_EXCL": mode_excl("inline io_result iofunc_write_default("),
    "MODE_PAGEIN_EXCL": mode_excl("inline io_result iofunc_page_in_default("),
}

with open(os.path.join(MODEL, "params.pml")) as f:
    params = dict(re.findall(r"^#define (\w+) (\S+)", f.read(), re.M))
for name, want in expected.items():
    have = params.get(name)
    if have is None:
        errors.append("model/params.pml lacks %s" % name)
    elif want is not None and str(want) != have:
        errors.append("model/params.pml: %s is %s, the headers say %s" % (name, have, want))
for name in params:
    if name not in expected:
        errors.append("model/params.pml: %s is not checked against a header (add it here)" % name)

# The rules the Promela encodes, as the headers write them. Each: (file text, pattern, model construct).
route = body(server, "send_route route_locked(")
rules = [
    (route, r"on_self_deadlock\s*==\s*self_conflict::wait\)\s*return\s*\{\}",
     "send(): policy wait routes normally (POOL_SELF != SC_WAIT)"),
    (route, r"if\s*\(started\s*<\s*opts_\.(?:pool\.)?max_threads\)\s*return\s*\{\}",
     "all_serving(): only a pool at its maximum can self-deadlock"),
    (route, r"r\s*==\s*nullptr\s*\|\|\s*r->activity\(\)\s*!=\s*a\)\s*return\s*\{\}",
     "all_serving(): every started thread serves the sender's activity"),
    (route, r"reserve_busy_with_a\s*=\s*rr\s*!=\s*nullptr\s*&&\s*rr->activity\(\)\s*==\s*a",
     "send(): the reserve thread already serving the activity means EDEADLK"),
    (route, r"grant\s*=\s*opts_\.(?:pool\.)?on_self_deadlock\s*==\s*self_conflict::grant\s*&&\s*reserve_ch_\s*&&\s*!reserve_busy_with_a",
     "send(): grant goes to the reserve channel"),
    (server, r"if\s*\((?:idle_\.load\([^)]*\)|idle_now)\s*==\s*0\)\s*\{[^}]*maybe_grow\(\)",
     "server_thread: a receive that leaves no thread idle starts one more"),
    (server, r"started_threads_\.load\([^)]*\)\s*>=\s*opts_\.(?:pool\.)?max_threads\)\s*return;",
     "server_thread: growth stops at max_threads"),
    (server, r"if\s*\(opts_\.(?:pool\.)?on_self_deadlock\s*==\s*self_conflict::grant\)\s*\{[^}]*reserve",
     "init: a reserve thread exists iff the pool policy is grant (RESERVE)"),
    (rl, r"if\s*\(other_granted\)\s*return\s+verdict::blocked;\s*if\s*\(self\s*>\s*0\)\s*return\s+verdict::self_only;\s*"
         r"return\s+earlier_waiting\s*\?\s*verdict::blocked\s*:\s*verdict::grantable;",
     "classify(): other granted > self only > earlier waiting > grantable"),
    (rl, r"if\s*\(o->granted\)\s*\{\s*if\s*\(self_matters\s*&&\s*o->owner\s*==\s*r\.owner\)",
     "classify(): a granted range of the same owner counts as self only when the policy is not wait"),
    (rl, r"o->seq\s*<\s*r\.seq", "classify(): only EARLIER waiting requests block (FIFO)"),
    (rl, r"o->seq\s*<\s*r\.seq\s*&&\s*!passes_locked\(r,\s*\*o\)",
     "passes(): an earlier waiting request that passes the queued-writer rule does not block"),
    (rl, r"if\s*\(r\.policy\s*==\s*self_conflict::wait\)\s*return\s+false;",
     "passes(): the queued-writer rule applies only when the policy is not wait"),
    (rl, r"g->granted\s*&&\s*g->owner\s*==\s*r\.owner\s*&&\s*detail::rl::conflicts\(g->mode,\s*o\.mode\)",
     "passes(): the waiter waits for a GRANTED range of the requester's owner"),
    (pager, r"unsigned fault_threads\s*=\s*0;", "pager_thread: every pager is served by a fault pool (PGROW), by default the shared one"),
    (fpool, r"if\s*\(idle_\s*==\s*0\s*&&\s*started_\s*<\s*cap_\s*&&\s*!stopping_\)\s*spawn_locked\(\);",
     "pager_thread: a read that leaves no fault thread idle starts one more, up to the limit (PGROW)"),
    (fpool, r"const\s+ssize_t\s+r\s*=\s*e->handler->read_message\(e->fd,\s*msg\)",
     "pager_thread: a fault thread reads ONE fault at a time (fq?ft: no fault queues behind another's page-in)"),
    (fpool, r"read_message\(int\s+fd,\s*uffd_msg&\s*msg\)\s*noexcept\s*\{\s*return\s+::read\(fd,\s*&msg,\s*sizeof\s+msg\);",
     "pager_thread: a handler's read is one message (the default read_message)"),
    (fpool, r"reader\s*=\s*idle_\s*==\s*0;",
     "PAGER_SLOTS: at the limit the last idle thread queues faults (not modelled: the model asserts the limit is never reached)"),
]
for text, rx, what in rules:
    if not re.search(rx, text, re.S):
        errors.append("the header no longer matches the model's rule: %s (pattern %r)" % (what, rx))

with open(os.path.join(MODEL, "faultsafe.pml")) as f:
    pml = f.read()
for d in ("define PMIN DEF_FAULT_POOL_MIN", "define POOLMIN0 DEF_POOL_MIN", "define POOLMAX0 DEF_POOL_MAX",
          "define SINGLE_LOCK DEF_SINGLE_LOCK", "define POOL_SELF DEF_POOL_SELF", "define PAGE_IN_SELF DEF_PAGE_IN_SELF",
          "MODE_READ_EXCL", "MODE_WRITE_EXCL", "MODE_PAGEIN_EXCL", "RANK_ASPACE_MAP", "RANK_REGION", "RANK_ATTR_RANGE"):
    if d not in pml:
        errors.append("model/faultsafe.pml does not use %r: its faultsafe configurations must take the header values" % d)

if errors:
    for e in errors:
        print("check_params: " + e)
    sys.exit(1)
print("check_params: %d values and %d rules of model/ agree with include/faultsafe/" % (len(expected), len(rules)))
