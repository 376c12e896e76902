// The http probe: GET the url over a fresh connection; a 2xx or 3xx status is healthy. Only the
// status line is read (redirects are not followed), so a large or slow body costs nothing.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "enjin/supervise/probe.hpp"
#include "stream_probe.hpp"

namespace enjin::supervise {

namespace {

struct HttpUrl {
  std::string host;  // as written, brackets included for IPv6
  int port = 80;
  std::string path;  // with the query, without the fragment
};

Result<HttpUrl> parseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.size() < kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), url.begin(), [](char a, char b) {
        return a == std::tolower(static_cast<unsigned char>(b));
      })) {
    return Error{"the url must start with http:// (https is not supported)"};
  }
  std::string_view rest = url.substr(kScheme.size());
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  const size_t authorityEnd = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authorityEnd);
  std::string_view path = authorityEnd == std::string_view::npos ? "" : rest.substr(authorityEnd);
  if (authority.find('@') != std::string_view::npos) return Error{"user info is not supported"};

  HttpUrl out;
  std::string_view portText;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return Error{"unterminated [ in the host"};
    out.host = std::string(authority.substr(0, close + 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Error{"unexpected text after ]"};
      portText = after.substr(1);
      if (portText.empty()) return Error{"empty port"};
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      portText = authority.substr(colon + 1);
      if (portText.empty()) return Error{"empty port"};
    }
  }
  if (out.host.empty()) return Error{"no host"};
  if (!portText.empty()) {
    auto [end, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), out.port);
    if (ec != std::errc() || end != portText.data() + portText.size() || out.port < 1 ||
        out.port > 65535) {
      return Error{"port '" + std::string(portText) + "' is not in 1..65535"};
    }
  }
  out.path = path.empty() ? "/" : path.front() == '?' ? "/" + std::string(path) : std::string(path);
  for (char c : out.path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return Error{"the path holds a space or a control character"};
  }
  return out;
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
  if (!parsed.ok()) return parsed.error().wrap(context);
  auto address = detail::numericAddress(parsed->host, parsed->port);
  if (!address.ok()) return address.error().wrap(context);

  std::string host = parsed->host;
  if (parsed->port != 80) host += ":" + std::to_string(parsed->port);
  std::string request = "GET " + parsed->path + " HTTP/1.1\r\nHost: " + host +
                        "\r\nConnection: close\r\nUser-Agent: enjin\r\n\r\n";
  return std::unique_ptr<Probe>(std::make_unique<detail::StreamProbe>(
      reactor, std::move(address), std::move(request), parseStatusLine, timeoutMs));
}

}  // namespace enjin::supervise
