/* model/faultsafe.pml: faultsafe's protocol for SPIN (see model/README.md).
 *
 * One logical client process Bob (its threads are the clients; one address space with regions and a
 * pager of NP fault threads), two servers (0 = "nfs" serving file 0, 1 = "io_pkt" serving file 1),
 * each with a thread pool (min..max, growth when a receive leaves no thread idle) and, when the
 * pool's self-deadlock policy is grant, a reserve thread. Synchronous send/receive/reply over one
 * mailbox per sending thread; every message carries the sender's activity, which the receiving
 * thread adopts. A per-file range lock over NO page offsets (shared/exclusive, FIFO among
 * overlapping requests, owner activity, the self-conflict policy), the aspace map lock (rank 10) and
 * per-region locks (rank 20) or the single-lock configuration, faults queued to the pager threads,
 * page-ins sent on behalf of the faulting thread's activity, the direct copy path. The fault threads
 * are a pool (vm/fault_pool.hpp): PMIN threads at first, and a fault read that leaves no fault thread
 * idle starts one more, up to NP slots; -DPAGER_FIXED keeps the old fixed pool (PMIN threads, no growth).
 *
 * Configurations (exactly one, as spin -D...): BRIAN_NAIVE, COLIN_NAIVE, FAULTSAFE, FAULTSAFE_GUARD,
 * FAULTSAFE_FAIL, CROSS, and the findings FINDING_PAGER, FINDING_WRITER (with -DSTRICT_FIFO: the
 * range lock's rule before the queued-writer fix). See model/README.md.
 */
#include "params.pml"

#define NONE 255
#define NS 2        /* servers: 0 = nfs, 1 = io_pkt */
#define NF 2        /* files: file f is served by server f */
#define NO 2        /* page offsets per file (and per region) */
#define NR 2        /* Bob's regions: 0 = MAP_SHARED of file 0, 1 = anonymous buffer */
#define R_MAP 0
#define R_BUF 1
#define PG(r, p) ((r) * NO + (p))

/* ---------------- configurations ---------------- */
#if defined(BRIAN_NAIVE)
/* The seed's Brian: one exclusive attr lock per file, no guard, no direct copy. */
#  define NC 1
#  define NP 1
#  define PMIN 1
#  define PGROW 0
#  define POOLMIN0 1
#  define POOLMAX0 2
#  define SINGLE_LOCK 1
#  define NAIVE_ATTR 1
#  define DIRECT 0
#  define POOL_SELF SC_WAIT
#  define PAGE_IN_SELF SC_WAIT
#  define NESTED 0
#  define CROSSPROC 0
#elif defined(COLIN_NAIVE)
/* The seed's Colin: one aspace lock held during fault service, single-threaded io_pkt, nfs's
 * page-in reads io_pkt. */
#  define NC 2
#  define NP 2
#  define PMIN 2
#  define PGROW 0
#  define POOLMIN0 1
#  define POOLMAX0 2
#  define SINGLE_LOCK 1
#  define NAIVE_ATTR 0
#  define DIRECT 0
#  define POOL_SELF SC_WAIT
#  define PAGE_IN_SELF SC_WAIT
#  define NESTED 1
#  define CROSSPROC 0
#elif defined(FAULTSAFE) || defined(FAULTSAFE_GUARD) || defined(FAULTSAFE_FAIL) || defined(FINDING_PAGER) || defined(FINDING_WRITER)
#  if defined(FINDING_WRITER)
#    define NC 2
#  endif
/* faultsafe's defaults (params.pml): per-region locks, direct copy, guard grant, reserve thread.
 * nfs has the default pool (1..4) unless -DPOOLMAX0=n; io_pkt is pinned to one thread (the seed's).
 * Ablations (each must bring a lock-up back): -DSINGLE_LOCK_ON (one aspace lock), -DPAGE_IN_SELF_WAIT
 * (no page-in guard), -DPOOL_SELF_WAIT (no pool guard, no reserve thread). */
