#pragma once
// What the host's rows are made of: those it pushes and those its plugins make.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace outpost {

// A value of a row. Text is UTF-8.
using Value = std::variant<std::nullptr_t, bool, int64_t, uint64_t, double, std::string>;
// A row: each column's name and value, in order. A query's rows may differ in
// their columns (a batch then ends where they change).
using Row = std::vector<std::pair<std::string, Value>>;

}  // namespace outpost
