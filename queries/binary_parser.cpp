// parse_binary(): a file (or data) read through a profile of struct
// definitions in Velociraptor's vtypes JSON form:
//   [["Name", size, [["field", offset, "type", {options}], ...]], ...]
// where a size, an offset, an array's count or a string's length may be a
// lambda ("x => x.header_size") evaluated with x the struct being read, in
// the caller's scope. The result is read lazily: a struct is an object whose
// members are read from the file when used.
//
// Types: int8..int64, uint8..uint64 (little-endian; "b" or "be" suffix:
// big-endian), float64, the C aliases (int, char, byte, short int, unsigned
// int/long/long long/short/char), String {length, max_length, term,
// term_hex, encoding: utf16}, Array {type, count, max_count, type_options},
// Enumeration {type, choices}, BitField {type, start_bit, end_bit},
// Timestamp {type, factor}, Value {value}, and the profile's structs.

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"
#include "schemas/json_reader.hpp"

namespace outpost::vql {
namespace {

// Past these, reading stops: a hostile file or profile cannot make a query
// allocate without bound.
constexpr int64_t kMaxArrayElements = 1'000'000;
constexpr int64_t kMaxStringBytes = int64_t{16} << 20;
constexpr int kMaxDepth = 64;  // structs inside structs, as JSON or rows
// Bytes one parse_binary() result may copy out of its data (strings, array
// elements), all its members together; past it, NULL and a warning.
constexpr int64_t kMaxBytesRead = int64_t{256} << 20;
// Members one struct's JSON (or record) may hold, nested ones included: a
// profile whose struct holds itself twice would otherwise be 2^64 of them.
constexpr int64_t kMaxSerializedMembers = 100'000;
// Files up to this size are read whole when parse_binary() is called, so
// that what it returns holds no descriptor; bigger ones are read as used.
constexpr int64_t kReadWholeBytes = int64_t{1} << 20;

// ---- the profile's JSON: comments (# and //) and trailing commas allowed,
// as the profiles Velociraptor's artifacts ship are written.

// A profile's numbers: a run of hex digits, signs, '.', x and X; with a '.'
// or an exponent (and no x) a double, else an int64 as strtoll reads the
// whole of it in base 0 (0x hex, a leading 0 octal).
struct ProfileJson : schemas::JsonValues<Value, List, Dict> {
  static std::optional<Value> number(std::string_view s, size_t& i) {
    size_t start = i;
    while (i < s.size() && (std::isxdigit(static_cast<unsigned char>(s[i])) || std::strchr("+-.xX", s[i]))) ++i;
    std::string number(s.substr(start, i - start));
    if (number.empty()) return std::nullopt;
    try {
      size_t used = 0;
      if (number.find_first_of(".eE") == std::string::npos || number.find_first_of("xX") != std::string::npos) {
        int64_t n = std::stoll(number, &used, 0);
        if (used == number.size()) return Value(n);
      } else {
        double d = std::stod(number, &used);
        if (used == number.size()) return Value(d);
      }
    } catch (const std::exception&) {
    }
    return std::nullopt;
  }
};

// The profile's first value; what follows it is ignored, as Velociraptor's
// reader ignores it (Linux.Sys.LastUserLogin's profile ends with two more "]").
Value profile_json(std::string_view text) {
  schemas::JsonOptions options;
  options.comments = options.trailing_commas = options.first_value_only = true;
  options.lax_strings = true;
  options.max_depth = kMaxDepth;
  try {
    return schemas::JsonReader<ProfileJson>(text, options).read();
  } catch (const schemas::JsonError& e) {
    using Problem = schemas::JsonError::Problem;
    std::string what = e.problem == Problem::end     ? "unexpected end"
                       : e.problem == Problem::value ? "unexpected '" + std::string(1, text[e.offset]) + "'"
                       : e.problem == Problem::key   ? "expected a key"
                       : e.problem == Problem::comma ? "expected , or " + e.detail
                                                     : e.message();
    auto line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(e.offset), '\n');
    throw QueryError("profile: line " + std::to_string(line) + ": " + what);
  }
}

// A number as an int64; `otherwise` for NaN and what does not fit (a
// profile's 1e300 or a lambda's float must not be undefined behaviour).
int64_t to_int(const Value& v, int64_t otherwise) {
  if (auto i = v.as_int()) return *i;
  auto d = v.number();
  if (!d || !(*d >= -9.2e18 && *d <= 9.2e18)) return otherwise;
  return static_cast<int64_t>(*d);
}

// ---- where the bytes come from

class Source {
 public:
  virtual ~Source() noexcept(false) = default;  // as RowStream's
  // Up to `n` bytes at `offset`; fewer at the end. Safe from any thread.
  virtual size_t read(uint64_t offset, char* buf, size_t n) const = 0;
  virtual uint64_t size() const = 0;
};

class DataSource final : public Source {
 public:
  explicit DataSource(std::string data) : data_(std::move(data)) {}
  size_t read(uint64_t offset, char* buf, size_t n) const override {
    if (offset >= data_.size()) return 0;
    n = std::min<uint64_t>(n, data_.size() - offset);
    std::memcpy(buf, data_.data() + offset, n);
    return n;
  }
  uint64_t size() const override { return data_.size(); }

