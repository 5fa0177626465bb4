#include "tools/collector_admin.hpp"

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <yaml-cpp/yaml.h>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "net/collector/collector_store.hpp"
#include "net/collector/jetstream_export.hpp"
#include "persistence/errors.hpp"
#include "net/kj_util.hpp"
#include "schemas/codec.hpp"
#include "schemas/json.hpp"
#include "schemas/protocol.capnp.h"
#include "tools/collector_files.hpp"
#include "tools/inspector_views.hpp"
#include "tools/param_file.hpp"

namespace outpost::admin {
namespace {
namespace fs = std::filesystem;
using protocol::Admin;

// Runs one request against the collector; prints its error and returns 1 if it fails.
int call(const AdminOptions& o, const std::function<kj::Promise<void>(Admin::Client)>& request) {
  std::string socket = o.socket.empty() ? default_socket(o.datadir) : o.socket;
  try {
    auto io = kj::setupAsyncIo();
    kj::Own<kj::AsyncIoStream> stream;
    try {
      stream = io.provider->getNetwork().parseAddress("unix:" + socket).wait(io.waitScope)->connect().wait(io.waitScope);
    } catch (const kj::Exception& e) {
      std::cerr << "outpost-collector: cannot reach the collector at " << socket
                << " (is it running with this --datadir?): " << e.getDescription().cStr() << "\n";
      return 1;
    }
    capnp::TwoPartyClient client(*stream);
    net::within(io.provider->getTimer(), request(client.bootstrap().castAs<Admin>()),
                60 * kj::SECONDS, "the collector's answer")
        .wait(io.waitScope);
    return 0;
  } catch (const kj::Exception& e) {  // before std::exception: kj's also derive from it
    std::string why = e.getDescription().cStr();
    // The agent's refusal crossed two RPC hops: each added this.
    for (const std::string remote = "remote exception: "; why.rfind(remote, 0) == 0;)
      why = why.substr(remote.size());
    std::cerr << "outpost-collector: " << why << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "outpost-collector: " << e.what() << "\n";
    return 1;
  }
}

net::StreamAccess stream_access(protocol::StreamAccess::Reader r) {
  net::StreamAccess a;
  for (auto server : r.getServers()) a.servers.push_back(server.cStr());
  a.stream = r.getStream().cStr();
  a.subject_prefix = r.getSubjectPrefix().cStr();
  a.ca = r.getCa().cStr();
  a.cert = r.getCert().cStr();
  a.key = r.getKey().cStr();
  a.creds = r.getCreds().cStr();
  return a;
}

// Where the rows the commands read are: the collector's stream, or nullopt
// for files in the datadir (a jsonl collector's, or when no collector
// answers at the socket: its files are read without it).
std::optional<net::StreamAccess> rows_stream(const AdminOptions& o) {
  std::string socket = o.socket.empty() ? default_socket(o.datadir) : o.socket;
  if (!fs::exists(socket)) return std::nullopt;
  try {
    auto io = kj::setupAsyncIo();
    auto stream = io.provider->getNetwork().parseAddress("unix:" + socket).wait(io.waitScope)->connect().wait(
        io.waitScope);
    capnp::TwoPartyClient client(*stream);
    auto resp = net::within(io.provider->getTimer(),
                            client.bootstrap().castAs<Admin>().storageRequest().send(), 10 * kj::SECONDS,
                            "the collector's answer")
                    .wait(io.waitScope);
    if (!resp.hasStream()) return std::nullopt;
    return stream_access(resp.getStream());
  } catch (const kj::Exception&) {
    return std::nullopt;  // a socket left by a collector that is gone
  }
}

// A folder of an agent's rows: its files, or its records in the stream.
struct Rows {
  std::unique_ptr<StreamFolders> stream;
  std::unique_ptr<LineSource> lines;
};
Rows rows_of(const AdminOptions& o, const std::optional<net::StreamAccess>& stream, const std::string& agent,
             const std::string& folder, int64_t since_ns) {
  Rows r;
  if (!stream) {
    r.lines = std::make_unique<Follower>(fs::path(o.datadir) / agent / folder);
    return r;
  }
  r.stream = std::make_unique<StreamFolders>(*stream, agent, folder, since_ns);
  r.lines = r.stream->folder(folder);
  return r;
}

// An agent's inspector through the collector: what outpostctl prints on the agent's host.
int inspect(const AdminOptions& o, const std::string& agent, const std::string& what, bool json,
            const CommandArgs::Trace& trace) {
  std::string socket = o.socket.empty() ? default_socket(o.datadir) : o.socket;
  try {
    ctl::Session s(60);
    s.open(ctl::connect_unix(socket, [&](int e) {
      return "cannot reach the collector at " + socket + " (is it running with this --datadir?): " +
             std::strerror(e);
    }));
    auto req = s.client->bootstrap().castAs<Admin>().inspectRequest();
    req.setAgent(agent);
    s.inspector = req.send().getInspector();
    s.hello();
    if (what == "status") ctl::print_status(s, json);
    else if (what == "actors") ctl::print_actors(s, json, "id", "");
    else if (what == "tree") ctl::print_tree(s, json);
    else if (what == "warnings") ctl::print_warnings(s, json);
    else if (what == "logs") ctl::logs(s, false, json);
    else if (what == "buffer") ctl::print_kind(s, json, {"buffer"}, false);
    else if (what == "link") ctl::print_kind(s, json, {"net-link", "link"}, false);
    else if (what == "queries") json ? ctl::print_kind(s, json, {"query"}, true) : ctl::print_actors(s, json, "id", "query");
    else if (what == "trace")
      return ctl::trace(s, trace.actors, trace.seconds, trace.count, trace.rate, trace.payloads, trace.output);
    return 0;
  } catch (const ctl::Failure& e) {
    std::cerr << "outpost-collector: " << e.what() << "\n";
  } catch (const kj::Exception& e) {
    std::cerr << "outpost-collector: " << ctl::kj_error(e) << "\n";
  }
  return 1;
}

std::string describe(protocol::CollectRequest::Reader r) {
  std::string params;
  for (auto p : r.getParameters())
    params += (params.empty() ? "" : ",") + std::string(p.getName().cStr()) + "=" + p.getValue().cStr();
  return fmt::format("{}({}) flow {}{}", r.getArtifact().cStr(), params, r.getFlowId(),
                     r.getVql().size() ? " (VQL)" : r.getDefinition().size() ? " (definition sent)" : "");
}

std::string utc(int64_t ns) {
  if (ns == 0) return "never";
  time_t secs = ns / 1000000000;
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void print_agent(protocol::AgentSummary::Reader a, bool json) {
  if (json) {
    std::string marks, table;
    for (auto m : a.getMarks())
      marks += fmt::format("{}\"{}\":{}", marks.empty() ? "" : ",", schemas::lane_name(m.getLane()), m.getSeq());
    for (auto e : a.getEventTable())
      table += (table.empty() ? "" : ",") + schemas::json_string(describe(e));
    std::cout << fmt::format(
        "{{\"id\":{},\"connected\":{},\"peer\":{},\"connected_ns\":{},\"collector\":{},\"last_upload_ns\":{},"
        "\"stored\":{{{}}},\"event_table\":[{}],\"pending_requests\":{}}}\n",
        schemas::json_string(a.getId()), a.getConnected(), schemas::json_string(a.getPeer()), a.getConnectedNs(),
        schemas::json_string(a.getCollector()), a.getLastUploadNs(), marks, table, a.getPendingRequests());
    return;
  }
  std::cout << a.getId().cStr() << ": "
            << (a.getConnected() ? fmt::format("connected from {} since {}{}", a.getPeer().cStr(),
                                               utc(a.getConnectedNs()),
                                               a.getCollector().size() ? fmt::format(" to collector {}",
                                                                                     a.getCollector().cStr())
                                                                       : std::string())
                                 : std::string("not connected"))
            << ", last upload " << utc(a.getLastUploadNs()) << "\n  stored through:";
  for (auto m : a.getMarks()) std::cout << " " << schemas::lane_name(m.getLane()) << "=" << m.getSeq();
  std::cout << "\n  event table:";
  if (a.getEventTable().size() == 0) std::cout << " (none)";
  for (auto e : a.getEventTable()) std::cout << " " << describe(e);
  std::cout << "\n  requests waiting for it: " << a.getPendingRequests() << "\n";
}

// "k=v" pairs into a request's parameters.
void set_parameters(protocol::CollectRequest::Builder r, const std::vector<std::string>& params) {
  auto list = r.initParameters(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    size_t eq = params[i].find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::invalid_argument("parameter \"" + params[i] + "\": expected name=value");
    list[i].setName(params[i].substr(0, eq));
    list[i].setValue(params[i].substr(eq + 1));
  }
}

// "Artifact,k=v,k=v" as an event table entry.
void set_entry(protocol::CollectRequest::Builder r, const std::string& entry) {
  std::vector<std::string> parts;
  size_t from = 0;
  for (size_t comma; (comma = entry.find(',', from)) != std::string::npos; from = comma + 1)
    parts.push_back(entry.substr(from, comma - from));
  parts.push_back(entry.substr(from));
  if (parts[0].empty()) throw std::invalid_argument("event table entry \"" + entry + "\": no artifact");
  r.setArtifact(parts[0]);
  set_parameters(r, {parts.begin() + 1, parts.end()});
}

// An artifact definition to send with a request: the file's text and the
// name it defines. The agent checks the rest, as it checks its own files.
struct Definition {
  std::string name, yaml;
};
constexpr size_t kMaxDefinitionBytes = 1 << 20;  // what an agent takes (queries/agent_sources.hpp)

Definition read_definition(const std::string& path) {
  Definition d{{}, tools::read_sent_file(path, kMaxDefinitionBytes, "an agent")};
  try {
    YAML::Node root = YAML::Load(d.yaml);
    if (root.IsMap() && root["name"] && root["name"].IsScalar()) d.name = root["name"].Scalar();
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(path + ": not YAML: line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (d.name.empty()) throw std::invalid_argument(path + ": not an artifact definition (no `name:`)");
  return d;
}

// The definitions of `paths` by name; two of one name are an error.
std::map<std::string, std::string> read_definitions(const std::vector<std::string>& paths) {
  std::map<std::string, std::string> out;
  for (auto& path : paths) {
    auto d = read_definition(path);
    if (!out.emplace(d.name, d.yaml).second)
      throw std::invalid_argument(path + ": " + d.name + " is defined by an earlier --artifact-file too");
  }
  return out;
}

// An event table entry as given: "Artifact[,k=v...]" (with the artifact's
// definition when a file gives it), or a query labelled with a name.
struct TableEntry {
  std::string entry, definition, vql;
};

// The entries given as Artifact[,k=v], then each --artifact-file no entry
// names, then each --vql Name=VQL.
std::vector<TableEntry> table_entries(const CommandArgs& a) {
  auto defined = read_definitions(a.artifact_files);
  std::vector<TableEntry> out;
  for (auto& entry : a.entries) {
    auto it = defined.find(entry.substr(0, entry.find(',')));
    out.push_back({entry, it == defined.end() ? "" : it->second, ""});
  }
  for (auto& definition : defined) {
    const std::string& name = definition.first;
    if (std::none_of(out.begin(), out.end(), [&](auto& e) { return e.entry.substr(0, e.entry.find(',')) == name; }))
      out.push_back({name, definition.second, ""});
  }
  for (auto& entry : a.vql_entries) {
    size_t eq = entry.find('=');
    if (eq == 0 || eq == std::string::npos || eq + 1 == entry.size() || entry.substr(0, eq).find(',') != std::string::npos)
      throw std::invalid_argument("--vql \"" + entry + "\": expected Name=VQL");
    out.push_back({entry.substr(0, eq), "", entry.substr(eq + 1)});
  }
  return out;
}

bool check_agent(const std::string& agent) {
  if (net::valid_agent_id(agent)) return true;
  std::cerr << "outpost-collector: \"" << agent << "\" is not an agent id\n";
  return false;
}

// The lines of `lines` that are rows of `flow` (all of them when flow is 0).
void keep_flow(std::vector<std::string>& lines, uint64_t flow) {
  if (flow == 0) return;
  lines.erase(std::remove_if(lines.begin(), lines.end(), [flow](const std::string& l) { return row_flow(l) != flow; }),
              lines.end());
}

int tail(const AdminOptions& o, const std::string& agent, std::string artifact, uint64_t flow, size_t n,
         bool follow) {
  if (!check_agent(agent)) return 1;
  auto stream = rows_stream(o);
  if (artifact.empty()) {  // --flow: the artifact its start record names
    auto status = rows_of(o, stream, agent, net::kStatusFolder, 0);
    FlowReader flows(std::move(status.lines));
    flows.update();
    auto it = flows.flows().find(flow);
    if (it == flows.flows().end()) {
      std::cerr << "outpost-collector: no flow " << flow << " from " << agent
                << " (no status record of it stored yet; give the artifact too)\n";
      return 1;
    }
    artifact = it->second.artifact;
  }
  std::string folder = net::artifact_folder(artifact.c_str());
  fs::path dir = fs::path(o.datadir) / agent / folder;
  if (!stream && !fs::is_directory(dir) && !follow) {
    std::cerr << "outpost-collector: no rows of " << artifact << " from " << agent << " (no " << dir.string() << ")\n";
    return 1;
  }
  auto rows = rows_of(o, stream, agent, folder, 0);
  auto& follower = *rows.lines;
  std::vector<std::string> lines;
  follower.read_new(lines);
  if (stream && lines.empty() && !follow) {
    std::cerr << "outpost-collector: no rows of " << artifact << " from " << agent << " (none in stream "
              << stream->stream << ")\n";
    return 1;
  }
  keep_flow(lines, flow);
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) std::cout << lines[i] << "\n";
  std::cout << std::flush;
  while (follow) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    lines.clear();
    follower.read_new(lines);
    keep_flow(lines, flow);
    for (auto& l : lines) std::cout << l << "\n";
    std::cout << std::flush;
  }
  return 0;
}

std::string seconds(int64_t ns) { return fmt::format("{:.3f} s", ns / 1e9); }

std::atomic<bool> export_stop{false};

int export_stream(const CommandArgs::Export& e, bool follow) {
  net::ExportOptions o;
  o.nats = e.link;
  o.nats.servers = net::nats_servers(e.nats);
  o.stream = e.stream;
  o.subject_prefix = e.prefix;
  o.follow = follow;
  struct sigaction sa {};
  sa.sa_handler = [](int) { export_stop = true; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  try {
    auto r = net::export_jsonl(o, e.dir, &export_stop);
    std::cerr << fmt::format("export: {} messages written, {} written before, {} refused, {} files cut back; "
                             "{} holds stream {} through sequence {}\n",
                             r.messages, r.skipped, r.refused, r.files_cut, e.dir, e.stream, r.written_through);
    return r.refused ? 1 : 0;
  } catch (const persistence::StoreError& err) {
    std::cerr << err.what() << "\n";
    return 1;
  }
}

int print_flows(const AdminOptions& o, const std::string& agent, bool json) {
  if (!check_agent(agent)) return 1;
  auto status = rows_of(o, rows_stream(o), agent, net::kStatusFolder, 0);
  FlowReader reader(std::move(status.lines));
  reader.update();
  if (json) {
    for (auto& [id, f] : reader.flows())
      std::cout << fmt::format(
          "{{\"flow\":{},\"artifact\":{},\"state\":{},\"rows\":{},\"bytes\":{},\"duration_ns\":{},"
          "\"error\":{},\"started\":{},\"ended\":{}}}\n",
          id, schemas::json_string(f.artifact.c_str()), schemas::json_string(f.state.c_str()), f.rows, f.bytes,
          f.duration_ns, schemas::json_string(f.error.c_str()), schemas::json_string(f.started.c_str()),
          schemas::json_string(f.ended.c_str()));
    return 0;
  }
  if (reader.flows().empty()) {
    std::cout << "no flows of " << agent << " reported yet\n";
    return 0;
  }
  std::cout << fmt::format("{:<12} {:<32} {:<10} {:>10} {:>12} {:>10}  {}\n", "FLOW", "ARTIFACT", "STATE", "ROWS",
                           "BYTES", "DURATION", "STARTED / ERROR");
  for (auto& [id, f] : reader.flows())
    std::cout << fmt::format("{:<12} {:<32} {:<10} {:>10} {:>12} {:>10}  {}\n", id, f.artifact, f.state,
                             f.state == "running" ? "-" : std::to_string(f.rows),
                             f.state == "running" ? "-" : std::to_string(f.bytes),
                             f.state == "running" ? "-" : seconds(f.duration_ns),
                             f.error.empty() ? f.started : f.error);
  return 0;
}

// Sends `collect`'s request; prints (and keeps in a.flow) its flow id.
kj::Promise<void> send_collect(Admin::Client admin, CommandArgs& a, const std::string& definition) {
  auto req = admin.collectRequest();
  req.setAgent(a.agent);
  req.setNewAgent(a.new_agent);
  req.initRequest().setArtifact(a.artifact);
  req.getRequest().setVql(a.vql);
  req.getRequest().setDefinition(definition);
  set_parameters(req.getRequest(), a.params);
  return req.send().then([&a](auto resp) {
    a.flow = resp.getFlowId();
    (a.wait ? std::cerr : std::cout) << fmt::format("flow {} {} {}\n", resp.getFlowId(),
                                                   resp.getQueued() ? "queued for" : "started on", a.agent);
  });
}

// collect --wait: the flow's rows as they are stored, then its outcome. It
// ends once the agent's end record is stored and, for a flow that finished,
// as many rows as it counted (the control lane may overtake the rows).
int wait_flow(const AdminOptions& o, const std::string& agent, const std::string& artifact, uint64_t flow,
              unsigned timeout_s, const std::optional<net::StreamAccess>& stream, int64_t since_ns) {
  std::string folder = net::artifact_folder(artifact.c_str());
  std::unique_ptr<StreamFolders> records;  // both folders, read at once
  std::unique_ptr<LineSource> status, row_lines;
  if (stream) {
    records = std::make_unique<StreamFolders>(*stream, agent, "", since_ns);
    status = records->folder(net::kStatusFolder);
    row_lines = records->folder(folder);
  } else {
    status = std::make_unique<Follower>(fs::path(o.datadir) / agent / net::kStatusFolder);
    row_lines = std::make_unique<Follower>(fs::path(o.datadir) / agent / folder);
  }
  FlowReader flows(std::move(status));
  auto& rows = *row_lines;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  uint64_t seen = 0;
  for (;;) {
    std::vector<std::string> lines;
    rows.read_new(lines);
    keep_flow(lines, flow);
    for (auto& l : lines) std::cout << l << "\n";
    std::cout << std::flush;
    seen += lines.size();
    flows.update();
    auto it = flows.flows().find(flow);
    if (it != flows.flows().end() && it->second.state != "running" &&
        (it->second.state != "finished" || seen >= it->second.rows)) {
      auto& f = it->second;
      std::cerr << fmt::format("flow {} {}: {} rows, {} bytes, {}{}\n", flow, f.state, f.rows, f.bytes,
                               seconds(f.duration_ns), f.error.empty() ? "" : "; " + f.error);
      return f.state == "finished" ? 0 : 1;
    }
    if (timeout_s && std::chrono::steady_clock::now() >= deadline) {
      std::cerr << fmt::format("flow {}: no end reported within {} s ({} rows so far)\n", flow, timeout_s, seen);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

std::string default_socket(const std::string& datadir) {
  return (fs::path(datadir) / ".collector" / "admin.sock").string();
}

void add_commands(CLI::App& app, CommandArgs& a) {
  auto* agents = app.add_subcommand("agents", "list the agents: connected, last seen, what is stored, event table");
  agents->add_flag("--json", a.json, "one JSON object per agent");
  agents->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return call(o, [&a](Admin::Client admin) {
      return admin.listAgentsRequest().send().then([&a](auto resp) {
        for (auto agent : resp.getAgents()) print_agent(agent, a.json);
        if (!a.json && resp.getAgents().size() == 0) std::cout << "no agents yet\n";
      });
    });
    };
  });

  auto* collect = app.add_subcommand("collect", "run an artifact on an agent (queued if it is not connected)");
  collect->add_option("agent", a.agent, "agent id")->required();
  collect->add_option("artifact", a.artifact, "artifact name (with --artifact-file: the file's, when left out)");
  collect->add_option("--param,-p", a.params, "name=value (repeatable)");
  collect->add_option("--param-file,-f", a.param_files,
                      "name=FILE: the file's content as the value (an upload or upload_file parameter; repeatable)");
  collect->add_option("--vql", a.vql, "run this VQL, its rows labelled with the artifact name");
  collect->add_option("--artifact-file", a.artifact_files,
                      "send this artifact definition (YAML) with the request: the agent runs it in place of "
                      "its own artifact of that name")
      ->expected(1);
  collect->add_flag("--new-agent", a.new_agent, "queue it for an agent that has never connected yet");
  collect->add_flag("--wait", a.wait, "print its rows as they are stored, then its outcome (on stderr); exit 0 "
                                      "only if it finished");
  collect->add_option("--timeout", a.timeout_s, "with --wait: give up after this many seconds (default: never)");
  collect->callback([&a] {
    if (a.artifact.empty() && a.artifact_files.empty())
      throw CLI::ValidationError("collect", "give an artifact, or --artifact-file FILE");
    if (!a.vql.empty() && !a.artifact_files.empty())
      throw CLI::ValidationError("collect", "--vql and --artifact-file: give one");
    a.run = [&a](const AdminOptions& o) {
      std::string definition;
      try {
        for (auto& given : a.param_files) {
          auto [name, content] = tools::file_parameter(given);
          a.params.push_back(name + "=" + content);
        }
      } catch (const std::invalid_argument& e) {
        std::cerr << "outpost-collector: " << e.what() << "\n";
        return 1;
      }
      if (!a.artifact_files.empty()) try {
          auto d = read_definition(a.artifact_files[0]);
          if (!a.artifact.empty() && a.artifact != d.name) {
            std::cerr << "outpost-collector: " << a.artifact_files[0] << " defines " << d.name << ", not "
                      << a.artifact << "\n";
            return 1;
          }
          a.artifact = d.name;
          definition = std::move(d.yaml);
        } catch (const std::invalid_argument& e) {
          std::cerr << "outpost-collector: " << e.what() << "\n";
          return 1;
        }
      // --wait reads the rows from the collector's files, or from its stream
      // (jetstream) from a little before the collection started.
      std::optional<net::StreamAccess> stream;
      int64_t since = schemas::now_ns();
      int code = call(o, [&a, &definition, &stream](Admin::Client admin) {
        kj::Promise<void> where = kj::READY_NOW;
        if (a.wait)
          where = admin.storageRequest().send().then([&stream](auto resp) {
            if (resp.hasStream()) stream = stream_access(resp.getStream());
          });
        return where.then([&a, &definition, admin]() mutable { return send_collect(admin, a, definition); });
      });
      if (code != 0 || !a.wait) return code;
      return wait_flow(o, a.agent, a.artifact, a.flow, a.timeout_s, stream, since);
    };
  });

  auto* cancel = app.add_subcommand("cancel", "stop a collection and delete its rows still buffered on the agent");
  cancel->add_option("agent", a.agent, "agent id")->required();
  cancel->add_option("flow", a.flow, "flow id, as collect printed it")->required();
  cancel->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return call(o, [&a](Admin::Client admin) {
      auto req = admin.cancelRequest();
      req.setAgent(a.agent);
      req.setFlowId(a.flow);
      return req.send().then([&a](auto resp) {
        using Outcome = protocol::CancelOutcome;
        if (resp.getQueued())
          std::cout << fmt::format("cancel of flow {} queued for {}\n", a.flow, a.agent);
        else if (resp.getOutcome() == Outcome::NOT_SENT)
          std::cout << fmt::format("flow {} cancelled before it was sent to {}: it never ran\n", a.flow, a.agent);
        else
          std::cout << fmt::format("flow {} {} on {}: {} buffered records deleted\n", a.flow,
                                   resp.getOutcome() == Outcome::ALREADY_FINISHED ? "had already finished"
                                   : resp.getOutcome() == Outcome::NOT_RUNNING
                                       ? "was not running (from before the agent restarted)"
                                       : "cancelled",
                                   a.agent, resp.getPurgedRecords());
      });
    });
    };
  });

