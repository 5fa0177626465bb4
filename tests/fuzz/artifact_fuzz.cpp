// libFuzzer target for the artifact loader: a definition's YAML as an
// operator's file or a collector's request brings it, parsed and every
// source's query compiled against the agent's registry. Every problem is an
// ArtifactError naming the key; anything else escaping is a bug (the fuzzer
// reports it as a crash), as is a crash, a hang or a leak.

#include <cstdint>
#include <string>

#include "queries/artifacts.hpp"
#include "queries/engine.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const outpost::vql::Engine engine(outpost::vql::default_registry());
  std::string yaml(reinterpret_cast<const char*>(data), size);
  try {
    (void)outpost::vql::parse_artifact(yaml, "fuzz.yaml", engine);
  } catch (const outpost::vql::ArtifactError&) {
  }
  return 0;
}