 private:
  std::string data_;
};

class FileSource final : public Source {
 public:
  FileSource(kj::AutoCloseFd fd, uint64_t size) : fd_(std::move(fd)), size_(size) {}
  ~FileSource() noexcept override { close_file(fd_); }  // a file the query named
  size_t read(uint64_t offset, char* buf, size_t n) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t got = ::pread(fd_.get(), buf + done, n - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }
  uint64_t size() const override { return size_; }

 private:
  kj::AutoCloseFd fd_;
  uint64_t size_;
};

// ---- the profile

struct IntType {
  int bytes;
  bool is_signed, big_endian, is_float;
};

std::optional<IntType> int_type(std::string name) {
  static const std::map<std::string, std::string> aliases = {
      {"int", "int32"},          {"char", "int8"},           {"byte", "uint8"},
      {"short int", "int16"},    {"short", "int16"},         {"unsigned char", "uint8"},
      {"unsigned int", "uint32"}, {"unsigned long", "uint32"}, {"unsigned long long", "uint64"},
      {"long long", "int64"},    {"unsigned short", "uint16"}};
  if (auto it = aliases.find(name); it != aliases.end()) name = it->second;
  bool big = false;
  if (name.size() > 2 && name.compare(name.size() - 2, 2, "be") == 0) {
    big = true;
    name.resize(name.size() - 2);
  } else if (name.size() > 1 && name.back() == 'b') {
    big = true;
    name.pop_back();
  }
  if (name == "float64") return IntType{8, true, big, true};
  bool is_signed = name.rfind("int", 0) == 0;
  std::string bits = name.substr(is_signed ? 3 : name.rfind("uint", 0) == 0 ? 4 : name.size());
  if (bits == "8") return IntType{1, is_signed, big, false};
  if (bits == "16") return IntType{2, is_signed, big, false};
  if (bits == "32") return IntType{4, is_signed, big, false};
  if (bits == "64") return IntType{8, is_signed, big, false};
  return std::nullopt;
}

// A size, offset, count or length: a number, or a lambda of the struct.
struct Amount {
  int64_t fixed = 0;
  ObjectPtr lambda;  // a Lambda, when the profile wrote one
};

struct TypeRef {
  std::string name;
  Dict options;                          // as written, lambdas compiled in place
};

struct Field {
  std::string name;
  Amount offset;
  TypeRef type;
};

struct StructDef {
  std::string name;
  Amount size;
  std::vector<Field> fields;
};

class Profile {
 public:
  Profile(const Value& json, const LambdaText& lambdas);
  const StructDef* find(const std::string& name) const {
    auto it = structs_.find(name);
    return it == structs_.end() ? nullptr : &it->second;
  }

