// What the control-API commands share (api_commands.cpp defines it): the stored session's
// requests, the mapping of answers to exit codes, and tables.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "api_client.hpp"

namespace enjin::ctl {

// "enjinctl: MESSAGE" on stderr.
void complain(const std::string& message);

// One request with the stored session; any HTTP status is an answer. nullopt after printing
// why there is none (no session, the server unreachable), with the exit code in `exitCode`.
std::optional<ApiResponse> apiRequest(const std::string& method, const std::string& path,
                                      const nlohmann::json& body, int& exitCode);
// An answer's JSON (null for an empty body) when its status is 2xx; otherwise nullopt after
// printing the server's message, with the status's exit code in `exitCode`. `what` names the
// request in a complaint about a body that is not JSON ("GET /v1/apps").
std::optional<nlohmann::json> apiAnswer(const std::string& what, const ApiResponse& r,
                                        int& exitCode);
// apiRequest, then apiAnswer.
std::optional<nlohmann::json> apiCall(const std::string& method, const std::string& path,
                                      const nlohmann::json& body, int& exitCode);
// GET `path` as a stream of bytes (Accept: `accept`), each chunk passed to `onData` as it
// arrives. Returns the exit code: 0 when the server ended a 200 answer or `onData` stopped it.
int apiStream(const std::string& path, const std::string& accept,
              const std::function<bool(const char*, size_t)>& onData);

struct Column {
  std::string header;
  std::string key;
};
// Rows of `rows` (an array of objects) in aligned columns; without columns, the keys of the
// first row that hold no object.
void printTable(const nlohmann::json& rows, std::vector<Column> columns);

}  // namespace enjin::ctl
