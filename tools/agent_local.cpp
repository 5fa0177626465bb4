#include "tools/agent_local.hpp"

#include <caf/all.hpp>

#include <cctype>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <sstream>

#include "actors/registry.hpp"
#include "actors/system_config.hpp"
#include "queries/agent_sources.hpp"

namespace outpost::tools {
namespace {

using namespace vql;

// Runs the prepared queries to their end (or max_rows), printing rows as
// they come; event queries run until interrupted.
int run_prepared(PreparedQuery p, size_t max_rows) {
  AgentSystemConfig cfg;  // actors() lists this run's own actors (its sensors)
  caf::actor_system sys{configure_scheduler(cfg)};
  int status = 0;
  {
    SensorHub hub(sys);
    Engine engine(default_registry());
    std::mutex mutex;
    std::condition_variable woken;
    bool wake = false;
    Env env;
    env.sensors = &hub;
    env.system = &sys;
    env.wake = [&] {
      std::lock_guard<std::mutex> lock(mutex);
      wake = true;
      woken.notify_one();
    };
    try {
      std::vector<std::unique_ptr<RowStream>> streams;
      for (auto& q : p.queries) streams.push_back(engine.start(*q, p.parameters, env));
      auto stream = merge_streams(std::move(streams));
      size_t printed = 0;
      for (;;) {
        std::vector<Row> rows;
        Step step = stream->next(rows, 256);
        for (auto& r : rows) {
          std::cout << to_json(r) << '\n';
          if (max_rows && ++printed >= max_rows) return std::cout.flush(), 0;
        }
        std::cout.flush();
        if (uint64_t dropped = std::exchange(env.dropped_events, 0))
          std::cerr << "outpost-agent: " << dropped << " events dropped at the source\n";
        if (step.state == Step::State::done) break;
        std::unique_lock<std::mutex> lock(mutex);
        if (step.state == Step::State::parked)
          woken.wait(lock, [&] { return wake; });
        else if (step.state == Step::State::wait)
          woken.wait_for(lock, step.wait, [&] { return wake; });
        wake = false;
      }
    } catch (const std::exception& e) {
      std::cerr << "outpost-agent: " << e.what() << "\n";
      status = 1;
    }
  }
  sys.await_all_actors_done();
  return status;
}

}  // namespace

std::pair<std::string, std::string> parse_parameter(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw std::invalid_argument("parameter \"" + text + "\": expected name=value");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

namespace {

int run_local(const SourceSpec& spec, size_t max_rows) {
  PreparedQuery p;
  try {
    p = prepare(spec, ArtifactRepository::builtin(), Engine(default_registry()));
  } catch (const std::exception& e) {
    std::cerr << "outpost-agent: " << e.what() << "\n";
    return 2;
  }
  return run_prepared(std::move(p), max_rows);
}

}  // namespace

int run_local_query(const std::string& vql, const Parameters& parameters, size_t max_rows) {
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::vql;
  spec.query = vql;
  spec.parameters = parameters;
  return run_local(spec, max_rows);
}

int run_local_artifact(const std::string& name, const Parameters& parameters, size_t max_rows) {
  SourceSpec spec;
  spec.kind = SourceSpec::Kind::artifact;
  spec.name = name;
  spec.parameters = parameters;
  return run_local(spec, max_rows);
}

namespace {

// A description's first sentence, on one line: up to the first '.', '!' or
// '?' that ends the text or is followed by a space and a capital letter (so
// "e.g. this" and "/proc/net.x" do not end it); the whole text if none does.
std::string first_sentence(const std::string& description) {
  std::string text;  // the words, one space between each
  std::istringstream words(description);
  for (std::string word; words >> word;) text += (text.empty() ? "" : " ") + word;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '.' && text[i] != '!' && text[i] != '?') continue;
    if (i + 1 == text.size()) break;
    if (text[i + 1] == ' ' && i + 2 < text.size() && std::isupper(static_cast<unsigned char>(text[i + 2])))
      return text.substr(0, i + 1);
  }
  return text;
}

}  // namespace

int list_artifacts() {
  for (auto& [name, a] : ArtifactRepository::builtin().all())
    std::cout << name << (a.event ? " (event)" : "") << ": " << first_sentence(a.description) << "\n";
  return 0;
}

int show_artifact(const std::string& name) {
  auto a = ArtifactRepository::builtin().find(name);
  if (!a) {
    std::cerr << "outpost-agent: unknown artifact " << name << " (see `outpost-agent artifacts list`)\n";
    return 2;
  }
  std::cout << a->yaml;
  return 0;
}

}  // namespace outpost::tools