#  ifndef NC
#    define NC 3
#  endif
#  define PMIN DEF_FAULT_POOL_MIN
#  if defined(PAGER_FIXED)   /* the old fixed pool of fault threads (finding 1) */
#    define NP PMIN
#    define PGROW 0
#  else
#    define NP PAGER_SLOTS
#    define PGROW 1
#  endif
#  define POOLMIN0 DEF_POOL_MIN
#  ifndef POOLMAX0
#    define POOLMAX0 DEF_POOL_MAX
#  endif
#  if defined(SINGLE_LOCK_ON)
#    define SINGLE_LOCK 1
#  else
#    define SINGLE_LOCK DEF_SINGLE_LOCK
#  endif
#  define NAIVE_ATTR 0
#  if defined(FAULTSAFE_GUARD) || defined(FAULTSAFE_FAIL) || defined(FINDING_WRITER)
#    define DIRECT 0
#  else
#    define DIRECT 1
#  endif
#  if defined(FAULTSAFE_FAIL)
#    define POOL_SELF SC_FAIL
#    define PAGE_IN_SELF SC_FAIL
#  elif defined(POOL_SELF_WAIT)   /* the pool without its guard (no reserve thread) */
#    define POOL_SELF SC_WAIT
#    define PAGE_IN_SELF DEF_PAGE_IN_SELF
#  elif defined(PAGE_IN_SELF_WAIT)   /* the page-in without its guard */
#    define POOL_SELF DEF_POOL_SELF
#    define PAGE_IN_SELF SC_WAIT
#  else
#    define POOL_SELF DEF_POOL_SELF
#    define PAGE_IN_SELF DEF_PAGE_IN_SELF
#  endif
#  define NESTED 1
#  define CROSSPROC 0
#elif defined(CROSS)
/* Cross-process: the client hands its userfaultfd to the server; the server's own pager threads
 * serve it and call the page-in handler directly (no message, no pool). The server's copy into the
 * client's mapping (process_vm_writev, blocking uffd) faults with ptid = the server thread, whose
 * adopted activity the pager uses. No direct copy (the server has no view of the client's aspace). */
#  define NC 3
#  define PMIN DEF_FAULT_POOL_MIN
#  define NP PAGER_SLOTS
#  define PGROW 1
#  define POOLMIN0 DEF_POOL_MIN
#  define POOLMAX0 2
#  define SINGLE_LOCK DEF_SINGLE_LOCK
#  define NAIVE_ATTR 0
#  define DIRECT 0
#  define POOL_SELF DEF_POOL_SELF
#  define PAGE_IN_SELF DEF_PAGE_IN_SELF
#  define NESTED 0
#  define CROSSPROC 1
#else
#  error "choose a configuration: -DBRIAN_NAIVE, -DCOLIN_NAIVE, -DFAULTSAFE, -DFAULTSAFE_GUARD, -DFAULTSAFE_FAIL, -DCROSS, -DFINDING_PAGER, -DFINDING_WRITER"
#endif

/* Fault-pool slots of the growing configurations. The code's limit (fault_pool_options::max_threads)
 * is far larger; pager_thread asserts that a read never leaves the pool without an idle thread at
 * PAGER_SLOTS, so no run reaches the limit here and every verdict holds for any larger one. (At the
 * code's limit the last idle thread queues faults in a backlog that the wait-for graph sees: not
 * modelled, since it is never reached.) */
#define PAGER_SLOTS 4

#define POOLMIN1 1   /* io_pkt: pinned to one thread (min == max == 1) */
#define POOLMAX1 1
#define MAXT POOLMAX0            /* pool slots per server; slot MAXT is the reserve thread */
#define SLOTS (MAXT + 1)
#define STID(s, k) (NC + (s) * SLOTS + (k))
#define PTID(j) (NC + NS * SLOTS + (j))
#define NT (NC + NS * SLOTS + NP)
#define POOLMIN(s) ((s) == 0 -> POOLMIN0 : POOLMIN1)
#define POOLMAX(s) ((s) == 0 -> POOLMAX0 : POOLMAX1)
#define RESERVE (POOL_SELF == SC_GRANT)
#define ALLPAGES ((1 << NO) - 1)

/* message types, statuses */
#define T_READ 1
#define T_WRITE 2
#define T_PAGEIN 3
#define ST_OK 0
#define ST_EDEADLK 1
#define ST_EFAULT 2

/* what a blocked thread waits for (the chain script reads these at the end of a trail) */
#define W_NONE 0
#define W_RANGE 1   /* wres: file */
#define W_MAP 2     /* aspace map lock */
#define W_REGION 3  /* wres: region */
#define W_SEND 4    /* wres: server (NS + s: its reserve channel) */
#define W_REPLY 5   /* served by m[t].by */
#define W_PAGE 6    /* served by fby[t] (NONE: queued, no fault thread free) */

