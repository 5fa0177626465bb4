// watch_ebpf(): kernel events in Velociraptor's row shape ({System, EventData},
// tracee's event names). The process events come from one shared sensor (the
// ebpf or proc connector backend, kernel_process.hpp); each query filters it
// down to the events it named.

#include <sys/utsname.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "queries/engine.hpp"
#include "queries/event_plugins.hpp"
#include "queries/kernel_process.hpp"

namespace outpost::vql {
namespace {

// A query's queue: an exec storm comes in bursts of thousands.
constexpr size_t kKernelQueueEvents = 16384;

const char* event_name(ProcessEvent::Kind kind) {
  switch (kind) {
    case ProcessEvent::Kind::exec: return "sched_process_exec";
    case ProcessEvent::Kind::fork: return "sched_process_fork";
    case ProcessEvent::Kind::exit: return "sched_process_exit";
  }
  return "?";
}

struct EventInfo {
  const char* name;
  const char* description;
};
const EventInfo kEvents[] = {
    {"sched_process_exec",
     "A program started (execve): EventData cmdpath (as given to execve), pathname (the executable), "
     "argv (a list), cwd; argv_truncated beyond 4 KiB, path_truncated for a path deeper than 24 components"},
    {"sched_process_fork", "A new process (not a thread); System is the forking process: EventData parent_pid, "
                           "parent_start_time, child_pid, start_time"},
    {"sched_process_exit", "A process ended (its last thread): EventData exit_code, signal (0: none), "
                           "process_group_exit"},
};

std::string hostname() {
  struct utsname uts {};
  return ::uname(&uts) == 0 ? uts.nodename : "";
}

Row event_row(const ProcessEvent& e, const std::string& host) {
  // A fork's System is the forking process, as tracee has it; the child is in EventData.
  bool fork = e.kind == ProcessEvent::Kind::fork;
  Dict system;
  system.reserve(14);
  system.set("Timestamp", Timestamp{static_cast<int64_t>(e.time_ns)});
  system.set("EventName", event_name(e.kind));
  Value pid = fork ? Value(int64_t{e.ppid}) : Value(int64_t{e.pid});
  Value tid = fork ? Value() : Value(int64_t{e.tid});
  system.set("ProcessID", pid);
  system.set("ThreadID", tid);
  // Unknown (NULL): a fork's grandparent, and a parent the proc connector could not read.
  Value ppid = fork || (e.partial && e.ppid == 0) ? Value() : Value(int64_t{e.ppid});
  system.set("ParentProcessID", ppid);
  // No pid namespaces are translated: the host's ids, under both names.
  system.set("HostProcessID", pid);
  system.set("HostThreadID", tid);
  system.set("HostParentProcessID", ppid);
  system.set("UserID", e.uid >= 0 ? Value(e.uid) : Value());
  system.set("GroupID", e.gid >= 0 ? Value(e.gid) : Value());
  system.set("ProcessName", e.comm);
  uint64_t start = fork ? e.parent_start_ns : e.start_ns;
  system.set("ProcessStartTime", start ? Value(Timestamp{static_cast<int64_t>(start)}) : Value());
  system.set("HostName", host);
  Dict data;
  data.reserve(6);
  switch (e.kind) {
    case ProcessEvent::Kind::exec: {
      data.set("cmdpath", e.filename);
      data.set("pathname", e.exe);
      List argv;
      for (auto& a : e.argv) argv.emplace_back(a);
      data.set("argv", std::move(argv));
      data.set("cwd", e.cwd);
      if (e.argv_cut) data.set("argv_truncated", true);
      if (e.path_cut) data.set("path_truncated", true);  // a path deeper than 24 components: its root side is cut
      break;
    }
    case ProcessEvent::Kind::fork:
      data.set("parent_pid", int64_t{e.ppid});
      data.set("parent_start_time",
               e.parent_start_ns ? Value(Timestamp{static_cast<int64_t>(e.parent_start_ns)}) : Value());
      data.set("child_pid", int64_t{e.pid});
      data.set("start_time", e.start_ns ? Value(Timestamp{static_cast<int64_t>(e.start_ns)}) : Value());
      break;
    case ProcessEvent::Kind::exit:
      data.set("exit_code", int64_t{(e.status >> 8) & 0xff});
      data.set("signal", int64_t{e.status & 0x7f});
      data.set("process_group_exit", true);
      break;
  }
  if (e.partial) data.set("partial", true);  // proc connector: the process was gone before /proc was read
  Row row;
  row.reserve(2);
  row.set("System", std::move(system));
  row.set("EventData", std::move(data));
  return row;
}

class ProcessEventScanner : public Scanner {
 public:
  static constexpr size_t kGatherEvents = 256;
  static constexpr std::chrono::milliseconds kGatherTime{5};

  // The source opens in the first scan, on the sensor's thread: loading the
  // programs (the kernel verifies them) takes a few hundred ms, which the
  // subscribing query's worker thread should not wait for. A source that
  // cannot start fails the sensor, and its queries, with the reasons.
  explicit ProcessEventScanner(const ProcessSourceOptions& options) : options_(options), host_(hostname()) {}

