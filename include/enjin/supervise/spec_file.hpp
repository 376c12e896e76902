// ring2d spec files: TOML, one [[process]] table per process (docs/ring2d.md lists the keys).
// Errors name the file, the line and the key: "web.toml:12: process 'web': restart: expected
// one of always, on-failure, never".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// A process name, and ring2d's node name: 1 to 64 of [A-Za-z0-9_-]. Both become one segment of
// an observation topic (obs.r2.NODE.NAME), and process names become file names (NAME.log).
bool validName(std::string_view name);

// A process's spec travels to the holder as JSON (specToJson) inside one message, and the holder
// takes messages of at most 64 KiB: a spec larger than this, serialized, is refused, which leaves
// room for the rest of the message (name, environment, notify path).
inline constexpr size_t kMaxSerializedSpecBytes = 48 * 1024;

// Parses and checks a whole spec: every key known, every value in range, names unique,
// depends_on naming existing processes without a cycle, each process at most
// kMaxSerializedSpecBytes serialized, names valid (validName). `source` names the text in
// errors.
Result<std::vector<ProcessSpec>> parseSpec(std::string_view text, const std::string& source);
Result<std::vector<ProcessSpec>> loadSpecFile(const std::string& path);

// The processes in an order where each comes after everything it depends on; among processes
// free to go in any order, spec order. The pointers point into `specs`. A depends_on name not in
// `specs` imposes no order; processes caught in a cycle (parseSpec refuses them, but a mix of
// old and new specs may have one) come last, in spec order.
std::vector<const ProcessSpec*> startOrder(const std::vector<ProcessSpec>& specs);

}  // namespace enjin::supervise
