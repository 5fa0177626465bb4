#include "actors/agent_config.hpp"
#include "schemas/codec.hpp"

#include <spdlog/common.h>
#include <sys/mman.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <tuple>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>

namespace outpost {
namespace {

using Kind = SourceSpec::Kind;
using LinkKind = LinkSpec::Kind;
using persistence::SyncPolicy;
using schemas::Lane;

constexpr uint64_t kNoMax = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kDayMs = 24 * 3600 * 1000;  // bound on periods and delays
// The buffer maps about three times its limit (BufferStore derives LMDB's map
// size from it), and x86-64 gives a process 128 TiB of address space: 16 TiB
// keeps the map well inside it. Whether this machine lets the process reserve
// it is checked by check_agent_config().
constexpr uint64_t kMaxBufferLimit = 16ull << 40;
constexpr const char* kMaxBufferLimitText = "16TiB";
// Waiting appends are held in RAM, and the store is opened with the limit
// plus this much as its shutdown reserve.
constexpr uint64_t kMaxPendingBudget = 64ull << 30;
constexpr const char* kMaxPendingBudgetText = "64GiB";
// A synthetic row must fit in one record, its other columns and the batch's
// header included: the record-size limit less 64 KiB.
constexpr uint64_t kMaxRowSize = schemas::kMaxRecordBytes - (64 << 10);
constexpr const char* kMaxRowSizeText = "4032KiB";
static_assert(kMaxRowSize == 4032ull << 10, "kMaxRowSizeText names kMaxRowSize");
constexpr const char* kSizeExample = "a size such as 1000, 10kB, 64MiB or 1GiB";
constexpr const char* kNameRule = "a name of letters, digits, '_', '.' and '-'";

// The names a key accepts, and what each means. (Log levels are kept as text;
// the table only checks them, with spdlog's meaning beside each name.)
constexpr std::pair<const char*, Lane> kLanes[] = {{"control", Lane::CONTROL},
                                                   {"events", Lane::EVENTS},
                                                   {"results", Lane::RESULTS},
                                                   {"uploads", Lane::UPLOADS}};
constexpr std::pair<const char*, SyncPolicy> kSyncPolicies[] = {{"full", SyncPolicy::full},
                                                                {"none", SyncPolicy::none}};
constexpr std::pair<const char*, Kind> kSourceKinds[] = {{"clock", Kind::clock},
                                                         {"synthetic", Kind::synthetic},
                                                         {"vql", Kind::vql},
                                                         {"artifact", Kind::artifact},
                                                         {"host", Kind::host}};
constexpr std::pair<const char*, LinkKind> kLinkKinds[] = {
    {"file", LinkKind::file}, {"offline", LinkKind::offline}, {"collector", LinkKind::collector},
    {"host", LinkKind::host}};
constexpr std::pair<const char*, bool> kBools[] = {{"true", true}, {"false", false}};
constexpr std::pair<const char*, const char*> kProcessBackends[] = {
    {"auto", "auto"}, {"ebpf", "ebpf"}, {"proc_connector", "proc_connector"}};
constexpr std::pair<const char*, spdlog::level::level_enum> kLogLevels[] = {
    {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
    {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
    {"error", spdlog::level::err},   {"critical", spdlog::level::critical},
    {"off", spdlog::level::off}};

// Thrown inside the parser; the entry points add the origin.
struct Invalid {
  std::string path, problem;
};

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Invalid{path, problem};
}

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string describe(const YAML::Node& n) {
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  if (n.IsScalar()) return "\"" + n.Scalar() + "\"";
  return "nothing";
}

[[noreturn]] void expected(const YAML::Node& n, const std::string& path, const std::string& what) {
  fail(path, "expected " + what + ", got " + describe(n));
}

// --- Scalars: one helper per kind of check; each reports "expected <what>, got <value>".

const std::string& scalar(const YAML::Node& n, const std::string& path, const std::string& what) {
  if (!n.IsScalar()) expected(n, path, what);
  return n.Scalar();
}

bool is_name(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}
bool is_non_empty(const std::string& s) { return !s.empty(); }

std::string text(const YAML::Node& n, const std::string& path, const std::string& what = "a string",
                 bool (*valid)(const std::string&) = nullptr) {
  const std::string& s = scalar(n, path, what);
  if (valid && !valid(s)) expected(n, path, what);
  return s;
}

std::string path_text(const YAML::Node& n, const std::string& path) {
  return text(n, path, "a non-empty path", is_non_empty);
}

std::string name_text(const YAML::Node& n, const std::string& path) {
  return text(n, path, kNameRule, is_name);
}

uint64_t integer(const YAML::Node& n, const std::string& path, uint64_t min, uint64_t max) {
  std::string what = max != kNoMax
                         ? "an integer from " + std::to_string(min) + " to " + std::to_string(max)
                     : min == 0 ? "a non-negative integer"
                                : "a positive integer";
  const std::string& s = scalar(n, path, what);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < min || value > max)
    expected(n, path, what);
  return value;
}

std::chrono::milliseconds millis(const YAML::Node& n, const std::string& path, uint64_t min) {
  return std::chrono::milliseconds(integer(n, path, min, kDayMs));
}

double number(const YAML::Node& n, const std::string& path) {
  const char* what = "a non-negative number";
  const std::string& s = scalar(n, path, what);
  double value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(value) || value < 0)
    expected(n, path, what);
  return value;
}

// `max_text` names `max` as the error says it: "expected a size up to 16TiB".
uint64_t size(const YAML::Node& n, const std::string& path, bool positive, uint64_t max = kNoMax,
              const char* max_text = nullptr, const char* why = "") {
  uint64_t value = 0;
  try {
    value = parse_size(scalar(n, path, kSizeExample));
  } catch (const std::invalid_argument& e) {
    fail(path, e.what());  // says "expected ..., got ..." itself
  }
  if (positive && value == 0) expected(n, path, "a positive size");
  if (value > max) expected(n, path, std::string("a size up to ") + max_text + why);
  return value;
}

uint64_t buffer_limit(const YAML::Node& n, const std::string& path) {
  return size(n, path, true, kMaxBufferLimit, kMaxBufferLimitText,
              " (the buffer maps three times its limit into memory)");
}

template <class T, size_t N>
std::optional<T> lookup(const std::pair<const char*, T> (&names)[N], const std::string& s) {
  for (const auto& [name, value] : names)
    if (s == name) return value;
  return std::nullopt;
}

template <class T, size_t N>
T choice(const YAML::Node& n, const std::string& path,
         const std::pair<const char*, T> (&names)[N]) {
  std::string what;
  for (size_t i = 0; i < N; ++i)
    what += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(names[i].first);
  if (auto value = lookup(names, scalar(n, path, what))) return *value;
  expected(n, path, what);
}

// --- Maps: every key must be known, and appear once.

using Reader = std::function<void(const YAML::Node& value, const std::string& path)>;
struct Field {
  const char* key;
  Reader read;
};

// Reads the keys present, leaving the rest as they were. Nothing (`buffer:`) is
// an empty map. `of` qualifies the unknown-key message (" for a clock source").
void read_map(const YAML::Node& n, const std::string& path, const std::vector<Field>& fields,
              const std::string& of = "") {
  if (n.IsNull()) return;
  if (!n.IsMap()) expected(n, path, "a map");
  std::set<std::string> seen;
  for (const auto& entry : n) {
    std::string key = text(entry.first, path, "a key");
    std::string key_path = join(path, key);
    if (!seen.insert(key).second) fail(key_path, "duplicate key");
    auto field =
        std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return key == f.key; });
    if (field == fields.end()) {
      std::string allowed;
      for (const auto& f : fields) allowed += (allowed.empty() ? "" : ", ") + std::string(f.key);
      fail(key_path, "unknown key" + of + "; allowed: " + allowed);
    }
    field->read(entry.second, key_path);
  }
}

