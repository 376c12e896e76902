#include "enjin/api/control_api.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "enjin/acl/login_limiter.hpp"
#include "enjin/acl/password.hpp"
#include "enjin/acl/rules.hpp"
#include "enjin/acl/tokens.hpp"
#include "enjin/api/event_log.hpp"
#include "enjin/api/log_tail.hpp"
#include "enjin/base/clock.hpp"
#include "enjin/base/strict_json.hpp"
#include "enjin/directory/directory.hpp"
#include "enjin/metrics/metrics.hpp"
#include "enjin/reactor/handoff.hpp"
#include "enjin/store/store.hpp"

namespace enjin::api {

using nlohmann::json;
using directory::Kind;

namespace {

constexpr Kind kKinds[] = {Kind::kUser,        Kind::kRole,    Kind::kMembership,
                           Kind::kRuleSet,     Kind::kCompartment, Kind::kNetwork,
                           Kind::kNetworkInterface};

// A route's path pattern split into segments; "{x}" captures one segment.
std::vector<std::string> splitPath(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    const size_t j = path.find('/', i);
    out.emplace_back(path.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  return out;
}

// An audit record as GET /v1/audit shows it, and as the daemon publishes it on its out bus.
json auditJson(const store::AuditRecord& r) {
  return json{{"id", r.id},         {"time", directory::rfc3339(r.wallMs)},
              {"user", r.user},     {"action", r.action},
              {"resource", r.resource}, {"result", r.result},
              {"status", r.status}, {"source", r.source}};
}

// GET /v1/events, on the connection's thread: the events of `log` after `after` as Server-Sent
// Events, until the client goes, the server stops or the log is closed. It waits in slices of
// kWaitSliceMs, asking the writer between them whether to go on, and sends a comment line when
// nothing was sent for kKeepaliveMs (which is also when a client gone quietly is noticed).
constexpr int64_t kWaitSliceMs = 250;
constexpr int64_t kKeepaliveMs = 15'000;

void streamEvents(EventLog& log, uint64_t after,
                  const std::function<bool(const std::string&)>& write) {
  // An id above any given out comes from an earlier run of the daemon (ids start again at 1):
  // the client missed whatever happened since, and gets all that is kept.
  bool stale = after > log.lastId();
  if (stale) after = 0;
  auto lastSent = std::chrono::steady_clock::now();
  for (;;) {
    const bool closed = log.closed();
    bool missed = false;
    auto events = log.since(after, kWaitSliceMs, &missed);
    std::string out;
    if (missed || stale) {
      const uint64_t first = events.empty() ? log.lastId() + 1 : events.front().id;
      out += "event: gap\ndata: " + json{{"first", first}}.dump() + "\n\n";
      stale = false;
    }
    for (const auto& e : events) {
      std::string data = e.data;  // one line of JSON; any newline would need its own data: field
      for (size_t i = 0; (i = data.find('\n', i)) != std::string::npos; i += 7) {
        data.replace(i, 1, "\ndata: ");
      }
      out += "id: " + std::to_string(e.id) + "\nevent: " + e.type + "\ndata: " + data + "\n\n";
      after = e.id;
    }
    const auto now = std::chrono::steady_clock::now();
    if (out.empty() && now - lastSent >= std::chrono::milliseconds(kKeepaliveMs)) {
      out = ": keepalive\n\n";
    }
    if (!write(out)) return;
    if (!out.empty()) lastSent = now;
    if (closed) return;
  }
}

struct Call {
  const HttpRequest& req;
  HttpResponse& res;
  std::vector<std::string> args;  // the captured segments
  std::string user;               // the session's user ("" for the login route)
  json body;                      // a parsed JSON body (POST, PUT)
};

}  // namespace

class ControlApi::Impl {
 public:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    std::string action;  // "-": no session; "": any session
    // The resource the action is checked on, from the captured segments.
    std::function<std::string(const std::vector<std::string>&)> resource;
    std::function<void(Call&)> handler;
    bool mutating = false;
    bool noBody = false;  // a POST that takes no body (an empty one is not refused)
    std::string name;                           // "GET /v1/users/{name}", the metrics' label
    metrics::Histogram* duration = nullptr;     // registered with the route
  };

  Impl(Reactor& reactor, const Clock& clock, directory::Directory& dir, store::Store& store,
       metrics::Registry& metrics, ControlApiOptions options, DaemonView view)
      : handoff_(reactor), clock_(clock), dir_(dir), store_(store), metrics_(metrics),
        options_(options), view_(std::move(view)), limiter_(clock),
        loginsFailed_(metrics.counter("enjin_api_logins_failed_total",
                                      "Logins refused: wrong password, unknown user or rate limit")) {
    addRoutes();
  }

  std::vector<Route> routes_;
  Handoff handoff_;

