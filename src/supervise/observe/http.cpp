// The http probe: GET the url over a fresh connection; a 2xx or 3xx status is healthy. Only the
// status line is read (redirects are not followed), so a large or slow body costs nothing.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "enjin/supervise/endpoint.hpp"
#include "enjin/supervise/probe.hpp"
#include "stream_probe.hpp"

namespace enjin::supervise {

namespace {

Result<Endpoint> parseHttpUrl(std::string_view url) {
  auto e = parseEndpoint(url);
  if (!e.ok()) return e;
  if (e->scheme != "http") return Error{"URL '" + std::string(url) + "': the url must start with http:// (https is not supported)"};
  return e;
}

// The status line "HTTP/1.1 503 Service Unavailable" decides; the rest is ignored.
std::optional<ProbeResult> parseStatusLine(std::string_view received, bool complete) {
  const size_t eol = received.find('\n');
  if (eol == std::string_view::npos) {
    if (!complete) return std::nullopt;
    if (received.empty()) return ProbeResult{false, "connection closed without a response"};
    if (received.size() >= detail::StreamProbe::kMaxResponseBytes) {
      return ProbeResult{false, "status line longer than " +
                                    std::to_string(detail::StreamProbe::kMaxResponseBytes) +
                                    " bytes"};
    }
    return ProbeResult{false, "connection closed inside the status line"};
  }
  std::string_view line = received.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto malformed = [&] {
    std::string shown(line.substr(0, 64));
    for (char& c : shown) {
      if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
    }
    return ProbeResult{false, "malformed status line '" + shown + "'"};
  };
  // HTTP-version SP 3DIGIT [SP reason]
  const size_t space = line.find(' ');
  if (!line.starts_with("HTTP/") || space == std::string_view::npos) return malformed();
  std::string_view code = line.substr(space + 1, 3);
  if (code.size() != 3 || (line.size() > space + 4 && line[space + 4] != ' ')) return malformed();
  int status = 0;
  for (char c : code) {
    if (c < '0' || c > '9') return malformed();
    status = status * 10 + (c - '0');
  }
  return ProbeResult{status >= 200 && status < 400, "HTTP " + std::to_string(status)};
}

}  // namespace

Result<std::unique_ptr<Probe>> makeHttpProbe(Reactor& reactor, const std::string& url,
                                             int64_t timeoutMs) {
  const std::string context = "http probe '" + url + "'";
  auto parsed = parseHttpUrl(url);
  // A parse error names the URL already.
  if (!parsed.ok()) return parsed.error().wrap("http probe");
  auto address = detail::numericAddress(parsed->hostForUrl(), parsed->port);
  if (!address.ok()) return address.error().wrap(context);

  std::string host = parsed->hostForUrl();
  if (parsed->port != 80) host += ":" + std::to_string(parsed->port);
  std::string request = "GET " + parsed->path + " HTTP/1.1\r\nHost: " + host +
                        "\r\nConnection: close\r\nUser-Agent: enjin\r\n\r\n";
  return std::unique_ptr<Probe>(std::make_unique<detail::StreamProbe>(
      reactor, std::move(address), std::move(request), parseStatusLine, timeoutMs));
}

}  // namespace enjin::supervise
