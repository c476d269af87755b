// faultsafe's own locks obey its lock hierarchy: each is a ranked_mutex with a rank from the README's
// table (config.hpp's faultsafe::rank), so an inversion through one of them is reported like any other.
#include "order_test_support.hpp"

#include <string>
#include <system_error>

#include "faultsafe/order/ranked_mutex.hpp"
#include "faultsafe/resmgr/client_registry.hpp"
#include "faultsafe/resmgr/server.hpp"

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
