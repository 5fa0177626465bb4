#include "actors/buffer_reader.hpp"

#include <spdlog/spdlog.h>

#include "actors/status.hpp"

namespace outpost {

buffer_reader_actor::behavior_type buffer_reader(
    instrumented<buffer_reader_actor, buffer_reader_state> self,
    std::shared_ptr<const persistence::BufferStore> store, buffer_actor buffer) {
  self->state.store = std::move(store);
  self->state.buffer = buffer;
  self->monitor(buffer);
  self->set_down_handler([=](caf::down_msg&) { self->quit(); });
  return {
      [=](read_atom, Lane lane, uint64_t after, uint64_t max,
          uint64_t max_bytes) -> caf::result<BufferedRecords> {
        auto& st = self->state;
        ++st.reads;
        try {
          auto got = st.store->read_concurrently(lane, after, max, max_bytes);
          if (!got.corrupt.empty()) {
            st.corrupt += got.corrupt.size();
            self->send(st.buffer, quarantine_atom::value, lane, std::move(got.corrupt));
          }
          st.records += got.records.size();
          if (auto* m = self->metrics()) m->add_out(count_rows(got.records), persistence::payload_bytes(got.records));
          return BufferedRecords{
              std::make_shared<const std::vector<persistence::BufferedRecord>>(std::move(got.records))};
        } catch (const persistence::StoreError& e) {
          // The environment is being replaced or failed: the owner's read reopens it.
          ++st.handed_to_buffer;
          spdlog::debug("buffer reader: {}; reading through the buffer", e.what());
          return self->delegate(st.buffer, read_atom::value, lane, after, max, max_bytes);
        }
      },
      [=](status_atom) {
        auto& st = self->state;
        caf::settings s;
        put_count(s, "reads", st.reads);
        put_count(s, "records", st.records);
        put_count(s, "handed_to_buffer", st.handed_to_buffer);
        put_count(s, "corrupt", st.corrupt);
        return s;
      },
  };
}

}  // namespace outpost