// A map whose `type` decides which other keys it may have: the type is read first.
void read_typed_map(const YAML::Node& n, const std::string& path, const Reader& read_type,
                    const std::function<std::vector<Field>()>& fields_for_type,
                    const std::function<std::string()>& of) {
  if (n.IsMap() && n["type"]) read_type(n["type"], join(path, "type"));
  std::vector<Field> fields{{"type", read_type}};
  for (auto& f : fields_for_type()) fields.push_back(std::move(f));
  read_map(n, path, fields, of());
}

// --- Sections.

void read_buffer(const YAML::Node& n, const std::string& path, AgentConfig& config) {
  auto& b = config.buffer;
  read_map(n, path,
           {{"dir", [&](auto& v, auto& p) { b.dir = path_text(v, p); }},
            {"limit", [&](auto& v, auto& p) { b.limit_bytes = buffer_limit(v, p); }},
            {"sync", [&](auto& v, auto& p) { b.sync = choice(v, p, kSyncPolicies); }},
            {"compact_threshold",
             [&](auto& v, auto& p) { b.compact_threshold_bytes = size(v, p, false); }},
            {"pending_budget",
             [&](auto& v, auto& p) {
               config.pending_budget = size(v, p, true, kMaxPendingBudget, kMaxPendingBudgetText,
                                            " (appends held in RAM)");
             }},
            {"commit_interval_ms", [&](auto& v, auto& p) { config.commit_interval = millis(v, p, 0); }}});
}