  void handle(const HttpRequest& req, HttpResponse& res) {
    const auto started = std::chrono::steady_clock::now();
    const Route* route = serve(req, res);
    const std::string& routeName = route != nullptr ? route->name : kUnknownRoute;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    metrics_.counter("enjin_api_requests_total", "API requests answered, by route and status",
                     {{"route", routeName}, {"code", std::to_string(res.status)}})
        .inc();
    (route != nullptr ? *route->duration : durationOf(kUnknownRoute)).observe(seconds);
  }

 private:
  template <class T>
  std::optional<T> onReactor(std::function<T()> fn) {
    return handoff_.call<T>(std::move(fn), options_.reactorTimeoutMs);
  }

  static void fail(HttpResponse& res, const Error& e) {
    const int status = e.code >= 400 && e.code < 600 ? e.code : 500;
    jsonError(res, status, errorCodeFor(status), e.message);
  }
  static void busy(HttpResponse& res) {
    jsonError(res, 503, "unavailable", "the daemon did not answer in time; retry");
  }
  static void notAFleet(Call& c) {
    jsonError(c.res, 404, "not_found",
              "this host is not in a fleet (no [fleet] table in its ring0d.toml)");
  }
  static void notServed(Call& c) {
    jsonError(c.res, 405, "method_not_allowed",
              c.req.method + " " + c.req.path + " is not served by this daemon");
  }
  static void okText(HttpResponse& res, int status, const std::string& body) {
    res.status = status;
    res.contentType = "application/json";
    res.body = body;
  }
  static void ok(HttpResponse& res, int status, const json& body) {
    res.status = status;
    res.contentType = "application/json";
    res.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  }

  // The tree as the reactor last gave it, serialized once for every reader: a reader within
  // kTreeFreshMs of the last copy, and with no change made through the API since, is answered
  // from it without waking the reactor. (The tree is level-triggered: a copy this young says
  // what a fresh one would, but for a heartbeat age.)
  struct TreeSnapshot {
    json tree;
    std::string treeBody;
    std::string nodesBody;
    std::chrono::steady_clock::time_point at;
    uint64_t generation = 0;
  };
  static constexpr auto kTreeFreshMs = std::chrono::milliseconds(100);

  std::shared_ptr<const TreeSnapshot> treeSnapshot() {
    const uint64_t generation = generation_.load();
    {
      std::lock_guard lock(snapshotMutex_);
      if (snapshot_ && snapshot_->generation == generation) {
        if (std::chrono::steady_clock::now() - snapshot_->at < kTreeFreshMs) return snapshot_;
        // Stale by age only: one reader fetches a new copy, the others take this one meanwhile,
        // so a burst of readers costs the reactor one tree, not one each.
        if (refreshing_) return snapshot_;
      }
      refreshing_ = true;
    }
    auto t = onReactor<json>([this] { return view_.tree(); });
    if (!t) {
      std::lock_guard lock(snapshotMutex_);
      refreshing_ = false;
      return nullptr;
    }
    auto snap = std::make_shared<TreeSnapshot>();
    snap->tree = std::move(*t);
    snap->treeBody = snap->tree.dump(-1, ' ', false, json::error_handler_t::replace);
    snap->nodesBody = snap->tree.value("nodes", json::array())
                          .dump(-1, ' ', false, json::error_handler_t::replace);
    snap->at = std::chrono::steady_clock::now();
    snap->generation = generation;
    std::lock_guard lock(snapshotMutex_);
    refreshing_ = false;
    if (!snapshot_ || snapshot_->generation <= snap->generation) snapshot_ = snap;
    return snap;
  }

  // Who a token is and what their rules allow, kept for kSessionFreshMs of the API's clock so a
  // busy client costs the reactor one lookup a second, not one per request. Any change made
  // through the API (a password, a membership, a rule, a logout, a deleted user) starts a new
  // generation, which no kept entry outlives: a session ended is ended at once. A session that
  // merely expires may serve up to kSessionFreshMs past its expiry.
  struct KnownSession {
    std::string user;
    std::vector<acl::Rule> rules;
    int64_t fetchedWallMs = 0;
    uint64_t generation = 0;
  };
  static constexpr int64_t kSessionFreshMs = 1000;
  static constexpr size_t kKnownSessionsMax = 4096;

