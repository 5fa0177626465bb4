#pragma once
// VQL's event plugins: clock(), tail(), watch_directory(), watch_processes(),
// watch_mounts(), watch_ebpf(). All but clock() are shared sensors (sensors.hpp).

#include "queries/plugin.hpp"
#include "queries/sensors.hpp"

namespace outpost::vql {

void add_event_plugins(Registry& registry);

// Shared by the event plugins' files.
void add_process_event_plugins(Registry& registry);  // watch_processes, watch_mounts
void add_kernel_event_plugins(Registry& registry);   // watch_ebpf, ebpf_events
// Seconds from 0.01 to 86400 (0, negative, NaN and infinity refused with a
// QueryError naming the plugin and argument), or `fallback` when absent.
std::chrono::milliseconds period_arg(const Args& args, const char* name, std::chrono::milliseconds fallback);
// PluginSpec::check of the plugins whose only checked argument is `period`.
void check_period(const Args& args);
std::unique_ptr<RowStream> subscribe(const Args& args, Env& env, ScannerFactory make);
Value timestamp_now();
// tail()'s sensor: the lines appended to `path` from the first scan on, like
// tail -F (across rotation and truncation).
std::unique_ptr<Scanner> tail_scanner(std::string path);

}  // namespace outpost::vql