// "host:port" as host and port; `what` says what is expected when it is not one.
std::pair<std::string, uint16_t> host_port(const YAML::Node& n, const std::string& path, const char* what,
                                           bool port_zero_allowed) {
  const std::string& s = scalar(n, path, what);
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) expected(n, path, what);
  uint64_t port = 0;
  auto [end, ec] = std::from_chars(s.data() + colon + 1, s.data() + s.size(), port);
  if (ec != std::errc() || end != s.data() + s.size() || (port == 0 && !port_zero_allowed) || port > 65535)
    expected(n, path, what);
  return {s.substr(0, colon), static_cast<uint16_t>(port)};
}

// The collector's address; the port is required.
void read_address(const YAML::Node& n, const std::string& path, LinkSpec& link) {
  std::tie(link.host, link.port) = host_port(n, path, "host:port, such as 127.0.0.1:4750", false);
  link.alternates.clear();
}

// Several collectors, tried in turn: the first is the address.
void read_addresses(const YAML::Node& n, const std::string& path, LinkSpec& link) {
  const char* what = "a list of host:port, such as [10.0.0.1:4750, 10.0.0.2:4750]";
  if (!n.IsSequence() || n.size() == 0) expected(n, path, what);
  link.alternates.clear();
  for (size_t i = 0; i < n.size(); ++i) {
    auto hp = host_port(n[i], path + "[" + std::to_string(i) + "]", "host:port, such as 127.0.0.1:4750", false);
    if (i == 0)
      std::tie(link.host, link.port) = hp;
    else
      link.alternates.push_back(hp);
  }
}

void read_link(const YAML::Node& n, const std::string& path, LinkSpec& link) {
  if (n.IsScalar()) {  // shorthand: offline | file | host | file:PATH
    const std::string& s = n.Scalar();
    const std::string prefix = "file:";
    if (auto kind = lookup(kLinkKinds, s)) {
      link.kind = *kind;
    } else if (s.size() > prefix.size() && s.compare(0, prefix.size(), prefix) == 0) {
      link.kind = LinkKind::file;
      link.path = s.substr(prefix.size());
    } else {
      expected(n, path, "a map, file, file:PATH, host or offline");
    }
    return;
  }
  read_typed_map(
      n, path, [&](auto& v, auto& p) { link.kind = choice(v, p, kLinkKinds); },
      [&]() -> std::vector<Field> {
        switch (link.kind) {
          case LinkKind::offline: return {};
          case LinkKind::file:
            return {{"path", [&](auto& v, auto& p) { link.path = path_text(v, p); }}};
          case LinkKind::host:
            return {{"max_unacked",
                     [&](auto& v, auto& p) { link.max_unacked = static_cast<unsigned>(integer(v, p, 1, 1024)); }}};
          case LinkKind::collector: break;
        }
        return {{"address", [&](auto& v, auto& p) { read_address(v, p, link); }},
                {"addresses", [&](auto& v, auto& p) { read_addresses(v, p, link); }},
                {"server_name", [&](auto& v, auto& p) { link.server_name = text(v, p, "a host name"); }},
                {"ca", [&](auto& v, auto& p) { link.ca = path_text(v, p); }},
                {"cert", [&](auto& v, auto& p) { link.cert = path_text(v, p); }},
                {"key", [&](auto& v, auto& p) { link.key = path_text(v, p); }},
                {"insecure", [&](auto& v, auto& p) { link.insecure = choice(v, p, kBools); }},
                {"agent_id", [&](auto& v, auto& p) { link.agent_id = name_text(v, p); }},
                {"backoff_initial_ms", [&](auto& v, auto& p) { link.backoff_initial = millis(v, p, 1); }},
                {"backoff_cap_ms", [&](auto& v, auto& p) { link.backoff_cap = millis(v, p, 1); }},
                {"max_delay_ms", [&](auto& v, auto& p) { link.max_delay = millis(v, p, 0); }}};
      },
      [&] {
        switch (link.kind) {
          case LinkKind::file: return " for a file link";
          case LinkKind::offline: return " for an offline link";
          case LinkKind::host: return " for a host link";
          case LinkKind::collector: break;
        }
        return " for a collector link";
      });
}

