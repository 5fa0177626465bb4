// libFuzzer target for the VQL parser: any input either parses or gives a
// ParseError, never a crash, a hang or a leak; and what parses prints in a
// canonical form that parses back to itself. Run by scripts/fuzz.sh.

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string_view>

#include "queries/parser.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  outpost::vql::ast::Query query;
  try {
    query = outpost::vql::parse(text);
  } catch (const outpost::vql::ParseError&) {
    return 0;
  }
  std::string printed = outpost::vql::ast::print(query);
  std::string again;
  try {
    again = outpost::vql::ast::print(outpost::vql::parse(printed));
  } catch (const outpost::vql::ParseError& e) {
    std::fprintf(stderr, "the canonical form does not parse: %s\n%s\n", e.what(), printed.c_str());
    std::abort();
  }
  if (again != printed) {
    std::fprintf(stderr, "the canonical form is not stable:\n%s\n%s\n", printed.c_str(), again.c_str());
    std::abort();
  }
  return 0;
}