  // Answers the request; returns the route it matched (nullptr: none).
  const Route* serve(const HttpRequest& req, HttpResponse& res) {
    const auto segs = splitPath(req.path);
    const Route* found = nullptr;
    std::vector<std::string> args;
    std::vector<std::string> allowed;
    for (const auto& r : routes_) {
      if (r.segments.size() != segs.size()) continue;
      std::vector<std::string> a;
      bool match = true;
      for (size_t i = 0; i < segs.size() && match; ++i) {
        if (r.segments[i].front() == '{') {
          a.push_back(segs[i]);
        } else {
          match = r.segments[i] == segs[i];
        }
      }
      if (!match) continue;
      if (r.method != req.method && !(req.method == "HEAD" && r.method == "GET")) {
        allowed.push_back(r.method);
        continue;
      }
      found = &r;
      args = std::move(a);
      break;
    }
    if (found == nullptr) {
      if (!allowed.empty()) {
        std::string allow;
        for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
        jsonError(res, 405, "method_not_allowed",
                  req.method + " is not allowed on " + req.path + " (allowed: " + allow + ")");
        res.headers.emplace_back("Allow", allow);
      } else {
        jsonError(res, 404, "not_found", "no such route: " + req.path);
      }
      return nullptr;
    }
    Call call{req, res, std::move(args), "", nullptr};
    if (found->action != "-") {
      if (!authorize(*found, call)) return found;
    }
    if (req.method == "POST" || req.method == "PUT") {
      const std::string type = req.header("content-type");
      if (!req.body.empty() || (found->pattern != "/v1/sessions" && !found->noBody)) {
        if (type.rfind("application/json", 0) != 0) {
          jsonError(res, 415, "unsupported_media_type",
                    "the body must be application/json, not '" + type + "'");
          return found;
        }
        if (auto st = parseStrictJson(req.body, call.body); !st.ok()) {
          jsonError(res, 400, "bad_request", "the body is not valid JSON: " + st.error().message);
          return found;
        }
        if (!call.body.is_object()) {
          jsonError(res, 400, "bad_request", "the body must be a JSON object");
          return found;
        }
      }
    }
    found->handler(call);
    if (found->mutating) {
      ++generation_;  // whatever it changed, no kept session or tree copy predates it
      audit(call, *found, res.status < 400 ? "ok" : "failed");
    }
    return found;
  }

  // Checks the bearer token and the rules; answers 401/403 itself (and audits a refusal).
  bool authorize(const Route& route, Call& call) {
    const std::string auth = call.req.header("authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !acl::looksLikeToken(auth.substr(7))) {
      jsonError(call.res, 401, "unauthenticated",
                "sign in first: POST /v1/sessions, then send Authorization: Bearer TOKEN");
      call.res.headers.emplace_back("WWW-Authenticate", "Bearer");
      return false;
    }
    const std::string hash = acl::tokenHash(auth.substr(7));
    if (auto known = knownSession(hash)) {
      call.user = known->user;
      return allowed(route, call, known->rules);
    }
    struct Who {
      std::optional<std::string> user;
      std::vector<json> rules;
      std::string error;
    };
    const uint64_t generation = generation_.load();
    auto who = onReactor<Who>([this, hash] {
      Who w;
      auto u = dir_.sessionUser(hash);
      if (!u.ok()) {
        w.error = u.error().message;
        return w;
      }
      w.user = *u;
      if (w.user) {
        auto rules = dir_.rulesOf(*w.user);
        if (!rules.ok()) {
          w.error = rules.error().message;
        } else {
          w.rules = std::move(*rules);
        }
      }
      return w;
    });
    if (!who) {
      busy(call.res);
      return false;
    }
    if (!who->error.empty()) {
      jsonError(call.res, 500, "internal", who->error);
      return false;
    }
    if (!who->user) {
      jsonError(call.res, 401, "unauthenticated", "the session is unknown or has expired");
      call.res.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
      return false;
    }
    call.user = *who->user;
    std::vector<acl::Rule> rules;
    for (const auto& j : who->rules) {
      auto r = acl::ruleFromJson(j);
      if (r.ok()) rules.push_back(std::move(*r));  // the directory checked them when stored
    }
    remember(hash, call.user, rules, generation);
    return allowed(route, call, rules);
  }

  std::optional<KnownSession> knownSession(const std::string& hash) {
    std::lock_guard lock(sessionsMutex_);
    auto it = known_.find(hash);
    if (it == known_.end()) return std::nullopt;
    const int64_t age = clock_.wallMicros() / 1000 - it->second.fetchedWallMs;
    if (it->second.generation != generation_.load() || age < 0 || age >= kSessionFreshMs) {
      known_.erase(it);
      return std::nullopt;
    }
    return it->second;
  }

  void remember(const std::string& hash, const std::string& user, const std::vector<acl::Rule>& rules,
                uint64_t generation) {
    std::lock_guard lock(sessionsMutex_);
    if (known_.size() >= kKnownSessionsMax) known_.clear();
    known_[hash] = KnownSession{user, rules, clock_.wallMicros() / 1000, generation};
  }