void read_log(const YAML::Node& n, const std::string& path, LogSpec& log) {
  read_map(n, path,
           {{"level",
             [&](auto& v, auto& p) {
               choice(v, p, kLogLevels);
               log.level = v.Scalar();
             }},
            {"file", [&](auto& v, auto& p) { log.file = text(v, p); }}});
}

// "host:port" to listen on; port 0 takes any free one.
std::string listen_address(const YAML::Node& n, const std::string& path) {
  host_port(n, path, "host:port, such as 127.0.0.1:9464 (port 0: any free one)", true);
  return n.Scalar();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

void read_inspector(const YAML::Node& n, const std::string& path, InspectorSpec& in) {
  auto& w = in.warnings;
  read_map(n, path,
           {{"socket", [&](auto& v, auto& p) { in.socket = v.IsNull() ? std::string{} : path_text(v, p); }},
            {"control", [&](auto& v, auto& p) { in.control = choice(v, p, kBools); }},
            {"metrics", [&](auto& v, auto& p) { in.metrics = v.IsNull() ? std::string{} : listen_address(v, p); }},
            {"metrics_remote", [&](auto& v, auto& p) { in.metrics_remote = choice(v, p, kBools); }},
            {"warnings", [&](auto& v, auto& p) {
               read_map(v, p,
                        {{"mailbox_backlog_ms", [&](auto& v, auto& p) { w.mailbox_backlog = millis(v, p, 1); }},
                         {"slow_handler_ms", [&](auto& v, auto& p) { w.slow_handler = millis(v, p, 1); }},
                         {"backpressure_ms", [&](auto& v, auto& p) { w.backpressure = millis(v, p, 1); }},
                         {"link_offline_ms", [&](auto& v, auto& p) { w.link_offline = millis(v, p, 1); }},
                         {"restarts", [&](auto& v, auto& p) { w.restarts = static_cast<unsigned>(integer(v, p, 1, 1000000)); }},
                         {"restart_window_ms", [&](auto& v, auto& p) { w.restart_window = millis(v, p, 1); }},
                         {"recent_ms", [&](auto& v, auto& p) { w.recent = millis(v, p, 1); }}});
             }}});
  if (!in.metrics.empty() && !in.metrics_remote && !is_loopback(in.metrics.substr(0, in.metrics.rfind(':'))))
    fail(join(path, "metrics"), in.metrics + " is not a loopback address: the metrics would be served beyond this "
                                "host; set inspector.metrics_remote: true to allow that");
  // A unix socket's path holds 107 bytes; the agent binds a temporary name beside it first.
  if (in.socket.size() > 96)
    fail(join(path, "socket"), "at most 96 bytes (a unix socket's path is short); this one has " +
                                   std::to_string(in.socket.size()));
}

// {name: value, ...}, values as their text.
void read_parameters(const YAML::Node& n, const std::string& path,
                     std::vector<std::pair<std::string, std::string>>& out) {
  out.clear();
  if (n.IsNull()) return;
  if (!n.IsMap()) expected(n, path, "a map of parameters");
  for (const auto& entry : n) {
    std::string key = text(entry.first, path, "a parameter name");
    for (auto& [k, v] : out)
      if (k == key) fail(join(path, key), "duplicate key");
    out.emplace_back(key, text(entry.second, join(path, key), "a single value"));
  }
}

void read_source(const YAML::Node& n, const std::string& path, SourceSpec& source) {
  read_typed_map(
      n, path, [&](auto& v, auto& p) { source.kind = choice(v, p, kSourceKinds); },
      [&]() -> std::vector<Field> {
        Reader parameters = [&](auto& v, auto& p) { read_parameters(v, p, source.parameters); };
        if (source.kind == Kind::vql)
          return {{"query", [&](auto& v, auto& p) { source.query = text(v, p, "the query's text"); }},
                  {"parameters", parameters}};
        if (source.kind == Kind::artifact)
          return {{"name", [&](auto& v, auto& p) { source.name = name_text(v, p); }},
                  {"parameters", parameters}};
        if (source.kind == Kind::clock)
          return {{"period_ms", [&](auto& v, auto& p) { source.period = millis(v, p, 1); }}};
        if (source.kind == Kind::host)
          return {{"queue_rows", [&](auto& v, auto& p) { source.queue_rows = integer(v, p, 1, 1000000); }}};
        return {{"rate", [&](auto& v, auto& p) { source.rate = number(v, p); }},
                {"row_size",
                 [&](auto& v, auto& p) {
                   source.row_size =
                       size(v, p, false, kMaxRowSize, kMaxRowSizeText, " (a row must fit in one record)");
                 }},
                {"max_rows", [&](auto& v, auto& p) { source.max_rows = integer(v, p, 0, kNoMax); }},
                {"fail_after",
                 [&](auto& v, auto& p) { source.fail_after = integer(v, p, 0, kNoMax); }}};
      },
      [&] {
        for (auto& [name, kind] : kSourceKinds)
          if (kind == source.kind) return std::string(" for a ") + name + " source";
        return std::string();
      });
  if (source.kind == Kind::vql && source.query.empty()) fail(join(path, "query"), "missing; a vql source needs one");
  if (source.kind == Kind::artifact && source.name.empty())
    fail(join(path, "name"), "missing; an artifact source needs the artifact's name");
}

QuerySpec read_event_table_entry(const YAML::Node& n, const std::string& path) {
  QuerySpec q;
  q.lane = Lane::EVENTS;
  q.source.kind = Kind::artifact;
  read_map(n, path,
           {{"artifact", [&](auto& v, auto& p) { q.artifact = q.source.name = name_text(v, p); }},
            {"name", [&](auto& v, auto& p) { q.name = name_text(v, p); }},
            {"parameters", [&](auto& v, auto& p) { read_parameters(v, p, q.source.parameters); }}});
  if (q.artifact.empty()) fail(join(path, "artifact"), "missing; every entry names an event artifact");
  if (q.name.empty()) q.name = q.artifact;
  return q;
}

void read_event_table(const YAML::Node& n, const std::string& path, std::vector<QuerySpec>& out) {
  out.clear();
  if (n.IsNull()) return;
  if (!n.IsSequence()) expected(n, path, "a list of event artifacts");
  for (size_t i = 0; i < n.size(); ++i)
    out.push_back(read_event_table_entry(n[i], path + "[" + std::to_string(i) + "]"));
}

QuerySpec read_query(const YAML::Node& n, const std::string& path) {
  QuerySpec q;
  read_map(n, path,
           {{"name", [&](auto& v, auto& p) { q.name = name_text(v, p); }},
            {"id", [&](auto& v, auto& p) { q.id = integer(v, p, 1, kFirstFlowId - 1); }},
            {"artifact", [&](auto& v, auto& p) { q.artifact = name_text(v, p); }},
            {"lane", [&](auto& v, auto& p) { q.lane = choice(v, p, kLanes); }},
            {"source", [&](auto& v, auto& p) { read_source(v, p, q.source); }},
            {"batch",
             [&](auto& batch, auto& at) {
               read_map(
                   batch, at,
                   {{"rows", [&](auto& v, auto& p) { q.batch_rows = integer(v, p, 1, kNoMax); }},
                    {"bytes", [&](auto& v, auto& p) { q.batch_bytes = size(v, p, true); }},
                    {"delay_ms", [&](auto& v, auto& p) { q.batch_delay = millis(v, p, 0); }}});
             }},
            {"max_in_flight", [&](auto& v, auto& p) { q.max_in_flight = integer(v, p, 1, 64); }}});
  if (q.name.empty()) fail(join(path, "name"), "missing; every query needs a name");
  if (q.artifact.empty()) q.artifact = q.name;
  return q;
}

void read_queries(const YAML::Node& n, const std::string& path, std::vector<QuerySpec>& queries) {
  queries.clear();
  if (n.IsNull()) return;
  if (!n.IsSequence()) expected(n, path, "a list of queries");
  // Each name and id, and the position that has it: a duplicate is found in
  // one look-up, so a long list is read in linear time.
  std::unordered_map<std::string, size_t> names;
  std::unordered_map<uint64_t, size_t> ids;
  auto position = [&](size_t j) { return path + "[" + std::to_string(j) + "]"; };
  for (size_t i = 0; i < n.size(); ++i) {
    std::string at = position(i);
    QuerySpec q = read_query(n[i], at);
    bool implicit_id = q.id == 0;
    if (implicit_id) q.id = i + 1;
    if (auto [it, fresh] = names.emplace(q.name, i); !fresh)
      fail(join(at, "name"), "name \"" + q.name + "\" is already used by " + position(it->second));
    if (auto [it, fresh] = ids.emplace(q.id, i); !fresh)
      fail(join(at, "id"),
           "id " + std::to_string(q.id) + " is already used by " + position(it->second) +
               (implicit_id ? " (a query without an id gets its position, 1..N)" : ""));
    queries.push_back(std::move(q));
  }
}

// paths: a list, or one path (as --set artifacts.paths=DIR gives it): each is added.
void read_artifacts(const YAML::Node& n, const std::string& path, std::vector<std::string>& paths) {
  read_map(n, path, {{"paths", [&](auto& v, auto& p) {
                        if (v.IsScalar()) return paths.push_back(path_text(v, p));
                        if (!v.IsSequence()) expected(v, p, "a list of directories");
                        for (size_t i = 0; i < v.size(); ++i)
                          paths.push_back(path_text(v[i], p + "[" + std::to_string(i) + "]"));
                      }}});
}

void read_sensors(const YAML::Node& n, const std::string& path, SensorConfig& sensors) {
  read_map(n, path, {{"process_events", [&](auto& v, auto& p) {
                        sensors.process_events = choice(v, p, kProcessBackends);
                      }},
                     {"ring_buffer", [&](auto& v, auto& p) {
                        uint64_t bytes = size(v, p, true, 1ull << 30, "1GiB");
                        if (bytes < 4096 || (bytes & (bytes - 1)) != 0)
                          expected(v, p, "a power of two from 4KiB to 1GiB (a BPF ring buffer's size)");
                        sensors.ring_buffer = bytes;
                      }}});
}

void read_agent(const YAML::Node& root, AgentConfig& config) {
  std::vector<QuerySpec> event_table;
  read_map(root, "",
           {{"buffer", [&](auto& v, auto& p) { read_buffer(v, p, config); }},
            {"link", [&](auto& v, auto& p) { read_link(v, p, config.link); }},
            {"log", [&](auto& v, auto& p) { read_log(v, p, config.log); }},
            {"inspector", [&](auto& v, auto& p) { read_inspector(v, p, config.inspector); }},
            {"artifacts", [&](auto& v, auto& p) { read_artifacts(v, p, config.artifact_paths); }},
            {"vql", [&](auto& v, auto& p) {
               read_map(v, p, {{"allow_execve", [&](auto& b, auto& q) { config.allow_execve = choice(b, q, kBools); }}});
             }},
            {"sensors", [&](auto& v, auto& p) { read_sensors(v, p, config.sensors); }},
            {"event_table", [&](auto& v, auto& p) { read_event_table(v, p, event_table); }},
            {"queries", [&](auto& v, auto& p) { read_queries(v, p, config.queries); }}});
  uint64_t next_id = 1;
  for (auto& q : config.queries) next_id = std::max(next_id, q.id + 1);
  // Each name, and who has it: a query, or an earlier entry of the table.
  std::unordered_map<std::string, std::string> names;
  for (auto& q : config.queries) names.emplace(q.name, "a query");
  for (size_t i = 0; i < event_table.size(); ++i) {
    auto& e = event_table[i];
    std::string at = "event_table[" + std::to_string(i) + "]";
    if (auto [it, fresh] = names.emplace(e.name, at); !fresh)
      fail(at, "name \"" + e.name + "\" is already used by " + it->second +
                   (e.name == e.artifact ? " (give this entry a name)" : ""));
    if (next_id >= kFirstFlowId)  // ids from there on are the collector's flow ids
      fail(at, "no id left below " + std::to_string(kFirstFlowId) + " for this entry (the queries' ids reach " +
                   std::to_string(next_id - 1) + ")");
    e.id = next_id++;
    config.queries.push_back(std::move(e));
  }
}

// Reads `root` into `config`, turning problems into ConfigErrors that name `origin`.
void apply(const YAML::Node& root, AgentConfig& config, const std::string& origin) {
  try {
    read_agent(root, config);
  } catch (const Invalid& e) {
    throw ConfigError(origin + ": " + (e.path.empty() ? "" : e.path + ": ") + e.problem);
  }
}

// The built-in test artifacts, run by the test sources rather than the query engine.
constexpr std::pair<const char*, Kind> kTestArtifacts[] = {{"Outpost.Test.Clock", Kind::clock},
                                                           {"Outpost.Test.Synthetic", Kind::synthetic}};

}  // namespace