/* held-lock bits (rank order is checked with the RANK_ values) */
#define H_MAP 1
#define H_REGION 2
#define H_RANGE 4

/* ---------------- state ---------------- */
typedef Msg { byte type; byte file; byte off; byte buf; byte act; byte res; bit done; byte by };
Msg m[NT];                 /* each thread's outstanding send (at most one) */
chan q[NS] = [NT] of { byte };     /* server channels (sender's thread id) */
chan rq[NS] = [NT] of { byte };    /* reserve channels */
byte started[NS];          /* pool threads started */
byte idle[NS];             /* started and not serving */
byte serving[NS * SLOTS];  /* activity of the message each server thread holds (0: none) */

byte act[NT];              /* activity each thread works for */
byte held[NT];             /* H_ bits */
byte wk[NT];               /* W_ kind of the thread's current wait */
byte wres[NT];

chan fq = [NT] of { byte };  /* Bob's userfaultfd: faulting thread ids */
byte fpg[NT];              /* page a thread faulted on */
byte fby[NT];              /* fault thread serving that fault */
bit fdone[NT];
byte fst[NT];
bit present[NR * NO];      /* page mapped in Bob's aspace */
byte pstarted;             /* fault threads started */
byte pidle;                /* started fault threads not serving a fault */
bit pbusy[NP];             /* fault thread j serves a fault */
bit filled[NF * NO];       /* the file's page-cache page is valid (a page-in made it so) */

/* range lock nodes: two per thread (the ordered acquisition of the direct copy takes two) */
#define RS_NONE 0
#define RS_WAIT 1
#define RS_GRANTED 2
#define RS_FAILED 3
typedef RNode { byte file; byte mask; bit excl; byte res; byte seq; byte owner; byte pol };
#define NL (NT - NC)        /* lockers: server and pager threads */
#define RN(t) (((t) - NC) * 2)
RNode rn[NL * 2];
byte rnext[NF];            /* next arrival number per file (arrival numbers kept dense) */

byte ml_w = NONE;          /* map lock: exclusive holder */
short ml_r;                /* map lock: shared holders (bit per thread) */
short rl_r[NR];            /* region locks: shared holders (munmap/mprotect not modelled) */

byte ndone;                /* clients whose requests all returned */
bit replied[NC];

/* scratch for d_steps (not part of the state) */
hidden byte t_f, t_k, t_s, t_other, t_self, t_early, t_v, t_all, t_j, t_pass;

/* ---------------- lock order ---------------- */
inline rank_ok(me, R) {
  assert(!((held[me] & H_MAP) && RANK_ASPACE_MAP >= R));
  assert(!((held[me] & H_REGION) && RANK_REGION >= R));
  assert(!((held[me] & H_RANGE) && RANK_ATTR_RANGE >= R))
}

/* ---------------- range lock ---------------- */
/* The queued-writer rule (range_lock::passes_locked; README finding 2): t_pass = 1 iff the earlier
 * waiting node w does not hold up node i: i's policy is not wait and w waits for a GRANTED node of i's
 * owner (overlapping w, conflicting with it). -DSTRICT_FIFO models the rule before the fix (every
 * earlier waiting conflicting node holds i up). */
inline passes(i, w) {
  t_pass = 0;
#ifndef STRICT_FIFO
  if
  :: rn[i].pol != SC_WAIT ->
     t_j = 0;
     do
     :: t_j < NL * 2 ->
        if
        :: t_j != w && rn[t_j].res == RS_GRANTED && rn[t_j].file == rn[w].file && rn[t_j].owner == rn[i].owner &&
           (rn[t_j].mask & rn[w].mask) != 0 && (rn[t_j].excl || rn[w].excl) -> t_pass = 1
        :: else -> skip
        fi;
        t_j++
     :: else -> break
     od
  :: else -> skip
  fi;
#endif
  skip
}

