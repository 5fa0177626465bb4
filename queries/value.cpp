#include "queries/value.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <unordered_map>

#include <xxhash.h>

#include "schemas/json.hpp"

namespace outpost::vql {

Value::Value(uint64_t u) {
  if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    data = static_cast<int64_t>(u);
  else
    data = static_cast<double>(u);
}

Value::Value(Dict d) : data(std::make_shared<const Dict>(std::move(d))) {}

const List* Value::as_list() const {
  auto p = std::get_if<ListPtr>(&data);
  return p ? p->get() : nullptr;
}
const Dict* Value::as_dict() const {
  auto p = std::get_if<DictPtr>(&data);
  return p ? p->get() : nullptr;
}
const StoredQuery* Value::as_query() const {
  auto p = std::get_if<QueryPtr>(&data);
  return p ? p->get() : nullptr;
}

const Object* Value::as_object() const {
  auto p = std::get_if<ObjectPtr>(&data);
  return p ? p->get() : nullptr;
}

void Object::append_json(std::string& out) const {
  std::string s = str();
  schemas::append_json_string(out, kj::StringPtr(s.c_str(), s.size()));
}
void Object::write(schema::Value::Builder out) const {
  std::string s = str();
  out.setText(kj::StringPtr(s.c_str(), s.size()));
}
Value Object::index(int64_t) const { return Value(); }
Value Object::slice(std::optional<int64_t>, std::optional<int64_t>) const { return Value(); }
Value Object::add(const Value&) const { return Value(); }

std::optional<double> Value::number() const {
  if (auto i = as_int()) return static_cast<double>(*i);
  if (auto d = as_double()) return *d;
  return std::nullopt;
}

class Dict::Index {
 public:
  // Positions by the key's hash; keys compared in `items` (the index holds
  // no key of its own, and survives the vector's moves).
  std::unordered_multimap<size_t, size_t> positions;

  // Seeded per process: keys written to collide (a hostile file's) cannot
  // be chosen offline, as they could for std::hash's fixed seed.
  static size_t hash(std::string_view key) {
    static const uint64_t seed = (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
    return static_cast<size_t>(XXH3_64bits_withSeed(key.data(), key.size(), seed));
  }
  std::optional<size_t> find(const std::vector<std::pair<std::string, Value>>& items, std::string_view key) const {
    auto [from, to] = positions.equal_range(hash(key));
    for (auto it = from; it != to; ++it)
      if (items[it->second].first == key) return it->second;
    return std::nullopt;
  }
};

Dict::Dict(const Dict& other)
    : items_(other.items_), index_(other.index_ ? new Index(*other.index_) : nullptr) {}
Dict& Dict::operator=(const Dict& other) {
  if (this != &other) *this = Dict(other);
  return *this;
}
void Dict::DeleteIndex::operator()(Index* index) const { delete index; }

const Value* Dict::find(std::string_view key) const {
  if (index_) {
    auto at = index_->find(items_, key);
    return at ? &items_[*at].second : nullptr;
  }
  for (auto& [k, v] : items_)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  if (auto* v = const_cast<Value*>(find(key))) {
    *v = std::move(value);
    return;
  }
  items_.emplace_back(std::move(key), std::move(value));
  if (index_) {
    index_->positions.emplace(Index::hash(items_.back().first), items_.size() - 1);
  } else if (items_.size() >= kIndexedFrom) {
    index_.reset(new Index());
    index_->positions.reserve(items_.size() * 2);
    for (size_t i = 0; i < items_.size(); ++i) index_->positions.emplace(Index::hash(items_[i].first), i);
  }
}

const char* type_name(const Value& v) {
  static const char* const kNames[] = {"null", "bool",      "int",  "float", "string",
                                       "timestamp", "list", "dict", "query"};
  if (auto o = v.as_object()) return o->type();
  return kNames[v.data.index()];
}

bool truthy(const Value& v) {
  if (v.is_null()) return false;
  if (auto b = v.as_bool()) return *b;
  if (auto n = v.number()) return *n != 0;
  if (auto s = v.as_string()) return !s->empty();
  if (auto t = v.as_timestamp()) return t->ns != 0;
  if (auto l = v.as_list()) return !l->empty();
  if (auto d = v.as_dict()) return !d->empty();
  if (auto o = v.as_object()) return o->truthy();
  return true;  // a query
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.as_int() && b.as_int()) return *a.as_int() == *b.as_int();
    return *a.number() == *b.number();
  }
  if (auto x = a.as_object(); x && (b.as_object() || b.as_string())) return x->str() == to_string(b);
  if (auto y = b.as_object(); y && a.as_string()) return *a.as_string() == y->str();
  if (a.data.index() != b.data.index()) return false;
  if (a.is_null()) return true;
  if (auto x = a.as_bool()) return *x == *b.as_bool();
  if (auto x = a.as_string()) return *x == *b.as_string();
  if (auto x = a.as_timestamp()) return x->ns == b.as_timestamp()->ns;
  if (auto x = a.as_list()) {
    auto y = b.as_list();
    if (x->size() != y->size()) return false;
    for (size_t i = 0; i < x->size(); ++i)
      if (!equal((*x)[i], (*y)[i])) return false;
    return true;
  }
  if (auto x = a.as_dict()) {
    auto y = b.as_dict();
    if (x->size() != y->size()) return false;
    for (auto& [k, v] : x->items()) {
      auto other = y->find(k);
      if (!other || !equal(v, *other)) return false;
    }
    return true;
  }
  return a.as_query() == b.as_query();
}

