// enjinctl bus pub | sub: the bus from a shell, one JSON line per message; enjinctl watch: the
// observation stream of a daemon, one line per event.
#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <ctime>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "api_common.hpp"
#include "commands.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/base/strict_json.hpp"
#include "enjin/bus/curve.hpp"
#include "enjin/bus/publisher.hpp"
#include "enjin/bus/subscriber.hpp"
#include "enjin/crypto/keys.hpp"
#include "enjin/supervise/control_server.hpp"

namespace enjin::ctl {
namespace {

volatile std::sig_atomic_t gStop = 0;

void onStopSignal(int) { gStop = 1; }

void installStopHandlers() {
  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// The ZAP handler of a command that binds a tcp:// bus (CURVE server), served while waiting.
bus::ZapHandler* gZap = nullptr;

// Waits for `sock` to be readable for at most `timeoutMs` (-1: no limit), answering CURVE
// handshakes meanwhile. Returns false when a stop signal arrived.
bool waitReadable(zmq::socket_t& sock, long timeoutMs) {
  std::vector<zmq::pollitem_t> items{{sock.handle(), 0, ZMQ_POLLIN, 0}};
  if (gZap != nullptr) {
    for (zmq::socket_t* s : gZap->sockets()) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    try {
      zmq::poll(items, std::chrono::milliseconds(timeoutMs));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (gZap == nullptr || (items[0].revents & ZMQ_POLLIN) != 0 || gStop != 0) break;
    gZap->serve();
    if (timeoutMs >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      timeoutMs = static_cast<long>(left.count());
    }
  }
  return gStop == 0;
}

// A key given as 64 hex digits or as a .pub file.
Result<crypto::PublicKey> publicKeyArg(const std::string& arg) {
  auto hex = crypto::PublicKey::fromHex(arg);
  return hex.ok() ? hex : crypto::loadPublicKey(arg);
}

// CURVE for a tcp:// endpoint (enjin/bus/curve.hpp): as a client, `serverKey` (hex or .pub) is
// the binding side's key; as a server, a ZAP handler admits the keys of `admit`. Fills `curve`;
// an error names the option at fault.
Status setUpCurve(zmq::context_t& ctx, const std::string& endpoint, bool bind,
                  const std::string& serverKey, const bus::TrustStore& admit,
                  std::unique_ptr<bus::ZapHandler>& zap, bus::CurveOptions& curve) {
  if (!bus::needsCurve(endpoint)) return {};
  if (bind) {
    auto opened = bus::ZapHandler::open(ctx);
    if (!opened.ok()) return opened.error();
    zap = std::move(*opened);
    zap->admit("enjinctl", {&admit});
    curve.zap = zap.get();
    curve.domain = "enjinctl";
    gZap = zap.get();
  } else if (!serverKey.empty()) {
    auto key = publicKeyArg(serverKey);
    if (!key.ok()) return key.error().wrap("--server-key");
    curve.serverKey = *key;
  }
  return {};
}

// Hands each accepted message to `print` until `count` were (0: no end), `timeoutMs` passed
// (kExitTimeout; -1: no limit) or a stop signal came (`onStop`).
int receive(bus::Subscriber& sub, const Clock& clock, uint64_t count, long timeoutMs, int onStop,
            const std::function<void(const bus::Message&)>& print) {
  installStopHandlers();
  const int64_t deadline = clock.monotonicNanos() / 1'000'000 + timeoutMs;
  uint64_t seen = 0;
  while (count == 0 || seen < count) {
    long wait = -1;
    if (timeoutMs >= 0) {
      wait = static_cast<long>(deadline - clock.monotonicNanos() / 1'000'000);
      if (wait <= 0) return kExitTimeout;
    }
    if (!waitReadable(sub.socket(), wait)) return onStop;
    sub.drain(
        [&](bus::Message&& m) {
          print(m);
          ++seen;
        },
        count == 0 ? SIZE_MAX : count - seen);
  }
  return kExitOk;
}

struct Endpoint {
  std::string bind;
  std::string connect;

  void addTo(CLI::App* cmd) {
    auto* b = cmd->add_option("--bind", bind, "Bind this ZeroMQ endpoint (ipc://PATH, tcp://IP:PORT)");
    auto* c = cmd->add_option("--connect", connect, "Connect to this ZeroMQ endpoint");
    b->excludes(c);
    c->excludes(b);
  }
  bool isBind() const { return !bind.empty(); }
  const std::string& address() const { return isBind() ? bind : connect; }
};

struct SubArgs {
  Endpoint endpoint;
  std::vector<std::string> trust;
  std::string keyFile;    // own key, for CURVE on tcp://
  std::string serverKey;  // --connect tcp://: the publisher's key
  std::vector<std::string> prefixes;
  uint64_t count = 0;
  long timeoutMs = -1;
  size_t maxPayload = bus::kDefaultMaxPayloadBytes;
  int64_t windowMs = 30'000;
};

struct PubArgs {
  Endpoint endpoint;
  std::string keyFile;
  std::string serverKey;           // --connect tcp://: the binding subscriber's key
  std::vector<std::string> admit;  // --bind tcp://: subscribers' .pub files to admit
  std::string seqFile;
  bool noSeqFile = false;
  std::string topic;
  std::string type;
  std::string body = "{}";
  uint64_t count = 1;
  long intervalMs = 0;
  long waitMs = 5000;
  long drainMs = 2000;
};

int runSub(const SubArgs& a) {
  if (a.endpoint.address().empty()) {
    std::cerr << "enjinctl bus sub: give --bind or --connect\n";
    return kExitUsage;
  }
  bus::TrustStore trust;
  for (const auto& path : a.trust) {
    // A trust file without "allow" lines may publish on every topic: naming it here is the
    // operator's explicit grant.
    if (auto st = trust.load(path, {""}); !st.ok()) {
      std::cerr << "enjinctl bus sub: " << st.error().message << "\n";
      return kExitFailure;
    }
  }
  SystemClock clock;
  zmq::context_t ctx(1);
  bus::SubscriberOptions opts;
  opts.endpoint = a.endpoint.address();
  opts.bind = a.endpoint.isBind();
  opts.verify.prefixes = a.prefixes;
  // On tcp:// the sub speaks CURVE with its own key; bound, it admits the publishers it trusts.
  std::optional<crypto::SecretKey> ownKey;
  if (!a.keyFile.empty()) {
    auto k = crypto::SecretKey::load(a.keyFile);
    if (!k.ok()) {
      std::cerr << "enjinctl bus sub: " << k.error().message << "\n";
      return kExitFailure;
    }
    ownKey = std::move(*k);
    opts.key = &*ownKey;
  }
  std::unique_ptr<bus::ZapHandler> zap;
  if (auto st = setUpCurve(ctx, opts.endpoint, opts.bind, a.serverKey, trust, zap, opts.curve);
      !st.ok()) {
    std::cerr << "enjinctl bus sub: " << st.error().message << "\n";
    return kExitFailure;
  }
  opts.verify.maxPayloadBytes = a.maxPayload;
  opts.verify.windowMillis = a.windowMs;
  auto sub = bus::Subscriber::open(ctx, trust, clock, opts);
  if (!sub.ok()) {
    std::cerr << "enjinctl bus sub: " << sub.error().message << "\n";
    return kExitFailure;
  }
  (*sub)->setOnReject([](const bus::Rejection& r) {
    nlohmann::ordered_json line{{"rejected", bus::rejectReasonName(r.reason)}, {"detail", r.detail}};
    if (!r.topic.empty()) line["topic"] = r.topic;
    if (r.key) line["from"] = r.key->hex();
    std::cerr << line.dump() << std::endl;
  });
  return receive(**sub, clock, a.count, a.timeoutMs, 128 + SIGINT, [](const bus::Message& m) {
    std::cout << bus::toJson(m).dump() << std::endl;
  });
}

int runPub(const PubArgs& a) {
  if (a.endpoint.address().empty()) {
    std::cerr << "enjinctl bus pub: give --bind or --connect\n";
    return kExitUsage;
  }
  nlohmann::json body;
  if (auto st = parseStrictJson(a.body, body); !st.ok() || !body.is_object()) {
    std::cerr << "enjinctl bus pub: --body must be a JSON object"
              << (st.ok() ? "" : ": " + st.error().message) << "\n";
    return kExitUsage;
  }
  auto key = crypto::SecretKey::load(a.keyFile);
  if (!key.ok()) {
    std::cerr << "enjinctl bus pub: " << key.error().message << "\n";
    return kExitFailure;
  }
  std::string seqFile;
  if (!a.noSeqFile) {
    seqFile = a.seqFile;
    if (seqFile.empty()) {
      seqFile = a.keyFile.ends_with(".key") ? a.keyFile.substr(0, a.keyFile.size() - 4) : a.keyFile;
      seqFile += ".seq";
    }
  }
  SystemClock clock;
  zmq::context_t ctx(1);
  bus::PublisherOptions opts{a.endpoint.address(), a.endpoint.isBind(), seqFile, 100'000, {}};
  bus::TrustStore admitted;
  for (const auto& path : a.admit) {
    if (auto st = admitted.load(path, {""}); !st.ok()) {
      std::cerr << "enjinctl bus pub: --admit: " << st.error().message << "\n";
      return kExitFailure;
    }
  }
  std::unique_ptr<bus::ZapHandler> zap;
  if (auto st = setUpCurve(ctx, opts.endpoint, opts.bind, a.serverKey, admitted, zap, opts.curve);
      !st.ok()) {
    std::cerr << "enjinctl bus pub: " << st.error().message << "\n";
    return kExitFailure;
  }
  auto pub = bus::Publisher::open(ctx, std::move(*key), clock, opts);
  if (!pub.ok()) {
    std::cerr << "enjinctl bus pub: " << pub.error().message << "\n";
    return kExitFailure;
  }
  bus::Publisher& p = **pub;
  installStopHandlers();
  auto nowMs = [&] { return clock.monotonicNanos() / 1'000'000; };

  // Pub/sub drops what is sent before a subscriber is connected: wait for one first.
  const int64_t waitUntil = nowMs() + a.waitMs;
  while (p.pollSubscriptions() == 0) {
    const long left = static_cast<long>(waitUntil - nowMs());
    if (left <= 0) {
      std::cerr << "enjinctl bus pub: no subscriber after " << a.waitMs
                << " ms; publishing anyway\n";
      break;
    }
    if (!waitReadable(p.socket(), left)) return 128 + SIGINT;
  }

  const std::string bodyJson = body.dump();
  for (uint64_t i = 0; a.count == 0 || i < a.count; ++i) {
    if (auto st = p.publishSerialized(a.topic, a.type, bodyJson); !st.ok()) {
      std::cerr << "enjinctl bus pub: " << st.error().message << "\n";
      return kExitFailure;
    }
    if (a.intervalMs > 0 && (a.count == 0 || i + 1 < a.count)) {
      const int64_t until = nowMs() + a.intervalMs;
      for (long left = a.intervalMs; left > 0; left = static_cast<long>(until - nowMs())) {
        if (!waitReadable(p.socket(), left)) return 128 + SIGINT;
        p.pollSubscriptions();
      }
    }
    if (gStop) return 128 + SIGINT;
  }

  // Linger alone does not deliver the tail of a stream: wait for subscribers to leave.
  const int64_t drainUntil = nowMs() + a.drainMs;
  while (p.pollSubscriptions() > 0) {
    const long left = static_cast<long>(drainUntil - nowMs());
    if (left <= 0 || !waitReadable(p.socket(), left)) break;
  }
  return kExitOk;
}

struct WatchArgs {
  std::string connect;
  std::string trust;
  std::string keyFile;  // own key, for CURVE on a tcp:// stream
  uint64_t count = 0;
  long timeoutMs = -1;
  bool json = false;
  bool tree = false;
  bool fleet = false;
};

std::string clockTime(int64_t wallMs) {
  const time_t secs = static_cast<time_t>(wallMs / 1000);
  struct tm tm {};
  ::gmtime_r(&secs, &tm);
  char out[32];
  std::snprintf(out, sizeof out, "%02d:%02d:%02d.%03dZ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(wallMs % 1000));
  return out;
}

// One line per event: time, path, what it is, the change, and why.
std::string eventLine(const bus::Message& m) {
  const auto& b = m.body;
  std::string path, kind, state = b.value("state", ""), previous;
  if (m.type == "tree_event") {
    path = b.value("path", "");
    kind = b.value("kind", "");
    if (b.contains("previous") && b["previous"].is_string()) previous = b["previous"];
  } else {  // a ring2d's node_observation
    path = b.value("node", "") + "/" + b.value("name", "");
    kind = "process";
  }
  std::string line = clockTime(m.ts) + "  " + path + "  " + kind + "  ";
  line += previous.empty() ? state : previous + " -> " + state;
  const int pid = b.value("pid", 0);
  if (pid > 0) line += "  pid " + std::to_string(pid);
  if (b.contains("restarts")) line += "  restarts " + std::to_string(b.value("restarts", 0));
  const std::string detail = b.value("detail", "");
  if (!detail.empty()) line += "  (" + detail + ")";
  return line;
}

int runWatch(const std::string& stateDir, WatchArgs a) {
  // Where to listen and whom to trust: asked of the daemon over its control socket (0600, this
  // user's), unless given.
  if (a.connect.empty() || a.trust.empty()) {
    auto reply = supervise::controlCall(stateDir + "/control.sock", {{"cmd", "tree"}});
    if (!reply.ok()) {
      std::cerr << "enjinctl watch: " << reply.error().message
                << " (is a ring daemon running with --state-dir " << stateDir << "?)\n";
      return kExitFailure;
    }
    if (a.connect.empty()) a.connect = reply->value("observe", "");
    if (a.trust.empty()) a.trust = reply->value("public_key", "");
    if (a.connect.empty() || a.trust.empty()) {
      std::cerr << "enjinctl watch: the daemon at " << stateDir
                << " publishes no observation stream (give --connect and --trust)\n";
      return kExitFailure;
    }
  }
  bus::TrustStore trust;
  auto key = crypto::PublicKey::fromHex(a.trust);
  Status trusted = key.ok() ? trust.add(*key, "daemon", {""}) : trust.load(a.trust, {""});
  if (!trusted.ok()) {
    std::cerr << "enjinctl watch: " << trusted.error().message << "\n";
    return kExitFailure;
  }
  SystemClock clock;
  zmq::context_t ctx(1);
  bus::SubscriberOptions opts;
  opts.endpoint = a.connect;
  opts.verify.prefixes = {"event", "obs"};
  if (a.tree) opts.verify.prefixes.push_back("tree");
  // A tcp:// stream speaks CURVE: the daemon is the server, its key the one it signs with; ours
  // must be among its observers (STATE_DIR/observers/*.pub).
  std::optional<crypto::SecretKey> ownKey;
  if (!a.keyFile.empty()) {
    auto k = crypto::SecretKey::load(a.keyFile);
    if (!k.ok()) {
      std::cerr << "enjinctl watch: " << k.error().message << "\n";
      return kExitFailure;
    }
    ownKey = std::move(*k);
    opts.key = &*ownKey;
  }
  if (auto server = publicKeyArg(a.trust); server.ok()) opts.curve.serverKey = *server;
  if (bus::needsCurve(opts.endpoint) && opts.key == nullptr) {
    std::cerr << "enjinctl watch: " << opts.endpoint
              << " speaks CURVE: give --key, a key whose .pub is in the daemon's observers/ "
                 "folder\n";
    return kExitFailure;
  }
  auto sub = bus::Subscriber::open(ctx, trust, clock, opts);
  if (!sub.ok()) {
    std::cerr << "enjinctl watch: " << sub.error().message << "\n";
    return kExitFailure;
  }
  (*sub)->setOnReject([](const bus::Rejection& r) {
    std::cerr << "enjinctl watch: rejected a message (" << bus::rejectReasonName(r.reason)
              << "): " << r.detail << std::endl;
  });
  // Ctrl-C is how a watch ends: exit 0.
  return receive(**sub, clock, a.count, a.timeoutMs, kExitOk, [&](const bus::Message& m) {
    if (a.json) {
      std::cout << bus::toJson(m).dump() << std::endl;
    } else if (m.type == "tree") {
      std::cout << clockTime(m.ts) << "  tree  " << m.body.value("state", "") << std::endl;
    } else {
      std::cout << eventLine(m) << std::endl;
    }
  });
}

// One host's stream in `watch --fleet`: verified against that host's key only.
struct HostStream {
  std::string host;
  std::unique_ptr<bus::TrustStore> trust;  // the Subscriber keeps a reference: stable address
  std::unique_ptr<bus::Subscriber> sub;
};

// The observation streams of every host of the fleet (GET /v1/fleet of the host logged in to),
// merged: one CURVE subscriber per host whose record names a tcp:// observe endpoint, its
// server key and its only trusted key the host's ring-0 key as /enjin/trust has it ("members";
// a record whose public_key differs is skipped, since the record is the host's own word while
// the member key is the fleet's). Each line starts with the host.
int runFleetWatch(const WatchArgs& a) {
  if (a.keyFile.empty()) {
    std::cerr << "enjinctl watch --fleet: the hosts' streams speak CURVE: give --key, a key whose "
                 ".pub is in each host's observers/ folder\n";
    return kExitUsage;
  }
  auto ownKey = crypto::SecretKey::load(a.keyFile);
  if (!ownKey.ok()) {
    std::cerr << "enjinctl watch --fleet: " << ownKey.error().message << "\n";
    return kExitFailure;
  }
  int rc = kExitOk;
  auto view = apiCall("GET", "/v1/fleet", nlohmann::json(), rc);
  if (!view) return rc;
  const nlohmann::json members = view->value("members", nlohmann::json::object());
  SystemClock clock;
  zmq::context_t ctx(1);
  std::vector<HostStream> streams;
  for (const auto& h : view->value("hosts", nlohmann::json::array())) {
    HostStream s;
    s.host = h.value("host", "");
    const std::string endpoint = h.value("observe", "");
    const std::string recordKey = h.value("public_key", "");
    const std::string memberKey = members.contains(s.host) && members[s.host].is_string()
                                      ? members[s.host].get<std::string>()
                                      : "";
    if (endpoint.empty() || !bus::needsCurve(endpoint)) {
      std::cerr << "enjinctl watch --fleet: host '" << s.host
                << "' publishes no tcp:// observation stream (its ring0d's observe); skipped\n";
      continue;
    }
    if (memberKey.empty() || memberKey != recordKey) {
      std::cerr << "enjinctl watch --fleet: host '" << s.host
                << "': its record's public key is not its member key in /enjin/trust; skipped\n";
      continue;
    }
    auto key = crypto::PublicKey::fromHex(memberKey);
    s.trust = std::make_unique<bus::TrustStore>();
    Status added = key.ok() ? s.trust->add(*key, s.host, {""}) : Status(key.error());
    if (!added.ok()) {
      std::cerr << "enjinctl watch --fleet: host '" << s.host << "': " << added.error().message
                << "; skipped\n";
      continue;
    }
    bus::SubscriberOptions opts;
    opts.endpoint = endpoint;
    opts.verify.prefixes = {"event", "obs"};
    if (a.tree) opts.verify.prefixes.push_back("tree");
    opts.key = &*ownKey;
    opts.curve.serverKey = *key;
    auto sub = bus::Subscriber::open(ctx, *s.trust, clock, opts);
    if (!sub.ok()) {
      std::cerr << "enjinctl watch --fleet: host '" << s.host << "': " << sub.error().message
                << "; skipped\n";
      continue;
    }
    (*sub)->setOnReject([host = s.host](const bus::Rejection& r) {
      std::cerr << "enjinctl watch --fleet: " << host << ": rejected a message ("
                << bus::rejectReasonName(r.reason) << "): " << r.detail << std::endl;
    });
    s.sub = std::move(*sub);
    std::cerr << "enjinctl watch --fleet: " << s.host << ": " << endpoint << std::endl;
    streams.push_back(std::move(s));
  }
  if (streams.empty()) {
    std::cerr << "enjinctl watch --fleet: no host of the fleet publishes a tcp:// observation "
                 "stream\n";
    return kExitFailure;
  }
  installStopHandlers();
  std::vector<zmq::pollitem_t> items;
  for (auto& s : streams) items.push_back({s.sub->socket().handle(), 0, ZMQ_POLLIN, 0});
  const int64_t deadline = clock.monotonicNanos() / 1'000'000 + a.timeoutMs;
  uint64_t seen = 0;
  while (a.count == 0 || seen < a.count) {
    long wait = -1;
    if (a.timeoutMs >= 0) {
      wait = static_cast<long>(deadline - clock.monotonicNanos() / 1'000'000);
      if (wait <= 0) return kExitTimeout;
    }
    try {
      zmq::poll(items, std::chrono::milliseconds(wait));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (gStop != 0) return kExitOk;  // Ctrl-C is how a watch ends
    for (size_t i = 0; i < streams.size() && (a.count == 0 || seen < a.count); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      const std::string& host = streams[i].host;
      streams[i].sub->drain(
          [&](bus::Message&& m) {
            if (a.json) {
              auto j = bus::toJson(m);
              j["host"] = host;
              std::cout << j.dump() << std::endl;
            } else if (m.type == "tree") {
              std::cout << host << "  " << clockTime(m.ts) << "  tree  "
                        << m.body.value("state", "") << std::endl;
            } else {
              std::cout << host << "  " << eventLine(m) << std::endl;
            }
            ++seen;
          },
          a.count == 0 ? SIZE_MAX : a.count - seen);
    }
  }
  return kExitOk;
}

// The same lines from ring0d's control API (GET /v1/events, Server-Sent Events): each
// tree_event's data is the event's body, as on the bus. The stream carries no sender's time, so
// each line shows when it arrived.
int runApiWatch(const WatchArgs& a) {
  if (a.timeoutMs >= 0) {
    // The stream may stay quiet: the deadline is kept apart from it.
    std::thread([ms = a.timeoutMs] {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      std::cerr << "enjinctl watch: no more after " << ms << " ms" << std::endl;
      std::fflush(stdout);
      std::_Exit(kExitTimeout);
    }).detach();
  }
  uint64_t seen = 0;
  return apiEvents("/v1/events", [&](const SseEvent& e) {
    bus::Message m;
    m.type = e.type;
    m.ts = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
    m.body = nlohmann::json::parse(e.data, nullptr, false);
    if (!m.body.is_object()) m.body = nlohmann::json::object();
    if (a.json) {
      std::cout << nlohmann::json{{"id", e.id}, {"event", e.type}, {"data", m.body}}.dump()
                << std::endl;
    } else if (e.type == "tree_event") {
      std::cout << eventLine(m) << std::endl;
    } else if (e.type == "gap") {
      std::cout << clockTime(m.ts) << "  (events missed; the stream goes on from "
                << m.body.value("first", 0) << ")" << std::endl;
    } else {
      return true;  // another kind of event: not counted
    }
    return a.count == 0 || ++seen < a.count;
  });
}

}  // namespace

void addBusCommands(CLI::App& app, int& exitCode) {
  auto* bus = app.add_subcommand("bus", "Publish or subscribe on a signed enjin bus");
  bus->require_subcommand(1);

  auto sa = std::make_shared<SubArgs>();
  auto* sub = bus->add_subcommand(
      "sub",
      "Print each accepted message as a JSON line on stdout and each rejection as a JSON line "
      "on stderr. Exits 0 after --count messages, 3 when --timeout-ms ends first");
  sa->endpoint.addTo(sub);
  sub->add_option("--trust", sa->trust, "A .pub file or a directory of them (repeatable)")
      ->required();
  sub->add_option("--key", sa->keyFile,
                  "Own .key file: on a tcp:// endpoint the bus speaks CURVE with it");
  sub->add_option("--server-key", sa->serverKey,
                  "--connect tcp://: the publisher's public key, hex or a .pub file");
  sub->add_option("--prefix", sa->prefixes,
                  "Receive only topics under this prefix, matched by whole segments (repeatable)");
  sub->add_option("--count", sa->count, "Exit after N accepted messages (0: never)");
  sub->add_option("--timeout-ms", sa->timeoutMs, "Give up after MS milliseconds (exit 3)");
  sub->add_option("--max-payload", sa->maxPayload, "Largest payload accepted, in bytes")
      ->capture_default_str();
  sub->add_option("--window-ms", sa->windowMs, "Accepted clock skew of message timestamps")
      ->capture_default_str();
  sub->callback([sa, &exitCode] { exitCode = runSub(*sa); });

  auto pa = std::make_shared<PubArgs>();
  auto* pub = bus->add_subcommand(
      "pub",
      "Sign and publish messages. Waits for a first subscriber before sending and, at the end, "
      "for subscribers to disconnect, so short streams are not cut off");
  pa->endpoint.addTo(pub);
  pub->add_option("--key", pa->keyFile, "The sender's .key file (mode 0600)")->required();
  pub->add_option("--server-key", pa->serverKey,
                  "--connect tcp://: the subscriber's public key, hex or a .pub file");
  pub->add_option("--admit", pa->admit,
                  "--bind tcp://: a subscriber's .pub file, or a folder of them, to admit "
                  "(repeatable)");
  pub->add_option("--topic", pa->topic, "Topic, e.g. obs.r2.web")->required();
  pub->add_option("--type", pa->type, "Message type, e.g. heartbeat")->required();
  pub->add_option("--body", pa->body, "The body, a JSON object")->capture_default_str();
  pub->add_option("--count", pa->count, "Messages to send (0: until interrupted)")
      ->capture_default_str();
  pub->add_option("--interval-ms", pa->intervalMs, "Pause between messages")
      ->capture_default_str();
  pub->add_option("--seq-file", pa->seqFile,
                  "Where the sequence reservation is kept (default: the key path with .seq)");
  pub->add_flag("--no-seq-file", pa->noSeqFile, "Keep no seq file; rely on the clock alone");
  pub->add_option("--wait-ms", pa->waitMs, "How long to wait for a first subscriber")
      ->capture_default_str();
  pub->add_option("--drain-ms", pa->drainMs,
                  "After the last message, how long to wait for subscribers to disconnect")
      ->capture_default_str();
  pub->callback([pa, &exitCode] { exitCode = runPub(*pa); });
}

}  // namespace enjin::ctl

namespace enjin::ctl {

void addWatchCommand(CLI::App& app, const std::string& stateDir, int& exitCode) {
  auto wa = std::make_shared<WatchArgs>();
  auto* watch = app.add_subcommand(
      "watch",
      "Follow the observation stream of the daemon at --state-dir: one line per change anywhere "
      "in its tree, each message's signature verified. Ctrl-C ends it. Logged in (enjinctl "
      "login) and without --state-dir, --connect or --trust: ring0d's GET /v1/events instead");
  watch->add_option("--connect", wa->connect, "The stream's endpoint (default: asked of the daemon)");
  watch->add_option("--trust", wa->trust,
                    "The daemon's public key, hex or a .pub file (default: asked of the daemon)");
  watch->add_option("--key", wa->keyFile,
                    "Own .key file, for a tcp:// stream (CURVE); its .pub must be in the "
                    "daemon's observers/ folder");
  watch->add_option("--count", wa->count, "Exit 0 after N messages (0: never)");
  watch->add_option("--timeout-ms", wa->timeoutMs, "Give up after MS milliseconds (exit 3)");
  watch->add_flag("--json", wa->json, "Each message as a JSON line instead");
  watch->add_flag("--tree", wa->tree, "Also the whole tree each heartbeat");
  watch->add_flag("--fleet", wa->fleet,
                  "Every host of the fleet (GET /v1/fleet of the host logged in to): each host's "
                  "tcp:// stream, verified against its member key, lines prefixed by the host; "
                  "needs --key");
  // Logged in, no --state-dir and no --connect/--trust: from the control API instead.
  watch->callback([&, wa] {
    if (wa->fleet) {
      exitCode = runFleetWatch(*wa);
      return;
    }
    exitCode = useApi(app) && wa->connect.empty() && wa->trust.empty() ? runApiWatch(*wa)
                                                                       : runWatch(stateDir, *wa);
  });
}

}  // namespace enjin::ctl