  bool allowed(const Route& route, Call& call, const std::vector<acl::Rule>& rules) {
    if (route.action.empty()) return true;
    const std::string resource = route.resource(call.args);
    if (acl::decide(rules, route.action, resource) != acl::Decision::kAllow) {
      jsonError(call.res, 403, "forbidden",
                "user '" + call.user + "' may not " + route.action + " on " + resource);
      if (route.mutating) audit(call, route, "denied");
      return false;
    }
    return true;
  }

  void audit(const Call& call, const Route& route, const std::string& result) {
    store::AuditRecord rec;
    rec.wallMs = clock_.wallMicros() / 1000;
    rec.user = call.user;
    rec.action = route.action == "-" ? "sessions:create" : route.action;
    rec.resource = route.resource(call.args);
    rec.result = result;
    rec.status = call.res.status;
    rec.source = call.req.remoteAddr;
    // Stored, then handed to the daemon (which publishes it signed on its out bus), on the
    // reactor thread.
    handoff_.post([this, rec]() mutable {
      auto id = store_.addAudit(rec);
      if (!id.ok()) return;
      rec.id = *id;
      if (view_.onAudit) view_.onAudit(auditJson(rec));
    });
  }

  static inline const std::string kUnknownRoute = "unknown";

  metrics::Histogram& durationOf(const std::string& routeName) {
    static const std::vector<double> kBuckets = metrics::exponentialBuckets(0.0001, 4, 9);
    return metrics_.histogram("enjin_api_request_duration_seconds",
                              "Time to answer an API request", kBuckets, {{"route", routeName}});
  }

  void add(std::string method, std::string pattern, std::string action,
           std::function<std::string(const std::vector<std::string>&)> resource,
           std::function<void(Call&)> handler) {
    Route r;
    r.mutating = method != "GET";
    r.method = std::move(method);
    r.segments = splitPath(pattern);
    r.pattern = std::move(pattern);
    r.action = std::move(action);
    r.resource = std::move(resource);
    r.handler = std::move(handler);
    r.name = r.method + " " + r.pattern;
    r.duration = &durationOf(r.name);
    routes_.push_back(std::move(r));
  }

