// Correct use of faultsafe locks under clang's -Wthread-safety analysis: must compile cleanly with
// `clang++ -std=c++20 -Wthread-safety -Werror -fsyntax-only` (CTest order_thread_safety_good). Its
// twin bad.cpp makes the classic mistakes and must be rejected.
#include <mutex>
#include <shared_mutex>

#include "faultsafe/order/lock_graph.hpp"
#include "faultsafe/order/ranked_mutex.hpp"

namespace {

struct file_attr {
  faultsafe::ranked_mutex<faultsafe::rank::attr_meta> meta_lock{"attr meta"};
  long size FAULTSAFE_GUARDED_BY(meta_lock) = 0;
};

struct region {
  faultsafe::ranked_mutex<faultsafe::rank::region, std::shared_mutex> lock{"region"};
  int protection FAULTSAFE_GUARDED_BY(lock) = 0;
};

faultsafe::lock_class table_class("table");
faultsafe::tracked_mutex<> table_lock(table_class);
int table_entries FAULTSAFE_GUARDED_BY(table_lock) = 0;

long grow(file_attr& a, long by) {
  faultsafe::exclusive_guard g(a.meta_lock);
  a.size += by;
  return a.size;
}

int read_protection(region& r) {
  faultsafe::shared_guard g(r.lock);
  return r.protection;
}

void set_protection(region& r, int p) {
  r.lock.lock();
  r.protection = p;
  r.lock.unlock();
}

void move_size(file_attr& from, file_attr& to) {
  faultsafe::ordered_lock_guard g(from.meta_lock, to.meta_lock);  // one rank, taken together
  to.size += from.size;
  from.size = 0;
}

bool try_bump() {
  if (!table_lock.try_lock()) return false;
  ++table_entries;
  table_lock.unlock();
  return true;
}

long requires_held(file_attr& a) FAULTSAFE_REQUIRES(a.meta_lock) { return a.size; }

long caller(file_attr& a) {
  faultsafe::exclusive_guard g(a.meta_lock);
  return requires_held(a);
}

}  // namespace

int main() {
  file_attr a, b;
  region r;
  set_protection(r, 1);
  move_size(a, b);
  return static_cast<int>(grow(a, 1) + read_protection(r) + try_bump() + caller(b));
}
