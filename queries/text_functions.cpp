// VQL's text functions that rewrite strings with regexes (regex_replace).

#include <re2/re2.h>

#include <algorithm>

#include "queries/engine.hpp"

namespace outpost::vql {
namespace {

// Go's Regexp.Expand: $1 or ${1} a group by number, $name or ${name} by
// name (the longest run of letters, digits and '_': `$1x` is the group named
// "1x"), $$ a '$'; a group that does not exist is empty.
void expand(std::string& out, const std::string& tmpl, const re2::RE2& re, const std::vector<re2::StringPiece>& groups) {
  auto group = [&](const std::string& name) -> re2::StringPiece {
    bool number = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    if (number) {
      size_t n = name.size() > 9 ? groups.size() : std::stoul(name);
      return n < groups.size() ? groups[n] : re2::StringPiece();
    }
    auto& named = re.NamedCapturingGroups();
    auto it = named.find(name);
    return it != named.end() && static_cast<size_t>(it->second) < groups.size() ? groups[it->second] : re2::StringPiece();
  };
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] != '$' || i + 1 == tmpl.size()) {
      out += tmpl[i];
      continue;
    }
    if (tmpl[i + 1] == '$') {
      out += '$';
      ++i;
      continue;
    }
    size_t begin = i + 1, end;
    std::string name;
    if (tmpl[begin] == '{') {
      end = tmpl.find('}', begin);
      if (end == std::string::npos) {  // not a reference: as written
        out += tmpl[i];
        continue;
      }
      name = tmpl.substr(begin + 1, end - begin - 1);
      i = end;
    } else {
      for (end = begin; end < tmpl.size() && word(tmpl[end]); ++end) {
      }
      if (end == begin) {
        out += tmpl[i];
        continue;
      }
      name = tmpl.substr(begin, end - begin);
      i = end - 1;
    }
    auto g = group(name);
    out.append(g.data() ? g.data() : "", g.size());
  }
}

}  // namespace

std::string replace_all(const std::string& source, const re2::RE2& re, const std::string& tmpl) {
  std::vector<re2::StringPiece> groups(static_cast<size_t>(re.NumberOfCapturingGroups()) + 1);
  std::string out;
  size_t at = 0, copied = 0;
  while (at <= source.size() &&
         re.Match(source, at, source.size(), RE2::UNANCHORED, groups.data(), static_cast<int>(groups.size()))) {
    size_t begin = static_cast<size_t>(groups[0].data() - source.data()), end = begin + groups[0].size();
    out.append(source, copied, begin - copied);
    expand(out, tmpl, re, groups);
    copied = end;
    if (end == begin) {  // an empty match: step over one character
      if (end < source.size()) out += source[end];
      copied = end + 1;
      at = end + 1;
    } else {
      at = end;
    }
  }
  if (copied < source.size()) out.append(source, copied, std::string::npos);
  return out;
}

void add_text_functions(Registry& r) {
  r.add(FunctionSpec{"filter",
                     "The items of `list` that match the regex `regex` (case ignored; an item that is not a string "
                     "by its text); NULL when `regex` is not a valid regex.",
                     {{"list", "list", true, ""}, {"regex", "regex", true, ""}},
                     [](const Args& a, Env&) -> Value {
                       const RE2* re = cached_regex(a.string("regex").value_or(""), false);
                       if (!re) return Value();
                       Value items = materialize(a.require("list"));
                       List out;
                       for (auto& item : items.as_list() ? *items.as_list() : List{items})
                         if (RE2::PartialMatch(to_string(item), *re)) out.push_back(item);
                       return out;
                     }});
  r.add(FunctionSpec{
      "regex_replace",
      "`source` with every match of the regex `re` (case ignored) replaced by `replace`, where $1 or ${name} "
      "stand for a group; NULL when `re` is not a valid regex.",
      {{"source", "string", true, ""}, {"re", "regex", true, ""}, {"replace", "string", false, ""}},
      [](const Args& a, Env&) -> Value {
        auto source = a.string("source");
        auto pattern = a.string("re");
        if (!source || !pattern) return Value();
        const re2::RE2* re = cached_regex(*pattern, false);  // Velociraptor's ignore case here
        if (!re) return Value();
        return replace_all(*source, *re, a.string("replace").value_or(""));
      }});
}

}  // namespace outpost::vql
