#pragma once
// VQL's dynamically typed values, as the evaluator holds them. A row is an
// ordered dict; rows leave the engine as schemas::Value (values.capnp).
//
// Containers are shared and immutable once built, so that a row copied into
// a LET variable, a foreach scope and a projection costs a pointer each.
// One exception: VQL's set() changes a dict in place, as Velociraptor's
// does (a query's values are used by its own thread only).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "schemas/codec.hpp"

namespace outpost::vql {

struct Value;
class Dict;
class StoredQuery;  // a query that runs when used (engine.hpp)
class Object;       // a value with members of its own (a path, a file mode)

using List = std::vector<Value>;
using ListPtr = std::shared_ptr<const List>;
using DictPtr = std::shared_ptr<const Dict>;
using QueryPtr = std::shared_ptr<const StoredQuery>;
using ObjectPtr = std::shared_ptr<const Object>;

struct Timestamp {
  int64_t ns = 0;  // since the Unix epoch, UTC
};

struct Value {
  using Data = std::variant<std::monostate, bool, int64_t, double, std::string, Timestamp, ListPtr,
                            DictPtr, QueryPtr, ObjectPtr>;
  Data data;

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : data(b) {}
  Value(int i) : data(int64_t{i}) {}
  Value(int64_t i) : data(i) {}
  Value(uint64_t u);  // beyond INT64_MAX becomes a double
  Value(double d) : data(d) {}
  Value(std::string s) : data(std::move(s)) {}
  Value(std::string_view s) : data(std::string(s)) {}
  Value(const char* s) : data(std::string(s)) {}
  Value(Timestamp t) : data(t) {}
  Value(List l) : data(std::make_shared<const List>(std::move(l))) {}
  Value(ListPtr l) : data(std::move(l)) {}
  Value(Dict d);
  Value(DictPtr d) : data(std::move(d)) {}
  Value(QueryPtr q) : data(std::move(q)) {}
  Value(ObjectPtr o) : data(std::move(o)) {}

  bool is_null() const { return data.index() == 0; }
  const bool* as_bool() const { return std::get_if<bool>(&data); }
  const int64_t* as_int() const { return std::get_if<int64_t>(&data); }
  const double* as_double() const { return std::get_if<double>(&data); }
  const std::string* as_string() const { return std::get_if<std::string>(&data); }
  const Timestamp* as_timestamp() const { return std::get_if<Timestamp>(&data); }
  const List* as_list() const;
  const Dict* as_dict() const;
  const StoredQuery* as_query() const;
  const Object* as_object() const;
  bool is_number() const { return as_int() || as_double(); }
  std::optional<double> number() const;  // int or double
};

// Insertion-ordered, keys unique. Lookups are linear while the dict is
// narrow (a row); from kIndexedFrom items on, set() keeps an index of the
// keys, so that a dict built from a hostile file (a JSON object with 10^5
// keys) costs linear time, not quadratic.
class Dict {
 public:
  static constexpr size_t kIndexedFrom = 32;

  Dict() = default;
  Dict(const Dict& other);
  Dict& operator=(const Dict& other);
  Dict(Dict&&) noexcept = default;
  Dict& operator=(Dict&&) noexcept = default;

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);  // replaces in place, or appends
  void reserve(size_t items) { items_.reserve(items); }
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }

 private:
  class Index;  // each key's position (value.cpp)
  struct DeleteIndex {
    void operator()(Index* index) const;
  };
  std::vector<std::pair<std::string, Value>> items_;
  std::unique_ptr<Index, DeleteIndex> index_;  // null below kIndexedFrom items
};

using Row = Dict;

// What Velociraptor's Go values with methods are to its VQL (an OSPath, a
// FileMode): members read by name, a string form that string arguments,
// `=~`, str() and comparisons see, and a JSON form of their own. Immutable,
// so const methods are safe from any thread.
class Object {
 public:
  virtual ~Object() = default;
  virtual const char* type() const = 0;  // as errors say it: "path", "mode"
  virtual std::string str() const = 0;
  // The member `name`; nullopt when there is none.
  virtual std::optional<Value> member(std::string_view name) const = 0;
  virtual std::vector<std::string> members() const = 0;
  virtual bool truthy() const { return !str().empty(); }
  // An object that stands for a row (a parsed struct): its members as one,
  // for foreach() and FROM; nullopt (the default) for the others.
  virtual std::optional<Dict> row() const { return std::nullopt; }
  // As a list's item, the row {_value: object} rather than row(): a map
  // from a parser (parse_xml()), as Velociraptor wraps a Go map item, so
  // that `foreach(row=List, query={SELECT ... FROM _value})` reads it.
  virtual bool wrapped_as_item() const { return false; }
  virtual void append_json(std::string& out) const;  // default: str() as a JSON string
  virtual void write(schema::Value::Builder out) const;  // default: str() as text
  // x[i], x[a:b], x + y; NULL (the default) where the object has none.
  virtual Value index(int64_t i) const;
  virtual Value slice(std::optional<int64_t> from, std::optional<int64_t> to) const;
  virtual Value add(const Value& right) const;
};

// The name of a value's type, as errors say it.
const char* type_name(const Value& v);

// VQL truth: NULL, false, 0, "", empty list or dict are false; an object says.
bool truthy(const Value& v);

// a = b: numbers across int and float, containers deeply; NULL equals only NULL.
bool equal(const Value& a, const Value& b);
// <0, 0, >0; nullopt when the two do not order (NULL, or different types
// other than int/float): such a comparison is false.
std::optional<int> compare(const Value& a, const Value& b);

// + - * / %. NULL when the operands do not fit the operator or a division
// is by zero: a query goes on with NULL rather than failing on one row.
Value add(const Value& a, const Value& b);
Value subtract(const Value& a, const Value& b);
Value multiply(const Value& a, const Value& b);
Value divide(const Value& a, const Value& b);
Value modulo(const Value& a, const Value& b);

// A string for str() and format(): strings as they are, timestamps in RFC
// 3339, containers as JSON, NULL as "".
std::string to_string(const Value& v);
// JSON: what `outpost-agent query` prints and what to_string gives containers.
void append_json(std::string& out, const Value& v);
std::string to_json(const Row& row);

// A row's values in `columns` order into a RowBatch row; a stored query is
// written as NULL (it is not data).
void write_value(const Value& v, schema::Value::Builder out);

// RFC 3339 UTC with nine fraction digits.
std::string format_timestamp(int64_t ns);

}  // namespace outpost::vql