 private:
  Amount amount(const Value& v, const std::string& where, const LambdaText& lambdas) const;
  TypeRef type(const Value& name, const Value* options, const std::string& where, const LambdaText& lambdas) const;
  void check(const TypeRef& t, const std::string& where) const;
  std::map<std::string, StructDef> structs_;
};

// The options that may hold a lambda.
bool lambda_option(const std::string& key) {
  return key == "count" || key == "length" || key == "value" || key == "offset" || key == "term_exp";
}

Amount Profile::amount(const Value& v, const std::string& where, const LambdaText& lambdas) const {
  if (v.is_number()) return {to_int(v, 0), nullptr};
  if (auto s = v.as_string()) return {0, lambdas.compile("parse_binary(): " + where, *s)};
  throw QueryError("parse_binary(): " + where + ": expected a number or a lambda, got " + type_name(v));
}

TypeRef Profile::type(const Value& name, const Value* options, const std::string& where,
                      const LambdaText& lambdas) const {
  auto n = name.as_string();
  if (!n) throw QueryError("parse_binary(): " + where + ": the type must be a string");
  TypeRef t{*n, {}};
  if (options && !options->is_null()) {
    auto d = options->as_dict();
    if (!d) throw QueryError("parse_binary(): " + where + ": the options must be a dict");
    for (auto& [key, value] : d->items()) {
      auto s = value.as_string();
      if (s && lambda_option(key) && s->find("=>") != std::string::npos)
        t.options.set(key, Value(lambdas.compile("parse_binary(): " + where + "." + key, *s)));
      else
        t.options.set(key, value);
    }
  }
  return t;
}

Profile::Profile(const Value& json, const LambdaText& lambdas) {
  auto defs = json.as_list();
  if (!defs) throw QueryError("parse_binary(): profile: expected a list of [name, size, fields]");
  for (auto& def : *defs) {
    auto d = def.as_list();
    if (!d || d->size() != 3 || !(*d)[0].as_string() || !(*d)[2].as_list())
      throw QueryError("parse_binary(): profile: a definition is [name, size, [fields...]]");
    StructDef s;
    s.name = *(*d)[0].as_string();
    s.size = amount((*d)[1], s.name + " size", lambdas);
    for (auto& f : *(*d)[2].as_list()) {
      auto fl = f.as_list();
      if (!fl || fl->size() < 3 || !(*fl)[0].as_string())
        throw QueryError("parse_binary(): profile: " + s.name + ": a field is [name, offset, type, {options}]");
      Field field;
      field.name = *(*fl)[0].as_string();
      std::string where = s.name + "." + field.name;
      field.offset = amount((*fl)[1], where + " offset", lambdas);
      field.type = type((*fl)[2], fl->size() > 3 ? &(*fl)[3] : nullptr, where, lambdas);
      s.fields.push_back(std::move(field));
    }
    structs_[s.name] = std::move(s);
  }
  for (auto& [name, def] : structs_)
    for (auto& f : def.fields) check(f.type, name + "." + f.name);
}

// Every type a field names must be one parse_at knows, checked before anything is read.
void Profile::check(const TypeRef& t, const std::string& where) const {
  auto fail = [&](const std::string& problem) { throw QueryError("parse_binary(): profile: " + where + ": " + problem); };
  if (int_type(t.name) || structs_.count(t.name) || t.name == "String" || t.name == "Value") return;
  if (t.name == "Array") {
    auto element = t.options.find("type");
    if (!element || !element->as_string()) fail("an Array needs a type");
    TypeRef e{*element->as_string(), {}};
    if (auto o = t.options.find("type_options"); o && o->as_dict()) e.options = *o->as_dict();
    return check(e, where + "[]");
  }
  if (t.name == "Enumeration" || t.name == "BitField" || t.name == "Timestamp") {
    auto inner = t.options.find("type");
    auto it = inner && inner->as_string() ? int_type(*inner->as_string()) : std::nullopt;
    if (inner && (!it || it->is_float))
      fail(t.name + ": type must be an integer type");
    return;
  }
  fail("type \"" + t.name + "\" is not supported");
}

// ---- reading

struct Reading {
  std::shared_ptr<const Profile> profile;
  std::shared_ptr<const Source> source;
  std::shared_ptr<std::atomic<int64_t>> bytes_left;  // kMaxBytesRead, shared by all it returns
};

// Takes `n` bytes from the budget; false (and a warning) when it is spent.
bool spend(const Reading& r, int64_t n, const std::string& what) {
  if (r.bytes_left->fetch_sub(n) >= n) return true;
  r.bytes_left->fetch_add(n);
  spdlog::warn("vql: parse_binary(): {}: more than {} bytes read from one file: NULL", what, kMaxBytesRead);
  return false;
}

// How deep struct members are being read, and how many members the JSON
// (or record) being written may still hold: this thread's, as a query is
// read by the thread running it.
thread_local int t_read_depth = 0;
thread_local int64_t t_members_left = -1;  // -1: not writing

int64_t amount_of(const Amount& a, const Value& x) {
  if (!a.lambda) return a.fixed;
  return to_int(static_cast<const Lambda*>(a.lambda.get())->call(x), 0);
}

int64_t option_int(const Dict& options, const char* key, int64_t otherwise, const Value& x) {
  auto v = options.find(key);
  if (!v) return otherwise;
  if (auto l = dynamic_cast<const Lambda*>(v->as_object())) return to_int(l->call(x), 0);
  return to_int(*v, otherwise);
}

std::string option_string(const Dict& options, const char* key, std::string otherwise) {
  auto v = options.find(key);
  return v && v->as_string() ? *v->as_string() : otherwise;
}

// The bits of an integer at `offset`, sign-extended when it is signed;
// bytes past the end read as 0, as Velociraptor's.
uint64_t read_bits(const Source& src, uint64_t offset, IntType t) {
  unsigned char buf[8] = {};
  src.read(offset, reinterpret_cast<char*>(buf), static_cast<size_t>(t.bytes));
  uint64_t u = 0;
  for (int i = 0; i < t.bytes; ++i) {
    int at = t.big_endian ? i : t.bytes - 1 - i;
    u = (u << 8) | buf[at];
  }
  if (t.is_signed && !t.is_float && t.bytes < 8) {
    int shift = 64 - 8 * t.bytes;
    u = static_cast<uint64_t>(static_cast<int64_t>(u << shift) >> shift);
  }
  return u;
}

Value read_int(const Source& src, uint64_t offset, IntType t) {
  uint64_t u = read_bits(src, offset, t);
  if (t.is_float) {
    double d;
    std::memcpy(&d, &u, sizeof d);
    return Value(d);
  }
  if (!t.is_signed) return Value(u);
  return Value(static_cast<int64_t>(u));
}

class StructObject;
Value parse_at(const Reading& r, const TypeRef& t, uint64_t offset, const Value& x, int depth);

// The size of one element of type `t` (an array's stride); 0 when unknown.
int64_t size_of(const Reading& r, const TypeRef& t, const Value& element) {
  if (auto it = int_type(t.name)) return it->bytes;
  if (t.name == "Enumeration" || t.name == "BitField" || t.name == "Timestamp") {
    auto inner = int_type(option_string(t.options, "type", t.name == "Timestamp" ? "int32" : "uint32"));
    return inner ? inner->bytes : 0;
  }
  if (auto def = r.profile->find(t.name)) return amount_of(def->size, element);
  if (auto length = t.options.find("length"); t.name == "String" && length && length->is_number())
    return to_int(*length, 0);
  if (auto s = element.as_string())  // a terminated string: its bytes and the terminator's
    return static_cast<int64_t>(s->size() * (option_string(t.options, "encoding", "") == "utf16" ? 2 : 1)) +
           static_cast<int64_t>(option_string(t.options, "term", std::string(1, '\0')).size());
  return 0;
}

// A struct at an offset of the data, read as its members are used. Its
// members run the profile's lambdas in the query's context: like a Lambda,
// used only by the thread running the query, while it runs (its rows are
// written by then).
class StructObject final : public Object, public std::enable_shared_from_this<StructObject> {
 public:
  StructObject(Reading r, const StructDef& def, uint64_t offset, int depth)
      : r_(std::move(r)), def_(def), offset_(offset), depth_(depth) {}
  const char* type() const override { return "struct"; }
  std::string str() const override {
    std::string out;
    append_json(out);
    return out;
  }
  std::optional<Value> member(std::string_view name) const override {
    for (auto& f : def_.fields)
      if (f.name == name) return read(f);
    return std::nullopt;
  }
  std::vector<std::string> members() const override {
    std::vector<std::string> out;
    for (auto& f : def_.fields) out.push_back(f.name);
    return out;
  }
  bool truthy() const override { return true; }
  std::optional<Dict> row() const override {
    Dict d;
    for (auto& f : def_.fields) {
      if (t_members_left == 0) {  // writing, and the budget is spent
        d.set(f.name, Value());
        continue;
      }
      if (t_members_left > 0) --t_members_left;
      d.set(f.name, read(f));
    }
    return d;
  }
  void append_json(std::string& out) const override {
    Writing writing;
    if (depth_ > kMaxDepth) return out.append("null"), void();
    vql::append_json(out, Value(*row()));
  }
  void write(schema::Value::Builder out) const override {
    Writing writing;
    write_value(Value(*row()), out);
  }

