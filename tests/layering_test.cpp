// The header layering rule: order < activity < sync < vm < ipc < resmgr. A header of one layer never
// includes (directly or through other headers) a header of a higher layer. The layer of a header is its
// first directory under include/faultsafe/; headers directly in include/faultsafe/ and in its detail/
// (config, source_location, thread_annotations, futex, held_locks, ...) belong to no layer and are
// transparent: what they include counts for whoever includes them. A header in a directory that is not
// in the table fails the test (give the new directory its place in the order, here and in the README).
// activity/ sits below sync/: a range lock records the activity that owns each range and parks in the
// wait-for graph (activity/wait_graph.hpp), which itself needs only order/ (see the README's layers).
//
// Includes are read textually: `#include "relative/path"` (resolved against the including header's
// directory) and `#include <faultsafe/...>`; other includes (system, boost) are outside the rule.
// The checker is also run on a small synthetic tree with a known violation, so the test fails if the
// checker itself stops finding violations. Also here: examples are standalone programs (they include
// the library and files of their own directory, never tests/), checked the same way.
#include <doctest/doctest.h>

#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr std::array<const char*, 6> layer_names{"order", "activity", "sync", "vm", "ipc", "resmgr"};

// -1: layerless (top level or top-level detail/); -2: a directory that is not in the table.
int layer_of(const std::string& rel) {
  const auto slash = rel.find('/');
  if (slash == std::string::npos) return -1;
  const std::string dir = rel.substr(0, slash);
  if (dir == "detail") return -1;
  for (std::size_t i = 0; i < layer_names.size(); ++i)
    if (dir == layer_names[i]) return static_cast<int>(i);
  return -2;
}

struct tree {
  std::map<std::string, std::vector<std::string>> includes;  // header (relative to root) -> its faultsafe includes
};

tree scan(const fs::path& root) {
  tree t;
  static const std::regex quoted(R"re(^\s*#\s*include\s*"([^"]+)")re");
  static const std::regex angled(R"re(^\s*#\s*include\s*<faultsafe/([^>]+)>)re");
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().extension() != ".hpp") continue;
    const std::string rel = fs::relative(e.path(), root).generic_string();
    auto& inc = t.includes[rel];
    std::ifstream in(e.path());
    std::string line;
    std::smatch m;
    while (std::getline(in, line)) {
      if (std::regex_search(line, m, quoted)) {
        const fs::path target = (e.path().parent_path() / m[1].str()).lexically_normal();
        inc.push_back(fs::relative(target, root).generic_string());
      } else if (std::regex_search(line, m, angled)) {
        inc.push_back(fs::path(m[1].str()).lexically_normal().generic_string());
      }
    }
  }
  return t;
}

// Every violation, as "a.hpp (layer) -> b.hpp -> c.hpp (higher layer)".
std::vector<std::string> violations(const tree& t) {
  std::vector<std::string> out;
  for (const auto& [h, direct] : t.includes) {
    const int lh = layer_of(h);
    if (lh == -2) {
      out.push_back(h + ": its directory has no place in the layer order");
      continue;
    }
    if (lh < 0) continue;
    // Breadth-first over everything h includes, keeping the path for the report.
    std::map<std::string, std::string> parent;
    std::vector<std::string> todo{h};
    std::set<std::string> seen{h};
    for (std::size_t i = 0; i < todo.size(); ++i) {
      auto it = t.includes.find(todo[i]);
      if (it == t.includes.end()) continue;
      for (const auto& inc : it->second) {
        if (!seen.insert(inc).second) continue;
        parent[inc] = todo[i];
        todo.push_back(inc);
        const int li = layer_of(inc);
        if (li > lh) {
          std::string chain = inc + " (" + layer_names[static_cast<std::size_t>(li)] + ")";
          for (std::string p = parent[inc]; p != h; p = parent[p]) chain = p + " -> " + chain;
          out.push_back(h + " (" + layer_names[static_cast<std::size_t>(lh)] + ") -> " + chain);
        }
      }
    }
  }
  return out;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Includes of the example sources under `dir` that leave the example's own directory: a quoted include
// must name a file beside the including one, or faultsafe/... (the library); "file: include" each.
std::vector<std::string> example_escapes(const fs::path& dir) {
  std::vector<std::string> out;
  const std::regex inc(R"re(^\s*#\s*include\s*"([^"]+)")re");
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".cpp" && ext != ".hpp")) continue;
    std::ifstream in(e.path());
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, inc)) continue;
      const std::string target = m[1];
      const bool library = target.rfind("faultsafe/", 0) == 0 && target.find("..") == std::string::npos;
      if (!library && (target.find("..") != std::string::npos || target.find('/') != std::string::npos))
        out.push_back(fs::relative(e.path(), dir).string() + ": " + target);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("examples are standalone: they include the library and their own files, never tests/ or another example's") {
  const fs::path dir = fs::path(FAULTSAFE_INCLUDE_DIR).parent_path() / "examples";
  REQUIRE(fs::is_directory(dir));
  const auto v = example_escapes(dir);
  for (const auto& s : v) MESSAGE("example include outside its directory: " << s);
  CHECK(v.empty());
  // The checker finds such an include (and accepts the library's and a file beside the includer).
  const fs::path root = fs::temp_directory_path() / ("faultsafe_examples_" + std::to_string(::getpid()));
  fs::remove_all(root);
  write(root / "a/main.cpp", "#include \"../../tests/support/sync.hpp\"\n#include \"faultsafe/vm/pager.hpp\"\n#include \"local.hpp\"\n");
  const auto w = example_escapes(root);
  fs::remove_all(root);
  REQUIRE(w.size() == 1);
  CHECK(w.front() == "a/main.cpp: ../../tests/support/sync.hpp");
}

TEST_CASE("no header includes a header of a higher layer") {
  const fs::path root = fs::path(FAULTSAFE_INCLUDE_DIR) / "faultsafe";
  REQUIRE(fs::is_directory(root));
  const tree t = scan(root);
  REQUIRE(t.includes.size() > 20);  // the scan found the headers
  const auto v = violations(t);
  for (const auto& s : v) MESSAGE("layer violation: " << s);
  CHECK(v.empty());
}

TEST_CASE("the checker finds a violation through a layerless header, and accepts a downward include") {
  const fs::path root = fs::temp_directory_path() / ("faultsafe_layering_" + std::to_string(::getpid()));
  fs::remove_all(root);
  write(root / "order/a.hpp", "#pragma once\n#include \"../detail/d.hpp\"\n");
  write(root / "detail/d.hpp", "#pragma once\n#include <faultsafe/vm/v.hpp>\n");
  write(root / "vm/v.hpp", "#pragma once\n#include \"../order/ok.hpp\"\n");
  write(root / "order/ok.hpp", "#pragma once\n#include <vector>\n");
  write(root / "resmgr/r.hpp", "#pragma once\n#include \"../vm/v.hpp\"\n");
  write(root / "newdir/n.hpp", "#pragma once\n");
  const auto v = violations(scan(root));
  fs::remove_all(root);
  REQUIRE(v.size() == 2);
  const std::set<std::string> got(v.begin(), v.end());
  CHECK(got.count("order/a.hpp (order) -> detail/d.hpp -> vm/v.hpp (vm)") == 1);
  CHECK(got.count("newdir/n.hpp: its directory has no place in the layer order") == 1);
}
