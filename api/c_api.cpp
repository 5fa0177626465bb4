// include/outpost/outpost.h over outpost::Agent: every entry point catches
// what the C++ side throws (a bug, or memory) and returns it as a code.

#include "outpost/outpost.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "api/c_plugins.hpp"
#include "api/row_reader.hpp"
#include "outpost/outpost.hpp"

struct outpost_agent {
  std::unique_ptr<outpost::Agent> agent;
};

struct outpost_ack {
  outpost::SinkAck ack;
};

namespace {

using outpost::Errc;
static_assert(OUTPOST_TOO_LARGE == static_cast<int>(Errc::too_large) &&
                  OUTPOST_WOULD_BLOCK == static_cast<int>(Errc::would_block) &&
                  OUTPOST_FAILED == static_cast<int>(Errc::failed),
              "outpost_code and outpost::Errc keep the same values");

char* copy(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

outpost_code report(const outpost::Result& r, char** error) {
  if (!r && error) *error = copy(r.message);
  return static_cast<outpost_code>(r.code);
}

outpost_code fail(outpost_code code, const std::string& why, char** error) {
  if (error) *error = copy(why);
  return code;
}

// Runs `body`, whose outpost::Result becomes the code; what it throws is a bug.
template <class Body>
outpost_code guarded(char** error, Body&& body) {
  try {
    return report(body(), error);
  } catch (const std::exception& e) {
    return fail(OUTPOST_FAILED, std::string("outpost: ") + e.what(), error);
  } catch (...) {
    return fail(OUTPOST_FAILED, "outpost: an unknown exception", error);
  }
}

bool missing(const void* p, const char* what, char** error, outpost_code* code) {
  if (p) return false;
  *code = fail(OUTPOST_INVALID_ARGUMENT, std::string(what) + " is NULL", error);
  return true;
}

}  // namespace

extern "C" {

const char* outpost_code_name(outpost_code code) {
  if (code == OUTPOST_INVALID_ARGUMENT) return "invalid_argument";
  return outpost::to_string(static_cast<Errc>(code));
}

void outpost_free(void* p) { std::free(p); }

outpost_code outpost_agent_create(const outpost_options* o, outpost_agent** agent) {
  outpost_code code = OUTPOST_OK;
  if (missing(o, "options", nullptr, &code) || missing(agent, "agent", nullptr, &code)) return code;
  try {
    outpost::AgentOptions options;
    if (o->config_yaml) options.config_yaml = o->config_yaml;
    if (o->origin) options.origin = o->origin;
    for (size_t i = 0; i < o->override_count; ++i)
      if (o->overrides[i]) options.overrides.emplace_back(o->overrides[i]);
    if (auto* sink = o->sink) {
      void* user = o->sink_user;
      options.sink = [sink, user](const outpost::SinkBatch& batch, outpost::SinkAck ack) {
        std::vector<outpost_record> records;
        records.reserve(batch.records.size());
        for (auto& r : batch.records) records.push_back({r.seq, r.query_id, r.rows, r.json.c_str(), r.json.size()});
        sink(user, batch.lane.c_str(), records.data(), records.size(), new outpost_ack{std::move(ack)});
      };
    }
    if (auto* log = o->log) {
      void* user = o->log_user;
      options.log_sink = [log, user](const outpost::LogLine& line) {
        log(user, static_cast<int>(line.level), line.time_ns, line.message.c_str());
      };
    }
    if (auto* writable = o->on_writable) {
      void* user = o->writable_user;
      options.on_writable = [writable, user](const std::string& query) { writable(user, query.c_str()); };
    }
    options.worker_threads = o->worker_threads;
    add_c_plugins(*o, options);
    *agent = new outpost_agent{std::make_unique<outpost::Agent>(std::move(options))};
    return OUTPOST_OK;
  } catch (const std::invalid_argument&) {
    return OUTPOST_INVALID_ARGUMENT;
  } catch (...) {
    return OUTPOST_FAILED;
  }
}

void outpost_agent_destroy(outpost_agent* agent) {
  try {
    delete agent;
  } catch (...) {  // a destructor that throws is a bug: nothing to tell the host but to go on
  }
}

outpost_code outpost_agent_start(outpost_agent* agent, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code)) return code;
  return guarded(error, [&] { return agent->agent->start(); });
}

outpost_code outpost_agent_stop(outpost_agent* agent, int64_t deadline_ms, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code)) return code;
  return guarded(error, [&] { return agent->agent->stop(std::chrono::milliseconds(deadline_ms)); });
}

void outpost_agent_request_stop(outpost_agent* agent) {
  if (agent) try {
      agent->agent->request_stop();
    } catch (...) {
    }
}

outpost_code outpost_agent_wait(outpost_agent* agent, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code)) return code;
  return guarded(error, [&] { return agent->agent->wait(); });
}

char* outpost_agent_status_json(outpost_agent* agent) {
  try {
    return copy(agent ? agent->agent->status_json() : "[]");
  } catch (...) {
    return copy("[]");
  }
}

outpost_code outpost_agent_query(outpost_agent* agent, const char* vql, outpost_row_fn on_row, void* user,
                                 uint64_t max_rows, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code) || missing(vql, "vql", error, &code)) return code;
  if (!on_row) return fail(OUTPOST_INVALID_ARGUMENT, "on_row is NULL", error);
  return guarded(error, [&] {
    outpost::QueryOptions options;
    options.max_rows = max_rows;
    return agent->agent->run_query(
        vql, [&](const std::string& row) { return on_row(user, row.c_str()) != 0; }, options);
  });
}

outpost_code outpost_agent_push_json(outpost_agent* agent, const char* query, const char* row, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code) || missing(query, "query", error, &code) ||
      missing(row, "row", error, &code))
    return code;
  outpost::Row parsed;
  try {
    parsed = outpost::RowReader(row).row();
  } catch (const std::invalid_argument& e) {
    return fail(OUTPOST_INVALID_ARGUMENT, std::string("push into ") + query + ": " + e.what(), error);
  }
  return guarded(error, [&] { return agent->agent->push(query, parsed); });
}

outpost_code outpost_agent_wait_writable(outpost_agent* agent, const char* query, int64_t timeout_ms, char** error) {
  outpost_code code;
  if (missing(agent, "agent", error, &code) || missing(query, "query", error, &code)) return code;
  return guarded(error, [&] { return agent->agent->wait_writable(query, std::chrono::milliseconds(timeout_ms)); });
}

void outpost_ack_send(outpost_ack* ack) {
  if (!ack) return;
  try {
    ack->ack();
  } catch (...) {
  }
  delete ack;
}

void outpost_ack_drop(outpost_ack* ack) { delete ack; }

}  // extern "C"
