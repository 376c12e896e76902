// ring2d spec files: TOML, one [[process]] table per process (docs/ring2d.md lists the keys).
// Errors name the file, the line and the key: "web.toml:12: process 'web': restart: expected
// one of always, on-failure, never".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

// Parses and checks a whole spec: every key known, every value in range, names unique,
// depends_on naming existing processes without a cycle. `source` names the text in errors.
Result<std::vector<ProcessSpec>> parseSpec(std::string_view text, const std::string& source);
Result<std::vector<ProcessSpec>> loadSpecFile(const std::string& path);

// The processes in an order where each comes after everything it depends on; among processes
// free to go in any order, spec order. The pointers point into `specs`. A depends_on name not in
// `specs` imposes no order; processes caught in a cycle (parseSpec refuses them, but a mix of
// old and new specs may have one) come last, in spec order.
std::vector<const ProcessSpec*> startOrder(const std::vector<ProcessSpec>& specs);

}  // namespace enjin::supervise
