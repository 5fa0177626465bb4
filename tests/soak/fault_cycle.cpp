#include "tests/soak/fault_cycle.hpp"

#include <signal.h>

#include <algorithm>
#include <regex>
#include <sstream>
#include <thread>

#include "schemas/json.hpp"

namespace outpost::soak {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

class Cycles {
 public:
  Cycles(World& world, FaultReport& report) : w_(world), r_(report), rng_(report.options.seed) {}

  void run() {
    w_.start_collector();
    w_.start_agent();
    for (int cycle = 0; cycle < r_.options.cycles; ++cycle) {
      Fault f = pick();
      size_t refusals = disk_refusals(f);
      apply(f);
      if (f != Fault::cut && f != Fault::reset) std::this_thread::sleep_for(milliseconds(300 + rng_() % 1200));
      finish_applying(f);
      auto healed = Clock::now();
      int64_t healed_ns = wall_ns();
      heal(f);
      auto& stats = r_.faults[static_cast<size_t>(f)];
      ++stats.count;
      stats.refused += disk_refusals(f) > refusals;
      // Recovered once a row made after the healing is stored.
      if (!testing::eventually([&] { return w_.newest_row_ns(w_.run()) >= healed_ns; },
                               r_.options.recovery_limit)) {
        r_.problems.push_back(std::string("cycle ") + std::to_string(cycle + 1) + ": no row made after healing " +
                              to_string(f) + " was stored within " +
                              std::to_string(r_.options.recovery_limit.count()) + " s (agent run " +
                              std::to_string(w_.run()) + ")");
        return;
      }
      stats.recovery_ms.push_back(ms_since(healed));
      std::this_thread::sleep_for(milliseconds(200 + rng_() % 600));
    }
  }

  // Stops the last run with SIGTERM, drains its buffer with a run of no
  // query, and checks every row.
  void finish() {
    heal_everything();
    int code = w_.stop_agent(SIGTERM);
    if (code != 0)
      r_.problems.push_back("agent run " + std::to_string(w_.run()) + " exited " + std::to_string(code) +
                            " on SIGTERM; its log " + w_.agent_log(w_.run()).string());
    int last = w_.run();
    auto committed = committed_rows(testing::slurp(w_.agent_log(last)));
    auto [buffered_max, buffered] = w_.buffered_events();
    if (buffered) {
      w_.start_agent(/*quiet=*/true);
      bool drained = testing::eventually([&] { return highest_record(w_.agent_data()) >= buffered_max; },
                                         std::chrono::seconds(120));
      if (!drained)
        r_.problems.push_back("the buffer's " + std::to_string(buffered) + " records (through " +
                              std::to_string(buffered_max) + ") were not all stored within 120 s");
      w_.stop_agent(SIGTERM);
    }
    w_.kill_collector(SIGTERM);
    r_.agent_runs = w_.run();
    uint64_t mark = w_.events_mark();
    auto [left_max, left] = w_.buffered_events();
    r_.left_in_buffer = left;
    if (left_max > mark)
      r_.problems.push_back("the buffer holds records through " + std::to_string(left_max) +
                            " the collector has not marked stored (mark " + std::to_string(mark) + ")");
    for (int run = 1; run <= w_.run(); ++run) read_damage(testing::slurp(w_.agent_log(run)));
    r_.verdict = verify(w_.agent_data(), corruptions_, committed);
    if (!r_.damage.lost_unknown && r_.verdict.damaged_records > r_.damage.quarantined + r_.damage.salvage_lost)
      r_.problems.push_back(std::to_string(r_.verdict.damaged_records) +
                            " records are missing where the buffer was corrupted, but the agent reported " +
                            std::to_string(r_.damage.quarantined + r_.damage.salvage_lost) + " lost");
  }

 private:
  Fault pick() {
    for (;;) {
      auto f = static_cast<Fault>(rng_() % kFaultCount);
      bool disk = f == Fault::agent_disk_full || f == Fault::collector_disk_full;
      if (!disk || w_.agent_disk()) return f;
    }
  }

