// parse_xml(): an XML document as nested dicts, shaped as Velociraptor's
// parse_xml shapes it (with the Go library mxj, attributes prefixed "Attr").
// expat reads it as a stream; the input, the nesting and the names in one
// element are bounded, and no entity may be declared, so none is expanded
// or fetched.

#include <expat.h>

#include <algorithm>
#include <unordered_map>

#include "queries/engine.hpp"
#include "queries/linux_util.hpp"

namespace outpost::vql {
namespace {

// A dict of parse_xml()'s, which Velociraptor holds as a Go map: read by
// member like a dict, written like one, but a list's item of it is the row
// {_value: map}, which artifacts read with `SELECT ... FROM _value`.
class GoMap final : public Object {
 public:
  explicit GoMap(Dict d) : d_(std::move(d)) {}
  const char* type() const override { return "dict"; }
  std::string str() const override { return to_string(Value(d_)); }
  std::optional<Value> member(std::string_view name) const override {
    auto v = d_.find(name);
    return v ? std::optional<Value>(*v) : std::nullopt;
  }
  std::vector<std::string> members() const override {
    std::vector<std::string> out;
    for (auto& [k, v] : d_.items()) out.push_back(k);
    return out;
  }
  bool truthy() const override { return !d_.empty(); }
  std::optional<Dict> row() const override { return d_; }
  bool wrapped_as_item() const override { return true; }
  void append_json(std::string& out) const override { vql::append_json(out, Value(d_)); }
  void write(schema::Value::Builder out) const override { write_value(Value(d_), out); }

 private:
  Dict d_;
};

Value go_map(Dict d) { return Value(std::static_pointer_cast<const Object>(std::make_shared<const GoMap>(std::move(d)))); }

// What parse_xml reads at most: a document whose root has not ended by then
// is refused (its dicts take up to some 25 times as much memory as its
// text: a 16 MiB document of empty elements, about 400 MB).
constexpr size_t kMaxBytes = size_t{16} << 20;
// Elements nested deeper are refused.
constexpr size_t kMaxDepth = 256;
// Distinct keys (attributes and child names) in one element: a Dict finds
// keys by a linear search, so beyond this building it would take too long.
constexpr size_t kMaxNames = 1000;
constexpr size_t kChunk = 64 << 10;

// A bound passed while expat is running: recorded, then a QueryError.
struct Bound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An open element: mxj's two maps. `text` is its text when the text came
// before any attribute or child (then it is the element's whole value);
// `members` its attributes, children and "#text", each key with its values
// in document order (more than one: a list).
struct Element {
  std::string name;
  std::optional<std::string> text;
  std::vector<std::pair<std::string, std::vector<Value>>> members;
  std::unordered_map<std::string, size_t> index;

  std::vector<Value>& at(const std::string& key) {
    auto [it, fresh] = index.emplace(key, members.size());
    if (fresh) {
      if (members.size() == kMaxNames)
        throw Bound("more than " + std::to_string(kMaxNames) + " distinct names in <" + name + ">");
      members.emplace_back(key, std::vector<Value>{});
    }
    return members[it->second].second;
  }
  void set(const std::string& key, Value v) { at(key) = {std::move(v)}; }   // an attribute, "#text"
  void add(const std::string& key, Value v) { at(key).push_back(std::move(v)); }  // a child

