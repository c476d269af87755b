// Deliberately wrong: clang's -Wthread-safety analysis must reject this file (CTest
// order_thread_safety_bad, which expects exactly 4 thread-safety errors). Each mistake is marked.
#include <mutex>
#include <shared_mutex>

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

long unlocked_read(file_attr& a) {
  return a.size;  // ERROR 1: reading 'size' requires holding 'meta_lock'
}

void write_under_read_lock(region& r) {
  faultsafe::shared_guard g(r.lock);
  r.protection = 3;  // ERROR 2: writing 'protection' requires holding 'lock' exclusively
}

void leaks_lock(file_attr& a) {
  a.meta_lock.lock();
  a.size = 1;
}  // ERROR 3: 'meta_lock' is still held at the end of the function

void releases_twice(file_attr& a) {
  a.meta_lock.lock();
  a.meta_lock.unlock();
  a.meta_lock.unlock();  // ERROR 4: releasing 'meta_lock' that was not held
}

}  // namespace

int main() {
  file_attr a;
  region r;
  write_under_read_lock(r);
  leaks_lock(a);
  releases_twice(a);
  return static_cast<int>(unlocked_read(a));
}
