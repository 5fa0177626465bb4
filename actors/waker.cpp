#include "actors/waker.hpp"

#include <algorithm>

#include "actors/status.hpp"

namespace outpost {
namespace {

using Self = instrumented<waker_self_actor, waker_state>;

// One CAF timer, for the earliest sleeper, unless one is already due by then.
void arm(Self self) {
  auto& st = self->state;
  if (st.sleepers.empty() || st.sleepers.front().due >= st.armed) return;
  st.armed = st.sleepers.front().due;
  self->delayed_send(self, st.armed - self->clock().now(), internal_atom::value, wake_atom::value,
                     caf::timespan{st.armed.time_since_epoch()});
}

void wake_due(Self self) {
  auto& st = self->state;
  auto now = self->clock().now();
  while (!st.sleepers.empty() && st.sleepers.front().due <= now) {
    std::pop_heap(st.sleepers.begin(), st.sleepers.end());
    if (auto who = st.sleepers.back().who.lock()) {
      who->enqueue(nullptr, caf::make_message_id(), caf::make_message(pull_atom::value), nullptr);
      ++st.wakeups;
    }
    st.sleepers.pop_back();
  }
}

}  // namespace

waker_self_actor::behavior_type waker(Self self) {
  return {
      [=](sleep_atom, caf::timespan delay) {
        auto& st = self->state;
        auto who = self->current_sender();
        if (!who) return;
        st.sleepers.push_back({self->clock().now() + delay, caf::actor_cast<caf::weak_actor_ptr>(who)});
        std::push_heap(st.sleepers.begin(), st.sleepers.end());
        arm(self);
      },
      [=](internal_atom, wake_atom, caf::timespan armed_for) {
        auto& st = self->state;
        if (st.armed.time_since_epoch() == armed_for) st.armed = waker_state::time_point::max();
        wake_due(self);
        arm(self);
      },
      [=](status_atom) {
        auto& st = self->state;
        caf::settings s;
        put_count(s, "sleepers", st.sleepers.size());
        put_count(s, "wakeups", st.wakeups);
        return s;
      },
  };
}

}  // namespace outpost
