// grok(): named patterns (%{NAME:field}) over RE2, with a standard pattern
// library written for RE2 (which has no lookaround: word boundaries stand
// in for the lookarounds of Logstash's originals).

#include <re2/re2.h>

#include <mutex>

#include "queries/engine.hpp"

namespace outpost::vql {
namespace {

const std::map<std::string, std::string>& library() {
  static const std::map<std::string, std::string> patterns = {
      {"USERNAME", R"g([a-zA-Z0-9._-]+)g"},
      {"USER", R"g(%{USERNAME})g"},
      {"EMAILLOCALPART", R"g([a-zA-Z][a-zA-Z0-9_.+-=:]+)g"},
      {"EMAILADDRESS", R"g(%{EMAILLOCALPART}@%{HOSTNAME})g"},
      {"INT", R"g((?:[+-]?(?:[0-9]+)))g"},
      {"BASE10NUM", R"g([+-]?(?:(?:[0-9]+(?:\.[0-9]+)?)|(?:\.[0-9]+)))g"},
      {"NUMBER", R"g((?:%{BASE10NUM}))g"},
      {"BASE16NUM", R"g([+-]?(?:0x)?(?:[0-9A-Fa-f]+))g"},
      {"BASE16FLOAT", R"g(\b[+-]?(?:0x)?(?:(?:[0-9A-Fa-f]+(?:\.[0-9A-Fa-f]*)?)|(?:\.[0-9A-Fa-f]+))\b)g"},
      {"POSINT", R"g(\b(?:[1-9][0-9]*)\b)g"},
      {"NONNEGINT", R"g(\b(?:[0-9]+)\b)g"},
      {"WORD", R"g(\b\w+\b)g"},
      {"NOTSPACE", R"g(\S+)g"},
      {"SPACE", R"g(\s*)g"},
      {"DATA", R"g(.*?)g"},
      {"GREEDYDATA", R"g(.*)g"},
      {"QUOTEDSTRING", R"g((?:"(?:\\.|[^\\"])*"|'(?:\\.|[^\\'])*'|`(?:\\.|[^\\`])*`))g"},
      {"QS", R"g(%{QUOTEDSTRING})g"},
      {"UUID", R"g([A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12})g"},
      {"MAC", R"g((?:%{CISCOMAC}|%{WINDOWSMAC}|%{COMMONMAC}))g"},
      {"CISCOMAC", R"g((?:(?:[A-Fa-f0-9]{4}\.){2}[A-Fa-f0-9]{4}))g"},
      {"WINDOWSMAC", R"g((?:(?:[A-Fa-f0-9]{2}-){5}[A-Fa-f0-9]{2}))g"},
      {"COMMONMAC", R"g((?:(?:[A-Fa-f0-9]{2}:){5}[A-Fa-f0-9]{2}))g"},
      {"IPV6", R"g((?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|:(?::[0-9A-Fa-f]{1,4}){1,7}|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}|::(?:ffff(?::0{1,4})?:)?%{IPV4}|(?:[0-9A-Fa-f]{1,4}:){1,4}:%{IPV4}|::)(?:%.+)?)g"},
      {"IPV4", R"g(\b(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\b)g"},
      {"IP", R"g((?:%{IPV6}|%{IPV4}))g"},
      {"HOSTNAME", R"g(\b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*\.?)g"},
      {"HOST", R"g(%{HOSTNAME})g"},
      {"IPORHOST", R"g((?:%{IP}|%{HOSTNAME}))g"},
      {"HOSTPORT", R"g(%{IPORHOST}:%{POSINT})g"},
      {"PATH", R"g((?:%{UNIXPATH}|%{WINPATH}))g"},
      {"UNIXPATH", R"g((?:/[\w_%!$@:.,+~-]*)+)g"},
      {"TTY", R"g((?:/dev/(?:pts|tty(?:[pq])?)(?:\w+)?/?(?:[0-9]+)))g"},
      {"WINPATH", R"g((?:[A-Za-z]+:|\\)(?:\\[^\\?*]*)+)g"},
      {"URIPROTO", R"g([A-Za-z][A-Za-z0-9+\-.]+)g"},
      {"URIHOST", R"g(%{IPORHOST}(?::%{POSINT:port})?)g"},
      {"URIPATH", R"g((?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_\-]*)+)g"},
      {"URIPARAM", R"g(\?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\-\[\]<>]*)g"},
      {"URIPATHPARAM", R"g(%{URIPATH}(?:%{URIPARAM})?)g"},
      {"URI", R"g(%{URIPROTO}://(?:%{USER}(?::[^@]*)?@)?(?:%{URIHOST})?(?:%{URIPATHPARAM})?)g"},
      {"MONTH", R"g(\b(?:[Jj]an(?:uary|uar)?|[Ff]eb(?:ruary|ruar)?|[Mm](?:a|ä)?r(?:ch|z)?|[Aa]pr(?:il)?|[Mm]a(?:y|i)?|[Jj]un(?:e|i)?|[Jj]ul(?:y)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|[Oo](?:c|k)?t(?:ober)?|[Nn]ov(?:ember)?|[Dd]e(?:c|z)(?:ember)?)\b)g"},
      {"MONTHNUM", R"g((?:0?[1-9]|1[0-2]))g"},
      {"MONTHNUM2", R"g((?:0[1-9]|1[0-2]))g"},
      {"MONTHDAY", R"g((?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9]))g"},
      {"DAY", R"g((?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?))g"},
      {"YEAR", R"g((?:\d\d){1,2})g"},
      {"HOUR", R"g((?:2[0123]|[01]?[0-9]))g"},
      {"MINUTE", R"g((?:[0-5][0-9]))g"},
      {"SECOND", R"g((?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?))g"},
      {"TIME", R"g(\b%{HOUR}:%{MINUTE}(?::%{SECOND})\b)g"},
      {"DATE_US", R"g(%{MONTHNUM}[/-]%{MONTHDAY}[/-]%{YEAR})g"},
      {"DATE_EU", R"g(%{MONTHDAY}[./-]%{MONTHNUM}[./-]%{YEAR})g"},
      {"ISO8601_TIMEZONE", R"g((?:Z|[+-]%{HOUR}(?::?%{MINUTE})))g"},
      {"ISO8601_SECOND", R"g((?:%{SECOND}|60))g"},
      {"TIMESTAMP_ISO8601", R"g(%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?%{ISO8601_TIMEZONE}?)g"},
      {"DATE", R"g(%{DATE_US}|%{DATE_EU})g"},
      {"DATESTAMP", R"g(%{DATE}[- ]%{TIME})g"},
      {"TZ", R"g((?:[APMCE][SD]T|UTC))g"},
      {"DATESTAMP_RFC822", R"g(%{DAY} %{MONTH} %{MONTHDAY} %{YEAR} %{TIME} %{TZ})g"},
      {"DATESTAMP_OTHER", R"g(%{DAY} %{MONTH} %{MONTHDAY} %{TIME} %{TZ} %{YEAR})g"},
      {"SYSLOGTIMESTAMP", R"g(%{MONTH} +%{MONTHDAY} %{TIME})g"},
      {"PROG", R"g([\x21-\x5a\x5c\x5e-\x7e]+)g"},
      {"SYSLOGPROG", R"g(%{PROG:program}(?:\[%{POSINT:pid}\])?)g"},
      {"SYSLOGHOST", R"g(%{IPORHOST})g"},
      {"SYSLOGFACILITY", R"g(<%{NONNEGINT:facility}.%{NONNEGINT:priority}>)g"},
      {"SYSLOGBASE", R"g(%{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:logsource} %{SYSLOGPROG}:)g"},
      {"HTTPDATE", R"g(%{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT})g"},
      {"COMMONAPACHELOG", R"g(%{IPORHOST:clientip} %{USER:ident} %{USER:auth} \[%{HTTPDATE:timestamp}\] "(?:%{WORD:verb} %{NOTSPACE:request}(?: HTTP/%{NUMBER:httpversion})?|%{DATA:rawrequest})" %{NUMBER:response} (?:%{NUMBER:bytes}|-))g"},
      {"COMBINEDAPACHELOG", R"g(%{COMMONAPACHELOG} %{QS:referrer} %{QS:agent})g"},
      {"LOGLEVEL", R"g(([Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo|INFO|[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Cc]rit?(?:ical)?|CRIT?(?:ICAL)?|[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?))g"},
  };
  return patterns;
}

// A grok expression compiled: the regex and, by its group number, the
// field each named group fills.
struct Compiled {
  std::unique_ptr<RE2> re;
  std::vector<std::pair<int, std::string>> fields;
  std::string error;
};

constexpr int kMaxExpansion = 30;

// %{NAME}, %{NAME:field} (and %{NAME:field:type}) expanded; fields become
// groups g1, g2, ... (field names may hold '.', which RE2 names may not).
bool expand(const std::string& text, const Dict* custom, int depth, std::string& out,
            std::vector<std::string>& fields, std::string& error) {
  if (depth > kMaxExpansion) return error = "patterns nest more than 30 deep (does one refer to itself?)", false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 2, "%{") != 0) {
      out += text[i];
      continue;
    }
    size_t end = text.find('}', i);
    if (end == std::string::npos) return error = "unterminated %{ at " + std::to_string(i), false;
    std::string spec = text.substr(i + 2, end - i - 2), name = spec, field;
    if (auto colon = spec.find(':'); colon != std::string::npos) {
      name = spec.substr(0, colon);
      field = spec.substr(colon + 1);
      field = field.substr(0, field.find(':'));  // a type suffix: values stay strings
    }
    const std::string* definition = nullptr;
    std::string custom_text;
    if (custom) {
      if (auto v = custom->find(name)) {
        custom_text = to_string(*v);
        definition = &custom_text;
      }
    }
    if (!definition) {
      auto it = library().find(name);
      if (it == library().end()) return error = "no pattern named " + name, false;
      definition = &it->second;
    }
    if (!field.empty()) {
      fields.push_back(field);
      out += "(?P<g" + std::to_string(fields.size()) + ">";
    } else {
      out += "(?:";
    }
    if (!expand(*definition, custom, depth + 1, out, fields, error)) return false;
    out += ")";
    i = end;
  }
  return true;
}

