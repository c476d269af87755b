/* model/params.pml: the values the model shares with the headers. Checked against them by
 * model/check_params.py (CTest: model_params): a change to a rank, an enumerator order, a default
 * policy or a pool default in include/faultsafe/ makes that test fail until this file follows.
 * Each line names where its value comes from ("header: expression").  Keep the format
 * "#define NAME VALUE  / * header: source * /": the checker reads it. */

/* Lock ranks (include/faultsafe/config.hpp, namespace rank) */
#define RANK_ASPACE_MAP 10   /* config.hpp: rank::aspace_map */
#define RANK_REGION 20       /* config.hpp: rank::region */
#define RANK_ATTR_RANGE 30   /* config.hpp: rank::attr_range */
#define RANK_ATTR_META 40    /* config.hpp: rank::attr_meta */
#define RANK_LEAF 90         /* config.hpp: rank::leaf */

/* self_conflict enumerators in declaration order (sync/range_lock.hpp: enum class self_conflict) */
#define SC_WAIT 0            /* range_lock.hpp: self_conflict::wait */
#define SC_GRANT 1           /* range_lock.hpp: self_conflict::grant */
#define SC_FAIL 2            /* range_lock.hpp: self_conflict::fail */

/* Defaults */
#define DEF_POOL_MIN 1                 /* thread_pool.hpp: thread_pool_options::min_threads */
#define DEF_POOL_MAX 4                 /* thread_pool.hpp: thread_pool_options::max_threads */
#define DEF_POOL_SELF SC_GRANT         /* thread_pool.hpp: thread_pool_options::on_self_deadlock */
#define DEF_PAGE_IN_SELF SC_GRANT      /* iofunc.hpp: attr_options::page_in_self_conflict */
#define DEF_RANGE_SELF SC_WAIT         /* range_lock.hpp: range_options::on_self_conflict */
#define DEF_SINGLE_LOCK 0              /* aspace.hpp: aspace_options::single_lock */
#define DEF_FAULT_POOL_MIN 2           /* fault_pool.hpp: fault_pool_options::min_threads */

/* Lock modes the default handlers take (iofunc.hpp, direct_copy.hpp) */
#define MODE_READ_EXCL 0     /* iofunc.hpp: iofunc_read_default takes lock_mode::shared */
#define MODE_WRITE_EXCL 1    /* iofunc.hpp: iofunc_write_default takes lock_mode::exclusive */
#define MODE_PAGEIN_EXCL 0   /* iofunc.hpp: iofunc_page_in_default takes lock_mode::shared */