  void apply(Fault f) {
    switch (f) {
      case Fault::kill_agent: w_.stop_agent(SIGKILL); break;
      case Fault::kill_collector: w_.kill_collector(SIGKILL); break;
      case Fault::kill_both:
        w_.kill_collector(SIGKILL);
        w_.stop_agent(SIGKILL);
        break;
      case Fault::cut: w_.proxy().cut(); break;
      case Fault::reset: w_.proxy().reset(); break;
      case Fault::throttle: w_.proxy().set_rate(16 * 1024); break;
      case Fault::blackhole: w_.proxy().blackhole(true); break;
      case Fault::agent_disk_full:  // with the link stalled, so that the buffer must grow
        w_.proxy().blackhole(true);
        w_.agent_disk()->fill();
        break;
      case Fault::collector_disk_full: w_.collector_disk()->fill(); break;
      case Fault::corrupt_buffer:  // with a backlog: the collector is away meanwhile
        w_.kill_collector(SIGKILL);
        break;
    }
  }

  // The second half of a fault, after its hold.
  void finish_applying(Fault f) {
    if (f != Fault::corrupt_buffer) return;
    w_.stop_agent(SIGKILL);
    corruptions_.push_back({w_.run(), highest_record(w_.agent_data())});
    w_.corrupt_buffer(rng_, 4 + static_cast<int>(rng_() % 7));
  }

  void heal(Fault f) {
    switch (f) {
      case Fault::kill_agent: w_.start_agent(); break;
      case Fault::kill_collector: w_.start_collector(); break;
      case Fault::kill_both:
        w_.start_collector();
        w_.start_agent();
        break;
      case Fault::throttle: w_.proxy().set_rate(0); break;
      case Fault::blackhole: w_.proxy().blackhole(false); break;
      case Fault::agent_disk_full:
        w_.agent_disk()->free();
        w_.proxy().blackhole(false);
        break;
      case Fault::collector_disk_full: w_.collector_disk()->free(); break;
      case Fault::corrupt_buffer:
        w_.start_collector();
        w_.start_agent();  // it finds the damage, salvages or quarantines, and sets the file aside
        w_.remove_damaged_copies();
        break;
      case Fault::cut:
      case Fault::reset: break;
    }
  }

  // Writes refused for a full disk so far, in the logs of the side `f` fills.
  size_t disk_refusals(Fault f) const {
    if (f == Fault::agent_disk_full) return occurrences(w_.agent_log(w_.run()), "disk full");
    if (f == Fault::collector_disk_full) return occurrences(w_.collector_log(), "No space left on device");
    return 0;
  }

  static size_t occurrences(const fs::path& file, const std::string& what) {
    std::string text = testing::slurp(file);
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }

  void heal_everything() {
    w_.proxy().set_rate(0);
    w_.proxy().blackhole(false);
    if (w_.agent_disk()) w_.agent_disk()->free();
    if (w_.collector_disk()) w_.collector_disk()->free();
    if (w_.collector_pid() <= 0) w_.start_collector();
  }

  void read_damage(const std::string& log) {
    static const std::regex quarantined("record \\d+ is damaged; moved to quarantine");
    static const std::regex salvaged("salvaged \\d+ records, lost (\\d+|an unknown number)");
    auto& d = r_.damage;
    d.quarantined += std::distance(std::sregex_iterator(log.begin(), log.end(), quarantined), {});
    for (std::sregex_iterator it(log.begin(), log.end(), salvaged), end; it != end; ++it) {
      ++d.salvages;
      if ((*it)[1] == "an unknown number")
        d.lost_unknown = true;
      else
        d.salvage_lost += std::stoull((*it)[1]);
    }
  }