  void addRoutes() {
    auto fixed = [](std::string s) { return [s](const std::vector<std::string>&) { return s; }; };
    add("POST", "/v1/sessions", "-", fixed("sessions"), [this](Call& c) { login(c); });
    add("DELETE", "/v1/sessions/current", "", fixed("sessions/current"), [this](Call& c) {
      const std::string hash = acl::tokenHash(c.req.header("authorization").substr(7));
      auto st = onReactor<Status>([this, hash] { return dir_.endSession(hash); });
      if (!st) return busy(c.res);
      if (!st->ok()) return fail(c.res, st->error());
      c.res.status = 204;
      c.res.body.clear();
    });
    for (Kind k : kKinds) {
      const std::string coll(directory::collectionName(k));
      const std::string base = "/v1/" + coll;
      auto one = [coll](const std::vector<std::string>& a) { return coll + "/" + a.at(0); };
      add("GET", base, coll + ":read", fixed(coll), [this, k](Call& c) {
        auto r = onReactor<Result<json>>([this, k] { return dir_.list(k); });
        if (!r) return busy(c.res);
        if (!r->ok()) return fail(c.res, r->error());
        ok(c.res, 200, **r);
      });
      add("GET", base + "/{name}", coll + ":read", one, [this, k](Call& c) {
        const std::string name = c.args[0];
        auto r = onReactor<Result<json>>([this, k, name] { return dir_.get(k, name); });
        if (!r) return busy(c.res);
        if (!r->ok()) return fail(c.res, r->error());
        ok(c.res, 200, **r);
      });
      add("POST", base, coll + ":create", fixed(coll), [this, k](Call& c) {
        if (!prepareSecrets(k, c)) return;
        auto r = onReactor<Result<json>>([this, k, b = c.body] { return dir_.create(k, b); });
        if (!r) return busy(c.res);
        if (!r->ok()) return fail(c.res, r->error());
        ok(c.res, 201, **r);
      });
      add("PUT", base + "/{name}", coll + ":update", one, [this, k](Call& c) {
        if (!prepareSecrets(k, c)) return;
        const std::string name = c.args[0];
        auto r = onReactor<Result<json>>(
            [this, k, name, b = c.body] { return dir_.update(k, name, b); });
        if (!r) return busy(c.res);
        if (!r->ok()) return fail(c.res, r->error());
        ok(c.res, 200, **r);
      });
      add("DELETE", base + "/{name}", coll + ":delete", one, [this, k](Call& c) {
        const std::string name = c.args[0];
        auto r = onReactor<Status>([this, k, name] { return dir_.remove(k, name); });
        if (!r) return busy(c.res);
        if (!r->ok()) return fail(c.res, r->error());
        c.res.status = 204;
        c.res.body.clear();
      });
    }
    add("GET", "/v1/tree", "tree:read", fixed("tree"), [this](Call& c) {
      auto t = treeSnapshot();
      if (!t) return busy(c.res);
      okText(c.res, 200, t->treeBody);
    });
    add("GET", "/v1/nodes", "nodes:read", fixed("nodes"), [this](Call& c) {
      auto t = treeSnapshot();
      if (!t) return busy(c.res);
      okText(c.res, 200, t->nodesBody);
    });
    add("GET", "/v1/nodes/{label}", "nodes:read",
        [](const std::vector<std::string>& a) { return "nodes/" + a.at(0); },
        [this](Call& c) {
          auto t = treeSnapshot();
          if (!t) return busy(c.res);
          for (const auto& n : t->tree.value("nodes", json::array())) {
            if (n.value("label", "") == c.args[0]) return ok(c.res, 200, n);
          }
          jsonError(c.res, 404, "not_found", "node '" + c.args[0] + "' does not exist");
        });
    auto node = [](const std::vector<std::string>& a) { return "nodes/" + a.at(0); };
    add("POST", "/v1/nodes", "nodes:create", fixed("nodes"), [this](Call& c) {
      if (view_.fleet.createNode) {
        auto made = view_.fleet.createNode(c.body);
        if (!made.ok()) return fail(c.res, made.error());
        return ok(c.res, 201, *made);
      }
      if (!view_.createNode) return notServed(c);
      auto r = onReactor<Result<json>>([this, b = c.body] { return view_.createNode(b); });
      if (!r) return busy(c.res);
      if (!r->ok()) return fail(c.res, r->error());
      ok(c.res, 201, **r);
    });
    add("PUT", "/v1/nodes/{label}", "nodes:update", node, [this](Call& c) {
      if (view_.fleet.updateNode) {
        auto changed = view_.fleet.updateNode(c.args[0], c.body);
        if (!changed.ok()) return fail(c.res, changed.error());
        return ok(c.res, 200, *changed);
      }
      if (!view_.updateNode) return notServed(c);
      auto r = onReactor<Result<json>>(
          [this, label = c.args[0], b = c.body] { return view_.updateNode(label, b); });
      if (!r) return busy(c.res);
      if (!r->ok()) return fail(c.res, r->error());
      ok(c.res, 200, **r);
    });
    add("DELETE", "/v1/nodes/{label}", "nodes:delete", node, [this](Call& c) {
      if (view_.fleet.deleteNode) {
        Status gone = view_.fleet.deleteNode(c.args[0]);
        if (!gone.ok()) return fail(c.res, gone.error());
        c.res.status = 204;
        c.res.body.clear();
        return;
      }
      if (!view_.deleteNode) return notServed(c);
      auto r = onReactor<Status>([this, label = c.args[0]] { return view_.deleteNode(label); });
      if (!r) return busy(c.res);
      if (!r->ok()) return fail(c.res, r->error());
      c.res.status = 204;
      c.res.body.clear();
    });
    // The fleet (a ring0d with [fleet]): its hosts, nodes and pending reasons; enrolment tokens.
    add("GET", "/v1/fleet", "fleet:read", fixed("fleet"), [this](Call& c) {
      if (!view_.fleet.view) return notAFleet(c);
      auto v = view_.fleet.view();
      if (!v.ok()) return fail(c.res, v.error());
      ok(c.res, 200, *v);
    });
    add("POST", "/v1/fleet/tokens", "fleet:tokens", fixed("fleet/tokens"), [this](Call& c) {
      if (!view_.fleet.token) return notAFleet(c);
      int64_t ttl = 3600;
      if (c.body.is_object() && c.body.contains("ttl_s")) {
        if (!c.body["ttl_s"].is_number_integer()) {
          return jsonError(c.res, 400, "bad_request", "ttl_s: expected a number of seconds");
        }
        ttl = c.body["ttl_s"].get<int64_t>();
      }
      auto t = view_.fleet.token(ttl);
      if (!t.ok()) return fail(c.res, t.error());
      ok(c.res, 201, *t);
    });
    routes_.back().noBody = true;  // {"ttl_s": N}, or nothing for an hour
    add("GET", "/v1/nodes/{label}/observations", "nodes:read", node,
        [this](Call& c) { readObservations(c); });
    add("GET", "/v1/job-offers", "job-offers:read", fixed("job-offers"), [this](Call& c) {
      auto t = treeSnapshot();
      if (!t) return busy(c.res);
      json out = json::array();
      for (const auto& n : t->tree.value("nodes", json::array())) {
        if (n.value("state", "") == "revoked") continue;
        json o{{"node", n.value("label", "")},
               {"ring", n.value("ring", 0)},
               {"compartment", n.value("compartment", "")},
               {"state", n.value("state", "")}};
        if (auto it = n.find("offer"); it != n.end() && it->is_object()) o.update(*it);
        out.push_back(std::move(o));
      }
      ok(c.res, 200, out);
    });
    addAppRoutes();
    add("GET", "/v1/audit", "audit:read", fixed("audit"), [this](Call& c) { readAudit(c); });
    add("GET", "/v1/events", "events:read", fixed("events"), [this](Call& c) { openEvents(c); });
    add("GET", "/metrics", "metrics:read", fixed("metrics"), [this](Call& c) {
      // Rendered on the reactor: the daemon's collectors read its state, which lives there.
      auto body = onReactor<std::string>([this] { return metrics_.render(); });
      if (!body) return busy(c.res);
      c.res.status = 200;
      c.res.contentType = "text/plain; version=0.0.4";
      c.res.body = std::move(*body);
    });
  }

