#include "actors/control.hpp"

#include <caf/config_value.hpp>
#include <fmt/format.h>

#include <cmath>

#include "schemas/json.hpp"

namespace outpost {
namespace {

void append(std::string& out, const caf::config_value& v);

void append_dict(std::string& out, const caf::settings& s) {
  out += '{';
  bool first = true;
  for (auto& [key, value] : s) {
    if (!first) out += ',';
    first = false;
    schemas::append_json_string(out, kj::StringPtr(key.c_str(), key.size()));
    out += ':';
    append(out, value);
  }
  out += '}';
}

void append(std::string& out, const caf::config_value& v) {
  if (auto i = caf::get_if<int64_t>(&v)) {
    out += std::to_string(*i);
  } else if (auto b = caf::get_if<bool>(&v)) {
    out += *b ? "true" : "false";
  } else if (auto r = caf::get_if<double>(&v)) {
    out += std::isfinite(*r) ? fmt::format("{}", *r) : "null";
  } else if (auto l = caf::get_if<caf::config_value::list>(&v)) {
    out += '[';
    for (size_t i = 0; i < l->size(); ++i) {
      if (i) out += ',';
      append(out, (*l)[i]);
    }
    out += ']';
  } else if (auto d = caf::get_if<caf::config_value::dictionary>(&v)) {
    append_dict(out, *d);
  } else {
    std::string text = caf::get_if<std::string>(&v) ? caf::get<std::string>(v) : caf::to_string(v);
    schemas::append_json_string(out, kj::StringPtr(text.c_str(), text.size()));
  }
}

}  // namespace

std::string settings_json(const caf::settings& s) {
  std::string out;
  append_dict(out, s);
  return out;
}

}  // namespace outpost