/* classify node i (waiting): t_v = 0 grantable, 1 self only, 2 blocked (range_lock::classify_locked) */
inline classify(i) {
  t_other = 0; t_self = 0; t_early = 0; t_k = 0;
  do
  :: t_k < NL * 2 ->
     if
     :: t_k != i && rn[t_k].res != RS_NONE && rn[t_k].res != RS_FAILED && rn[t_k].file == rn[i].file &&
        (rn[t_k].mask & rn[i].mask) != 0 && (rn[t_k].excl || rn[i].excl) ->
        if
        :: rn[t_k].res == RS_GRANTED ->
           if
           :: rn[i].pol != SC_WAIT && rn[t_k].owner == rn[i].owner -> t_self++
           :: else -> t_other++
           fi
        :: rn[t_k].res == RS_WAIT && rn[t_k].seq < rn[i].seq ->
           passes(i, t_k);
           if :: !t_pass -> t_early++ :: else -> skip fi
        :: else -> skip
        fi
     :: else -> skip
     fi;
     t_k++
  :: else -> break
  od;
  t_v = (t_other > 0 -> 2 : (t_self > 0 -> 1 : (t_early > 0 -> 2 : 0)))
}

inline evaluate(i) {
  classify(i);
  if
  :: t_v == 0 -> rn[i].res = RS_GRANTED
  :: t_v == 1 && rn[i].pol == SC_GRANT -> rn[i].res = RS_GRANTED   /* self_deadlock reported, granted */
  :: t_v == 1 && rn[i].pol == SC_FAIL -> rn[i].res = RS_FAILED     /* self_deadlock reported, EDEADLK */
  :: else -> skip
  fi
}

/* re-examine the waiting nodes of file f in arrival order (a release or a give-up) */
inline regrant(f) {
  t_s = 0;
  do
  :: t_s < rnext[f] ->
     t_all = 0;
     do
     :: t_all < NL * 2 ->
        if
        :: rn[t_all].res == RS_WAIT && rn[t_all].file == f && rn[t_all].seq == t_s -> evaluate(t_all)
        :: else -> skip
        fi;
        t_all++
     :: else -> break
     od;
     t_s++
  :: else -> break
  od;
  skip
}

/* remove node i (keeps arrival numbers dense) */
inline drop(i) {
  t_all = 0;
  do
  :: t_all < NL * 2 ->
     if
     :: rn[t_all].res != RS_NONE && rn[t_all].file == rn[i].file && rn[t_all].seq > rn[i].seq -> rn[t_all].seq--
     :: else -> skip
     fi;
     t_all++
  :: else -> break
  od;
  rnext[rn[i].file]--;
  rn[i].res = RS_NONE; rn[i].file = 0; rn[i].mask = 0; rn[i].excl = 0; rn[i].seq = 0; rn[i].owner = 0; rn[i].pol = 0
}

inline put(i, f, msk, ex, own, pl) {
  rn[i].file = f; rn[i].mask = msk; rn[i].excl = ex; rn[i].owner = own; rn[i].pol = pl;
  rn[i].res = RS_WAIT; rn[i].seq = rnext[f]; rnext[f]++
}

/* range_guard(lock f, mask, mode) by thread me for activity act[me]; ok = 0 if it failed (EDEADLK) */
inline range_lock(me, f, msk, ex, pl, ok) {
  rank_ok(me, RANK_ATTR_RANGE);
  atomic {   /* one step when granted at once; interleaving only while it waits */
    d_step {
      put(RN(me), f, msk, ex, act[me], pl);
      evaluate(RN(me));
      if
      :: rn[RN(me)].res == RS_WAIT -> wk[me] = W_RANGE; wres[me] = f
      :: else -> skip
      fi
    };
    (rn[RN(me)].res != RS_WAIT);
    d_step {
      wk[me] = W_NONE;
      if
      :: rn[RN(me)].res == RS_GRANTED -> ok = 1; held[me] = held[me] | H_RANGE
      :: else -> ok = 0; drop(RN(me)); regrant(f)
      fi
    }
  }
}