  // A user's "password" is checked and hashed here, on the HTTP thread; the directory stores
  // only the hash. A client may not send a hash of its own.
  bool prepareSecrets(Kind k, Call& c) {
    if (k != Kind::kUser) return true;
    if (c.body.contains("password_hash")) {
      jsonError(c.res, 400, "bad_request", "send 'password'; the server hashes it");
      return false;
    }
    if (!c.body.contains("password")) {
      if (c.req.method == "POST") {
        jsonError(c.res, 400, "bad_request", "user: 'password' is required");
        return false;
      }
      return true;
    }
    if (!c.body["password"].is_string()) {
      jsonError(c.res, 400, "bad_request", "user: password: expected a string");
      return false;
    }
    const std::string pw = c.body["password"].get<std::string>();
    c.body.erase("password");
    if (auto st = acl::checkPasswordPolicy(pw); !st.ok()) {
      jsonError(c.res, 400, "bad_request", "user: " + st.error().message);
      return false;
    }
    auto hash = acl::hashPassword(pw);
    if (!hash.ok()) {
      jsonError(c.res, 500, "internal", hash.error().message);
      return false;
    }
    c.body["password_hash"] = *hash;
    return true;
  }

  // /v1/apps: a ring1d's apps (DaemonView::listApps ...), actions apps:*.
  void addAppRoutes() {
    auto app = [](const std::vector<std::string>& a) { return "apps/" + a.at(0); };
    auto answer = [this](Call& c, int status, const std::optional<Result<json>>& r) {
      if (!r) return busy(c.res);
      if (!r->ok()) return fail(c.res, r->error());
      ok(c.res, status, **r);
    };
    add("GET", "/v1/apps", "apps:read", [](const auto&) { return std::string("apps"); },
        [this, answer](Call& c) {
          if (!view_.listApps) return notServed(c);
          answer(c, 200, onReactor<Result<json>>([this] { return view_.listApps(); }));
        });
    add("POST", "/v1/apps", "apps:create", [](const auto&) { return std::string("apps"); },
        [this, answer](Call& c) {
          if (!view_.createApp || !view_.getApp) return notServed(c);
          // A name in use has a code of its own ("exists"), so that a client can fall back to
          // PUT (enjinctl app deploy) and tell it from an app that does not fit (a 409 too).
          const std::string name = c.body.value("name", json()).is_string() ? c.body["name"].get<std::string>() : "";
          auto exists = onReactor<bool>([this, name] { return !name.empty() && view_.getApp(name).ok(); });
          if (!exists) return busy(c.res);
          if (*exists) {
            return jsonError(c.res, 409, "exists",
                             "app '" + name + "' exists (change it with PUT /v1/apps/" + name + ")");
          }
          answer(c, 201, onReactor<Result<json>>([this, b = c.body] { return view_.createApp(b); }));
        });
    add("GET", "/v1/apps/{name}", "apps:read", app, [this, answer](Call& c) {
      if (!view_.getApp) return notServed(c);
      answer(c, 200, onReactor<Result<json>>([this, n = c.args[0]] { return view_.getApp(n); }));
    });
    add("PUT", "/v1/apps/{name}", "apps:update", app, [this, answer](Call& c) {
      if (!view_.updateApp) return notServed(c);
      answer(c, 200, onReactor<Result<json>>(
                         [this, n = c.args[0], b = c.body] { return view_.updateApp(n, b); }));
    });
    add("POST", "/v1/apps/{name}/restart", "apps:restart", app, [this, answer](Call& c) {
      if (!view_.restartApp) return notServed(c);
      answer(c, 202, onReactor<Result<json>>([this, n = c.args[0]] { return view_.restartApp(n); }));
    });
    routes_.back().noBody = true;
    add("DELETE", "/v1/apps/{name}", "apps:delete", app, [this](Call& c) {
      if (!view_.deleteApp) return notServed(c);
      auto r = onReactor<Status>([this, n = c.args[0]] { return view_.deleteApp(n); });
      if (!r) return busy(c.res);
      if (!r->ok()) return fail(c.res, r->error());
      c.res.status = 204;
      c.res.body.clear();
    });
    add("GET", "/v1/apps/{name}/logs", "apps:logs", app, [this](Call& c) { readAppLogs(c); });
  }

