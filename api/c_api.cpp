// include/outpost/outpost.h over outpost::Agent: every entry point catches
// what the C++ side throws (a bug, or memory) and returns it as a code.

#include "outpost/outpost.h"

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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

// A flat JSON object as a Row: members in order; null, true, false, numbers
// (integers exact, as int64 or beyond it uint64), strings (with escapes).
class RowReader {
 public:
  explicit RowReader(const char* text) : p_(text) {}

  // Throws std::invalid_argument naming the offset and what was expected.
  outpost::Row read() {
    outpost::Row row;
    expect('{');
    if (peek() == '}') return ++p_, end(row);
    for (;;) {
      std::string name = string();
      expect(':');
      row.emplace_back(std::move(name), value());
      if (peek() == ',') {
        ++p_;
        continue;
      }
      expect('}');
      return end(row);
    }
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    throw std::invalid_argument("row: at offset " + std::to_string(p_ - start_) + ": " + what);
  }
  char peek() {
    while (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r') ++p_;
    return *p_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++p_;
  }
  outpost::Row& end(outpost::Row& row) {
    if (peek() != '\0') bad("text after the object");
    return row;
  }
  void word(const char* w) {
    for (; *w; ++w, ++p_)
      if (*p_ != *w) bad("expected a value");
  }
  void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else bad("expected four hex digits after \\u");
    }
    return v;
  }
  std::string string() {
    if (peek() != '"') bad("expected a string");
    std::string out;
    for (++p_; *p_ != '"'; ++p_) {
      if (*p_ == '\0') bad("the string does not end");
      if (static_cast<unsigned char>(*p_) < 0x20) bad("a control character in a string");
      if (*p_ != '\\') {
        out += *p_;
        continue;
      }
      switch (*++p_) {
        case '"': case '\\': case '/': out += *p_; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          ++p_;
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && p_[0] == '\\' && p_[1] == 'u') {  // a surrogate pair
            p_ += 2;
            unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) bad("an unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          --p_;
          break;
        }
        default: bad("an unknown escape");
      }
    }
    ++p_;
    return out;
  }
  outpost::Value number() {
    const char* begin = p_;
    while (*p_ == '-' || *p_ == '+' || *p_ == '.' || *p_ == 'e' || *p_ == 'E' || (*p_ >= '0' && *p_ <= '9')) ++p_;
    if (begin == p_) bad("expected a value");
    int64_t i = 0;
    if (auto [end, ec] = std::from_chars(begin, p_, i); ec == std::errc() && end == p_) return i;
    uint64_t u = 0;
    if (auto [end, ec] = std::from_chars(begin, p_, u); ec == std::errc() && end == p_) return u;
    std::string text(begin, p_);
    char* end = nullptr;
    double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) bad("not a number: " + text);
    return d;
  }
  outpost::Value value() {
    switch (peek()) {
      case '"': return string();
      case 't': return word("true"), outpost::Value(true);
      case 'f': return word("false"), outpost::Value(false);
      case 'n': return word("null"), outpost::Value(nullptr);
      case '{': case '[': bad("a nested object or array (a row's values are null, booleans, numbers or strings)");
      default: return number();
    }
  }

  const char* p_;
  const char* const start_ = p_;
};

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
    *agent = new outpost_agent{std::make_unique<outpost::Agent>(std::move(options))};
    return OUTPOST_OK;
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
    parsed = RowReader(row).read();
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