  auto* table = app.add_subcommand("event-table", "set the event queries an agent runs (none: clear)");
  table->add_option("agent", a.agent, "agent id")->required();
  table->add_option("entries", a.entries, "Artifact[,name=value...] for each event query");
  table->add_option("--artifact-file", a.artifact_files,
                    "an artifact definition (YAML) sent with the table: run by the entry naming it, or by one "
                    "of its own with its default parameters (repeatable)");
  table->add_option("--vql", a.vql_entries, "Name=VQL: an event query, its rows labelled Name (repeatable)");
  table->add_flag("--new-agent", a.new_agent, "store it for an agent that has never connected yet");
  table->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return call(o, [&a](Admin::Client admin) {
      auto req = admin.setEventTableRequest();
      req.setAgent(a.agent);
      req.setNewAgent(a.new_agent);
      auto entries = table_entries(a);
      auto list = req.initArtifacts(entries.size());
      for (size_t i = 0; i < entries.size(); ++i) {
        set_entry(list[i], entries[i].entry);
        list[i].setDefinition(entries[i].definition);
        list[i].setVql(entries[i].vql);
      }
      return req.send().then([&a, n = entries.size()](auto resp) {
        std::cout << fmt::format("event table of {} ({} entries) {}\n", a.agent, n,
                                 resp.getQueued() ? "stored; sent when it connects" : "set");
      });
    });
    };
  });

  auto* status = app.add_subcommand("status", "a connected agent's status, as JSON");
  status->add_option("agent", a.agent, "agent id")->required();
  status->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return call(o, [&a](Admin::Client admin) {
      auto req = admin.agentStatusRequest();
      req.setAgent(a.agent);
      return req.send().then([](auto resp) { std::cout << resp.getJson().cStr() << "\n"; });
    });
    };
  });

  auto* inspect_cmd = app.add_subcommand(
      "inspect", "a connected agent's actors, supervision tree, warnings or log lines, through its inspector "
                 "over the agent's connection (read-only; outpostctl shows the same on the agent's host)");
  inspect_cmd->add_option("agent", a.agent, "agent id")->required();
  inspect_cmd->add_option("what", a.what, "status (default), actors, tree, warnings, logs, buffer, link, queries, trace")
      ->check(CLI::IsMember({"status", "actors", "tree", "warnings", "logs", "buffer", "link", "queries", "trace"}));
  inspect_cmd->add_option("--actor", a.trace.actors, "trace: an actor id to trace (repeatable; default: all)");
  inspect_cmd->add_option("--seconds", a.trace.seconds, "trace: stop after this long (default 5, at most 600)");
  inspect_cmd->add_option("--count", a.trace.count, "trace: stop after this many messages (default 10000)");
  inspect_cmd->add_option("--rate", a.trace.rate, "trace: stop in a second with more messages than this (default 20000)");
  inspect_cmd->add_flag("--payloads", a.trace.payloads, "trace: keep the rows the messages carry");
  inspect_cmd->add_option("-o,--output", a.trace.output, "trace: the file to write (default trace.json; - for stdout)");
  inspect_cmd->add_flag("--json", a.json, "print JSON");
  inspect_cmd->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return inspect(o, a.agent, a.what, a.json, a.trace); };
  });

  auto* tail_cmd = app.add_subcommand(
      "tail", "print an artifact's newest rows from an agent (from the files, or a jetstream collector's stream)");
  tail_cmd->add_option("agent", a.agent, "agent id")->required();
  tail_cmd->add_option("artifact", a.artifact, "artifact name (with --flow: the flow's, when left out)");
  tail_cmd->add_option("--flow", a.flow, "only this collection's rows");
  tail_cmd->add_option("-n,--lines", a.lines, "how many of the newest rows")->capture_default_str();
  tail_cmd->add_flag("-f,--follow", a.follow, "keep printing rows as they are stored");
  tail_cmd->callback([&a] {
    if (a.artifact.empty() && a.flow == 0) throw CLI::ValidationError("tail", "give an artifact, or --flow ID");
    a.run = [&a](const AdminOptions& o) { return tail(o, a.agent, a.artifact, a.flow, a.lines, a.follow); };
  });

  auto* export_cmd = app.add_subcommand(
      "export", "write the jsonl layout (<agent>/<artifact>/<date>.jsonl) from the JetStream stream that collectors "
                "with --storage jetstream fill; each line once, across runs and crashes");
  export_cmd->add_option("--from", a.exp.from, "jetstream")->required()->check(CLI::IsMember({"jetstream"}));
  export_cmd->add_option("--to", a.exp.to, "jsonl")->required()->check(CLI::IsMember({"jsonl"}));
  export_cmd->add_option("dir", a.exp.dir, "the directory to write (its .export/state records how far it got)")
      ->required();
  export_cmd->add_option("--nats", a.exp.nats, "NATS server URLs, comma-separated")->capture_default_str();
  export_cmd->add_option("--nats-ca", a.exp.link.ca, "TLS to NATS: trust only this CA's server certificates");
  export_cmd->add_option("--nats-cert", a.exp.link.cert, "TLS to NATS: a client certificate");
  export_cmd->add_option("--nats-key", a.exp.link.key, "TLS to NATS: its private key");
  export_cmd->add_option("--nats-creds", a.exp.link.creds, "a NATS credentials file");
  export_cmd->add_option("--nats-stream", a.exp.stream, "the stream")->capture_default_str();
  export_cmd->add_option("--nats-subject-prefix", a.exp.prefix, "the collectors' subject prefix")->capture_default_str();
  export_cmd->add_flag("-f,--follow", a.follow, "keep writing new rows as they come (until SIGINT or SIGTERM)");
  export_cmd->callback([&a] {
    a.run = [&a](const AdminOptions&) { return export_stream(a.exp, a.follow); };
  });

  auto* flows_cmd = app.add_subcommand("flows", "an agent's collections as it reported them: state, rows, bytes, "
                                                "duration, error (from the files, or a jetstream collector's stream)");
  flows_cmd->add_option("agent", a.agent, "agent id")->required();
  flows_cmd->add_flag("--json", a.json, "one JSON object per flow");
  flows_cmd->callback([&a] {
    a.run = [&a](const AdminOptions& o) { return print_flows(o, a.agent, a.json); };
  });
}

}  // namespace outpost::admin