  std::chrono::milliseconds period() const override { return std::chrono::milliseconds(0); }

  void scan(std::vector<Row>& events) override {
    if (!source_) {
      auto source = std::shared_ptr<ProcessEventSource>(open_process_events(options_));
      backend_ = backend_name(source->backend());
      std::lock_guard<std::mutex> lock(mutex_);
      source_ = std::move(source);
      return;  // the messages that came meanwhile (subscriptions) first: an interrupt then was lost
    }
    raw_.clear();
    try {
      bool woken = !source_->read(raw_, 1000);  // an interrupt may still hand over events: kept
      // A few events: more are likely on their way (a storm, a build). Taking
      // them together costs one wakeup of this thread and of each query, not
      // one per event, for a delay nobody downstream of a buffer notices.
      if (!woken && !raw_.empty() && raw_.size() < kGatherEvents) {
        std::this_thread::sleep_for(kGatherTime);
        source_->read(raw_, 0);
      }
    } catch (...) {
      // The sensor fails with this; its programs are detached now, not when its last query leaves.
      std::lock_guard<std::mutex> lock(mutex_);
      source_.reset();
      throw;
    }
    events.reserve(events.size() + raw_.size());
    for (auto& e : raw_) events.push_back(event_row(e, host_));
  }

  uint64_t take_lost() override { return source_ ? source_->take_lost() : 0; }
  void interrupt() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (source_) source_->interrupt();  // not open yet: the scan that opens it does not wait
  }
  void describe(caf::settings& s) const override { caf::put(s, "backend", backend_); }

 private:
  const ProcessSourceOptions options_;
  // Set once by the sensor's thread; read there, and by interrupt() from others.
  std::shared_ptr<ProcessEventSource> source_;
  mutable std::mutex mutex_;
  std::string backend_ = "starting";  // then the backend that opened (the sensor's error says when it failed)
  std::string host_;
  std::vector<ProcessEvent> raw_;
};

// The events named, checked: a string or a list of strings.
std::vector<std::string> event_names(const Args& args) {
  auto names = args.strings("events");
  if (names.empty()) args.fail("events", "name at least one event (ebpf_events() lists them)");
  for (auto& name : names)
    if (std::none_of(std::begin(kEvents), std::end(kEvents), [&](auto& e) { return name == e.name; })) {
      std::string known;
      for (auto& e : kEvents) known += (known.empty() ? "" : ", ") + std::string(e.name);
      args.fail("events", "'" + name + "' is not an event Outpost takes from the kernel (it takes " + known + ")");
    }
  return names;
}

}  // namespace

void add_kernel_event_plugins(Registry& r) {
  r.add(PluginSpec{"watch_ebpf",
                   "Kernel events as they happen, in Velociraptor's shape: System {Timestamp, EventName, ProcessID, "
                   "ThreadID, ParentProcessID, Host*ID, UserID, GroupID, ProcessName, ProcessStartTime, HostName} "
                   "and EventData (per event: ebpf_events()). From eBPF, or the proc connector where eBPF cannot "
                   "load (the sensor's status says which).",
                   {{"events", "list of strings", true, "event names (ebpf_events())"}}, true,
                   [](const Args& a, Env& env) {
                     auto names = event_names(a);
                     if (!env.sensors) throw QueryError("watch_ebpf(): event plugins run only in an agent (no sensors here)");
                     auto options = env.sensors->settings().process_events;
                     EventFilter filter = [names](const Row& row) {
                       auto system = row.find("System");
                       auto* d = system ? system->as_dict() : nullptr;
                       auto* name = d && d->find("EventName") ? d->find("EventName")->as_string() : nullptr;
                       return name && std::find(names.begin(), names.end(), *name) != names.end();
                     };
                     return env.sensors->subscribe(
                         "watch_ebpf(process)",
                         [options] { return std::make_unique<ProcessEventScanner>(options); }, env,
                         kKernelQueueEvents, std::move(filter));
                   }},
        [](const Args& a) {
          if (a.find("events")) event_names(a);
        });
  r.add(FunctionSpec{"process_events_backend",
                     "Where watch_ebpf()'s process events would come from here, judged without loading programs: "
                     "'ebpf' (BTF and the capabilities are there), 'proc_connector', or NULL when neither can start "
                     "(the reason is logged).",
                     {},
                     [](const Args&, Env& env) -> Value {
                       if (!env.sensors) return Value();
                       std::string why;
                       if (auto b = likely_process_backend(env.sensors->settings().process_events, why))
                         return backend_name(*b);
                       spdlog::warn("process events from the kernel: {}", why);
                       return Value();
                     }});
  r.add(PluginSpec{"ebpf_events",
                   "The events watch_ebpf() takes: Event, Description.",
                   {},
                   false,
                   [](const Args&, Env&) {
                     std::vector<Row> rows;
                     for (auto& e : kEvents) {
                       Row row;
                       row.set("Event", e.name);
                       row.set("Description", e.description);
                       rows.push_back(std::move(row));
                     }
                     return rows_stream(std::move(rows));
                   }});
}

}  // namespace outpost::vql