QuerySpec collected_query(const CollectSpec& c, Lane lane) {
  std::string origin = (lane == Lane::EVENTS ? "event table " : "collect ") + c.artifact;
  QuerySpec q;
  q.id = c.flow_id;
  q.name = "F." + std::to_string(c.flow_id);
  q.artifact = c.artifact.empty() ? "VQL" : c.artifact;
  q.lane = lane;
  auto kind = lookup(kTestArtifacts, c.artifact);
  if (!c.vql.empty() && !c.definition.empty())
    throw ConfigError(origin + ": a query and an artifact definition: give one");
  if (!c.vql.empty() || !c.definition.empty() || !kind) {  // the engine's: checked by the agent's SourceFactory
    q.source.kind = c.vql.empty() ? Kind::artifact : Kind::vql;
    q.source.query = c.vql;
    q.source.name = c.artifact;
    q.source.definition = c.definition;
    q.source.parameters = c.parameters;
    return q;
  }
  q.source.kind = *kind;
  // Parameters are read exactly as a configuration's source keys are.
  YAML::Node source(YAML::NodeType::Map);
  source["type"] = *kind == Kind::clock ? "clock" : "synthetic";
  for (auto& [key, value] : c.parameters) {
    if (key == "type" || source[key])
      throw ConfigError(origin + ": parameter " + key + ": " +
                        (key == "type" ? "not a parameter of this artifact" : "given twice"));
    source[key] = value;
  }
  try {
    read_source(source, "parameter", q.source);
  } catch (const Invalid& e) {
    throw ConfigError(origin + ": " + e.path + ": " + e.problem);
  }
  return q;
}