namespace {
template <typename T>
int three_way(const T& x, const T& y) {
  return x < y ? -1 : (y < x ? 1 : 0);
}
}  // namespace

std::optional<int> compare(const Value& a, const Value& b) {
  if (a.as_int() && b.as_int()) return three_way(*a.as_int(), *b.as_int());
  if (a.is_number() && b.is_number()) {
    double x = *a.number(), y = *b.number();
    if (std::isnan(x) || std::isnan(y)) return std::nullopt;
    return three_way(x, y);
  }
  if (a.as_string() && b.as_string()) return three_way(*a.as_string(), *b.as_string());
  if (a.as_timestamp() && b.as_timestamp()) return three_way(a.as_timestamp()->ns, b.as_timestamp()->ns);
  // A time against a number: the number is epoch seconds, as in Velociraptor.
  if (a.as_timestamp() && b.is_number()) return three_way(static_cast<double>(a.as_timestamp()->ns) / 1e9, *b.number());
  if (a.is_number() && b.as_timestamp()) return three_way(*a.number(), static_cast<double>(b.as_timestamp()->ns) / 1e9);
  if ((a.as_object() || a.as_string()) && (b.as_object() || b.as_string()) && (a.as_object() || b.as_object()))
    return three_way(to_string(a), to_string(b));
  if (a.as_bool() && b.as_bool()) return three_way(*a.as_bool(), *b.as_bool());
  return std::nullopt;
}

namespace {

// Integer arithmetic that overflows falls back to floats, as in Go's VQL
// it would wrap; a float is the less surprising of the two.
template <typename IntOp, typename FloatOp>
Value arithmetic(const Value& a, const Value& b, IntOp int_op, FloatOp float_op) {
  if (a.as_int() && b.as_int()) {
    int64_t result;
    if (!int_op(*a.as_int(), *b.as_int(), &result)) return result;
  }
  if (a.is_number() && b.is_number()) return float_op(*a.number(), *b.number());
  return Value();
}

}  // namespace

Value add(const Value& a, const Value& b) {
  if (auto o = a.as_object()) return o->add(b);
  if (a.as_string() && b.as_string()) return *a.as_string() + *b.as_string();
  if ((a.as_list() || b.as_list()) && !a.is_null()) {  // a list on either side: a scalar joins it (Velociraptor's)
    List out = a.as_list() ? *a.as_list() : List{a};
    if (b.as_list())
      out.insert(out.end(), b.as_list()->begin(), b.as_list()->end());
    else if (!b.is_null())
      out.push_back(b);
    return out;
  }
  if (a.as_timestamp() && b.is_number())  // + seconds
    return Timestamp{a.as_timestamp()->ns + static_cast<int64_t>(*b.number() * 1e9)};
  return arithmetic(
      a, b, [](int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); },
      [](double x, double y) { return x + y; });
}

