// Includes the umbrella header (every public header) from the installed tree and uses the core.
#include <faultsafe/faultsafe.hpp>

#include <cstdio>

int main() {
  faultsafe::violation_recorder rec;
  faultsafe::scoped_violation_handler h(rec.handler());
  const faultsafe::activity_id a = faultsafe::new_activity();
  faultsafe::activity_scope s(a);
  std::printf("faultsafe consumer: activity %llu\n", static_cast<unsigned long long>(faultsafe::current_activity()));
  return faultsafe::current_activity() == a ? 0 : 1;
}
