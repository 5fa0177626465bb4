#include "actors/file_link.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <caf/actor_system.hpp>

#include <cerrno>
#include <cstring>

#include "actors/status.hpp"
#include "persistence/files.hpp"
#include "schemas/json.hpp"

namespace outpost {
namespace {

using Self = instrumented<link_actor, file_link_state>;
constexpr auto kRetryDelay = std::chrono::seconds(1);

}  // namespace

std::string json_lines(const persistence::BufferedRecord& r) {
  std::string out;
  try {
    schemas::RecordView view(r.words);
    schemas::append_json_lines(out, r.seq, view.record());
  } catch (const std::exception& e) {
    // A record that passed its checksum but does not decode: say so in the
    // output rather than lose its place.
    out = "{\"seq\":" + std::to_string(r.seq) + ",\"error\":\"undecodable record\"}\n";
    spdlog::error("link: record {} does not decode: {}", r.seq, e.what());
  }
  return out;
}

namespace {

// Appends and fsyncs; false (with last_error set) when the file refuses.
bool write_durably(Self self, const std::string& text) {
  auto& st = self->state;
  if (int error = persistence::write_all(st.fd, text.data(), text.size())) {
    st.last_error = "write " + st.path + ": " + std::strerror(error);
    return false;
  }
  if (::fdatasync(st.fd) != 0) {
    st.last_error = "fdatasync " + st.path + ": " + std::strerror(errno);
    return false;
  }
  st.bytes_written += text.size();
  return true;
}

void pump(Self self, Lane lane);

void failed(Self self, Lane lane) {
  auto& st = self->state;
  ++st.errors;
  spdlog::error("link: {}; retrying in {} s", st.last_error, kRetryDelay.count());
  self->delayed_send(self, kRetryDelay, committed_atom::value, lane, uint64_t{0}, BufferedRecords{});
}

void deliver(Self self, Lane lane, const BufferedRecords& records) {
  auto& st = self->state;
  std::string text;
  for (auto& r : *records) text += json_lines(r);
  if (!write_durably(self, text)) return failed(self, lane);
  uint64_t through = records->back().seq;
  st.delivered_through[static_cast<size_t>(lane)] = through;
  st.records_delivered += records->size();
  if (auto* m = self->metrics()) m->add_out(rows_of(*records), persistence::payload_bytes(*records));
  // Delivered and durable: now the buffer may forget them. The next read
  // starts after `through` and need not wait for the ack to be applied.
  self->request(st.buffer, std::chrono::seconds(60), ack_atom::value, lane, through)
      .then([](uint64_t) {},
            [=](caf::error& err) {
              self->state.last_error = "ack: " + self->system().render(err);
              failed(self, lane);
            });
  pump(self, lane);
}

// Reads what the lane holds past what was delivered, until it is empty.
void pump(Self self, Lane lane) {
  auto& st = self->state;
  size_t i = static_cast<size_t>(lane);
  if (!st.online || st.reading[i]) return;
  st.reading[i] = true;
  self->request(st.buffer, std::chrono::seconds(60), read_atom::value, lane,
                st.delivered_through[i], kLinkReadBatch, uint64_t{8} << 20)
      .then(
          [=](BufferedRecords records) {
            self->state.reading[i] = false;
            if (!records->empty()) deliver(self, lane, records);
          },
          [=](caf::error& err) {
            self->state.reading[i] = false;
            self->state.last_error = "read: " + self->system().render(err);
            failed(self, lane);
          });
}

void pump_all(Self self) {
  for (size_t i = 0; i < schemas::kLaneCount; ++i) pump(self, static_cast<Lane>(i));
}

}  // namespace

// Each write was fdatasynced: a close error says nothing new. kj::AutoCloseFd's
// destructor would throw it out of the actor's cleanup.
file_link_state::~file_link_state() noexcept { persistence::close_file(fd); }

link_actor::behavior_type file_link(instrumented<link_actor, file_link_state> self,
                                    buffer_actor buffer, std::string path, bool online) {
  auto& st = self->state;
  st.buffer = std::move(buffer);
  st.path = std::move(path);
  if (!st.path.empty()) {
    st.fd = kj::AutoCloseFd(::open(st.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (st.fd == nullptr) {
      st.last_error = "open " + st.path + ": " + std::strerror(errno);
      spdlog::error("link: {}; delivering nothing", st.last_error);
    }
  }
  st.online = online && st.fd != nullptr;
  pump_all(self);  // a backlog from before a restart is delivered right away
  return {
      [=](committed_atom, Lane lane, uint64_t, const BufferedRecords&) { pump(self, lane); },
      [=](online_atom, bool on) {
        auto& st = self->state;
        if (on && st.fd == nullptr) {
          spdlog::warn("link: cannot go online: {}", st.path.empty() ? "offline link" : st.last_error);
          return;
        }
        st.online = on;
        pump_all(self);
      },
      [=](reconnect_atom) -> caf::result<std::string> {
        auto& st = self->state;
        return caf::make_error(caf::sec::runtime_error,
                               st.path.empty() ? std::string("this agent's link is offline: it has no connection")
                                               : "this agent's link writes to " + st.path + ": it has no connection");
      },
      [=](status_atom) {
        auto& st = self->state;
        caf::settings s;
        caf::put(s, "kind", std::string(st.path.empty() ? "offline" : "file"));
        if (!st.path.empty()) caf::put(s, "path", st.path);
        caf::put(s, "online", st.online);
        put_count(s, "records_delivered", st.records_delivered);
        put_count(s, "bytes_written", st.bytes_written);
        put_count(s, "errors", st.errors);
        for (size_t i = 0; i < schemas::kLaneCount; ++i)
          put_count(s, std::string("lanes.") + schemas::lane_name(static_cast<Lane>(i)) +
                           ".delivered_through",
                    st.delivered_through[i]);
        if (!st.last_error.empty()) caf::put(s, "last_error", st.last_error);
        return s;
      },
  };
}

link_actor spawn_file_link(caf::actor_system& sys, buffer_actor buffer, std::string path, bool online) {
  return sys.spawn<caf::detached>(file_link, std::move(buffer), std::move(path), online);
}

}  // namespace outpost
