// The HTTP client of enjinctl's control-plane commands. cpp-httplib is included only by
// api_client.cpp: its header is heavy, and this is all enjinctl needs of it.
#pragma once

#include <functional>
#include <string>

#include "enjin/base/result.hpp"

namespace enjin::ctl {

// What a request can end with before any HTTP status: the code of the Error it returns.
inline constexpr int kTransportUnreachable = 1;  // connection refused, DNS, TLS handshake
inline constexpr int kTransportTimeout = 2;      // connect (3 s) or read (10 s) timed out
inline constexpr int kTransportOther = 3;        // anything else (a bad URL, a reset)

struct ApiResponse {
  int status = 0;
  std::string body;
};

class ApiClient {
 public:
  // `server` is http://HOST:PORT or https://HOST:PORT (certificates checked against the
  // system's CAs). `token` ("" for none) is sent as Authorization: Bearer TOKEN.
  ApiClient(std::string server, std::string token);

  // One request; `body` ("" for none) is sent as application/json. Any HTTP status is a
  // response; only a transport failure is an Error (code: kTransport*).
  Result<ApiResponse> request(const std::string& method, const std::string& path,
                              const std::string& body = "") const;

  // GET `path` as a stream: `onData` receives each chunk of a 200 answer as it arrives and
  // returns false to stop; another status's body is returned. No read timeout (a stream may be
  // quiet). The status of the response is returned.
  Result<ApiResponse> stream(const std::string& path,
                             const std::function<bool(const char*, size_t)>& onData,
                             const std::string& accept = "text/event-stream") const;

 private:
  std::string server_;
  std::string token_;
};

}  // namespace enjin::ctl
