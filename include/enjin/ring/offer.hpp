// A node's job offer: the capacity it can give to work placed on it, reported in every
// observation it sends its parent and listed by the API (GET /v1/job-offers).
//
//   {"cpus": online CPUs, "memory_bytes": MemAvailable, "process_slots": tasks the kernel will
//    still create (kernel.threads-max minus the tasks that exist now)}
//
// Until nodes have limits of their own, every node offers what its host has left.
#pragma once

#include <nlohmann/json.hpp>

namespace enjin::ring {

nlohmann::json hostOffer();

}  // namespace enjin::ring