/* ordered_range_guards over two ranges of file f, enqueued together (policy wait) */
inline range_lock2(me, f, m1, x1, m2, x2) {
  rank_ok(me, RANK_ATTR_RANGE);
  atomic {
  d_step {
    if
    :: (m1 & m2) != 0 -> put(RN(me), f, m1 | m2, x1 || x2, act[me], SC_WAIT)   /* overlapping: merged */
    :: else -> put(RN(me), f, m1, x1, act[me], SC_WAIT); put(RN(me) + 1, f, m2, x2, act[me], SC_WAIT)
    fi;
    evaluate(RN(me));
    if :: rn[RN(me) + 1].res == RS_WAIT -> evaluate(RN(me) + 1) :: else -> skip fi;
    if
    :: rn[RN(me)].res == RS_WAIT || rn[RN(me) + 1].res == RS_WAIT -> wk[me] = W_RANGE; wres[me] = f
    :: else -> skip
    fi
  };
  (rn[RN(me)].res != RS_WAIT && rn[RN(me) + 1].res != RS_WAIT);
  d_step { wk[me] = W_NONE; held[me] = held[me] | H_RANGE }
  }
}

/* releases every range thread me holds (the guards' destructors); part of the step that follows
 * them (the reply, or the end of fault service): releases are left movers */
inline range_release(me) {
  if
  :: rn[RN(me)].res != RS_NONE ->
     t_f = rn[RN(me)].file;
     drop(RN(me));
     if :: rn[RN(me) + 1].res != RS_NONE -> drop(RN(me) + 1) :: else -> skip fi;
     held[me] = held[me] & ~H_RANGE;
     regrant(t_f)
  :: else -> skip
  fi
}

/* ---------------- aspace locks ---------------- */
inline map_shared(me) {
  rank_ok(me, RANK_ASPACE_MAP);
  atomic {
    if :: ml_w != NONE -> wk[me] = W_MAP :: else -> skip fi;
    ml_w == NONE -> ml_r = ml_r | (1 << me); held[me] = held[me] | H_MAP; wk[me] = W_NONE
  }
}
/* a lookup: shared hold and release in one step (nothing else is done under it) */
inline map_lookup(me) {
  rank_ok(me, RANK_ASPACE_MAP);
  atomic {
    if :: ml_w != NONE -> wk[me] = W_MAP :: else -> skip fi;
    ml_w == NONE -> wk[me] = W_NONE
  }
}
inline map_unshared(me) { d_step { ml_r = ml_r & ~(1 << me); held[me] = held[me] & ~H_MAP } }
inline map_excl(me) {
  rank_ok(me, RANK_ASPACE_MAP);
  atomic {
    if :: ml_w != NONE || ml_r != 0 -> wk[me] = W_MAP :: else -> skip fi;
    ml_w == NONE && ml_r == 0 -> ml_w = me; held[me] = held[me] | H_MAP; wk[me] = W_NONE
  }
}
inline map_unexcl(me) { d_step { ml_w = NONE; held[me] = held[me] & ~H_MAP } }
inline region_shared(me, r) {
  rank_ok(me, RANK_REGION);
  d_step { rl_r[r] = rl_r[r] | (1 << me); held[me] = held[me] | H_REGION }
}
inline region_unshared(me, r) { d_step { rl_r[r] = rl_r[r] & ~(1 << me); held[me] = held[me] & ~H_REGION } }

/* ---------------- send / receive / reply ---------------- */
/* true iff every started pool thread of s serves activity a and the pool is at its maximum */
inline all_serving(s, a) {
  t_k = 0; t_all = (started[s] == POOLMAX(s));
  do
  :: t_k < started[s] -> t_all = t_all && serving[s * SLOTS + t_k] == a; t_k++
  :: else -> break
  od;
  skip
}

/* process::send of message (ty, f, o, b) on behalf of act[me]: route_for, queue, block until the
 * reply; the mailbox fields, routing and queueing are one step (they touch only the sender's mailbox
 * besides the queue) */
inline send(me, s, ty, f, o, b, rv) {
  /* "the aspace map lock is never held while ... a send" (held by the naive single-lock pager) */
  assert(SINGLE_LOCK || !(held[me] & H_MAP));
  atomic {
    m[me].type = ty; m[me].file = f; m[me].off = o; m[me].buf = b;
    m[me].act = act[me]; m[me].done = 0; m[me].by = NONE; m[me].res = ST_OK;
    all_serving(s, act[me]);
    if
    :: POOL_SELF != SC_WAIT && t_all ->
       if
       :: POOL_SELF == SC_GRANT && serving[s * SLOTS + MAXT] != act[me] ->
          rq[s]!me; wk[me] = W_SEND; wres[me] = NS + s          /* the reserve thread */
       :: else -> m[me].res = ST_EDEADLK; m[me].done = 1         /* fail, or the reserve serves a too */
       fi
    :: else -> q[s]!me; wk[me] = W_SEND; wres[me] = s
    fi;
    m[me].done == 1 -> wk[me] = W_NONE; rv = m[me].res
  }
}

