// watch_ebpf(): kernel events in Velociraptor's row shape ({System, EventData},
// tracee's event names). The process events come from one shared sensor (the
// ebpf or proc connector backend, kernel_process.hpp), the network events
// from one per group of programs (net_events.cpp); each query filters them
// down to the events it named.

#include <sys/utsname.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>

#include "queries/engine.hpp"
#include "queries/event_plugins.hpp"
#include "queries/kernel_process.hpp"
#include "queries/kernel_scanner.hpp"

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
  const char* sensor;  // the sensor (group of programs) it comes from
  const char* description;
};
const EventInfo kEvents[] = {
    {"sched_process_exec", "process",
     "A program started (execve): EventData cmdpath (as given to execve), pathname (the executable), "
     "argv (a list), cwd; argv_truncated beyond 4 KiB, path_truncated for a path deeper than 24 components"},
    {"sched_process_fork", "process",
     "A new process (not a thread); System is the forking process: EventData parent_pid, parent_start_time, "
     "child_pid, start_time"},
    {"sched_process_exit", "process",
     "A process ended (its last thread): EventData exit_code, signal (0: none), process_group_exit"},
    {"security_socket_connect", "tcp",
     "A TCP connection a process made, when its outcome is known (the SYN answered, or given up): EventData "
     "remote_addr {sa_family, sin_port, sin_addr} (sin6_* for IPv6), local_addr, established (bool), "
     "duration_ns"},
    {"security_socket_accept", "tcp",
     "A TCP connection a process accepted (accept, accept4): EventData local_addr, remote_addr"},
    {"net_flow_tcp_end", "tcp",
     "A TCP connection ended (its socket closed): EventData src, dst, src_port, dst_port (src the local side), "
     "closer_pid (the process whose close or shutdown ended it; 0 unknown); System is the process that made or "
     "accepted it, where Outpost saw that"},
    {"net_packet_dns", "dns",
     "A DNS message over UDP port 53: a query (System: the sender) or an answer (System: the process that sent "
     "the socket's last query): EventData src, dst, src_port, dst_port, metadata {src_ip, dst_ip, src_port, "
     "dst_port, protocol, packet_len, direction}, proto_dns (decoded, as tracee)"},
    {"net_packet_http_request", "tcp_data",
     "An HTTP/1.x request a process sent (the first 256 bytes of a send on a TCP connection that start a request "
     "line): EventData metadata {src_ip, dst_ip, src_port, dst_port, protocol, packet_len}, http_request "
     "{method, protocol, host, uri_path, headers, content_length}"},
};

Row event_row(const ProcessEvent& e, const std::string& host) {
  // A fork's System is the forking process, as tracee has it; the child is in EventData.
  bool fork = e.kind == ProcessEvent::Kind::fork;
  SystemFields f;
  f.time_ns = e.time_ns;
  f.event = event_name(e.kind);
  f.pid = fork ? Value(int64_t{e.ppid}) : Value(int64_t{e.pid});
  f.tid = fork ? Value() : Value(int64_t{e.tid});
  // Unknown (NULL): a fork's grandparent, and a parent the proc connector could not read.
  f.ppid = fork || (e.partial && e.ppid == 0) ? Value() : Value(int64_t{e.ppid});
  f.uid = e.uid >= 0 ? Value(e.uid) : Value();
  f.gid = e.gid >= 0 ? Value(e.gid) : Value();
  f.comm = e.comm;
  uint64_t start = fork ? e.parent_start_ns : e.start_ns;
  f.start = start ? Value(Timestamp{static_cast<int64_t>(start)}) : Value();
  Dict system = system_row(f, host);
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

std::unique_ptr<Scanner> process_scanner(const ProcessSourceOptions& options) {
  return std::make_unique<KernelScanner<ProcessEventSource, ProcessEvent>>(
      [options] { return open_process_events(options); },
      [host = host_name()](const ProcessEvent& e, std::vector<Row>& rows) { rows.push_back(event_row(e, host)); },
      [](const ProcessEventSource& source) { return std::string(backend_name(source.backend())); });
}

// One subscription per sensor the events named come from, each filtered
// down to them; merged when there are several.
std::unique_ptr<RowStream> watch(const Args& a, Env& env) {
  auto names = event_names(a);
  if (!env.sensors) throw QueryError("watch_ebpf(): event plugins run only in an agent (no sensors here)");
  std::map<std::string, std::vector<std::string>> by_sensor;
  for (auto& name : names)
    for (auto& e : kEvents)
      if (name == e.name) by_sensor[e.sensor].push_back(name);
  auto& settings = env.sensors->settings();
  std::vector<std::unique_ptr<RowStream>> streams;
  for (auto& [sensor, wanted] : by_sensor) {
    EventFilter filter = [wanted = wanted](const Row& row) {
      auto system = row.find("System");
      auto* d = system ? system->as_dict() : nullptr;
      auto* name = d && d->find("EventName") ? d->find("EventName")->as_string() : nullptr;
      return name && std::find(wanted.begin(), wanted.end(), *name) != wanted.end();
    };
    ScannerFactory make;
    if (sensor == "process") {
      make = [options = settings.process_events] { return process_scanner(options); };
    } else {
      NetSourceOptions options;
      options.ring_buffer_bytes = settings.process_events.ring_buffer_bytes;
      options.accept_tracepoint = settings.accept_tracepoint;
      make = [group = sensor, options] { return net_scanner(group, options); };
    }
    streams.push_back(env.sensors->subscribe("watch_ebpf(" + sensor + ")", make, env, kKernelQueueEvents,
                                             std::move(filter)));
  }
  return streams.size() == 1 ? std::move(streams[0]) : merge_streams(std::move(streams));
}

}  // namespace

Dict system_row(const SystemFields& f, const std::string& host) {
  Dict system;
  system.reserve(14);
  system.set("Timestamp", Timestamp{static_cast<int64_t>(f.time_ns)});
  system.set("EventName", f.event);
  system.set("ProcessID", f.pid);
  system.set("ThreadID", f.tid);
  system.set("ParentProcessID", f.ppid);
  // No pid namespaces are translated: the host's ids, under both names.
  system.set("HostProcessID", f.pid);
  system.set("HostThreadID", f.tid);
  system.set("HostParentProcessID", f.ppid);
  system.set("UserID", f.uid);
  system.set("GroupID", f.gid);
  system.set("ProcessName", f.comm);
  system.set("ProcessStartTime", f.start);
  system.set("HostName", host);
  return system;
}

std::string host_name() {
  struct utsname uts {};
  return ::uname(&uts) == 0 ? uts.nodename : "";
}

void add_kernel_event_plugins(Registry& r) {
  r.add(PluginSpec{"watch_ebpf",
                   "Kernel events as they happen, in Velociraptor's shape: System {Timestamp, EventName, ProcessID, "
                   "ThreadID, ParentProcessID, Host*ID, UserID, GroupID, ProcessName, ProcessStartTime, HostName} "
                   "and EventData (per event: ebpf_events()). From eBPF, or the proc connector where eBPF cannot "
                   "load (the sensor's status says which).",
                   {{"events", "list of strings", true, "event names (ebpf_events())"}}, true,
                   [](const Args& a, Env& env) { return watch(a, env); }},
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