AgentConfig parse_agent_config(const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    std::string where = e.mark.is_null() ? ""
                                         : "line " + std::to_string(e.mark.line + 1) + ", column " +
                                               std::to_string(e.mark.column + 1) + ": ";
    throw ConfigError(origin + ": " + where + e.msg);
  }
  AgentConfig config;
  apply(root, config, origin);
  return config;
}

AgentConfig load_agent_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path + ": cannot read: is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_agent_config(text.str(), path);
}

void check_agent_config(const AgentConfig& config, const std::string& origin) {
  // LMDB maps the buffer's whole map at once: reserve (not commit) as much
  // address space here, so a limit this process cannot map is named now,
  // not reported by mdb_env_open. The map size as BufferStore derives it,
  // from the limit the agent opens it with: the shutdown reserve (the
  // pending budget) included.
  const auto& b = config.buffer;
  constexpr uint64_t mib = 1ull << 20;
  uint64_t limit = b.limit_bytes + config.pending_budget;
  uint64_t map = b.map_size_bytes ? b.map_size_bytes : (limit * 3 + 256 * mib + mib - 1) / mib * mib;
  void* probe = ::mmap(nullptr, map, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED)
    throw ConfigError(origin + ": buffer.limit: a limit of " + std::to_string(b.limit_bytes) +
                      " bytes and a pending_budget of " + std::to_string(config.pending_budget) +
                      " bytes need a map of " + std::to_string(map / mib) +
                      "MiB, more address space than this process can reserve (" + std::strerror(errno) +
                      "); lower the limit");
  ::munmap(probe, map);
  auto& link = config.link;
  if (link.kind == LinkKind::collector && !link.insecure &&
      (link.ca.empty() || link.cert.empty() || link.key.empty()))
    throw ConfigError(origin + ": link: a collector link needs ca, cert and key (or insecure: "
                               "true, which turns TLS off)");
}

