// Endpoints that checks and probes connect to: "HOST:PORT" and "SCHEME://HOST[:PORT][/PATH]".
// One parser, so a spec file accepts exactly what the probes it configures accept.
#pragma once

#include <string>
#include <string_view>

#include "enjin/base/result.hpp"

namespace enjin::supervise {

struct HostPort {
  std::string host;  // brackets of an IPv6 address removed
  int port = 0;
  bool ipv6 = false;  // written in brackets

  // As it goes in a URL or a Host header: "[::1]" for IPv6.
  std::string hostForUrl() const { return ipv6 ? "[" + host + "]" : host; }
};

struct Endpoint {
  std::string scheme;  // lower case
  std::string host;    // brackets of an IPv6 address removed
  int port = 0;        // as written, else the scheme's default (http 80, https 443), else 0
  bool portGiven = false;
  bool ipv6 = false;
  std::string path;  // "/" when absent; with the query, without the fragment

  std::string hostForUrl() const { return ipv6 ? "[" + host + "]" : host; }
};

// A decimal port 1..65535. Errors read "port 'TEXT': expected 1 to 65535".
Result<int> parsePort(std::string_view text);

// "HOST:PORT": HOST an IPv4 address, a name, or an IPv6 address in brackets. Names are not
// resolved here; the caller decides whether it accepts them.
Result<HostPort> parseHostPort(std::string_view text);

// "SCHEME://HOST[:PORT][/PATH][?QUERY][#FRAGMENT]"; the scheme is case-insensitive. Errors
// read "URL 'TEXT': what".
Result<Endpoint> parseEndpoint(std::string_view text);

}  // namespace enjin::supervise
