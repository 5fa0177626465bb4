// Checks scripts/sanitizers/ubsan-ignore.txt before the ASan+UBSan run relies
// on it (scripts/sanitize.sh), built with the same flags, once with the list
// and once without: `caf` spawns an actor with no arguments, as the agent
// does, and must pass only with the list (the finding inside CAF's
// init_fun_factory); `ours` dereferences a null shared_ptr of another type
// and must abort either way (it is still a finding).
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>

#include <cstdio>
#include <cstring>
#include <memory>

__attribute__((noinline)) const int& deref(const std::shared_ptr<int>& p) { return *p; }

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  if (std::strcmp(argv[1], "caf") == 0) {
    caf::actor_system_config cfg;
    caf::actor_system sys{cfg};
    sys.spawn([](caf::event_based_actor* self) { self->quit(); });
    sys.await_all_actors_done();
    std::puts("a CAF spawn without arguments passed");
    return 0;
  }
  std::shared_ptr<int> ours;
  std::printf("not caught: %p\n", static_cast<const void*>(&deref(ours)));
  return 0;
}
