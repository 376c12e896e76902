// The only file of enjinctl that includes cpp-httplib (see api_client.hpp).
#include "api_client.hpp"

#include <httplib.h>

#include <memory>
#include <utility>

namespace enjin::ctl {
namespace {

constexpr time_t kConnectTimeoutS = 3;
constexpr time_t kReadTimeoutS = 10;

Error transportError(const std::string& server, httplib::Error e) {
  const std::string what = "cannot reach " + server + ": " + httplib::to_string(e);
  switch (e) {
    case httplib::Error::Connection:
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLServerVerification:
    case httplib::Error::SSLLoadingCerts:
      return Error{what, kTransportUnreachable};
    case httplib::Error::ConnectionTimeout:
      return Error{server + ": no connection within " + std::to_string(kConnectTimeoutS) + " s",
                   kTransportTimeout};
    // cpp-httplib 0.11 reports a read that timed out as a read error.
    case httplib::Error::Read:
      return Error{server + ": no complete answer within " + std::to_string(kReadTimeoutS) + " s",
                   kTransportTimeout};
    default:
      return Error{what, kTransportOther};
  }
}

std::unique_ptr<httplib::Client> connect(const std::string& server, time_t readTimeoutS) {
  auto cli = std::make_unique<httplib::Client>(server);
  cli->set_connection_timeout(kConnectTimeoutS, 0);
  cli->set_read_timeout(readTimeoutS, 0);
  cli->set_write_timeout(kReadTimeoutS, 0);
  cli->set_keep_alive(false);
  return cli;
}

}  // namespace

ApiClient::ApiClient(std::string server, std::string token)
    : server_(std::move(server)), token_(std::move(token)) {
  while (!server_.empty() && server_.back() == '/') server_.pop_back();
}

Result<ApiResponse> ApiClient::request(const std::string& method, const std::string& path,
                                       const std::string& body) const {
  if (!server_.starts_with("http://") && !server_.starts_with("https://")) {
    return Error{"server '" + server_ + "': expected http://HOST:PORT or https://HOST:PORT",
                 kTransportOther};
  }
  auto cli = connect(server_, kReadTimeoutS);
  if (!cli->is_valid()) return Error{"server '" + server_ + "': not a valid URL", kTransportOther};
  httplib::Headers headers{{"Accept", "application/json"}};
  if (!token_.empty()) headers.emplace("Authorization", "Bearer " + token_);
  httplib::Result res{nullptr, httplib::Error::Unknown};
  if (method == "GET") {
    res = cli->Get(path, headers);
  } else if (method == "POST") {
    res = cli->Post(path, headers, body, "application/json");
  } else if (method == "PUT") {
    res = cli->Put(path, headers, body, "application/json");
  } else if (method == "DELETE") {
    res = cli->Delete(path, headers);
  } else {
    return Error{"unsupported method " + method, kTransportOther};
  }
  if (!res) return transportError(server_, res.error());
  return ApiResponse{res->status, res->body};
}

Result<ApiResponse> ApiClient::stream(
    const std::string& path, const std::function<bool(const char*, size_t)>& onData,
    const std::string& accept) const {
  if (!server_.starts_with("http://") && !server_.starts_with("https://")) {
    return Error{"server '" + server_ + "': expected http://HOST:PORT or https://HOST:PORT",
                 kTransportOther};
  }
  // A stream may stay quiet for long: no read timeout worth the name.
  auto cli = connect(server_, 24 * 3600);
  if (!cli->is_valid()) return Error{"server '" + server_ + "': not a valid URL", kTransportOther};
  httplib::Headers headers{{"Accept", accept}};
  if (!token_.empty()) headers.emplace("Authorization", "Bearer " + token_);
  ApiResponse out;
  bool stopped = false;
  auto res = cli->Get(
      path, headers,
      [&](const httplib::Response& r) {
        out.status = r.status;
        return true;
      },
      [&](const char* data, size_t len) {
        if (out.status != 200) {
          out.body.append(data, len);
          return true;
        }
        if (!onData(data, len)) {
          stopped = true;
          return false;
        }
        return true;
      });
  if (stopped) return out;
  if (!res) return transportError(server_, res.error());
  out.status = res->status;
  return out;
}

}  // namespace enjin::ctl