  // Keys sorted, as Velociraptor gives a Go map; an element with nothing in it is "".
  Value value() {
    if (text) return *text;
    if (members.empty()) return "";
    std::sort(members.begin(), members.end(), [](auto& a, auto& b) { return a.first < b.first; });
    Dict d;
    for (auto& [key, values] : members)
      d.set(key, values.size() == 1 ? std::move(values[0]) : Value(List(std::move(values))));
    return go_map(std::move(d));
  }
};

// Go's encoding/xml keeps the part after a name's one ':' (mxj drops the
// prefix); a name with more than one ':' is an error there.
std::optional<std::string> local_name(std::string_view qname) {
  auto colon = qname.find(':');
  if (colon != std::string_view::npos && qname.find(':', colon + 1) != std::string_view::npos) return std::nullopt;
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == qname.size()) return std::string(qname);
  return std::string(qname.substr(colon + 1));
}

class XmlToDict {
 public:
  XmlToDict() : p_(XML_ParserCreate(nullptr)) {
    if (!p_) throw std::bad_alloc();
    XML_SetUserData(p_, this);
    XML_SetParamEntityParsing(p_, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetElementHandler(
        p_, [](void* x, const XML_Char* name, const XML_Char** atts) { of(x).guarded([&] { of(x).start(name, atts); }); },
        [](void* x, const XML_Char*) { of(x).guarded([&] { of(x).end(); }); });
    XML_SetCharacterDataHandler(p_, [](void* x, const XML_Char* s, int n) {
      of(x).guarded([&] { of(x).text_.append(s, static_cast<size_t>(n)); });
    });
    // Go's decoder ends a text at a comment, a processing instruction and
    // either end of a CDATA section: each piece is a text of its own.
    XML_SetCommentHandler(p_, [](void* x, const XML_Char*) { of(x).guarded([&] { of(x).flush(); }); });
    XML_SetProcessingInstructionHandler(
        p_, [](void* x, const XML_Char*, const XML_Char*) { of(x).guarded([&] { of(x).flush(); }); });
    XML_SetCdataSectionHandler(
        p_, [](void* x) { of(x).guarded([&] { of(x).flush(); }); },
        [](void* x) { of(x).guarded([&] { of(x).flush(); }); });
    XML_SetEntityDeclHandler(p_, [](void* x, const XML_Char*, int, const XML_Char*, int, const XML_Char*,
                                    const XML_Char*, const XML_Char*, const XML_Char*) {
      of(x).guarded([&] { of(x).stop("entity declarations are not supported", false); });
    });
    // An entity referred to but not declared where expat does not make that
    // an error itself (a document with an external DTD): Go's is an error.
    XML_SetSkippedEntityHandler(p_, [](void* x, const XML_Char* name, int) {
      of(x).guarded([&] { of(x).stop(std::string("undefined entity ") + name, false); });
    });
  }
  ~XmlToDict() { XML_ParserFree(p_); }
  XmlToDict(const XmlToDict&) = delete;
  XmlToDict& operator=(const XmlToDict&) = delete;

  // Parses the next bytes (`last`: none follow); false once the root has
  // ended or the document failed.
  bool feed(const char* data, size_t size, bool last) {
    // mxj skips text before the root; this skips what comes before the
    // first '<' (unless the document is UTF-16: a BOM or a NUL first).
    if (!started_ && lines_ == 0 && cols_ == 0 && size > 0)
      started_ = static_cast<unsigned char>(data[0]) >= 0xFE || data[0] == '\0';
    for (; !started_ && size > 0; ++data, --size) {
      if (*data == '<') {
        started_ = true;
        break;
      }
      if (*data == '\n') ++lines_, cols_ = 0;
      else ++cols_;
    }
    if (XML_Parse(p_, data, static_cast<int>(size), last) == XML_STATUS_OK) return !last;
    if (!result_ && error_.empty()) {
      auto code = XML_GetErrorCode(p_);
      error_ = code == XML_ERROR_ABORTED ? "aborted" : XML_ErrorString(code);
      error_ += position();
    }
    return false;
  }

  // The document ({root: value}), or nullopt and error().
  const std::optional<Value>& result() const { return result_; }
  const std::string& error() const { return error_; }
  bool bound_passed() const { return bound_; }

 private:
  static XmlToDict& of(void* x) { return *static_cast<XmlToDict*>(x); }

  // Runs a handler's work; what it throws stops the parse (it must not
  // unwind through expat).
  template <typename F>
  void guarded(F&& f) {
    if (stopped_) return;  // expat may call the end of an element whose start stopped it
    try {
      f();
    } catch (const Bound& e) {
      stop(e.what(), true);
    } catch (const std::exception& e) {
      stop(e.what(), false);
    }
  }

  void stop(std::string why, bool bound) {
    if (error_.empty()) error_ = std::move(why) + position(), bound_ = bound;
    stopped_ = true;
    XML_StopParser(p_, XML_FALSE);
  }

  // Where expat is, counting the text skipped before the root; columns from 1.
  std::string position() const {
    auto line = XML_GetCurrentLineNumber(p_), col = XML_GetCurrentColumnNumber(p_) + 1;
    if (line == 1) col += cols_;
    return " at line " + std::to_string(line + lines_) + ", column " + std::to_string(col);
  }

  void start(const XML_Char* qname, const XML_Char** atts) {
    flush();
    if (stack_.size() == kMaxDepth) throw Bound("elements nested deeper than " + std::to_string(kMaxDepth));
    Element e;
    auto name = local_name(qname);
    if (!name) return stop(std::string("invalid XML name ") + qname, false);
    e.name = std::move(*name);
    // Only attributes written in the element: Go's decoder applies no DTD defaults.
    for (int i = 0, n = XML_GetSpecifiedAttributeCount(p_); i + 1 < n; i += 2) {
      auto attr = local_name(atts[i]);
      if (!attr) return stop(std::string("invalid XML name ") + atts[i], false);
      e.set("Attr" + *attr, std::string(atts[i + 1]));
    }
    stack_.push_back(std::move(e));
  }

  void end() {
    flush();
    Element e = std::move(stack_.back());
    stack_.pop_back();
    Value v = e.value();
    if (!stack_.empty()) return stack_.back().add(e.name, std::move(v));
    Dict root;
    root.set(e.name, std::move(v));
    result_ = go_map(std::move(root));
    stopped_ = true;
    XML_StopParser(p_, XML_FALSE);  // what follows the root is not read (as mxj)
  }

  // A piece of text, trimmed: the value of an element that has nothing else
  // yet, or its "#text" (a later piece replaces an earlier one).
  void flush() {
    size_t a = text_.find_first_not_of("\t\r\b\n "), b = text_.find_last_not_of("\t\r\b\n ");
    if (a != std::string::npos && !stack_.empty()) {
      Element& e = stack_.back();
      std::string t = text_.substr(a, b - a + 1);
      if (e.members.empty()) e.text = std::move(t);
      else e.set("#text", std::move(t));
    }
    text_.clear();
  }

  XML_Parser p_;
  std::vector<Element> stack_;
  std::string text_;
  std::optional<Value> result_;
  std::string error_;
  bool bound_ = false;
  bool started_ = false;  // past what comes before the first '<'
  bool stopped_ = false;  // the root ended or the parse failed
  unsigned long lines_ = 0, cols_ = 0;  // skipped before the root
};

Value parse_xml(const Args& args, Env& env) {
  std::string file = required_string(args, "file");
  bool data = accessor_of(args, {Accessor::data}) == Accessor::data;
  std::string where = "parse_xml(): " + (data ? "file (data, " + std::to_string(file.size()) + " bytes)" : file);
  auto too_big = [&] { throw QueryError(where + ": larger than " + std::to_string(kMaxBytes >> 20) + " MiB"); };
  XmlToDict xml;
  if (data) {
    for (size_t at = 0;; at += kChunk) {
      size_t n = std::min(kChunk, file.size() - at);
      if (at + n > kMaxBytes) too_big();
      if (!xml.feed(file.data() + at, n, at + n == file.size())) break;
    }
  } else {
    kj::AutoCloseFd fd = open_read(file);
    std::string problem = fd == nullptr ? errno_message(errno) : not_a_finite_file(fd.get());
    std::string buf(kChunk, '\0');
    for (size_t total = 0; problem.empty();) {
      ssize_t n = read_retry(fd.get(), buf.data(), buf.size());
      if (n < 0) {
        problem = errno_message(errno);
        break;
      }
      if ((total += static_cast<size_t>(n)) > kMaxBytes) too_big();
      if (!xml.feed(buf.data(), static_cast<size_t>(n), n == 0)) break;
    }
    close_file(fd);  // read: a close error adds nothing
    if (!problem.empty()) {  // as Velociraptor: logged, NULL
      log_row_error(env, where + ": cannot read: " + problem);
      return Value();
    }
  }
  if (xml.bound_passed()) throw QueryError(where + ": " + xml.error());
  if (!xml.result()) {  // as Velociraptor: malformed XML is logged, NULL
    log_row_error(env, where + ": " + xml.error());
    return Value();
  }
  return *xml.result();
}

}  // namespace

void add_xml_functions(Registry& r) {
  r.add(FunctionSpec{"parse_xml",
                     "An XML document as dicts, as Velociraptor's: {root: value}; an element's value is its text, "
                     "or a dict of its attributes (Attr<name>), children (repeated ones as a list) and #text, or "
                     "\"\" when empty; values are strings. NULL (logged) when the file cannot be read or the XML is "
                     "malformed.",
                     {{"file", "string", true, "the XML file (with accessor='data': the XML text)"},
                      {"accessor", "string", false, "file (default), auto or data"}},
                     parse_xml});
}

}  // namespace outpost::vql
