// watch_processes() and watch_mounts(): shared sensors that run pslist() and
// mounts() every period and report the difference.

#include <filesystem>
#include <map>

#include "queries/engine.hpp"
#include "queries/event_plugins.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Every row of a collection plugin, run to its end on the sensor's thread.
std::vector<Row> collect(const char* plugin, const Paths& paths) {
  Env env;
  env.paths = std::make_shared<const Paths>(paths);
  auto stream = default_registry().plugin(plugin)->make(Args(plugin, {}), env);
  std::vector<Row> rows;
  while (stream->next(rows, 1024).state != Step::State::done) {
  }
  return rows;
}

std::string text_of(const Row& row, const char* column) {
  auto v = row.find(column);
  return v ? to_string(*v) : std::string();
}

// What a scan keys its rows by; rows whose key is new were added, rows whose
// key is gone were removed. The first scan is the baseline.
class DiffScanner : public Scanner {
 public:
  DiffScanner(std::chrono::milliseconds period, const char* added, const char* removed)
      : period_(period), added_(added), removed_(removed) {}
  std::chrono::milliseconds period() const override { return period_; }

  void scan(std::vector<Row>& events) override {
    std::map<std::string, Row> now;
    for (auto& row : current()) now.emplace(key(row), std::move(row));
    if (started_) {
      for (auto& [k, row] : now)
        if (!last_.count(k)) events.push_back(event(added_, row));
      for (auto& [k, row] : last_)
        if (!now.count(k)) events.push_back(event(removed_, row));
    }
    started_ = true;
    last_ = std::move(now);
  }

 protected:
  virtual std::vector<Row> current() = 0;
  virtual std::string key(const Row& row) const = 0;
  virtual void add_columns(Row&) const {}  // an event's own, after the row's

 private:
  Row event(const char* action, const Row& row) const {
    Row e;
    e.set("Time", timestamp_now());
    e.set("Action", action);
    for (auto& [k, v] : row.items()) e.set(k, v);
    add_columns(e);
    return e;
  }

  std::chrono::milliseconds period_;
  const char* added_;
  const char* removed_;
  bool started_ = false;
  std::map<std::string, Row> last_;
};

// A pid with its start time: a reused pid is another process.
class ProcessScanner : public DiffScanner {
 public:
  ProcessScanner(Paths paths, std::chrono::milliseconds period)
      : DiffScanner(period, "started", "exited"), paths_(std::move(paths)) {}

 private:
  std::vector<Row> current() override { return collect("pslist", paths_); }
  std::string key(const Row& r) const override { return text_of(r, "Pid") + "@" + text_of(r, "CreateTime"); }
  Paths paths_;
};

class MountScanner : public DiffScanner {
 public:
  MountScanner(Paths paths, std::chrono::milliseconds period)
      : DiffScanner(period, "added", "removed"), paths_(std::move(paths)) {}

 private:
  std::vector<Row> current() override { return collect("mounts", paths_); }
  std::string key(const Row& r) const override {
    return text_of(r, "MountId") + " " + text_of(r, "MountPoint") + " " + text_of(r, "Source");
  }
  void add_columns(Row& e) const override { e.set("Removable", removable(text_of(e, "Device"))); }

  // A block device the kernel calls removable (its own or, for a partition,
  // its disk's `removable` file), or one on a USB bus: many USB sticks
  // report removable = 0.
  bool removable(const std::string& major_minor) const {
    if (major_minor.empty() || major_minor.rfind("0:", 0) == 0) return false;  // tmpfs, proc...
    std::error_code ec;
    fs::path dev = fs::canonical(paths_.sys / "dev" / "block" / major_minor, ec);
    if (ec) return false;
    if (dev.string().find("/usb") != std::string::npos) return true;
    for (auto dir : {dev, dev.parent_path()})
      if (auto flag = read_small_file(dir / "removable", 16); flag && !flag->empty() && (*flag)[0] == '1')
        return true;
    return false;
  }
  Paths paths_;
};

}  // namespace

void add_process_event_plugins(Registry& r) {
  r.add(PluginSpec{"watch_processes",
                   "Processes that start or exit, by comparing /proc every period: Time, Action "
                   "(started, exited), then pslist()'s columns. Shorter-lived processes are not seen.",
                   {{"period", "seconds", false, "0.01 to 86400, default 1"}}, true, [](const Args& a, Env& env) {
                     auto period = period_arg(a, "period", 1s);
                     return subscribe(a, env, [paths = env.paths, period] {
                       return std::make_unique<ProcessScanner>(*paths, period);
                     });
                   }},
                check_period);
  r.add(PluginSpec{"watch_mounts",
                   "Mounts added and removed, by comparing the mount table every period: Time, Action "
                   "(added, removed), mounts()'s columns, and Removable (a USB or removable drive).",
                   {{"period", "seconds", false, "0.01 to 86400, default 1"}}, true, [](const Args& a, Env& env) {
                     auto period = period_arg(a, "period", 1s);
                     return subscribe(a, env, [paths = env.paths, period] {
                       return std::make_unique<MountScanner>(*paths, period);
                     });
                   }},
                check_period);
}

}  // namespace outpost::vql
