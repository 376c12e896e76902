#include "enjin/supervise/endpoint.hpp"

#include <cctype>

namespace enjin::supervise {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool validScheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

int defaultPort(std::string_view scheme) {
  if (scheme == "http") return 80;
  if (scheme == "https") return 443;
  return 0;
}

// HOST[:PORT] with HOST as for parseHostPort; `portRequired` when there is no default.
Result<HostPort> parseAuthority(std::string_view s, bool portRequired) {
  HostPort out;
  std::string_view hostText;
  std::string_view portText;
  bool hasPort = false;
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return Error{"unterminated [ in the host"};
    hostText = s.substr(1, close - 1);
    std::string_view after = s.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Error{"unexpected text after ]"};
      portText = after.substr(1);
      hasPort = true;
    }
    if (hostText.find(':') == std::string_view::npos) {
      return Error{"host '[" + std::string(hostText) + "]': brackets are for IPv6 addresses"};
    }
    out.ipv6 = true;
  } else {
    const size_t colon = s.rfind(':');
    hostText = s.substr(0, colon);
    if (colon != std::string_view::npos) {
      portText = s.substr(colon + 1);
      hasPort = true;
    }
    if (hostText.find(':') != std::string_view::npos) {
      return Error{"host '" + std::string(hostText) +
                   "': an IPv6 address goes in brackets, [::1]:PORT"};
    }
  }
  if (!hasPort && portRequired) return Error{"expected HOST:PORT"};
  if (hostText.empty()) return Error{"no host"};
  for (char c : hostText) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '/' || c == '@') {
      return Error{"host '" + std::string(hostText) + "': holds a space, control character, / or @"};
    }
  }
  out.host = std::string(hostText);
  if (hasPort) {
    auto port = parsePort(portText);
    if (!port.ok()) return port.error();
    out.port = *port;
  }
  return out;
}

}  // namespace

Result<int> parsePort(std::string_view s) {
  int port = 0;
  bool ok = !s.empty() && s.size() <= 5;
  for (char c : s) {
    if (!ok) break;
    if (c < '0' || c > '9') {
      ok = false;
    } else {
      port = port * 10 + (c - '0');
    }
  }
  if (!ok || port < 1 || port > 65535) {
    return Error{"port '" + std::string(s) + "': expected 1 to 65535"};
  }
  return port;
}

Result<HostPort> parseHostPort(std::string_view text) { return parseAuthority(text, true); }

Result<Endpoint> parseEndpoint(std::string_view text) {
  const std::string quoted = "URL '" + std::string(text) + "': ";
  const size_t sep = text.find("://");
  if (sep == std::string_view::npos || !validScheme(text.substr(0, sep))) {
    return Error{quoted + "expected SCHEME://HOST[:PORT][/PATH]"};
  }
  Endpoint out;
  out.scheme = lower(text.substr(0, sep));
  std::string_view rest = text.substr(sep + 3);
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  const size_t authorityEnd = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authorityEnd);
  std::string_view path = authorityEnd == std::string_view::npos ? "" : rest.substr(authorityEnd);
  if (authority.empty()) return Error{quoted + "no host"};
  if (authority.find('@') != std::string_view::npos) {
    return Error{quoted + "user info is not supported"};
  }
  const int fallback = defaultPort(out.scheme);
  auto hp = parseAuthority(authority, fallback == 0);
  if (!hp.ok()) return hp.error().wrap(quoted.substr(0, quoted.size() - 2));
  out.host = std::move(hp->host);
  out.ipv6 = hp->ipv6;
  out.portGiven = hp->port != 0;
  out.port = out.portGiven ? hp->port : fallback;
  out.path = path.empty() ? "/" : path.front() == '?' ? "/" + std::string(path) : std::string(path);
  for (char c : out.path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return Error{quoted + "the path holds a space or a control character"};
  }
  return out;
}

}  // namespace enjin::supervise
