// faultsafe's own locks obey its lock hierarchy: each is a ranked_mutex with a rank from the README's
// table (config.hpp's faultsafe::rank), so an inversion through one of them is reported like any other.
#include "order_test_support.hpp"

#include <string>
#include <system_error>

#include "faultsafe/order/ranked_mutex.hpp"
#include "faultsafe/resmgr/client_registry.hpp"
#include "faultsafe/resmgr/server.hpp"
#include "faultsafe/sync/range_lock.hpp"

using namespace order_test;  // recording, expect_one, expect_none
using faultsafe::violation_kind;
namespace rank = faultsafe::rank;

TEST_CASE("an internal leaf lock taken under a caller's leaf lock is a reported rank inversion") {
  recording r;
  faultsafe::path_namespace ns;
  faultsafe::ranked_mutex<rank::leaf, spin_mutex> mine("caller leaf");
  std::error_code ec;
  {
    faultsafe::exclusive_guard g(mine);
    (void)ns.resolve("/nowhere", ec);  // takes the namespace's leaf lock: rank 90 under rank 90
  }
  const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"caller leaf", "path namespace"});
  CHECK_MESSAGE(v.report().find("(rank 90)") != std::string::npos, v.report());
  (void)ns.resolve("/nowhere", ec);  // alone: nothing to report
  expect_none(r.rec);
}

TEST_CASE("the client registry's lock is checked: its callback may take leaf locks, not another registry") {
  recording r;
  auto& clients = faultsafe::detail::client_registry::instance();
  faultsafe::ranked_mutex<rank::leaf, spin_mutex> leaf("process memory (stand-in)");
  clients.with_process(~0ull, [&](faultsafe::process* p) {
    CHECK(p == nullptr);
    faultsafe::exclusive_guard g(leaf);  // what direct_copy's callback does: legal
  });
  expect_none(r.rec);
  clients.with_process(~0ull, [](faultsafe::process*) {
    auto& servers = faultsafe::detail::server_registry::instance();
    faultsafe::shared_guard g(servers.m);  // one registry inside another: reported
  });
  expect_one(r.rec, violation_kind::rank_inversion, {"client registry", "server registry"});
}

TEST_CASE("range_lock's shard locks are checked leaf locks: one taken under a caller's leaf lock is reported") {
  recording r;
  faultsafe::range_lock l("file");
  faultsafe::ranked_mutex<rank::leaf, spin_mutex> mine("caller leaf");
  {
    faultsafe::exclusive_guard g(mine);
    CHECK(l.conflicting_holders(0, 10, faultsafe::lock_mode::exclusive).empty());  // one shard lock: 90 under 90
  }
  const auto v = expect_one(r.rec, violation_kind::rank_inversion, {"caller leaf", "range_lock shard"});
  CHECK_MESSAGE(v.report().find("(rank 90)") != std::string::npos, v.report());
  {
    faultsafe::range_guard wide(l, 0, faultsafe::to_end, faultsafe::lock_mode::exclusive);  // all 16, one batch
    CHECK(l.holders().size() == 1);  // every shard lock again, while the range is held (rank 30)
  }
  expect_none(r.rec);  // alone, and all of one lock's shards in index order: nothing to report
}