std::shared_ptr<const Compiled> compile(const std::string& grok, const Dict* custom) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const Compiled>> cache;
  std::string key = grok;
  if (custom) key += '\0' + to_json(*custom);
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  auto c = std::make_shared<Compiled>();
  std::string regex;
  std::vector<std::string> fields;
  if (expand(grok, custom, 0, regex, fields, c->error)) {
    RE2::Options options;
    options.set_log_errors(false);
    c->re = std::make_unique<RE2>(regex, options);
    if (!c->re->ok()) c->error = c->re->error();
    for (auto& [name, index] : c->re->NamedCapturingGroups())
      if (name.size() > 1 && name[0] == 'g') c->fields.emplace_back(index, fields[std::stoul(name.substr(1)) - 1]);
  }
  std::lock_guard lock(mutex);
  if (cache.size() > 100) cache.clear();
  return cache.emplace(key, c).first->second;
}

Value grok(const Args& a, Env&) {
  std::string data = a.string("data").value_or("");
  const Value* patterns = a.find("patterns");
  if (patterns && !patterns->as_dict()) a.fail("patterns", "expected a dict of name: pattern");
  auto c = compile(a.string("grok").value_or(""), patterns ? patterns->as_dict() : nullptr);
  if (!c->error.empty()) a.fail("grok", c->error);
  std::vector<re2::StringPiece> groups(static_cast<size_t>(c->re->NumberOfCapturingGroups()) + 1);
  if (!c->re->Match(data, 0, data.size(), RE2::UNANCHORED, groups.data(), static_cast<int>(groups.size())))
    return Dict();
  std::map<std::string, std::string> fields;  // sorted by name, as Velociraptor gives them
  for (auto& [index, name] : c->fields) {
    auto& g = groups[static_cast<size_t>(index)];
    auto [it, fresh] = fields.emplace(name, std::string(g.data() ? g : ""));
    if (!fresh && it->second.empty()) it->second = std::string(g.data() ? g : "");  // a repeated name: one that matched
  }
  Dict out;
  for (auto& [name, value] : fields) out.set(name, value);
  return out;
}

}  // namespace

void add_grok(Registry& r) {
  r.add(FunctionSpec{"grok",
                     "The fields a grok expression (%{PATTERN:field}, regex between) takes from `data`, as a dict "
                     "sorted by name (strings); {} when it does not match. The standard patterns (SYSLOGBASE, "
                     "IPORHOST, COMBINEDAPACHELOG, ...) are built in; `patterns` adds or replaces some.",
                     {{"grok", "string", true, ""}, {"data", "string", true, ""}, {"patterns", "dict", false, ""},
                      {"all_captures", "bool", false, "accepted; every named field is given"}},
                     grok});
}

}  // namespace outpost::vql
