#pragma once
// What the fuzz targets share: a directory of the process's own, and a query
// run to its end as the agent's query actor runs it.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "queries/engine.hpp"

namespace outpost::fuzz {

// Made at the first call, removed when the process exits.
inline const std::filesystem::path& temp_dir() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "outpost-fuzz-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) std::abort();
    static std::filesystem::path removed_at_exit;
    removed_at_exit = pattern;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "%s\n", what.c_str());
  std::abort();
}

// Pulls `vql`'s rows until it ends, asks to wait, or gave `max_rows`; each
// row is rendered as JSON (as the collector will). An error a query may end
// with (what the query actor catches, std::exception) ends it; a
// std::logic_error (out_of_range, invalid_argument...) is a bug: abort.
inline size_t run_query(vql::Engine& engine, const std::string& vql, std::vector<vql::Binding> params,
                        vql::Env& env, size_t max_rows = 10000) {
  size_t rows = 0;
  try {
    auto stream = engine.start(vql, std::move(params), env);
    std::vector<vql::Row> out;
    while (rows < max_rows) {
      out.clear();
      vql::Step step = stream->next(out, 256);
      for (auto& row : out) (void)vql::to_json(row);
      rows += out.size();
      if (step.state != vql::Step::State::more) break;
    }
  } catch (const std::logic_error& e) {
    fail(std::string("a bug's exception from the query: ") + e.what() + "\n" + vql);
  } catch (const std::exception&) {
  }
  return rows;
}

}  // namespace outpost::fuzz