void apply_override(AgentConfig& config, const std::string& assignment) {
  const std::string origin = "--set";
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(origin + ": expected key=value, got \"" + assignment + "\"");
  // "a.b.c=v" becomes {a: {b: {c: "v"}}} and is read like a file.
  std::function<YAML::Node(size_t)> nest = [&](size_t from) {
    size_t dot = assignment.find('.', from);
    if (dot > eq) dot = eq;
    YAML::Node map(YAML::NodeType::Map);
    map[assignment.substr(from, dot - from)] =
        dot == eq ? YAML::Node(assignment.substr(eq + 1)) : nest(dot + 1);
    return map;
  };
  apply(nest(0), config, origin);
}

std::string default_agent_config_yaml() {
  return R"(# Outpost agent configuration. Every key is optional except a query's name;
# the values shown are the defaults. Any key can be overridden on the command
# line, e.g. --set buffer.limit=64MiB --set link=offline --set log.level=debug.
# Sizes: 1000, 10kB, 5MB (1000-based), 512KiB, 64MiB, 1GiB (1024-based).

buffer:
  dir: outpost-data/buffer      # the LMDB store; locked by one agent at a time
  limit: 1GiB                   # buffered bytes; queries pause when it is reached
  sync: full                    # full: a stored row survives power loss; none: kill -9 only
  compact_threshold: 64MiB      # shrink a drained store whose file is larger than this
  pending_budget: 64MiB         # appends waiting in RAM for the buffer (queries pause beyond
                                # it); the store keeps this much above the limit for shutdown
  commit_interval_ms: 0         # 0: every row is stored (committed, fsynced) at once; e.g. 250:
                                #   a trickle at most that often (a busy stream still at once)

link:                           # or just: link: offline | file | host | file:PATH
  type: file                    # file: deliver to a local JSON-lines file; offline: nowhere;
  path: outpost-data/delivered.jsonl  # collector: address, ca, cert, key (max_delay_ms: 0, e.g.
                                # 200: fresh rows wait that long to share an upload); host: the
                                # program embedding Outpost receives them (max_unacked: 4)

log:
  level: info                   # trace, debug, info, warn, error, critical or off
  file: ""                      # also log to this file; "" for none

inspector:                      # what outpostctl reads (its unix socket, mode 0600)
  socket: outpost-data/inspector.sock  # ~ for no inspector
  control: false                # true: outpostctl may suspend, resume, restart, cancel, log-level,
                                #   link reconnect and buffer compact
  metrics: ~                    # host:port for OpenMetrics (GET /metrics), e.g. 127.0.0.1:9464
  metrics_remote: false         # true: metrics may listen on an address beyond loopback
  warnings:                     # when a condition is worth a warning
    mailbox_backlog_ms: 10000   # a mailbox over 1000 messages this long
    slow_handler_ms: 500        # one message this long in a handler on a shared worker
    backpressure_ms: 60000      # a query or the buffer waiting for space this long
    link_offline_ms: 300000     # the link not delivering this long
    restarts: 3                 # a query failing this often
    restart_window_ms: 600000   #   within this time
    recent_ms: 600000           # a slow handler or dropped events are warned about this long after

artifacts:                      # artifact definitions besides the built-in ones
  paths: []                     # directories (every *.yaml below) or files; --set artifacts.paths=DIR
                                #   or outpost-agent --definitions DIR adds one

vql:
  allow_execve: false           # true: execve() may run programs (as root, when the agent is);
                                #   false refuses it, as Velociraptor's prevent_execve

sensors:
  process_events: auto          # process events from the kernel: auto (eBPF, else the netlink proc
                                #   connector), ebpf or proc_connector; eBPF needs root (or CAP_BPF
                                #   and CAP_PERFMON), the proc connector root before Linux 6.6
  ring_buffer: 1MiB             # eBPF's ring buffer, a power of two: events it has no room for are
                                #   counted and reported as dropped_at_source

event_table:                    # event artifacts (outpost-agent artifacts list), each a query
  - artifact: Linux.Events.ProcessCreation     # a row per process started
    parameters: {Period: 1}
  - artifact: Linux.Detection.Thumbdrives.List # files on removable drives, listed and watched
    # name: drives              # defaults to the artifact's name

queries:                        # none at all is fine
  - name: heartbeat             # unique; letters, digits, '_', '.' and '-'
    # id: 1                     # unique, > 0; defaults to the position in this list
    # artifact: heartbeat       # defaults to the name
    lane: events                # control, events, results or uploads
    source:
      type: vql                 # or artifact (name:, parameters:), clock, synthetic, host
      query: SELECT * FROM clock(period=1)
    batch:                      # a batch is sent at once when none of this query's is being
      rows: 1000                # committed, else at whichever comes first: this many rows,
      bytes: 1MiB               #   this many bytes,
      delay_ms: 5               #   or this long after its first row
    max_in_flight: 2            # unanswered appends before the query pauses (1..64)

  # - name: synthetic           # generated rows, for load and restart tests
  #   source: {type: synthetic, rate: 20, row_size: 256, max_rows: 0, fail_after: 0}
)";
}

uint64_t parse_size(const std::string& text) {
  static constexpr std::pair<const char*, uint64_t> kUnits[] = {
      {"", 1},
      {"B", 1},
      {"kB", 1000ull},
      {"MB", 1000ull * 1000},
      {"GB", 1000ull * 1000 * 1000},
      {"TB", 1000ull * 1000 * 1000 * 1000},
      {"KiB", 1ull << 10},
      {"MiB", 1ull << 20},
      {"GiB", 1ull << 30},
      {"TiB", 1ull << 40}};
  const char* end = text.data() + text.size();
  uint64_t count = 0;
  auto [digits_end, ec] = std::from_chars(text.data(), end, count);
  std::string unit_name(digits_end, end);
  if (unit_name.size() > 1 && unit_name[0] == ' ') unit_name.erase(0, 1);  // "64 MiB"
  auto unit = lookup(kUnits, unit_name);
  if (ec == std::errc::invalid_argument || !unit)
    throw std::invalid_argument(std::string("expected ") + kSizeExample + ", got \"" + text + "\"");
  if (ec == std::errc::result_out_of_range || count > kNoMax / *unit)
    throw std::invalid_argument("expected a size below 16EiB, got \"" + text + "\"");
  return count * *unit;
}

}  // namespace outpost
