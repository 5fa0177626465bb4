#include "tests/soak/memory_soak.hpp"

#include <signal.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "schemas/json.hpp"

namespace outpost::soak {

namespace {

using Clock = std::chrono::steady_clock;

// VmRSS of a live process in bytes; 0 once it is gone or a zombie.
uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  uint64_t rss = 0;
  bool alive = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("State:", 0) == 0) alive = line.find('Z') == std::string::npos;
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stoull(line.substr(6)) * 1024;
  }
  return alive ? rss : 0;
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// From the first sample at or after the warm-up to the largest after it.
double growth_mib(const std::vector<MemorySample>& samples, double warmup, uint64_t MemorySample::*field) {
  auto base = std::find_if(samples.begin(), samples.end(), [&](auto& s) { return s.seconds >= warmup; });
  if (base == samples.end()) return 0;
  uint64_t top = (*base).*field;
  for (auto it = base; it != samples.end(); ++it) top = std::max(top, (*it).*field);
  return mib(top - (*base).*field);
}

// The least-squares slope of `field` over the samples after the warm-up, in MiB per hour.
double mib_per_hour(const std::vector<MemorySample>& samples, double warmup, uint64_t MemorySample::*field) {
  double n = 0, st = 0, sm = 0, stt = 0, stm = 0;
  for (auto& s : samples) {
    if (s.seconds < warmup) continue;
    double t = s.seconds / 3600, m = mib(s.*field);
    n += 1, st += t, sm += m, stt += t * t, stm += t * m;
  }
  double den = n * stt - st * st;
  return n < 2 || den == 0 ? 0 : (n * stm - st * sm) / den;
}

}  // namespace

MemoryReport run_memory_soak(const WorldOptions& world_options, const MemorySoakOptions& options) {
  MemoryReport report;
  report.options = options;
  if (options.warmup_seconds >= options.seconds)
    throw SoakError("--warmup-seconds must be shorter than --seconds: nothing would be measured");
  World world(world_options);
  world.start_collector();
  world.start_agent();
  auto start = Clock::now();
  for (auto next = start;; next += std::chrono::seconds(options.sample_seconds)) {
    std::this_thread::sleep_until(next);
    MemorySample s;
    s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    s.agent_rss = rss_bytes(world.agent_pid());
    s.collector_rss = rss_bytes(world.collector_pid());
    s.stored_bytes = world.stored_bytes();
    report.samples.push_back(s);
    if (!s.agent_rss || !s.collector_rss) {
      report.problems.push_back(std::string(!s.agent_rss ? "the agent" : "the collector") + " died after " +
                                std::to_string(static_cast<int>(s.seconds)) + " s");
      break;
    }
    if (s.seconds >= options.seconds) break;
  }
  report.agent_growth_mib = growth_mib(report.samples, options.warmup_seconds, &MemorySample::agent_rss);
  report.collector_growth_mib = growth_mib(report.samples, options.warmup_seconds, &MemorySample::collector_rss);
  report.agent_mib_per_hour = mib_per_hour(report.samples, options.warmup_seconds, &MemorySample::agent_rss);
  report.collector_mib_per_hour =
      mib_per_hour(report.samples, options.warmup_seconds, &MemorySample::collector_rss);
  for (auto [who, growth] : {std::pair{"agent", report.agent_growth_mib}, {"collector", report.collector_growth_mib}})
    if (growth > options.max_growth_mib)
      report.problems.push_back(std::string("the ") + who + "'s RSS grew " + std::to_string(growth) +
                                " MiB after the warm-up (bound " + std::to_string(options.max_growth_mib) + ")");
  auto& first = report.samples.front();
  auto& last = report.samples.back();
  if (report.samples.size() > 1 && last.stored_bytes <= first.stored_bytes)
    report.problems.push_back("no row was stored between the first sample and the last: nothing flowed");
  if (report.ok()) {
    world.stop_agent(SIGTERM);
    world.kill_collector(SIGTERM);
  } else {
    report.problems.push_back("everything is kept in " + world.keep().string());
  }
  return report;
}

std::string MemoryReport::json() const {
  std::ostringstream o;
  o << "{\"seconds\":" << options.seconds << ",\"sample_seconds\":" << options.sample_seconds
    << ",\"warmup_seconds\":" << options.warmup_seconds << ",\"max_growth_mib\":" << options.max_growth_mib
    << ",\"agent_growth_mib\":" << agent_growth_mib << ",\"collector_growth_mib\":" << collector_growth_mib
    << ",\"agent_mib_per_hour\":" << agent_mib_per_hour << ",\"collector_mib_per_hour\":" << collector_mib_per_hour
    << ",\"samples\":[";
  for (size_t i = 0; i < samples.size(); ++i) {
    auto& s = samples[i];
    o << (i ? "," : "") << "{\"t\":" << s.seconds << ",\"agent_rss\":" << s.agent_rss
      << ",\"collector_rss\":" << s.collector_rss << ",\"stored_bytes\":" << s.stored_bytes << "}";
  }
  o << "],\"problems\":[";
  for (size_t i = 0; i < problems.size(); ++i) o << (i ? "," : "") << schemas::json_string(problems[i]);
  o << "],\"ok\":" << (ok() ? "true" : "false") << "}";
  return o.str();
}

std::string MemoryReport::text() const {
  std::ostringstream o;
  o << "outpost-soak memory: " << samples.size() << " samples over " << options.seconds << " s\n";
  for (auto& s : samples)
    o << "  " << static_cast<int>(s.seconds) << " s: agent " << mib(s.agent_rss) << " MiB, collector "
      << mib(s.collector_rss) << " MiB, stored " << mib(s.stored_bytes) << " MiB\n";
  o << "growth after the " << options.warmup_seconds << " s warm-up: agent " << agent_growth_mib << " MiB, collector "
    << collector_growth_mib << " MiB (bound " << options.max_growth_mib << " MiB each); trend: agent "
    << agent_mib_per_hour << " MiB/h, collector " << collector_mib_per_hour << " MiB/h\n";
  for (auto& p : problems) o << "PROBLEM: " << p << "\n";
  o << (ok() ? "OK" : "FAILED");
  return o.str();
}

}  // namespace outpost::soak
