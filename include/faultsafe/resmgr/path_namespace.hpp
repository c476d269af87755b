// faultsafe/resmgr/path_namespace.hpp: the path namespace of resource managers.
//
// Defines `path_namespace`: a process-wide (or per test) map of path prefixes to server channels.
// resolve() finds the longest prefix on a component boundary ("/ram" matches "/ram" and "/ram/a",
// not "/ramx") and returns the rest of the path below it, which the server interprets.
//
// Thread-safety: all members from any thread. Lock order: one rank::leaf ranked_mutex, never held while
// sending.
// Lifetime: global() is never destroyed (servers may outlive statics); a resolution holds the channel
// by shared_ptr, so a server stopped meanwhile answers ESHUTDOWN, never a dangling pointer.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "../ipc/channel.hpp"
#include "../order/ranked_mutex.hpp"
#include "../thread_annotations.hpp"

namespace faultsafe {

/// Maps path prefixes to server channels. Thread-safety: any thread; one leaf mutex.
class path_namespace {
 public:
  /// The process-wide namespace that servers and processes use by default.
  static path_namespace& global() {
    static path_namespace* ns = new path_namespace;  // leaked on purpose: servers may outlive statics
    return *ns;
  }

  /// Effects: `prefix` (absolute, normalized: starts with '/', no trailing '/' except "/" itself) now
  /// resolves to `ch`. Returns EINVAL for a malformed prefix or null channel, EEXIST if taken.
  [[nodiscard]] std::error_code attach(std::string prefix, std::shared_ptr<channel> ch) {
    if (!ch || prefix.empty() || prefix[0] != '/' || (prefix.size() > 1 && prefix.back() == '/'))
      return std::make_error_code(std::errc::invalid_argument);
    exclusive_guard g(mu_);
    auto [it, inserted] = map_.emplace(std::move(prefix), std::move(ch));
    (void)it;
    return inserted ? std::error_code{} : std::make_error_code(std::errc::file_exists);
  }

  /// Effects: removes `prefix` if it still maps to `ch`. Returns whether it did.
  bool detach(const std::string& prefix, const channel* ch) {
    exclusive_guard g(mu_);
    auto it = map_.find(prefix);
    if (it == map_.end() || it->second.get() != ch) return false;
    map_.erase(it);
    return true;
  }

  struct resolution {
    std::shared_ptr<channel> ch;
    std::string prefix;
    std::string rest;  ///< the path below the prefix, without a leading '/' ("" = the prefix itself)
  };

  /// Returns the server of the longest attached prefix of `path`, or ENOENT (none, or not absolute).
  [[nodiscard]] std::optional<resolution> resolve(std::string_view path, std::error_code& ec) const {
    ec = {};
    if (path.empty() || path[0] != '/') {
      ec = std::make_error_code(std::errc::no_such_file_or_directory);
      return std::nullopt;
    }
    exclusive_guard g(mu_);
    const std::pair<const std::string, std::shared_ptr<channel>>* best = nullptr;
    for (const auto& e : map_) {  // few prefixes: a linear scan is fine
      const std::string& p = e.first;
      const bool match = p == "/" ? true
                                  : path.size() >= p.size() && path.compare(0, p.size(), p) == 0 &&
                                        (path.size() == p.size() || path[p.size()] == '/');
      if (match && (best == nullptr || p.size() > best->first.size())) best = &e;
    }
    if (best == nullptr) {
      ec = std::make_error_code(std::errc::no_such_file_or_directory);
      return std::nullopt;
    }
    std::string_view rest = path.substr(best->first == "/" ? 0 : best->first.size());
    while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    return resolution{best->second, best->first, std::string(rest)};
  }

 private:
  mutable ranked_mutex<rank::leaf> mu_{"path namespace"};
  std::map<std::string, std::shared_ptr<channel>> map_ FAULTSAFE_GUARDED_BY(mu_);
};

}  // namespace faultsafe