Value subtract(const Value& a, const Value& b) {
  if (a.as_timestamp() && b.as_timestamp())  // seconds between
    return static_cast<double>(a.as_timestamp()->ns - b.as_timestamp()->ns) / 1e9;
  if (a.as_timestamp() && b.is_number())
    return Timestamp{a.as_timestamp()->ns - static_cast<int64_t>(*b.number() * 1e9)};
  return arithmetic(
      a, b, [](int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); },
      [](double x, double y) { return x - y; });
}

Value multiply(const Value& a, const Value& b) {
  return arithmetic(
      a, b, [](int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); },
      [](double x, double y) { return x * y; });
}

// Exact integer quotients stay integers (10 / 2 = 5); others are floats (7 / 2 = 3.5).
Value divide(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number() || *b.number() == 0) return Value();
  if (a.as_int() && b.as_int()) {
    int64_t x = *a.as_int(), y = *b.as_int();
    if (!(x == std::numeric_limits<int64_t>::min() && y == -1) && x % y == 0) return x / y;
  }
  return *a.number() / *b.number();
}

Value modulo(const Value& a, const Value& b) {
  if (!a.as_int() || !b.as_int() || *b.as_int() == 0) return Value();
  if (*b.as_int() == -1) return int64_t{0};  // INT64_MIN % -1 traps
  return *a.as_int() % *b.as_int();
}

std::string format_timestamp(int64_t ns) {
  std::string out;
  schemas::append_json_timestamp(out, ns);
  return out.substr(1, out.size() - 2);
}

std::string to_string(const Value& v) {
  if (v.is_null()) return "";
  if (auto s = v.as_string()) return *s;
  if (auto o = v.as_object()) return o->str();
  if (auto t = v.as_timestamp()) return format_timestamp(t->ns);
  if (auto i = v.as_int()) return std::to_string(*i);
  if (auto b = v.as_bool()) return *b ? "true" : "false";
  std::string out;
  append_json(out, v);
  return out;
}

void append_json(std::string& out, const Value& v) {
  if (v.is_null() || v.as_query()) {
    out += "null";
  } else if (auto b = v.as_bool()) {
    out += *b ? "true" : "false";
  } else if (auto i = v.as_int()) {
    out += std::to_string(*i);
  } else if (auto d = v.as_double()) {
    schemas::append_json_float(out, *d);
  } else if (auto s = v.as_string()) {
    schemas::append_json_string(out, kj::StringPtr(s->c_str(), s->size()));
  } else if (auto t = v.as_timestamp()) {
    schemas::append_json_timestamp(out, t->ns);
  } else if (auto l = v.as_list()) {
    out += '[';
    for (size_t i = 0; i < l->size(); ++i) {
      if (i) out += ',';
      append_json(out, (*l)[i]);
    }
    out += ']';
  } else if (auto d = v.as_dict()) {
    out += '{';
    bool first = true;
    for (auto& [k, item] : d->items()) {
      if (!first) out += ',';
      first = false;
      schemas::append_json_string(out, kj::StringPtr(k.c_str(), k.size()));
      out += ':';
      append_json(out, item);
    }
    out += '}';
  } else if (auto o = v.as_object()) {
    o->append_json(out);
  }
}

std::string to_json(const Row& row) {
  std::string out;
  append_json(out, Value(std::make_shared<const Dict>(row)));
  return out;
}

void write_value(const Value& v, schema::Value::Builder out) {
  if (auto b = v.as_bool()) {
    out.setBool(*b);
  } else if (auto i = v.as_int()) {
    out.setInt64(*i);
  } else if (auto d = v.as_double()) {
    out.setFloat64(*d);
  } else if (auto s = v.as_string()) {
    out.setText(kj::StringPtr(s->c_str(), s->size()));
  } else if (auto t = v.as_timestamp()) {
    out.setTimestamp(t->ns);
  } else if (auto l = v.as_list()) {
    auto list = out.initList(static_cast<unsigned>(l->size()));
    for (unsigned i = 0; i < l->size(); ++i) write_value((*l)[i], list[i]);
  } else if (auto d = v.as_dict()) {
    auto dict = out.initDict(static_cast<unsigned>(d->size()));
    unsigned i = 0;
    for (auto& [k, item] : d->items()) {
      dict[i].setKey(kj::StringPtr(k.c_str(), k.size()));
      write_value(item, dict[i].initValue());
      ++i;
    }
  } else if (auto o = v.as_object()) {
    o->write(out);
  } else {
    out.setNull();
  }
}

}  // namespace outpost::vql
