#include "queries/os_objects.hpp"

#include <sys/stat.h>

#include <algorithm>

namespace outpost::vql {
namespace {

std::vector<std::string> split_path(std::string_view text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= text.size()) {
    size_t end = text.find('/', at);
    if (end == std::string_view::npos) end = text.size();
    auto part = text.substr(at, end - at);
    if (!part.empty() && part != "." && part != "..") out.emplace_back(part);
    at = end + 1;
  }
  return out;
}

class Path final : public PathObject {
 public:
  using PathObject::PathObject;

  std::string str() const override {
    if (c_.empty()) return "/";
    std::string out;
    for (auto& part : c_) out += '/' + part;
    return out;
  }
  std::optional<Value> member(std::string_view name) const override {
    if (name == "Path" || name == "String" || name == "HumanString") return Value(str());
    return PathObject::member(name);
  }
  std::vector<std::string> members() const override {
    return {"Basename", "Components", "Dirname", "HumanString", "Path", "String"};
  }

 private:
  std::vector<std::string> split(std::string_view text) const override { return split_path(text); }
  Value with(std::vector<std::string> c) const override { return os_path(std::move(c)); }
};

// Go's os.FileMode bits.
constexpr uint32_t kDir = 1u << 31, kSymlink = 1u << 27, kDevice = 1u << 26, kPipe = 1u << 25, kSocket = 1u << 24,
                   kSetuid = 1u << 23, kSetgid = 1u << 22, kCharDevice = 1u << 21, kSticky = 1u << 20,
                   kIrregular = 1u << 19;
constexpr uint32_t kType = kDir | kSymlink | kPipe | kSocket | kDevice | kCharDevice | kIrregular;

class Mode final : public Object {
 public:
  explicit Mode(uint32_t bits) : m_(bits) {}
  const char* type() const override { return "mode"; }
  // Go's FileMode.String(): a letter per type bit set, or '-'; then rwx.
  std::string str() const override {
    static const char kLetters[] = "dalTLDpSugct?";
    std::string out;
    for (int i = 0; i < 13; ++i)
      if (m_ & (1u << (31 - i))) out += kLetters[i];
    if (out.empty()) out = "-";
    for (int i = 0; i < 9; ++i) out += (m_ & (1u << (8 - i))) ? "rwxrwxrwx"[i] : '-';
    return out;
  }
  bool truthy() const override { return m_ != 0; }
  void append_json(std::string& out) const override { out += std::to_string(m_); }
  void write(schema::Value::Builder out) const override { out.setInt64(m_); }
  std::optional<Value> member(std::string_view name) const override {
    if (name == "String") return Value(str());
    if (name == "IsDir") return Value((m_ & kDir) != 0);
    if (name == "IsRegular") return Value((m_ & kType) == 0);
    if (name == "IsLink") return Value((m_ & kSymlink) != 0);
    if (name == "Perm") return Value(int64_t{m_ & 0777});
    if (name == "Type") return Value(ObjectPtr(std::make_shared<const Mode>(m_ & kType)));
    return std::nullopt;
  }
  std::vector<std::string> members() const override { return {"IsDir", "IsLink", "IsRegular", "Perm", "String", "Type"}; }

 private:
  uint32_t m_;
};

}  // namespace

Value os_path(std::string_view text) { return os_path(split_path(text)); }

Value os_path(std::vector<std::string> components) {
  return Value(ObjectPtr(std::make_shared<const Path>(std::move(components))));
}

const std::vector<std::string>* path_components(const Value& v) {
  auto p = dynamic_cast<const PathObject*>(v.as_object());
  return p ? &p->components() : nullptr;
}

std::optional<Value> PathObject::member(std::string_view name) const {
  if (name == "Basename") return c_.empty() ? Value("") : Value(c_.back());
  if (name == "Dirname") return with(std::vector<std::string>(c_.begin(), c_.end() - (c_.empty() ? 0 : 1)));
  if (name == "Components") return Value(List(c_.begin(), c_.end()));
  return std::nullopt;
}

Value PathObject::index(int64_t i) const {
  auto n = static_cast<int64_t>(c_.size());
  if (i < 0) i += n;
  return i >= 0 && i < n ? Value(c_[static_cast<size_t>(i)]) : Value();
}

Value PathObject::slice(std::optional<int64_t> from, std::optional<int64_t> to) const {
  auto n = static_cast<int64_t>(c_.size());
  auto at = [n](int64_t k) { return std::clamp<int64_t>(k < 0 ? k + n : k, 0, n); };
  int64_t a = at(from.value_or(0)), b = std::max(a, at(to.value_or(n)));
  return with(std::vector<std::string>(c_.begin() + a, c_.begin() + b));
}

Value PathObject::add(const Value& right) const {
  auto out = c_;
  if (auto s = right.as_string()) {
    for (auto& part : split(*s)) out.push_back(std::move(part));
  } else if (auto p = path_components(right)) {
    out.insert(out.end(), p->begin(), p->end());
  } else if (auto l = right.as_list()) {
    for (auto& item : *l) out.push_back(to_string(item));  // verbatim
  } else {
    return Value();
  }
  return with(std::move(out));
}

Value file_mode(mode_t st_mode) {
  uint32_t m = st_mode & 0777;
  switch (st_mode & S_IFMT) {
    case S_IFBLK: m |= kDevice; break;
    case S_IFCHR: m |= kDevice | kCharDevice; break;
    case S_IFDIR: m |= kDir; break;
    case S_IFIFO: m |= kPipe; break;
    case S_IFLNK: m |= kSymlink; break;
    case S_IFSOCK: m |= kSocket; break;
    default: break;
  }
  if (st_mode & S_ISGID) m |= kSetgid;
  if (st_mode & S_ISUID) m |= kSetuid;
  if (st_mode & S_ISVTX) m |= kSticky;
  return Value(ObjectPtr(std::make_shared<const Mode>(m)));
}

}  // namespace outpost::vql