/* ---------------- faults ---------------- */
/* thread me touches page pg of Bob's aspace; st = ST_OK or ST_EFAULT (SIGBUS caught by the guarded copy) */
inline touch(me, pg, st) {
  atomic {
    if
    :: present[pg] -> st = ST_OK
    :: else ->
       fpg[me] = pg; fdone[me] = 0; fby[me] = NONE; fq!me; wk[me] = W_PAGE;
       fdone[me] == 1 -> wk[me] = W_NONE; st = fst[me]
    fi
  }
}

/* ---------------- handlers ---------------- */
/* page-in of file f offset o for activity act[me] (iofunc_page_in_default); st: ST_OK / ST_EDEADLK */
inline handle_pagein(me, f, o, st, ok) {
  st = ST_OK;
#if NESTED
  if
  :: f == 0 && o == 1 ->   /* nfs's page-in of page 1 reads io_pkt (the seed's step 11) into nfs's own memory */
     send(me, 1, T_READ, 1, 0, NONE, st)
  :: else -> skip
  fi;
#endif
  if
  :: st == ST_OK ->
#if NAIVE_ATTR
     range_lock(me, f, ALLPAGES, 1, SC_WAIT, ok);
#else
     range_lock(me, f, 1 << o, MODE_PAGEIN_EXCL, PAGE_IN_SELF, ok);
#endif
     if
     :: ok -> filled[f * NO + o] = 1   /* released with the reply */
     :: else -> st = ST_EDEADLK
     fi
  :: else -> skip
  fi
}

/* read (copy file f page o into buffer page b) or write (copy buffer page b into file f page o) */
inline handle_rw(me, wr, f, o, b, st, ok) {
  st = ST_OK;
#if DIRECT
  if
  :: b != NONE && b / NO == R_MAP && f == 0 ->
     /* the buffer maps this very file: look it up (map lock shared, briefly), then one ordered
        acquisition over source and destination, and move the bytes inside the store */
     map_lookup(me);
     if
     :: !wr -> range_lock2(me, f, 1 << o, MODE_READ_EXCL, 1 << (b % NO), 1)
     :: else -> range_lock2(me, f, 1 << o, 1, 1 << (b % NO), 0)
     fi      /* the ranges are released with the reply */
  :: else ->
#endif
#if NAIVE_ATTR
     range_lock(me, f, ALLPAGES, 1, SC_WAIT, ok);
#else
     range_lock(me, f, 1 << o, (wr -> MODE_WRITE_EXCL : MODE_READ_EXCL), SC_WAIT, ok);
#endif
     if
     :: b != NONE -> touch(me, b, st)   /* the copy to/from client memory, under the range */
     :: else -> skip
     fi      /* the range is released with the reply */
#if DIRECT
  fi
#endif
}


/* ---------------- what each client thread of Bob does ---------------- */
#define READ_INTO_MAP(c, o, p) do_rw(c, T_READ, 0, o, PG(R_MAP, p))    /* read(fd, p), p = mmap(fd) */
#define WRITE_FROM_MAP(c, o, p) do_rw(c, T_WRITE, 0, o, PG(R_MAP, p))  /* write(fd, p), p = mmap(fd) */
#define COLIN_BOB1(c) touch(c, PG(R_MAP, 1), st)        /* bob1 touches its nfs mapping */
#define COLIN_BOB2(c) do_rw(c, T_READ, 1, 0, PG(R_BUF, 0))   /* bob2 reads io_pkt into a fresh buffer */
#if defined(BRIAN_NAIVE)
#  define OP0 READ_INTO_MAP(c, 0, 0)
#elif defined(COLIN_NAIVE)
#  define OP0 COLIN_BOB1(c)
#  define OP1 COLIN_BOB2(c)
#elif defined(FAULTSAFE)
#  define OP0 COLIN_BOB1(c)
#  define OP1 COLIN_BOB2(c)
#  define OP2 READ_INTO_MAP(c, 0, 0)                    /* Brian, served by the direct copy */
#elif defined(FAULTSAFE_GUARD) || defined(FAULTSAFE_FAIL)
#  define OP0 COLIN_BOB1(c)
#  define OP1 COLIN_BOB2(c)
#  define OP2 WRITE_FROM_MAP(c, 0, 0)                   /* Brian's mirror, through the guard */
#elif defined(FINDING_PAGER)
#  define OP0 COLIN_BOB1(c)
#  define OP1 COLIN_BOB2(c)
#  define OP2 touch(c, PG(R_MAP, 1), st)                /* a third thread touches the same nfs page */
#elif defined(FINDING_WRITER)
#  define OP0 READ_INTO_MAP(c, 0, 0)                    /* Brian's read, through the guard (no direct copy) */
#  define OP1 do_rw(c, T_WRITE, 0, 0, NONE)             /* an ordinary write of the same page */
#elif defined(CROSS)
#  define OP0 READ_INTO_MAP(c, 0, 0)                    /* the server writes into the client's mapping */
#  define OP1 WRITE_FROM_MAP(c, 1, 1)                   /* the server reads from the client's mapping */
#  define OP2 touch(c, PG(R_MAP, 0), st)                /* the client touches the mapping itself */
#endif
#ifndef OP1
#  define OP1 skip
#endif
#ifndef OP2
#  define OP2 skip
#endif
#ifndef OP3
#  define OP3 skip
#endif

