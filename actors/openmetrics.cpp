#include "actors/openmetrics.hpp"

#include <caf/config_value.hpp>
#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>

namespace outpost {
namespace {

// A label value: backslash, double quote and newline escaped.
std::string label_value(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// A metric name's part from a status key: letters, digits and '_' only.
std::string name_part(const std::string& key) {
  std::string out;
  for (char c : key) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

struct Family {
  const char* name;
  const char* type;  // counter samples get "_total"
  const char* help;
  std::function<double(const ActorMetrics&, int64_t now)> value;
  bool state_label = false;  // its samples name the actor's state
};

// The numbers of one status (nested keys joined by '_'), as "unknown"
// families: a status mixes counters and gauges without saying which.
void status_families(std::string& out, const std::string& prefix, const std::string& labels,
                     const caf::settings& s) {
  std::function<void(const std::string&, const caf::settings&)> walk = [&](const std::string& at,
                                                                           const caf::settings& d) {
    for (auto& [key, value] : d) {
      std::string name = at + "_" + name_part(key);
      double v;
      if (auto i = caf::get_if<int64_t>(&value)) v = static_cast<double>(*i);
      else if (auto r = caf::get_if<double>(&value)) v = *r;
      else if (auto b = caf::get_if<bool>(&value)) v = *b ? 1 : 0;
      else if (auto nested = caf::get_if<caf::settings>(&value)) {
        walk(name, *nested);
        continue;
      } else {
        continue;  // text: not a number
      }
      out += "# TYPE " + name + " unknown\n";
      out += name + "{" + labels + "} " + number(v) + "\n";
    }
  };
  walk(prefix, s);
}

}  // namespace

std::string openmetrics_text(const ActorRegistry& registry, const Statuses& statuses) {
  static const Family kFamilies[] = {
      {"outpost_actor_mailbox", "gauge", "Messages waiting in the actor's mailbox.",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.mailbox_size()); }},
      {"outpost_actor_messages", "counter", "Messages the actor handled.",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.handled.load()); }},
      {"outpost_actor_handling_seconds", "counter", "Time the actor spent in its handlers.",
       [](const ActorMetrics& m, int64_t) { return m.handling_ns.load() / 1e9; }},
      {"outpost_actor_handling_max_seconds", "gauge", "The actor's longest handling of one message.",
       [](const ActorMetrics& m, int64_t) { return m.handling_max_ns.load() / 1e9; }},
      {"outpost_actor_rows_in", "counter", "Rows of the records appended to the actor (the buffer).",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.rows_in.load()); }},
      {"outpost_actor_rows_out", "counter", "Rows of the records the actor passed on (appended, read, sent).",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.rows_out.load()); }},
      {"outpost_actor_bytes_in", "counter", "Bytes of records appended to the actor (the buffer).",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.bytes_in.load()); }},
      {"outpost_actor_bytes_out", "counter", "Bytes of records the actor passed on (appended, read, sent).",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.bytes_out.load()); }},
      {"outpost_actor_dropped", "counter", "Events or rows lost at the actor (a sensor's full queue).",
       [](const ActorMetrics& m, int64_t) { return static_cast<double>(m.dropped.load()); }},
      {"outpost_actor_state_seconds", "gauge", "How long the actor has been in its state (the state label).",
       [](const ActorMetrics& m, int64_t now) { return (now - m.state_since_ns.load()) / 1e9; }, true},
  };
  auto live = registry.live();
  int64_t now = steady_ns();
  std::vector<std::string> labels;
  labels.reserve(live.size());
  for (auto& e : live)
    labels.push_back(fmt::format("id=\"{}\",kind=\"{}\",name=\"{}\"", e.metrics->id, label_value(e.metrics->kind),
                                 label_value(e.metrics->name())));
  std::string out;
  out.reserve(live.size() * 600 + 4096);
  out += "# TYPE outpost_agent_start_time_seconds gauge\n"
         "# HELP outpost_agent_start_time_seconds When the agent's actor system started (Unix time).\n";
  out += "outpost_agent_start_time_seconds " + number(registry.started_wall_ns / 1e9) + "\n";
  out += "# TYPE outpost_actors_exited_messages counter\n"
         "# HELP outpost_actors_exited_messages Messages handled by actors that have exited.\n";
  out += "outpost_actors_exited_messages_total " + std::to_string(registry.handled_by_exited()) + "\n";
  for (auto& f : kFamilies) {
    const char* total = std::strcmp(f.type, "counter") == 0 ? "_total" : "";
    out += fmt::format("# TYPE {} {}\n# HELP {} {}\n", f.name, f.type, f.name, f.help);
    for (size_t i = 0; i < live.size(); ++i) {
      auto& m = *live[i].metrics;
      if (f.state_label)
        out += fmt::format("{}{}{{{},state=\"{}\"}} {}\n", f.name, total, labels[i], to_string(m.state()),
                           number(f.value(m, now)));
      else
        out += fmt::format("{}{}{{{}}} {}\n", f.name, total, labels[i], number(f.value(m, now)));
    }
  }
  for (auto& e : live) {
    auto it = statuses.find(e.metrics->id);
    if (it == statuses.end()) continue;
    std::string kind = name_part(e.metrics->kind);
    status_families(out, "outpost_" + kind, fmt::format("id=\"{}\"", e.metrics->id), it->second);
  }
  out += "# EOF\n";
  return out;
}

}  // namespace outpost