  // GET /v1/apps/NAME/logs?lines=N&follow=1: every instance's log, each line prefixed by its
  // instance, the last N (default 100) in time order; with follow, then new lines as they come.
  void readAppLogs(Call& c) {
    if (!view_.appLogs) return notServed(c);
    size_t lines = 100;
    if (auto s = c.req.param("lines"); !s.empty()) {
      if (s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) {
        return jsonError(c.res, 400, "bad_request", "lines: expected a number, not '" + s + "'");
      }
      lines = std::clamp<size_t>(std::stoul(s), 0, 100'000);
    }
    const std::string follow = c.req.param("follow");
    const std::string name = c.args[0];
    using Files = LogFiles;
    auto files = onReactor<Result<Files>>([this, name] { return view_.appLogs(name); });
    if (!files) return busy(c.res);
    if (!files->ok()) return fail(c.res, files->error());
    // Shared: the stream's callable must be copyable, and the tail owns the files it reads.
    auto tail = std::make_shared<LogTail>();
    std::string head = tail->start(**files, lines);
    c.res.status = 200;
    c.res.contentType = "text/plain; charset=utf-8";
    if (follow != "1" && follow != "true") {
      c.res.body = std::move(head);
      return;
    }
    c.res.body.clear();
    c.res.headers.emplace_back("Cache-Control", "no-cache");
    // The instances change while one follows (a roll-out): the list is asked for again now and
    // then, on the reactor, and new instances are read from their start.
    auto refresh = [this, name]() -> std::optional<Files> {
      auto f = onReactor<Result<Files>>([this, name] { return view_.appLogs(name); });
      if (!f || !f->ok()) return std::nullopt;
      return std::move(**f);
    };
    c.res.stream = [tail, head = std::move(head),
                    refresh](const std::function<bool(const std::string&)>& write) mutable {
      if (!write(head)) return;
      followLogs(*tail, refresh, write);
    };
  }

  void login(Call& c) {
    const json& b = c.body;
    if (!b.is_object() || !b.contains("user") || !b["user"].is_string() ||
        !b.contains("password") || !b["password"].is_string()) {
      return jsonError(c.res, 400, "bad_request", "expected {\"user\": NAME, \"password\": ...}");
    }
    const std::string user = b["user"].get<std::string>();
    const std::string pw = b["password"].get<std::string>();
    c.user = user;
    if (const int64_t wait = limiter_.retryAfterMs(user, c.req.remoteAddr); wait > 0) {
      loginsFailed_.inc();
      jsonError(c.res, 429, "too_many_requests", "too many failed logins; retry later");
      c.res.headers.emplace_back("Retry-After", std::to_string((wait + 999) / 1000));
      return;
    }
    auto hash = onReactor<Result<std::optional<std::string>>>(
        [this, user] { return dir_.passwordHash(user); });
    if (!hash) return busy(c.res);
    // An unknown user costs one verification too: the timing tells nothing.
    const bool good = hash->ok() && hash->value().has_value()
                          ? acl::verifyPassword(*hash->value(), pw)
                          : acl::verifyAgainstDummy(pw);
    if (!good) {
      limiter_.failed(user, c.req.remoteAddr);
      loginsFailed_.inc();
      return jsonError(c.res, 401, "unauthenticated", "wrong user or password");
    }
    limiter_.succeeded(user, c.req.remoteAddr);
    const std::string token = acl::newToken();
    const int64_t expires = clock_.wallMicros() / 1000 + options_.sessionTtlMs;
    auto st = onReactor<Status>([this, h = acl::tokenHash(token), user, expires] {
      return dir_.addSession(h, user, expires);
    });
    if (!st) return busy(c.res);
    if (!st->ok()) return fail(c.res, st->error());
    ok(c.res, 201, json{{"token", token}, {"expires_at", directory::rfc3339(expires)}});
  }

  // A node's stored observations (the store keeps the newest 200 per node), oldest first: the
  // newest `limit` within [since, until].
  void readObservations(Call& c) {
    int64_t since = INT64_MIN, until = INT64_MAX;
    size_t limit = 100;
    for (auto [key, out] : {std::pair<const char*, int64_t*>{"since", &since}, {"until", &until}}) {
      if (auto s = c.req.param(key); !s.empty()) {
        auto t = directory::parseTime(s);
        if (!t) {
          return jsonError(c.res, 400, "bad_request",
                           std::string(key) + ": expected RFC 3339 (2024-01-31T12:00:00Z) or "
                                              "milliseconds since the epoch, not '" + s + "'");
        }
        *out = *t;
      }
    }
    if (auto s = c.req.param("limit"); !s.empty()) {
      if (s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) {
        return jsonError(c.res, 400, "bad_request", "limit: expected a number");
      }
      limit = std::clamp<size_t>(std::stoul(s), 1, 1000);
    }
    const std::string label = c.args[0];
    auto t = treeSnapshot();
    if (!t) return busy(c.res);
    std::string uuid;
    for (const auto& n : t->tree.value("nodes", json::array())) {
      if (n.value("label", "") == label) uuid = n.value("uuid", "");
    }
    if (uuid.empty()) {
      return jsonError(c.res, 404, "not_found", "node '" + label + "' does not exist");
    }
    auto rows = onReactor<Result<std::vector<store::ObservationRecord>>>(
        [this, uuid] { return store_.observations(uuid, 1000); });
    if (!rows) return busy(c.res);
    if (!rows->ok()) return fail(c.res, rows->error());
    json out = json::array();
    for (const auto& r : **rows) {  // newest first
      if (out.size() >= limit) break;
      if (r.wallMs < since || r.wallMs > until) continue;
      out.push_back({{"time", directory::rfc3339(r.wallMs)},
                     {"strategy", r.strategy},
                     {"state", r.state},
                     {"body", json::parse(r.bodyJson, nullptr, false)}});
    }
    std::reverse(out.begin(), out.end());
    ok(c.res, 200, out);
  }

  // Starts after Last-Event-ID (a reconnecting EventSource sends it) or ?after=N; without
  // either, after the last event so far: only what happens from now on.
  void openEvents(Call& c) {
    EventLog* log = view_.events;
    if (log == nullptr) {
      return jsonError(c.res, 405, "method_not_allowed",
                       "GET /v1/events is not served by this daemon");
    }
    uint64_t after = log->lastId();
    std::string from = c.req.header("last-event-id");
    if (from.empty()) from = c.req.param("after");
    if (!from.empty()) {
      if (from.size() > 19 || from.find_first_not_of("0123456789") != std::string::npos) {
        return jsonError(c.res, 400, "bad_request",
                         "Last-Event-ID and after must be event numbers, not '" + from + "'");
      }
      after = std::stoull(from);
    }
    c.res.status = 200;
    c.res.contentType = "text/event-stream";
    c.res.body.clear();
    c.res.headers.emplace_back("Cache-Control", "no-cache");
    c.res.stream = [log, after](const std::function<bool(const std::string&)>& write) {
      streamEvents(*log, after, write);
    };
  }

  void readAudit(Call& c) {
    int64_t after = 0;
    size_t limit = 100;
    try {
      if (auto s = c.req.param("after"); !s.empty()) after = std::stoll(s);
      if (auto s = c.req.param("limit"); !s.empty()) limit = std::stoul(s);
    } catch (const std::exception&) {
      return jsonError(c.res, 400, "bad_request", "after and limit must be numbers");
    }
    limit = std::clamp<size_t>(limit, 1, 1000);
    auto rows = onReactor<Result<std::vector<store::AuditRecord>>>(
        [this, after, limit] { return store_.audit(after, limit); });
    if (!rows) return busy(c.res);
    if (!rows->ok()) return fail(c.res, rows->error());
    json out = json::array();
    for (const auto& r : **rows) out.push_back(auditJson(r));
    ok(c.res, 200, out);
  }

  const Clock& clock_;
  directory::Directory& dir_;
  store::Store& store_;
  metrics::Registry& metrics_;
  ControlApiOptions options_;
  DaemonView view_;
  acl::LoginLimiter limiter_;
  std::atomic<uint64_t> generation_{0};
  std::mutex snapshotMutex_;
  std::shared_ptr<const TreeSnapshot> snapshot_;
  bool refreshing_ = false;  // a reader is fetching a new copy (under snapshotMutex_)
  std::mutex sessionsMutex_;
  std::unordered_map<std::string, KnownSession> known_;
  metrics::Counter& loginsFailed_;
};

ControlApi::ControlApi(Reactor& reactor, const Clock& clock, directory::Directory& directory,
                       store::Store& store, metrics::Registry& metrics, ControlApiOptions options,
                       DaemonView view)
    : impl_(std::make_unique<Impl>(reactor, clock, directory, store, metrics, options,
                                   std::move(view))) {}

ControlApi::~ControlApi() = default;

void ControlApi::close() { impl_->handoff_.close(); }

void ControlApi::handle(const HttpRequest& request, HttpResponse& response) {
  impl_->handle(request, response);
}

std::vector<ControlApi::RouteInfo> ControlApi::routes() const {
  std::vector<RouteInfo> out;
  for (const auto& r : impl_->routes_) out.push_back({r.method, r.pattern, r.action});
  return out;
}

}  // namespace enjin::api
