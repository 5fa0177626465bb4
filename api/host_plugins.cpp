#include "api/host_plugins.hpp"

#include <deque>
#include <mutex>
#include <set>
#include <stdexcept>

#include "queries/engine.hpp"

namespace outpost {

namespace {

// What the host's code threw, as the query's error.
[[noreturn]] void fail_query(const std::string& callee) {
  try {
    throw;
  } catch (const vql::QueryError&) {
    throw;
  } catch (const std::exception& e) {
    throw vql::QueryError(callee + "(): " + e.what());
  } catch (...) {
    throw vql::QueryError(callee + "(): the host's code threw something that is not a std::exception");
  }
}

vql::Value to_engine_value(Value v) {
  return std::visit(
      [](auto&& x) -> vql::Value {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>)
          return vql::Value();
        else
          return vql::Value(std::move(x));
      },
      std::move(v));
}

Arguments to_host_args(const vql::Args& args) {
  std::vector<std::pair<std::string, Value>> values;
  values.reserve(args.values().size());
  vql::Dict all;
  for (auto& [name, value] : args.values()) {
    vql::Value v = value.as_query() ? vql::materialize(value) : value;  // its rows, once
    values.emplace_back(name, to_host_value(v));
    all.set(name, std::move(v));
  }
  return Arguments(std::move(values), vql::to_json(all));
}

// Where a stream's wake callback reaches its query: cleared when the stream
// ends, so that a callback the host kept does nothing afterwards.
struct WakeSlot {
  std::mutex mutex;
  const vql::Env* env = nullptr;  // guarded by `mutex`
};

// A host plugin's stream as the engine's. Rows the host made beyond the
// budget wait here for the next calls.
class HostStream : public vql::RowStream {
 public:
  HostStream(std::string name, std::unique_ptr<PluginStream> stream, std::shared_ptr<WakeSlot> slot)
      : name_(std::move(name)), stream_(std::move(stream)), slot_(std::move(slot)) {}
  ~HostStream() override {
    std::lock_guard<std::mutex> lock(slot_->mutex);
    slot_->env = nullptr;
  }

  vql::Step next(std::vector<vql::Row>& out, size_t budget) override {
    if (held_.empty()) {
      std::vector<Row> rows;
      try {
        after_ = stream_->next(rows, budget);
      } catch (...) {
        fail_query(name_);
      }
      for (auto& r : rows) held_.push_back(std::move(r));
    }
    for (; budget > 0 && !held_.empty(); --budget) {
      out.push_back(to_engine_row(std::move(held_.front())));
      held_.pop_front();
    }
    if (!held_.empty()) return vql::Step::more();
    switch (after_.state) {
      case PluginStep::State::more:
        return vql::Step::more();
      case PluginStep::State::wait:
        return vql::Step::after(std::max(after_.wait, std::chrono::nanoseconds(0)));
      case PluginStep::State::parked:
        return vql::Step::parked();
      case PluginStep::State::done:
        return vql::Step::done();
    }
    throw vql::QueryError(name_ + "(): next() answered a step that is not one of PluginStep::State");
  }

 private:
  std::string name_;
  std::unique_ptr<PluginStream> stream_;
  std::shared_ptr<WakeSlot> slot_;
  std::deque<Row> held_;
  PluginStep after_;  // what the host said after the rows in `held_`
};

bool is_identifier(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

std::vector<vql::ArgSpec> arg_specs(const std::string& what, const std::vector<ArgumentDef>& args) {
  std::vector<vql::ArgSpec> specs;
  std::set<std::string> seen;
  for (auto& a : args) {
    if (a.name != "*" && !is_identifier(a.name))
      throw std::invalid_argument(what + ": argument '" + a.name + "' is not a name (letters, digits and '_')");
    if (!seen.insert(a.name).second) throw std::invalid_argument(what + ": argument " + a.name + " is given twice");
    specs.push_back({a.name, a.type, a.required, a.description});
  }
  return specs;
}

void check_name(const std::string& what, const std::string& name, bool taken) {
  if (!is_identifier(name))
    throw std::invalid_argument(what + " '" + name + "': not a name VQL can call (letters, digits and '_')");
  if (taken) throw std::invalid_argument(what + " " + name + ": the name is taken (a built-in's, or given twice)");
}

}  // namespace

vql::Row to_engine_row(Row row) {
  vql::Row out;
  for (auto& [name, value] : row) out.set(std::move(name), to_engine_value(std::move(value)));
  return out;
}

Value to_host_value(const vql::Value& v) {
  if (v.is_null()) return nullptr;
  if (auto b = v.as_bool()) return *b;
  if (auto i = v.as_int()) return *i;
  if (auto d = v.as_double()) return *d;
  if (auto s = v.as_string()) return *s;
  if (v.as_query()) return vql::to_string(vql::materialize(v));  // its rows
  return vql::to_string(v);  // a timestamp as RFC 3339, a container as JSON
}

std::shared_ptr<const vql::Registry> host_registry(const std::vector<PluginDef>& plugins,
                                                   const std::vector<FunctionDef>& functions) {
  auto registry = std::make_shared<vql::Registry>(vql::default_registry());
  for (auto& def : plugins) {
    check_name("plugin", def.name, registry->plugin(def.name) != nullptr);
    if (!def.open) throw std::invalid_argument("plugin " + def.name + ": no open()");
    auto open = def.open;
    std::string name = def.name;
    registry->add(vql::PluginSpec{
        def.name, def.description, arg_specs("plugin " + def.name, def.args), def.event,
        [open, name](const vql::Args& args, vql::Env& env) -> std::unique_ptr<vql::RowStream> {
          auto slot = std::make_shared<WakeSlot>();
          slot->env = &env;
          WakeCallback wake = [slot] {
            std::function<void()> w;
            {
              std::lock_guard<std::mutex> lock(slot->mutex);
              if (slot->env) w = slot->env->wake;
            }
            if (w) w();
          };
          std::unique_ptr<PluginStream> stream;
          try {
            stream = open(to_host_args(args), std::move(wake));
          } catch (...) {
            fail_query(name);
          }
          if (!stream) throw vql::QueryError(name + "(): open() gave no stream");
          return std::make_unique<HostStream>(name, std::move(stream), std::move(slot));
        }});
  }
  for (auto& def : functions) {
    check_name("function", def.name, registry->function(def.name) != nullptr);
    if (!def.call) throw std::invalid_argument("function " + def.name + ": no call()");
    auto call = def.call;
    std::string name = def.name;
    registry->add(vql::FunctionSpec{def.name, def.description, arg_specs("function " + def.name, def.args),
                                    [call, name](const vql::Args& args, vql::Env&) -> vql::Value {
                                      try {
                                        return to_engine_value(call(to_host_args(args)));
                                      } catch (...) {
                                        fail_query(name);
                                      }
                                    }});
  }
  return registry;
}

}  // namespace outpost
