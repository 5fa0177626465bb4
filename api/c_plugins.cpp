#include "api/c_plugins.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "api/row_reader.hpp"

// What a callback is given: where its rows or its value go, and why it failed.
struct outpost_call {
  std::vector<outpost::Row>* rows = nullptr;  // a plugin's next
  outpost::Value* result = nullptr;           // a function's call
  std::string failure;
};

struct outpost_waker {
  outpost::WakeCallback wake;
};

namespace outpost {
namespace {

std::string text(const char* s) { return s ? s : ""; }

std::vector<ArgumentDef> arguments(const std::string& what, const outpost_argument* args, size_t count) {
  std::vector<ArgumentDef> out;
  for (size_t i = 0; i < count; ++i) {
    if (!args[i].name) throw std::invalid_argument(what + ": argument " + std::to_string(i) + " has no name");
    out.push_back({args[i].name, text(args[i].type), args[i].required != 0, text(args[i].description)});
  }
  return out;
}

// Why a callback failed, as the query's error (host_plugins.cpp adds the name).
[[noreturn]] void failed(const outpost_call& call, const char* callback) {
  throw std::runtime_error(call.failure.empty() ? std::string(callback) + " failed (it gave no reason)"
                                                : call.failure);
}

// A C plugin's call: its state, released by close.
class CStream : public PluginStream {
 public:
  CStream(const outpost_plugin& def, void* state, std::unique_ptr<outpost_waker> waker)
      : def_(def), state_(state), waker_(std::move(waker)) {}
  ~CStream() override {
    if (def_.close) def_.close(def_.user, state_);
  }

  PluginStep next(std::vector<Row>& rows, size_t budget) override {
    outpost_call call;
    call.rows = &rows;
    int64_t wait_ms = 0;
    outpost_step step = def_.next(def_.user, state_, &call, budget, &wait_ms);
    switch (step) {
      case OUTPOST_STEP_MORE: return PluginStep::more();
      case OUTPOST_STEP_WAIT: return PluginStep::after(std::chrono::milliseconds(wait_ms));
      case OUTPOST_STEP_PARKED: return PluginStep::parked();
      case OUTPOST_STEP_DONE: return PluginStep::done();
      case OUTPOST_STEP_FAILED: failed(call, "next");
    }
    throw std::runtime_error("next returned " + std::to_string(static_cast<int>(step)) + ", not an outpost_step");
  }

 private:
  const outpost_plugin def_;  // a copy: the host's array is read during create only
  void* const state_;
  std::unique_ptr<outpost_waker> waker_;  // valid until close returns
};

}  // namespace

void add_c_plugins(const outpost_options& c, AgentOptions& options) {
  for (size_t i = 0; i < c.plugin_count; ++i) {
    const outpost_plugin& p = c.plugins[i];
    if (!p.name) throw std::invalid_argument("plugins[" + std::to_string(i) + "]: no name");
    if (!p.open || !p.next) throw std::invalid_argument(std::string("plugin ") + p.name + ": no open or next");
    PluginDef def{p.name, text(p.description), arguments(std::string("plugin ") + p.name, p.args, p.arg_count),
                  p.event != 0, nullptr};
    def.open = [p](const Arguments& args, WakeCallback wake) -> std::unique_ptr<PluginStream> {
      auto waker = std::make_unique<outpost_waker>(outpost_waker{std::move(wake)});
      outpost_call call;
      void* state = nullptr;
      if (p.open(p.user, args.json().c_str(), waker.get(), &call, &state) != 0) failed(call, "open");
      return std::make_unique<CStream>(p, state, std::move(waker));
    };
    options.plugins.push_back(std::move(def));
  }
  for (size_t i = 0; i < c.function_count; ++i) {
    const outpost_function& f = c.functions[i];
    if (!f.name) throw std::invalid_argument("functions[" + std::to_string(i) + "]: no name");
    if (!f.call) throw std::invalid_argument(std::string("function ") + f.name + ": no call");
    FunctionDef def{f.name, text(f.description), arguments(std::string("function ") + f.name, f.args, f.arg_count),
                    nullptr};
    def.call = [f](const Arguments& args) -> Value {
      outpost_call call;
      Value result = nullptr;
      call.result = &result;
      if (f.call(f.user, args.json().c_str(), &call) != 0) failed(call, "call");
      return result;
    };
    options.functions.push_back(std::move(def));
  }
}

// OUTPOST_INVALID_ARGUMENT, with `why` stored for the host (when it asked).
outpost_code refused(const std::string& why, char** error) {
  if (error) *error = strdup(why.c_str());
  return OUTPOST_INVALID_ARGUMENT;
}

}  // namespace outpost

extern "C" {

outpost_code outpost_call_add_row(outpost_call* call, const char* row, char** error) {
  auto refuse = [error](const std::string& why) { return outpost::refused(why, error); };
  if (!call || !row) return refuse(std::string(call ? "row" : "call") + " is NULL");
  if (!call->rows) return refuse("outpost_call_add_row: not in a plugin's next");
  try {
    call->rows->push_back(outpost::RowReader(row).row());
    return OUTPOST_OK;
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
}

outpost_code outpost_call_set_result(outpost_call* call, const char* value, char** error) {
  auto refuse = [error](const std::string& why) { return outpost::refused(why, error); };
  if (!call || !value) return refuse(std::string(call ? "value" : "call") + " is NULL");
  if (!call->result) return refuse("outpost_call_set_result: not in a function's call");
  try {
    *call->result = outpost::RowReader(value, "value").value();
    return OUTPOST_OK;
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
}

void outpost_call_fail(outpost_call* call, const char* message) {
  if (call) try {
      call->failure = message ? message : "";
    } catch (...) {
    }
}

void outpost_waker_wake(const outpost_waker* waker) {
  if (waker) try {
      waker->wake();
    } catch (...) {
    }
}

}  // extern "C"
