// Death-test program for the DEFAULT violation handler, which must print the report to stderr and
// abort. `order_death <kind>` forks; the child triggers one violation of <kind> with the default
// handler; the parent exits 0 only if the child died of SIGABRT after printing "faultsafe: <kind>:".
//
// Why not simply WILL_FAIL: CTest's WILL_FAIL inverts only a non-zero exit status; a test process
// killed by a signal is "Subprocess aborted" and counts as failed either way, and WILL_FAIL would also
// accept any unrelated failure. So this program checks the signal and the report itself.
#define FAULTSAFE_CHECKS 1
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "faultsafe/order/lock_graph.hpp"
#include "faultsafe/order/ranked_mutex.hpp"

namespace {

void trigger(const char* what) {
  using namespace faultsafe;
  if (std::strcmp(what, "order_cycle") == 0) {
    static lock_class a_class("death A"), b_class("death B");
    tracked_mutex<std::mutex, checks_on> a(a_class), b(b_class);
    a.lock();
    b.lock();
    b.unlock();
    a.unlock();
    b.lock();
    a.lock();  // aborts here
  } else if (std::strcmp(what, "rank_inversion") == 0) {
    ranked_mutex<20, std::mutex, checks_on> high("death high");
    ranked_mutex<10, std::mutex, checks_on> low("death low");
    high.lock();
    low.lock();  // aborts here
  } else if (std::strcmp(what, "recursive_acquire") == 0) {
    ranked_mutex<10, std::mutex, checks_on> m("death m");
    m.lock();
    m.lock();  // aborts here, before it could self-deadlock
  } else if (std::strcmp(what, "unlock_not_held") == 0) {
    ranked_mutex<10, std::mutex, checks_on> m("death m");
    m.unlock();  // aborts here
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: order_death order_cycle|rank_inversion|recursive_acquire|unlock_not_held\n");
    return 2;
  }
  int pipefd[2];
  if (::pipe(pipefd) != 0) return 2;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    ::dup2(pipefd[1], 2);
    ::close(pipefd[0]);
    trigger(argv[1]);
    std::fprintf(stderr, "order_death: '%s' was not detected\n", argv[1]);
    std::_Exit(0);
  }
  ::close(pipefd[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<std::size_t>(n));
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return 2;
  std::fprintf(stderr, "%s", err.c_str());  // show what the child printed
  const std::string expected = std::string("faultsafe: ") + argv[1] + ":";
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT) {
    std::fprintf(stderr, "order_death: child did not die of SIGABRT (status %d)\n", status);
    return 1;
  }
  if (err.find(expected) == std::string::npos) {
    std::fprintf(stderr, "order_death: report '%s' not printed\n", expected.c_str());
    return 1;
  }
  std::fprintf(stderr, "order_death: the default handler printed the report and aborted, as it must\n");
  return 0;
}
