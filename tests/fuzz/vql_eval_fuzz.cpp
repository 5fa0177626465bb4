// libFuzzer target for the VQL evaluator: a query (the input up to its
// first NUL byte) over rows made from the rest of the input (rows(): up to
// 64 rows of up to 8 columns of nulls, bools, ints, floats, strings, lists
// and dicts). The registry holds the functions and plugins that compute
// (no file written, no program run, no network): every query either fails
// to compile with a ParseError or QueryError, or runs to its end (or 10,000
// rows) with its rows rendered as JSON; a crash, a hang, a leak, UB or a
// std::logic_error is a bug.

#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "queries/engine.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

using namespace outpost::vql;

// Reads the row bytes: each value's type from one byte, its content from the next.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return at_ >= size_; }
  uint8_t next() { return at_ < size_ ? data_[at_++] : 0; }
  std::string text() {
    size_t n = std::min<size_t>(next() % 24, size_ - std::min(at_, size_));
    std::string s(reinterpret_cast<const char*>(data_) + at_, n);
    at_ += n;
    return s;
  }
  Value value(int depth) {
    switch (next() % (depth < 3 ? 9 : 7)) {
      case 0: return Value();
      case 1: return Value(next() % 2 == 1);
      case 2: return Value(static_cast<int64_t>(next()) - 128);
      case 3: {
        int64_t i = 0;
        for (int k = 0; k < 8; ++k) i = (i << 8) | next();
        return Value(i);
      }
      case 4: return Value(static_cast<double>(static_cast<int8_t>(next())) / 7.0);
      case 5: case 6: return Value(text());
      case 7: {
        List list;
        for (int n = next() % 5; n > 0; --n) list.push_back(value(depth + 1));
        return Value(std::move(list));
      }
      default: {
        Dict dict;
        for (int n = next() % 5; n > 0; --n) dict.set(text(), value(depth + 1));
        return Value(std::move(dict));
      }
    }
  }

 private:
  const uint8_t* data_;
  size_t size_, at_ = 0;
};

const Registry& computing_registry() {
  static const Registry r = [] {
    Registry r;
    add_builtin_functions(r);
    add_text_functions(r);
    add_flow_functions(r);
    add_string_functions(r);
    add_collection_functions(r);
    add_parse_functions(r);
    add_builtin_plugins(r);
    return r;
  }();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (spdlog::set_level(spdlog::level::off), true);
  (void)quiet;
  const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  size_t vql_size = nul ? static_cast<size_t>(nul - data) : size;
  std::string vql(reinterpret_cast<const char*>(data), vql_size);
  Bytes bytes(data + vql_size + (nul ? 1 : 0), size - vql_size - (nul ? 1 : 0));
  std::vector<Row> rows;
  static const char* const kColumns[] = {"A", "B", "C", "Name", "Pid", "X", "Y", "Data"};
  while (!bytes.empty() && rows.size() < 64) {
    Row row;
    for (int n = 1 + bytes.next() % 8; n > 0 && !bytes.empty(); --n) row.set(kColumns[bytes.next() % 8], bytes.value(0));
    rows.push_back(std::move(row));
  }
  Registry registry = computing_registry();
  registry.add(PluginSpec{"rows", "the fuzzer's rows", {}, false,
                          [rows](const Args&, Env&) { return rows_stream(rows); }});
  Engine engine(registry);
  Env env;
  outpost::fuzz::run_query(engine, vql, {}, env);
  return 0;
}
