// Functions that steer a query rather than compute a value: if() and log().

#include <spdlog/spdlog.h>

#include "queries/engine.hpp"

namespace outpost::vql {

void add_flow_functions(Registry& r) {
  // The engine evaluates if() itself, lazily: only the branch it takes (a
  // branch may have side effects, or fail). This call is for a caller that
  // has every argument evaluated already.
  r.add(FunctionSpec{"if",
                     "The value of `then` when `condition` holds (a query: when it has a row), else that of "
                     "`else`; only the branch taken is evaluated.",
                     {{"condition", "any", true, ""}, {"then", "any", false, ""}, {"else", "any", false, ""}},
                     [](const Args& args, Env&) {
                       auto condition = args.find("condition");
                       auto branch = args.find(condition && condition_holds(*condition) ? "then" : "else");
                       return branch ? *branch : Value();
                     }});
  r.add(FunctionSpec{
      "log",
      "Writes `message` (Go verbs, filled from `args`) to the agent's log at `level` (DEFAULT, INFO, WARN, ERROR, "
      "DEBUG, ALERT) and returns TRUE; the same message format again within `dedup` seconds (default 60; -1: "
      "never deduplicated) is not written.",
      {{"message", "string", true, ""},
       {"args", "any", false, "a list, or one value"},
       {"level", "string", false, ""},
       {"dedup", "int", false, ""}},
      [](const Args& args, Env& env) {
        std::string format = args.string("message").value_or("");
        int64_t dedup = args.integer("dedup").value_or(60);
        if (dedup >= 0 && !first_in(env, "log() " + format, std::chrono::seconds(dedup))) return Value(true);
        std::vector<std::pair<std::string, Value>> format_args{{"format", format}};
        if (auto a = args.find("args")) format_args.emplace_back("args", *a);
        Value text = default_registry().function("format")->call(Args("log", std::move(format_args)), env);
        std::string level = args.string("level").value_or("DEFAULT");
        for (auto& c : level) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        std::string line = "vql: " + level + ": " + to_string(text);
        if (level == "ERROR")
          spdlog::error("{}", line);
        else if (level == "WARN")
          spdlog::warn("{}", line);
        else if (level == "DEBUG")
          spdlog::debug("{}", line);
        else
          spdlog::info("{}", line);
        return Value(true);
      }});
}

}  // namespace outpost::vql
