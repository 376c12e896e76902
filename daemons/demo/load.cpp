// enjin-demo-load: the demo's load generator, a bounded stream of HTTP/1.1 GETs from a few
// threads at one address with one Host header, for a given time; it prints how many answers were
// 2xx, how many were not, and how many requests failed at the socket (refused, reset, timed out),
// so the demo's tour can say "served N, failed 0" while it kills instances.
//
//   enjin-demo-load --port P [--host-header shop.localhost] [--seconds 5] [--threads 4]
//
// Exit status: 0 when every request got a 2xx, 1 otherwise, 2 on bad flags.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Counts {
  std::atomic<long> ok{0}, notOk{0}, failed{0};
};

// One request on a fresh connection; the status code, or 0 when the socket failed.
int getOnce(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int status = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    std::string got;
    char buf[4096];
    ssize_t n;
    // The whole answer: the server closes the connection after it.
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
    if (n == 0 && got.rfind("HTTP/1.", 0) == 0 && got.size() > 12) {
      status = std::atoi(got.c_str() + 9);
    }
  }
  ::close(fd);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"enjin-demo-load - a bounded stream of GETs, counting what failed"};
  int port = 0, seconds = 5, threads = 4;
  std::string host = "localhost", path = "/";
  app.add_option("--port", port, "127.0.0.1:PORT to send to")->required();
  app.add_option("--host-header", host, "the Host header (selects the app at a router)")
      ->capture_default_str();
  app.add_option("--path", path, "the path to GET")->capture_default_str();
  app.add_option("--seconds", seconds, "how long (1-600)")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  app.add_option("--threads", threads, "requests in flight (1-64)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  Counts c;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      while (std::chrono::steady_clock::now() < end) {
        const int s = getOnce(port, request);
        (s == 0 ? c.failed : s >= 200 && s < 300 ? c.ok : c.notOk)++;
      }
    });
  }
  for (auto& t : pool) t.join();
  std::printf("%ld requests in %d s: %ld answered 2xx, %ld answered otherwise, %ld failed\n",
              c.ok + c.notOk + c.failed, seconds, c.ok.load(), c.notOk.load(), c.failed.load());
  return c.notOk == 0 && c.failed == 0 ? 0 : 1;
}
