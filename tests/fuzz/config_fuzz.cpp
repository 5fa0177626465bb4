// libFuzzer target for the agent's configuration: a file's YAML, then the
// checks no single key can make, and one `--set key=value` override (the
// input's first line) applied to the defaults. Every problem is a
// ConfigError naming where it is; anything else escaping is a bug (the
// fuzzer reports it as a crash), as is a crash, a hang or a leak.

#include <cstdint>
#include <string>

#include "actors/agent_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    outpost::AgentConfig config = outpost::parse_agent_config(text, "fuzz.yaml");
    outpost::check_agent_config(config, "fuzz.yaml");
  } catch (const outpost::ConfigError&) {
  }
  try {
    outpost::AgentConfig defaults;
    outpost::apply_override(defaults, text.substr(0, text.find('\n')));
  } catch (const outpost::ConfigError&) {
  }
  return 0;
}
