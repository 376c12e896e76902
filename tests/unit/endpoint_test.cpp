#include "enjin/supervise/endpoint.hpp"

#include <gtest/gtest.h>

namespace enjin::supervise {
namespace {

TEST(EndpointTest, ValidForms) {
  auto e = parseEndpoint("http://127.0.0.1:8080/healthz?x=1#frag");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->scheme, "http");
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 8080);
  EXPECT_TRUE(e->portGiven);
  EXPECT_EQ(e->path, "/healthz?x=1");

  e = parseEndpoint("http://example.com");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->host, "example.com");
  EXPECT_EQ(e->port, 80);
  EXPECT_FALSE(e->portGiven);
  EXPECT_EQ(e->path, "/");

  e = parseEndpoint("http://localhost?q");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->path, "/?q");

  e = parseEndpoint("tcp://10.0.0.1:5432");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->scheme, "tcp");
  EXPECT_EQ(e->port, 5432);
}

TEST(EndpointTest, UpperCaseScheme) {
  auto e = parseEndpoint("HTTP://127.0.0.1/");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->scheme, "http");
  e = parseEndpoint("Tcp://127.0.0.1:1");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->scheme, "tcp");
}

TEST(EndpointTest, Ipv6) {
  auto e = parseEndpoint("http://[::1]:81/x");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->host, "::1");
  EXPECT_TRUE(e->ipv6);
  EXPECT_EQ(e->hostForUrl(), "[::1]");
  EXPECT_EQ(e->port, 81);
  e = parseEndpoint("http://[fe80::1]");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->port, 80);

  auto hp = parseHostPort("[::1]:65535");
  ASSERT_TRUE(hp.ok()) << hp.error().message;
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 65535);
}

TEST(EndpointTest, HostPort) {
  auto hp = parseHostPort("localhost:1");
  ASSERT_TRUE(hp.ok()) << hp.error().message;
  EXPECT_EQ(hp->host, "localhost");
  EXPECT_EQ(hp->port, 1);
  EXPECT_FALSE(hp->ipv6);
}

TEST(EndpointTest, Errors) {
  struct Bad {
    const char* text;
    const char* error;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"127.0.0.1:80", "URL '127.0.0.1:80': expected SCHEME://HOST[:PORT][/PATH]"},
           {"1x://a:1", "URL '1x://a:1': expected SCHEME://HOST[:PORT][/PATH]"},
           {"http://:80/", "URL 'http://:80/': no host"},
           {"http:///x", "URL 'http:///x': no host"},
           {"http://a:0/", "URL 'http://a:0/': port '0': expected 1 to 65535"},
           {"http://a:65536/", "URL 'http://a:65536/': port '65536': expected 1 to 65535"},
           {"http://a:8x/", "URL 'http://a:8x/': port '8x': expected 1 to 65535"},
           {"http://a:/", "URL 'http://a:/': port '': expected 1 to 65535"},
           {"tcp://a", "URL 'tcp://a': expected HOST:PORT"},
           {"http://[::1/", "URL 'http://[::1/': unterminated [ in the host"},
           {"http://[::1]x/", "URL 'http://[::1]x/': unexpected text after ]"},
           {"http://[1.2.3.4]/", "URL 'http://[1.2.3.4]/': host '[1.2.3.4]': brackets are for "
                                 "IPv6 addresses"},
           {"http://::1:80/", "URL 'http://::1:80/': host '::1': an IPv6 address goes in "
                              "brackets, [::1]:PORT"},
           {"http://u@a/", "URL 'http://u@a/': user info is not supported"},
           {"http://a/b c", "URL 'http://a/b c': the path holds a space or a control character"},
       }) {
    auto e = parseEndpoint(bad.text);
    ASSERT_FALSE(e.ok()) << bad.text;
    EXPECT_EQ(e.error().message, bad.error);
  }
  EXPECT_EQ(parseHostPort("a").error().message, "expected HOST:PORT");
  EXPECT_EQ(parseHostPort(":80").error().message, "no host");
  EXPECT_EQ(parseHostPort("a:65536").error().message, "port '65536': expected 1 to 65535");
  EXPECT_EQ(parsePort("0").error().message, "port '0': expected 1 to 65535");
  EXPECT_EQ(parsePort("123456").error().message, "port '123456': expected 1 to 65535");
}

}  // namespace
}  // namespace enjin::supervise