 private:
  // While the outermost struct is written, its members and its nested
  // structs' share one budget.
  struct Writing {
    bool outermost = t_members_left < 0;
    Writing() {
      if (outermost) t_members_left = kMaxSerializedMembers;
    }
    ~Writing() {
      if (outermost) t_members_left = -1;
    }
  };
  struct Deeper {
    Deeper() { ++t_read_depth; }
    ~Deeper() { --t_read_depth; }
  };

  // A member that cannot be read (its lambda fails, or reads members that
  // read it: x => x.a for a itself) is NULL, logged: the struct may be read
  // while a row is written, where nothing may throw.
  Value read(const Field& f) const {
    Deeper deeper;
    try {
      if (t_read_depth > kMaxDepth) throw QueryError("members read each other more than 64 deep");
      Value self(std::static_pointer_cast<const Object>(shared_from_this()));
      int64_t at = amount_of(f.offset, self);
      if (at < 0) return Value();
      return parse_at(r_, f.type, offset_ + static_cast<uint64_t>(at), self, depth_ + 1);
    } catch (const std::exception& e) {
      if (t_read_depth > 1) throw;  // the member whose reading began this fails, not one read on the way
      spdlog::warn("vql: parse_binary(): {}.{}: {}", def_.name, f.name, e.what());
      return Value();
    }
  }

