// libFuzzer target for the control API's request handling (enjin::api::ControlApi::handle),
// without sockets: the API on a store in a temp dir, its reactor on a thread of its own.
//
// Input: "METHOD PATH[?QUERY]\n", then header lines "Name: value\n" up to an empty line, then the
// body. "$ADMIN" in a header value becomes the token of a live admin session, so the fuzzer gets
// past authorization to the handlers.
// Invariant checked: no answer is a 5xx but 503 (the reactor busy), and every answer but the
// metrics' is a JSON text.
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>

#include "enjin/acl/password.hpp"
#include "enjin/acl/tokens.hpp"
#include "enjin/api/control_api.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/store/store.hpp"
#include "fakes/fake_clock.hpp"

namespace {

using namespace enjin;
using nlohmann::json;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Harness {
  std::string dir;
  testing::FakeClock clock;
  SystemClock reactorClock;
  metrics::Registry metrics;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<directory::Directory> directory;
  std::unique_ptr<Reactor> reactor;
  std::unique_ptr<api::ControlApi> api;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::string token = acl::newToken();

  Harness() {
    spdlog::set_level(spdlog::level::off);
    std::string tmpl = (std::filesystem::temp_directory_path() / "enjin-api-fuzz-XXXXXX").string();
    check(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    auto st = store::Store::open(dir + "/api.db");
    check(st.ok());
    store = std::move(*st);
    directory = std::make_unique<directory::Directory>(*store, clock);
    auto hash = acl::hashPassword("admin-password-0123");
    check(hash.ok());
    check(directory->ensureAdmin(*hash).ok());
    check(directory->addSession(acl::tokenHash(token), "admin", INT64_MAX / 2).ok());
    std::promise<void> ready;
    thread = std::thread([this, &ready] {
      auto r = Reactor::create(reactorClock);
      check(r.ok());
      reactor = std::move(*r);
      api::DaemonView view;
      view.tree = [] { return json{{"nodes", json::array({json{{"label", "infra"}}})}}; };
      api = std::make_unique<api::ControlApi>(*reactor, clock, *directory, *store, metrics,
                                              api::ControlApiOptions{}, std::move(view));
      ready.set_value();
      while (!stopping) reactor->runOnce(50);
      api.reset();
      reactor.reset();
    });
    ready.get_future().wait();
  }

  ~Harness() {
    stopping = true;
    thread.join();
    directory.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

std::string_view line(std::string_view& rest) {
  const size_t at = rest.find('\n');
  std::string_view l = rest.substr(0, at);
  rest.remove_prefix(at == std::string_view::npos ? rest.size() : at + 1);
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness h;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  api::HttpRequest req;
  std::string_view first = line(rest);
  const size_t sp = first.find(' ');
  req.method = std::string(first.substr(0, sp));
  std::string target(sp == std::string_view::npos ? "" : first.substr(sp + 1));
  if (const size_t q = target.find('?'); q != std::string::npos) {
    std::string_view query = std::string_view(target).substr(q + 1);
    while (!query.empty()) {
      const size_t amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      const size_t eq = kv.find('=');
      req.query.emplace(std::string(kv.substr(0, eq)),
                        eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1)));
      query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    }
    target.resize(q);
  }
  req.path = target;
  for (std::string_view l; !rest.empty() && !(l = line(rest)).empty();) {
    const size_t colon = l.find(':');
    std::string name(l.substr(0, colon));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value(colon == std::string_view::npos ? "" : l.substr(colon + 1));
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (auto at = value.find("$ADMIN"); at != std::string::npos) value.replace(at, 6, h.token);
    req.headers[name] = value;
  }
  req.body = std::string(rest);
  req.remoteAddr = "127.0.0.1";

  api::HttpResponse res;
  h.api->handle(req, res);
  check(res.status >= 100 && res.status < 600);
  check(res.status < 500 || res.status == 503);
  if (req.path != "/metrics" && !res.body.empty()) {
    check(!json::parse(res.body, nullptr, false).is_discarded());
  }
  return 0;
}
