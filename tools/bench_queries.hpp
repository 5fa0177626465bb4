#pragma once
// Query specs and sources the benchmarks spawn by the thousand.

#include <fmt/format.h>

#include "actors/query_actor.hpp"
#include "actors/waker.hpp"
#include "actors/test_sources.hpp"

namespace outpost::bench {

inline const SourceFactory kTestSources = [](const QuerySpec& q) {
  return make_test_source(q.source);
};

inline QuerySpec bench_query(uint64_t id, const std::string& artifact, SourceSpec::Kind kind) {
  QuerySpec q;
  q.id = id;
  q.name = fmt::format("{}-{}", artifact, id);
  q.artifact = artifact;
  q.source.kind = kind;
  return q;
}

}  // namespace outpost::bench