/* ---------------- processes ----------------
 * Each thread runs atomically from one blocking point to the next (SEG_BEGIN/SEG_END): the other
 * threads interleave only where it waits (a receive, a lock wait, a send, a fault). See README.md,
 * "Reductions", for why no deadlock is lost; -DINTERLEAVE_ALL turns this off (every step interleaves),
 * which the long run uses to cross-check the verdicts. */
#ifdef INTERLEAVE_ALL
#  define SEG_BEGIN
#  define SEG_END
#else
#  define SEG_BEGIN atomic {
#  define SEG_END }
#endif
#if MAXT > 4
#  error "LOWER_BUSY covers pools of at most 4 threads"
#endif
#if NP > 4
#  error "PLOWER_BUSY covers pools of at most 4 fault threads"
#endif
#define PLOWER_BUSY(j) ((j) < 1 || pbusy[0]) && ((j) < 2 || pbusy[1]) && ((j) < 3 || pbusy[2]) && ((j) < 4 || pbusy[3])
#define LOWER_BUSY(s, k) ((k) < 1 || serving[(s) * SLOTS] != 0) && ((k) < 2 || serving[(s) * SLOTS + 1] != 0) && \
                         ((k) < 3 || serving[(s) * SLOTS + 2] != 0) && ((k) < 4 || serving[(s) * SLOTS + 3] != 0)

proctype server_thread(byte s; byte k) {
  byte me = STID(s, k);
  byte snd, st, ok, wr, pi, mf, mo, mb;
  chan c;
  if
  :: k == MAXT -> c = rq[s]
  :: else -> c = q[s]
  fi;
end_gate:
  (k == MAXT || started[s] > k);
end_idle:
  do
  :: SEG_BEGIN
     atomic {
       /* pool threads are interchangeable: the lowest-numbered idle one receives (symmetry) */
       (k == MAXT || LOWER_BUSY(s, k)) && c?[snd] -> c?snd;
       m[snd].by = me; act[me] = m[snd].act; serving[s * SLOTS + k] = m[snd].act;
       if :: wk[snd] == W_SEND -> wk[snd] = W_REPLY :: else -> skip fi;
       if
       :: k < MAXT ->
          idle[s]--;
          if :: idle[s] == 0 && started[s] < POOLMAX(s) -> started[s]++; idle[s]++ :: else -> skip fi
       :: else -> skip
       fi;
       mf = m[snd].file; mo = m[snd].off; mb = m[snd].buf; wr = (m[snd].type == T_WRITE);
       pi = (m[snd].type == T_PAGEIN)
     };
     if
     :: pi -> handle_pagein(me, mf, mo, st, ok)
     :: else -> handle_rw(me, wr, mf, mo, mb, st, ok)
     fi;
     d_step {
       range_release(me);
       m[snd].res = st; m[snd].by = NONE; m[snd].done = 1;
       serving[s * SLOTS + k] = 0; act[me] = 0; st = 0; ok = 0; wr = 0; pi = 0; snd = 0; mf = 0; mo = 0; mb = 0;
       if :: k < MAXT -> idle[s]++ :: else -> skip fi
     }
     SEG_END
  od
}