  Reading r_;  // keeps the profile, and so def_, alive
  const StructDef& def_;
  uint64_t offset_;
  int depth_;
};

Value parse_array(const Reading& r, const TypeRef& t, uint64_t offset, const Value& x, int depth) {
  TypeRef element{option_string(t.options, "type", ""), {}};
  if (auto o = t.options.find("type_options"); o && o->as_dict()) element.options = *o->as_dict();
  if (element.name.empty()) throw QueryError("parse_binary(): Array: no type");
  int64_t max = std::max<int64_t>(option_int(t.options, "max_count", 1000, x), 0);
  int64_t count = std::clamp<int64_t>(option_int(t.options, "count", 0, x), 0, std::min(max, kMaxArrayElements));
  if (!spend(r, count * 64, "Array of " + element.name)) return Value();  // what its values cost, about
  List out;
  uint64_t at = offset;
  for (int64_t i = 0; i < count && at < r.source->size(); ++i) {  // nothing past the end of the data
    Value v = parse_at(r, element, at, x, depth + 1);
    int64_t size = size_of(r, element, v);
    if (size <= 0) break;
    out.push_back(std::move(v));
    at += static_cast<uint64_t>(size);
  }
  return Value(std::move(out));
}

Value parse_string(const Reading& r, const TypeRef& t, uint64_t offset, const Value& x) {
  int64_t max_length = option_int(t.options, "max_length", 1024, x);
  bool lambda_length = t.options.find("length") && t.options.find("length")->as_object();
  int64_t length = option_int(t.options, "length", -1, x);
  if (!lambda_length && length > max_length) length = max_length;
  if (length < 0) length = 1024;
  length = std::min(length, kMaxStringBytes);
  if (!spend(r, length, "String")) return Value();
  std::string buf(static_cast<size_t>(length), '\0');
  buf.resize(r.source->read(offset, buf.data(), buf.size()));
  if (option_string(t.options, "encoding", "") == "utf16") {
    std::string utf8;
    for (size_t i = 0; i + 1 < buf.size(); i += 2) {
      schemas::append_utf8(utf8, static_cast<unsigned>(static_cast<unsigned char>(buf[i]) |
                                                      (static_cast<unsigned char>(buf[i + 1]) << 8)));
    }
    buf = std::move(utf8);
  }
  std::string term = option_string(t.options, "term", std::string(1, '\0'));
  if (auto hex = t.options.find("term_hex"); hex && hex->as_string()) {
    term.clear();
    for (size_t i = 0; i + 1 < hex->as_string()->size(); i += 2)
      term += static_cast<char>(std::stoi(hex->as_string()->substr(i, 2), nullptr, 16));
  }
  if (auto e = t.options.find("term_exp"); e && e->as_object())
    term = to_string(static_cast<const Lambda*>(e->as_object())->call(x));
  if (!term.empty())
    if (auto at = buf.find(term); at != std::string::npos) buf.resize(at);
  return Value(std::move(buf));
}

Value parse_at(const Reading& r, const TypeRef& t, uint64_t offset, const Value& x, int depth) {
  if (depth > kMaxDepth) return Value();
  if (auto it = int_type(t.name)) return read_int(*r.source, offset, *it);
  if (auto def = r.profile->find(t.name))
    return Value(std::static_pointer_cast<const Object>(std::make_shared<const StructObject>(r, *def, offset, depth)));
  if (t.name == "Array") return parse_array(r, t, offset, x, depth);
  if (t.name == "String") return parse_string(r, t, offset, x);
  if (t.name == "Value") {
    auto v = t.options.find("value");
    auto l = v ? dynamic_cast<const Lambda*>(v->as_object()) : nullptr;
    return l ? l->call(x) : v ? *v : Value();
  }
  std::string inner_name = option_string(t.options, "type", t.name == "Timestamp" ? "int32" : "uint32");
  auto inner = int_type(inner_name);
  if (t.name == "Enumeration" || t.name == "BitField" || t.name == "Timestamp") {
    if (!inner) throw QueryError("parse_binary(): " + t.name + ": type \"" + inner_name + "\" is not an integer type");
    if (inner->is_float) throw QueryError("parse_binary(): " + t.name + ": type must be an integer type");
    uint64_t bits = read_bits(*r.source, offset, *inner);
    int64_t v = static_cast<int64_t>(bits);
    if (t.name == "Enumeration") {
      std::string key = inner->is_signed ? std::to_string(v) : std::to_string(bits);
      auto choices = t.options.find("choices");
      auto d = choices ? choices->as_dict() : nullptr;
      auto name = d ? d->find(key) : nullptr;
      return name ? *name : Value(key);
    }
    if (t.name == "BitField") {
      int64_t start = std::clamp<int64_t>(option_int(t.options, "start_bit", 0, x), 0, 64);
      int64_t end = std::clamp<int64_t>(option_int(t.options, "end_bit", 64, x), start, 64);
      if (start == 64) return Value(int64_t{0});
      uint64_t u = bits >> start;
      if (end - start < 64) u &= (uint64_t{1} << (end - start)) - 1;
      return Value(u);
    }
    int64_t factor = option_int(t.options, "factor", 1, x);
    if (factor <= 0) factor = 1;
    // Seconds since the epoch, divided by the factor (1000000: microseconds).
    __int128 seconds = inner->is_signed ? static_cast<__int128>(v) : static_cast<__int128>(bits);
    __int128 ns = seconds * 1'000'000'000 / factor;
    if (ns > INT64_MAX || ns < INT64_MIN) return Value();
    return Value(Timestamp{static_cast<int64_t>(ns)});
  }
  throw QueryError("parse_binary(): unknown type \"" + t.name + "\"");
}

Value parse_binary(const Args& args, Env&) {
  std::string filename = required_string(args, "filename");
  std::string struct_name = required_string(args, "struct");
  bool data = accessor_of(args, {Accessor::data}) == Accessor::data;
  auto profile_arg = args.find("profile");
  auto lambdas = profile_arg ? dynamic_cast<const LambdaText*>(profile_arg->as_object()) : nullptr;
  if (!lambdas) args.fail("profile", "required (a vtypes JSON profile)");
  int64_t offset = args.integer("offset").value_or(0);
  try {
    auto profile = std::make_shared<const Profile>(profile_json(lambdas->str()), *lambdas);
    auto def = profile->find(struct_name);
    if (!def) args.fail("struct", "\"" + struct_name + "\" is not in the profile");
    std::shared_ptr<const Source> source;
    if (data) {
      source = std::make_shared<const DataSource>(filename);
    } else {
      if (filename.find('\0') != std::string::npos) args.fail("filename", "contains a NUL byte");
      kj::AutoCloseFd fd(::open(filename.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
      struct stat st;
      if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) {
        int error = errno;
        close_file(fd);  // a file the query named
        spdlog::warn("vql: parse_binary(): cannot open {}: {}", filename, errno_message(error));
        return Value();
      }
      auto file = std::make_shared<const FileSource>(std::move(fd), static_cast<uint64_t>(st.st_size));
      if (S_ISREG(st.st_mode) && st.st_size <= kReadWholeBytes) {
        std::string data(static_cast<size_t>(st.st_size), '\0');
        data.resize(file->read(0, data.data(), data.size()));
        source = std::make_shared<const DataSource>(std::move(data));  // the descriptor closes here
      } else {
        source = std::move(file);
      }
    }
    if (offset < 0) return Value();
    return Value(std::static_pointer_cast<const Object>(std::make_shared<const StructObject>(
        Reading{std::move(profile), std::move(source), std::make_shared<std::atomic<int64_t>>(kMaxBytesRead)}, *def,
        static_cast<uint64_t>(offset), 0)));
  } catch (const QueryError& e) {
    throw QueryError(std::string(e.what()).rfind("parse_binary", 0) == 0 ? e.what()
                                                                          : "parse_binary(): " + std::string(e.what()));
  }
}

}  // namespace

void add_binary_parser(Registry& r) {
  r.add(FunctionSpec{"parse_binary",
                     "A file (or, with accessor='data', the data) read as a struct of a vtypes profile; its members "
                     "are read when used. NULL when the file cannot be opened.",
                     {{"filename", "string", true, "the file (with accessor='data': the data)"},
                      {"accessor", "string", false, "file (default), auto or data"},
                      {"profile", "lambda text", true, "the profile: [[name, size, [[field, offset, type, {options}]]]]"},
                      {"struct", "string", true, "the struct to read"},
                      {"offset", "int", false, "where it starts (default 0)"}},
                     parse_binary});
}

}  // namespace outpost::vql
