// The artifact corpus (tests/corpus): every artifact loads, and collecting
// each one that has an expected file gives exactly its rows.

#include <gtest/gtest.h>

#include <fstream>

#include "queries/agent_sources.hpp"

namespace outpost::vql {
namespace {

const std::filesystem::path kCorpus = OUTPOST_CORPUS;

std::shared_ptr<const ArtifactRepository> corpus(LoadReport& report) {
  return load_artifacts({(kCorpus / "artifacts").string()}, default_registry(), report);
}

// Collects `name` as the agent does (its queries merged), to JSON lines.
std::vector<std::string> collect(const ArtifactRepository& repo, const std::string& name) {
  Engine engine(default_registry(), &repo);
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::artifact;
  spec.name = name;
  auto p = prepare(spec, repo, engine);
  for (auto& b : p.parameters)  // where the fixture files are, in this checkout
    if (b.name == "Fixtures") b.value = (kCorpus / "fixtures").string();
  Env env;
  std::vector<std::unique_ptr<RowStream>> streams;
  for (auto& q : p.queries) streams.push_back(engine.start(*q, p.parameters, env));
  auto stream = merge_streams(std::move(streams));
  std::vector<std::string> lines;
  for (int slices = 0; slices < 100000; ++slices) {
    std::vector<Row> rows;
    Step step = stream->next(rows, 100);
    for (auto& r : rows) lines.push_back(to_json(r));
    if (step.state == Step::State::done) return lines;
    if (step.state != Step::State::more) ADD_FAILURE() << name << " waits: the corpus has no event artifacts";
  }
  ADD_FAILURE() << name << " did not end";
  return lines;
}

std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

TEST(ArtifactCorpus, EveryArtifactLoads) {
  LoadReport report;
  corpus(report);
  for (auto& f : report.failed) ADD_FAILURE() << f.origin << ": " << f.message;
  EXPECT_GE(report.loaded, 7u);
  EXPECT_TRUE(report.replaced.empty());
}

TEST(ArtifactCorpus, EachArtifactGivesItsExpectedRows) {
  LoadReport report;
  auto repo = corpus(report);
  size_t checked = 0;
  for (auto& e : std::filesystem::directory_iterator(kCorpus / "expected")) {
    std::string name = e.path().stem().string();
    SCOPED_TRACE(name);
    ASSERT_TRUE(repo->find(name)) << "no artifact for " << e.path();
    try {
      EXPECT_EQ(collect(*repo, name), lines_of(e.path()));
    } catch (const std::exception& error) {
      ADD_FAILURE() << error.what();
    }
    ++checked;
  }
  EXPECT_GE(checked, 7u);
}

}  // namespace
}  // namespace outpost::vql