/* a fault thread of Bob's pager (the "proc" role): a thread of the fault pool */
proctype pager_thread(byte j) {
  byte me = PTID(j);
  byte ft, pg, r, st, ok, need;
end_gate:
  (pstarted > j);
end_idle:
  do
  :: SEG_BEGIN
     atomic {
       /* fault threads are interchangeable: the lowest-numbered idle one reads (symmetry) */
       PLOWER_BUSY(j) && fq?[ft] -> fq?ft;
       pbusy[j] = 1; pidle--;
       if   /* a read that leaves no fault thread idle starts one more (fault_pool::take) */
       :: PGROW && pidle == 0 && pstarted < NP -> pstarted++; pidle++
       :: else -> skip
       fi;
       assert(!PGROW || pidle > 0);   /* the pool's limit is never reached (PAGER_SLOTS) */
       fby[ft] = me; pg = fpg[ft]; act[me] = act[ft]; r = pg / NO; st = ST_OK;
#if SINGLE_LOCK
       map_excl(me);                                   /* the whole space, for the whole service */
#else
       map_lookup(me);
       region_shared(me, r);                           /* uncontended: munmap/mprotect are not modelled */
#endif
       if
       :: present[pg] -> skip                          /* another fault thread mapped it meanwhile */
       :: !present[pg] && r == R_BUF -> present[pg] = 1   /* anonymous: UFFDIO_ZEROPAGE */
       :: !present[pg] && r == R_MAP -> need = 1
       fi
     };
     if
     :: need ->
#if CROSSPROC
        handle_pagein(me, 0, pg % NO, st, ok)         /* the server's own pager: the handler, directly */
#else
        send(me, 0, T_PAGEIN, 0, pg % NO, NONE, st)   /* page-in on behalf of the faulting thread */
#endif
     :: else -> skip
     fi;
     d_step {
       range_release(me);
       if
       :: need && st == ST_OK -> present[pg] = 1       /* UFFDIO_CONTINUE */
       :: need && st != ST_OK -> st = ST_EFAULT        /* UFFDIO_POISON: the access gets SIGBUS */
       :: else -> skip
       fi;
#if SINGLE_LOCK
       map_unexcl(me);
#else
       region_unshared(me, r);
#endif
       fst[ft] = st; fby[ft] = NONE; fdone[ft] = 1; act[me] = 0; ft = 0; pg = 0; r = 0; st = 0; ok = 0; need = 0;
       pbusy[j] = 0; pidle++
     }
     SEG_END
  od
}

/* client requests */
inline do_rw(c, ty, f, o, b) {
  send(c, f, ty, f, o, b, st)
}

proctype client(byte c) {
  byte st;
  SEG_BEGIN
  act[c] = c + 1;
  if
  :: c == 0 -> OP0
  :: c == 1 -> OP1
  :: c == 2 -> OP2
  :: c == 3 -> OP3
  fi;
  /* what a request may return: the defaults (grant) always succeed; the fail policies may answer
     EDEADLK (a refused page-in or pool message) or EFAULT (the copy's page was poisoned) */
  assert(st == ST_OK || (POOL_SELF == SC_FAIL || PAGE_IN_SELF == SC_FAIL) && (st == ST_EDEADLK || st == ST_EFAULT));
  d_step { wk[c] = W_NONE; replied[c] = 1; ndone++; st = 0 }
  SEG_END
}

init {
  byte i;
  atomic {
    started[0] = POOLMIN0; idle[0] = POOLMIN0;
    started[1] = POOLMIN1; idle[1] = POOLMIN1;
    pstarted = PMIN; pidle = PMIN;
    i = 0;
    do
    :: i < MAXT -> run server_thread(0, i); if :: i < POOLMAX1 -> run server_thread(1, i) :: else -> skip fi; i++
    :: else -> break
    od;
    if :: RESERVE -> run server_thread(0, MAXT); run server_thread(1, MAXT) :: else -> skip fi;
    i = 0;
    do
    :: i < NP -> run pager_thread(i); i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NC -> run client(i); i++
    :: else -> break
    od
  }
}

/* Liveness: every client's request returns (a reply, or a documented error) */
ltl replies { <> (ndone == NC) }