  World& w_;
  FaultReport& r_;
  std::mt19937_64 rng_;
  std::vector<Corruption> corruptions_;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

}  // namespace

const char* to_string(Fault f) {
  switch (f) {
    case Fault::kill_agent: return "kill_agent";
    case Fault::kill_collector: return "kill_collector";
    case Fault::kill_both: return "kill_both";
    case Fault::cut: return "cut";
    case Fault::reset: return "reset";
    case Fault::throttle: return "throttle";
    case Fault::blackhole: return "blackhole";
    case Fault::agent_disk_full: return "agent_disk_full";
    case Fault::collector_disk_full: return "collector_disk_full";
    case Fault::corrupt_buffer: return "corrupt_buffer";
  }
  return "?";
}

bool FaultReport::ok() const {
  return problems.empty() && verdict.lost == 0 && verdict.duplicated == 0 && verdict.reordered == 0;
}

std::string FaultReport::json() const {
  std::ostringstream o;
  auto str = [](const std::string& s) { return schemas::json_string(s); };
  o << "{\"cycles\":" << options.cycles << ",\"seed\":" << options.seed << ",\"seconds\":" << seconds
    << ",\"agent_runs\":" << agent_runs << ",\"query_runs\":" << verdict.query_runs << ",\"rows\":" << verdict.rows
    << ",\"records\":" << verdict.records << ",\"lost\":" << verdict.lost << ",\"duplicated\":" << verdict.duplicated
    << ",\"reordered\":" << verdict.reordered << ",\"lost_to_damage\":" << verdict.lost_to_damage
    << ",\"damaged_records\":" << verdict.damaged_records << ",\"damage_reported\":{\"quarantined\":"
    << damage.quarantined << ",\"salvages\":" << damage.salvages << ",\"salvage_lost\":" << damage.salvage_lost
    << ",\"lost_unknown\":" << (damage.lost_unknown ? "true" : "false") << "},\"left_in_buffer\":" << left_in_buffer
    << ",\"disk_faults\":" << (disks_unavailable.empty() ? "true" : str(disks_unavailable)) << ",\"faults\":{";
  for (size_t i = 0; i < kFaultCount; ++i) {
    auto& f = faults[i];
    o << (i ? "," : "") << str(to_string(static_cast<Fault>(i))) << ":{\"count\":" << f.count
      << (i == size_t(Fault::agent_disk_full) || i == size_t(Fault::collector_disk_full)
              ? ",\"refused_writes_in\":" + std::to_string(f.refused)
              : std::string())
      << ",\"recovery_ms_p50\":" << percentile(f.recovery_ms, 0.5)
      << ",\"recovery_ms_max\":" << percentile(f.recovery_ms, 1.0) << "}";
  }
  o << "},\"problems\":[";
  std::vector<std::string> all = problems;
  all.insert(all.end(), verdict.problems.begin(), verdict.problems.end());
  for (size_t i = 0; i < all.size(); ++i) o << (i ? "," : "") << str(all[i]);
  o << "],\"ok\":" << (ok() ? "true" : "false") << "}";
  return o.str();
}

std::string FaultReport::text() const {
  std::ostringstream o;
  o << "outpost-soak: " << options.cycles << " cycles (seed " << options.seed << ") in " << seconds << " s, "
    << agent_runs << " agent runs, " << verdict.rows << " rows in " << verdict.query_runs << " query runs\n";
  for (size_t i = 0; i < kFaultCount; ++i)
    if (faults[i].count)
      o << "  " << to_string(static_cast<Fault>(i)) << ": " << faults[i].count << " times, recovery p50 "
        << percentile(faults[i].recovery_ms, 0.5) << " ms, max " << percentile(faults[i].recovery_ms, 1.0) << " ms"
        << (faults[i].refused ? ", writes refused in " + std::to_string(faults[i].refused) : std::string()) << "\n";
  if (!disks_unavailable.empty()) o << "  disk-full faults not run: " << disks_unavailable << "\n";
  o << "lost " << verdict.lost << ", duplicated " << verdict.duplicated << ", reordered " << verdict.reordered
    << "; lost to deliberate buffer damage " << verdict.lost_to_damage << " rows in " << verdict.damaged_records
    << " records (the agent reported " << damage.quarantined << " quarantined, " << damage.salvage_lost
    << " lost in " << damage.salvages << " salvages" << (damage.lost_unknown ? ", and an unknown number" : "")
    << ")\n";
  for (auto& p : problems) o << "PROBLEM: " << p << "\n";
  for (auto& p : verdict.problems) o << "PROBLEM: " << p << "\n";
  o << (ok() ? "OK" : "FAILED");
  return o.str();
}

FaultReport run_fault_soak(const WorldOptions& world_options, const FaultSoakOptions& options) {
  FaultReport report;
  report.options = options;
  auto start = Clock::now();
  World world(world_options);
  report.disks_unavailable = world.disks_unavailable();
  Cycles cycles(world, report);
  cycles.run();
  if (report.problems.empty()) cycles.finish();
  report.seconds = ms_since(start) / 1000;
  if (!report.ok()) report.problems.push_back("everything is kept in " + world.keep().string());
  return report;
}

}  // namespace outpost::soak
