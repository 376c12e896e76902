// etcd's v3 JSON gateway through cpp-httplib (the only file of fleet/ that includes it).
//
// What the gateway sends (etcd 3.4, checked against the real server): proto3 JSON, so int64 and
// uint64 fields are JSON strings and a field at its zero value (0, false, "", an enum's first
// value such as PUT or EQUAL) is absent; bytes are base64. Unary calls answer one object; the
// streaming ones (lease keepalive, watch) answer newline-delimited {"result":{...}} objects, or
// {"error":{"grpc_code":N,"http_code":N,"message":...}}. A refused unary call answers a non-200
// status with {"error":"...","message":"...","code":GRPC_CODE}.
#include "enjin/fleet/etcd.hpp"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "enjin/reactor/handoff.hpp"

namespace enjin::fleet {
namespace {

using nlohmann::json;

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += kB64[n & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t n = uint8_t(in[i]) << 16;
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> b64decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Reads fields of an answer without ever throwing: a field of the wrong type marks the answer
// malformed (bad), which the caller turns into an Error.
struct Reader {
  bool bad = false;

  const json* field(const json& j, const char* key) {
    if (!j.is_object()) {
      bad = true;
      return nullptr;
    }
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }
  int64_t i64(const json& j, const char* key) {
    const json* f = field(j, key);
    if (!f) return 0;
    if (f->is_number_integer()) return f->get<int64_t>();
    if (f->is_string()) {
      const auto& s = f->get_ref<const std::string&>();
      int64_t v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc() && p == s.data() + s.size()) return v;
    }
    bad = true;
    return 0;
  }
  uint64_t u64(const json& j, const char* key) {
    const json* f = field(j, key);
    if (!f) return 0;
    if (f->is_number_unsigned()) return f->get<uint64_t>();
    if (f->is_string()) {
      const auto& s = f->get_ref<const std::string&>();
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc() && p == s.data() + s.size()) return v;
    }
    bad = true;
    return 0;
  }
  bool boolean(const json& j, const char* key) {
    const json* f = field(j, key);
    if (!f) return false;
    if (f->is_boolean()) return f->get<bool>();
    bad = true;
    return false;
  }
  std::string str(const json& j, const char* key) {
    const json* f = field(j, key);
    if (!f) return {};
    if (f->is_string()) return f->get<std::string>();
    bad = true;
    return {};
  }
  std::string bytes(const json& j, const char* key) {
    auto decoded = b64decode(str(j, key));
    if (!decoded) bad = true;
    return decoded.value_or(std::string());
  }
  // An object field; absent gives an empty object.
  const json& object(const json& j, const char* key) {
    static const json kEmpty = json::object();
    const json* f = field(j, key);
    if (!f) return kEmpty;
    if (f->is_object()) return *f;
    bad = true;
    return kEmpty;
  }
  // An array field; absent gives an empty array.
  const json& array(const json& j, const char* key) {
    static const json kEmpty = json::array();
    const json* f = field(j, key);
    if (!f) return kEmpty;
    if (f->is_array()) return *f;
    bad = true;
    return kEmpty;
  }
  KeyValue kv(const json& j) {
    KeyValue out;
    out.key = bytes(j, "key");
    out.value = bytes(j, "value");
    out.createRevision = i64(j, "create_revision");
    out.modRevision = i64(j, "mod_revision");
    out.version = i64(j, "version");
    out.lease = i64(j, "lease");
    return out;
  }
  std::vector<KeyValue> kvs(const json& j) {
    std::vector<KeyValue> out;
    for (const auto& e : array(j, "kvs")) out.push_back(kv(e));
    return out;
  }
};

// The HTTP status an etcd (gRPC) code stands for, as enjin's Error codes use them.
int codeOfGrpc(int64_t grpc, int httpStatus) {
  switch (grpc) {
    case 3:
      return 400;  // InvalidArgument
    case 5:
      return 404;  // NotFound (a lease)
    case 6:
      return 409;  // AlreadyExists
    case 7:
      return 403;  // PermissionDenied
    case 9:
      return 409;  // FailedPrecondition
    case 11:
      return 410;  // OutOfRange: a compacted revision
    case 16:
      return 401;  // Unauthenticated
    case 4:        // DeadlineExceeded
    case 14:
      return 503;  // Unavailable: no leader, stopping
    default:
      return httpStatus >= 400 ? httpStatus : 500;
  }
}

// `tls`: the endpoint is https://; `clientCert`: this client presents a certificate.
std::string describe(httplib::Error e, bool tls, bool clientCert) {
  std::string out;
  switch (e) {
    case httplib::Error::Connection:
      return "cannot connect";
    case httplib::Error::ConnectionTimeout:
      return "connect timed out";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load the TLS CA, certificate or key";
    case httplib::Error::SSLServerVerification:
      return "TLS: the server's certificate does not verify against the CA";
    case httplib::Error::Canceled:
      return "canceled";
    case httplib::Error::Read:
      out = "read failed or timed out";
      break;
    case httplib::Error::Write:
      out = "write failed or timed out";
      break;
    case httplib::Error::SSLConnection:
      out = "TLS handshake failed";
      break;
    default:
      return "transport error " + httplib::to_string(e);
  }
  // TLS 1.3 finishes the client's side of the handshake before the server checks the client's
  // certificate: a refusal shows as a connection closed under the request or before the answer.
  if (tls && !clientCert) {
    out +=
        " (no client certificate configured: a member with --client-cert-auth refuses such "
        "connections)";
  } else if (tls) {
    out += " (or the member refused the client certificate)";
  }
  return out;
}

// A write to a connection the peer closed raises SIGPIPE, which OpenSSL's writes do not suppress
// and which ends a process that did not ignore it. While one of these lives, SIGPIPE is blocked
// on this thread (a library must not change the process's dispositions); one raised meanwhile is
// consumed before the mask is restored, so it never reaches the process.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    wasPending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    if (!wasPending_) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_, old_;
  bool wasPending_ = false;
};

bool isTls(const std::string& endpoint) {
  return endpoint.rfind("https://", 0) == 0;
}

std::string joinEndpoints(const std::vector<std::string>& endpoints) {
  std::string out;
  for (const auto& e : endpoints) out += (out.empty() ? "" : ", ") + e;
  return out;
}

std::unique_ptr<httplib::Client> makeClient(const EtcdOptions& o, const std::string& endpoint,
                                            int64_t readTimeoutMs) {
  std::unique_ptr<httplib::Client> c;
  if (isTls(endpoint) && !o.certFile.empty()) {
    c = std::make_unique<httplib::Client>(endpoint, o.certFile, o.keyFile);
  } else {
    c = std::make_unique<httplib::Client>(endpoint);
  }
  if (isTls(endpoint)) {
    if (!o.caFile.empty()) c->set_ca_cert_path(o.caFile);
    c->enable_server_certificate_verification(true);
  }
  auto set = [](int64_t ms, auto fn) { fn(time_t(ms / 1000), time_t((ms % 1000) * 1000)); };
  set(o.timeoutMs, [&](time_t s, time_t us) { c->set_connection_timeout(s, us); });
  set(o.timeoutMs, [&](time_t s, time_t us) { c->set_write_timeout(s, us); });
  set(readTimeoutMs, [&](time_t s, time_t us) { c->set_read_timeout(s, us); });
  c->set_keep_alive(true);
  return c;
}

// An Error from etcd's answer to a refused call (non-200, or an "error" object in a stream).
Error etcdError(const std::string& endpoint, const json& j, int httpStatus) {
  Reader r;
  std::string message;
  int64_t grpc = -1;
  if (j.is_object()) {
    const json* e = r.field(j, "error");
    if (e && e->is_object()) {  // a stream's {"error":{"grpc_code","http_code","message"}}
      grpc = r.i64(*e, "grpc_code");
      message = r.str(*e, "message");
    } else {
      grpc = r.i64(j, "code");
      message = r.str(j, "message");
    }
  }
  if (message.empty()) message = "HTTP " + std::to_string(httpStatus);
  return Error{"etcd " + endpoint + ": " + message, codeOfGrpc(grpc, httpStatus)};
}

}  // namespace

std::string prefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (uint8_t(end.back()) < 0xff) {
      end.back() = char(uint8_t(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // etcd: every key from `prefix` on
}

Compare Compare::absent(std::string key) {
  return Compare{std::move(key), Target::kVersion, Op::kEqual, 0, {}};
}
Compare Compare::valueIs(std::string key, std::string value) {
  return Compare{std::move(key), Target::kValue, Op::kEqual, 0, std::move(value)};
}
Compare Compare::modRevisionIs(std::string key, int64_t rev) {
  return Compare{std::move(key), Target::kModRevision, Op::kEqual, rev, {}};
}

TxnOp TxnOp::put(std::string key, std::string value, int64_t lease) {
  return TxnOp{Kind::kPut, std::move(key), std::move(value), lease, {}};
}
TxnOp TxnOp::del(std::string key) {
  return TxnOp{Kind::kDelete, std::move(key), {}, 0, {}};
}
TxnOp TxnOp::get(std::string key) {
  return TxnOp{Kind::kGet, std::move(key), {}, 0, {}};
}

// ---------------------------------------------------------------------------------------------
// EtcdClient

struct EtcdClient::Impl {
  explicit Impl(const EtcdOptions& o) : options(o), idle(o.endpoints.size()) {}

  const EtcdOptions& options;
  std::mutex mutex;
  // Per endpoint, connections not in use (kept alive); a call takes one or makes one.
  std::vector<std::vector<std::unique_ptr<httplib::Client>>> idle;
  std::atomic<size_t> preferred{0};  // the endpoint that answered last

  static constexpr size_t kIdlePerEndpoint = 4;
  // No answer of the calls made here comes near this; a peer sending more is not etcd.
  static constexpr size_t kMaxAnswer = 64u << 20;

  std::unique_ptr<httplib::Client> take(size_t i) {
    {
      std::lock_guard lock(mutex);
      if (!idle[i].empty()) {
        auto c = std::move(idle[i].back());
        idle[i].pop_back();
        return c;
      }
    }
    return makeClient(options, options.endpoints[i], options.timeoutMs);
  }
  void giveBack(size_t i, std::unique_ptr<httplib::Client> c) {
    std::lock_guard lock(mutex);
    if (idle[i].size() < kIdlePerEndpoint) idle[i].push_back(std::move(c));
  }

  // One POST to one endpoint: the parsed answer, or an Error; `transport` says whether another
  // endpoint should be tried.
  Result<json> postTo(size_t i, const std::string& path, const std::string& body, bool& transport) {
    const std::string& endpoint = options.endpoints[i];
    transport = false;
    auto c = take(i);
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body;
    req.headers = {{"Content-Type", "application/json"}};
    std::string text;
    req.content_receiver = [&text](const char* data, size_t len, uint64_t, uint64_t) {
      text.append(data, len);
      return text.size() <= kMaxAnswer;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    bool sent;
    {
      SigpipeBlocked noSigpipe;
      sent = c->send(req, res, err);
    }
    // The gateway ends a refused call (and a streamed one) with an HTTP trailer, which
    // cpp-httplib 0.11 cannot read: it reports a read error after the whole body arrived. Such an
    // answer counts when it announced the trailer and its body is one complete JSON object.
    json j = json::parse(text, nullptr, false);
    const bool trailerOnly = !sent && err == httplib::Error::Read && res.status > 0 &&
                             res.has_header("Trailer") && j.is_object();
    if (!sent && !trailerOnly) {
      transport = true;
      return Error{endpoint + ": " + describe(err, isTls(endpoint), !options.certFile.empty()),
                   503};
    }
    const int status = res.status;
    // Only a plain answer leaves the connection reusable (nothing unread after it).
    if (sent && res.has_header("Content-Length") && !res.has_header("Trailer")) {
      giveBack(i, std::move(c));
    }
    if (status == 503) {
      transport = true;
      return etcdError(endpoint, j, status).wrap("unavailable");
    }
    if (status != 200) return etcdError(endpoint, j, status);
    if (j.is_discarded() || !j.is_object()) {
      return Error{"etcd " + endpoint + ": malformed answer to " + path + " (not a JSON object)",
                   502};
    }
    // A streaming call's one answer: {"result":...} or {"error":...}.
    if (auto e = j.find("error"); e != j.end() && e->is_object()) {
      Error refused = etcdError(endpoint, j, 200);
      transport = refused.code == 503;
      return refused;
    }
    if (auto r = j.find("result"); r != j.end() && r->is_object()) {
      json inner = std::move(*r);
      return inner;
    }
    return j;
  }

  // Tries the endpoints in turn from the preferred one; fails over on transport errors and 503.
  Result<json> post(const std::string& path, const json& body) {
    const std::string text = body.dump();
    const size_t n = options.endpoints.size();
    const size_t start = preferred.load();
    std::string causes;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (start + k) % n;
      bool transport = false;
      auto r = postTo(i, path, text, transport);
      if (r.ok()) {
        preferred = i;
        return r;
      }
      if (!transport) {
        preferred = i;
        return r;
      }
      causes += (causes.empty() ? "" : "; ") + r.error().message;
    }
    return Error{"no etcd endpoint (of " + joinEndpoints(options.endpoints) + ") could serve " +
                     path + ": " + causes,
                 503};
  }
};

EtcdClient::EtcdClient(EtcdOptions options) : options_(std::move(options)) {
  impl_ = std::make_unique<Impl>(options_);
}
EtcdClient::~EtcdClient() = default;

Result<std::unique_ptr<EtcdClient>> EtcdClient::create(EtcdOptions options) {
  if (options.endpoints.empty()) return Error{"etcd client: no endpoints", 400};
  for (const auto& e : options.endpoints) {
    if (e.rfind("http://", 0) != 0 && e.rfind("https://", 0) != 0) {
      return Error{"etcd client: endpoint '" + e + "' is not http:// or https://", 400};
    }
  }
  if (options.certFile.empty() != options.keyFile.empty()) {
    return Error{"etcd client: a client certificate needs both certFile and keyFile", 400};
  }
  for (const auto* f : {&options.caFile, &options.certFile, &options.keyFile}) {
    if (!f->empty() && ::access(f->c_str(), R_OK) != 0) {
      return errnoError("etcd client: TLS file '" + *f + "'", errno);
    }
  }
  if (options.timeoutMs <= 0) return Error{"etcd client: timeoutMs must be positive", 400};
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(options)));
}

namespace {

Error malformed(const std::string& what) {
  return Error{"etcd: malformed answer to " + what, 502};
}

json rangeBody(const std::string& key, const std::string& rangeEnd) {
  json b = {{"key", b64encode(key)}};
  if (!rangeEnd.empty()) b["range_end"] = b64encode(rangeEnd);
  return b;
}

json putBody(const std::string& key, const std::string& value, int64_t lease) {
  json b = {{"key", b64encode(key)}, {"value", b64encode(value)}};
  if (lease != 0) b["lease"] = std::to_string(lease);
  return b;
}

}  // namespace

Result<int64_t> EtcdClient::put(const std::string& key, const std::string& value, int64_t lease) {
  auto r = impl_->post("/v3/kv/put", putBody(key, value, lease));
  if (!r) return r.error().wrap("put '" + key + "'");
  Reader rd;
  const int64_t rev = rd.i64(rd.object(*r, "header"), "revision");
  if (rd.bad) return malformed("put '" + key + "'");
  return rev;
}

Result<RangeResult> EtcdClient::get(const std::string& key) {
  return range(key, {});
}

Result<RangeResult> EtcdClient::range(const std::string& key, const std::string& rangeEnd) {
  auto r = impl_->post("/v3/kv/range", rangeBody(key, rangeEnd));
  if (!r) return r.error().wrap("range '" + key + "'");
  Reader rd;
  RangeResult out;
  out.kvs = rd.kvs(*r);
  out.revision = rd.i64(rd.object(*r, "header"), "revision");
  if (rd.bad) return malformed("range '" + key + "'");
  return out;
}

Result<int64_t> EtcdClient::del(const std::string& key, const std::string& rangeEnd) {
  auto r = impl_->post("/v3/kv/deleterange", rangeBody(key, rangeEnd));
  if (!r) return r.error().wrap("delete '" + key + "'");
  Reader rd;
  const int64_t n = rd.i64(*r, "deleted");
  if (rd.bad) return malformed("delete '" + key + "'");
  return n;
}

Result<TxnResult> EtcdClient::txn(const std::vector<Compare>& compares,
                                  const std::vector<TxnOp>& success,
                                  const std::vector<TxnOp>& failure) {
  static const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
  static const char* kTargetFields[] = {"version", "create_revision", "mod_revision", "value",
                                        "lease"};
  static const char* kOps[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  json cmp = json::array();
  for (const auto& c : compares) {
    const auto t = size_t(c.target);
    json j = {{"key", b64encode(c.key)}, {"target", kTargets[t]}, {"result", kOps[size_t(c.op)]}};
    if (c.target == Compare::Target::kValue) {
      j["value"] = b64encode(c.value);
    } else {
      j[kTargetFields[t]] = std::to_string(c.number);
    }
    cmp.push_back(std::move(j));
  }
  auto ops = [](const std::vector<TxnOp>& list) {
    json out = json::array();
    for (const auto& op : list) {
      switch (op.kind) {
        case TxnOp::Kind::kPut:
          out.push_back({{"request_put", putBody(op.key, op.value, op.lease)}});
          break;
        case TxnOp::Kind::kDelete:
          out.push_back({{"request_delete_range", rangeBody(op.key, op.rangeEnd)}});
          break;
        case TxnOp::Kind::kGet:
          out.push_back({{"request_range", rangeBody(op.key, op.rangeEnd)}});
          break;
      }
    }
    return out;
  };
  json body = {{"compare", cmp}, {"success", ops(success)}, {"failure", ops(failure)}};
  const std::string what = "txn on '" + (compares.empty() ? std::string() : compares[0].key) + "'";
  auto r = impl_->post("/v3/kv/txn", body);
  if (!r) return r.error().wrap(what);
  Reader rd;
  TxnResult out;
  out.succeeded = rd.boolean(*r, "succeeded");
  out.revision = rd.i64(rd.object(*r, "header"), "revision");
  for (const auto& resp : rd.array(*r, "responses")) {
    if (const json* range = rd.field(resp, "response_range")) out.reads.push_back(rd.kvs(*range));
  }
  if (rd.bad) return malformed(what);
  return out;
}

Result<int64_t> EtcdClient::leaseGrant(int64_t ttlSeconds) {
  auto r = impl_->post("/v3/lease/grant", json{{"TTL", std::to_string(ttlSeconds)}});
  const std::string what = "grant a lease of " + std::to_string(ttlSeconds) + " s";
  if (!r) return r.error().wrap(what);
  Reader rd;
  const int64_t id = rd.i64(*r, "ID");
  const std::string err = rd.str(*r, "error");
  if (rd.bad) return malformed(what);
  if (!err.empty()) return Error{what + ": " + err, 500};
  if (id == 0) return malformed(what);
  return id;
}

Result<int64_t> EtcdClient::leaseKeepAlive(int64_t lease) {
  auto r = impl_->post("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}});
  const std::string what = "keep lease " + std::to_string(lease) + " alive";
  if (!r) return r.error().wrap(what);
  Reader rd;
  const int64_t ttl = rd.i64(*r, "TTL");
  if (rd.bad) return malformed(what);
  if (ttl <= 0) return Error{what + ": lease not found (expired or revoked)", 404};
  return ttl;
}

Status EtcdClient::leaseRevoke(int64_t lease) {
  auto r = impl_->post("/v3/lease/revoke", json{{"ID", std::to_string(lease)}});
  if (!r) return r.error().wrap("revoke lease " + std::to_string(lease));
  return {};
}

Result<EtcdClient::MemberStatus> EtcdClient::status(const std::string& endpoint) {
  auto it = std::find(options_.endpoints.begin(), options_.endpoints.end(), endpoint);
  if (it == options_.endpoints.end()) {
    return Error{"etcd status: '" + endpoint + "' is not one of the endpoints", 400};
  }
  bool transport = false;
  auto r = impl_->postTo(size_t(it - options_.endpoints.begin()), "/v3/maintenance/status", "{}",
                         transport);
  if (!r) return r.error().wrap("status of etcd member");
  Reader rd;
  MemberStatus out;
  out.endpoint = endpoint;
  out.version = rd.str(*r, "version");
  out.leader = rd.u64(*r, "leader");
  const json& header = rd.object(*r, "header");
  out.memberId = rd.u64(header, "member_id");
  out.raftTerm = rd.i64(*r, "raftTerm");
  if (rd.bad) return malformed("status of " + endpoint);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Watch

namespace {

// How long a watch stream may stay silent before it is dropped and opened again (resuming
// where it was). etcd sends nothing on an idle range, so this bounds how long a watch can sit
// on a connection to a host that vanished without closing it; the reconnect costs one request.
constexpr int64_t kWatchIdleMs = 10'000;

class WatchImpl final : public Watch {
 public:
  WatchImpl(EtcdOptions options, size_t firstEndpoint, std::string key, std::string rangeEnd,
            int64_t startRevision, EtcdClient::OnEvents onEvents, EtcdClient::OnWatchError onError)
      : options_(std::move(options)),
        endpoint_(firstEndpoint),
        key_(std::move(key)),
        rangeEnd_(std::move(rangeEnd)),
        next_(startRevision),
        onEvents_(std::move(onEvents)),
        onError_(std::move(onError)) {
    thread_ = std::thread([this] { loop(); });
  }

  ~WatchImpl() override {
    stop_ = true;
    cv_.notify_all();
    // stop() shuts the socket of a request in flight down; one issued just before a request
    // started does nothing, so it is repeated until the thread is out.
    while (!done_) {
      {
        std::lock_guard lock(mutex_);
        if (current_) current_->stop();
      }
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return done_.load(); });
    }
    thread_.join();
  }

 private:
  enum class Outcome { kRetry, kEnd };

  void loop() {
    // The whole life of this thread: see SigpipeBlocked.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    auto backoff = std::chrono::milliseconds(100);
    while (!stop_) {
      const Outcome o = once(endpoint_ % options_.endpoints.size());
      if (o == Outcome::kEnd || stop_) break;
      if (gotCreated_) backoff = std::chrono::milliseconds(100);
      ++endpoint_;  // after a broken stream, the next endpoint
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, backoff, [this] { return stop_.load(); });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
    std::lock_guard lock(mutex_);
    done_ = true;
    cv_.notify_all();
  }

  Outcome once(size_t i) {
    const std::string& endpoint = options_.endpoints[i];
    auto client = makeClient(options_, endpoint, kWatchIdleMs);
    {
      std::lock_guard lock(mutex_);
      if (stop_) return Outcome::kEnd;
      current_ = client.get();
    }
    json create = rangeBody(key_, rangeEnd_);
    if (next_ > 0) create["start_revision"] = std::to_string(next_);
    const std::string body = json{{"create_request", create}}.dump();

    gotCreated_ = false;
    Outcome outcome = Outcome::kRetry;
    bool ended = false;
    std::string buffer;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v3/watch";
    req.body = body;
    // etcd cancels the watch of a member that lost its leader, rather than leave it silent.
    req.headers = {{"Content-Type", "application/json"}, {"Grpc-Metadata-hasleader", "true"}};
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
      buffer.append(data, len);
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
        if (!handleLine(endpoint, line, outcome)) {
          ended = true;
          return false;
        }
      }
      // A line longer than any sane answer: the peer is not etcd.
      if (buffer.size() > (64u << 20)) return false;
      return !stop_.load();
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    client->send(req, res, err);
    {
      std::lock_guard lock(mutex_);
      current_ = nullptr;
    }
    if (ended) return outcome;
    // A refusal that came as one non-stream answer (e.g. a 400 with a JSON error).
    // (cpp-httplib reports a read error after such an answer's trailer: see postTo.)
    if (res.status > 0 && res.status != 200 && res.status != 503 && !buffer.empty()) {
      json j = json::parse(buffer, nullptr, false);
      Error e = etcdError(endpoint, j, res.status);
      if (e.code != 503) {
        fail(e);
        return Outcome::kEnd;
      }
    }
    return Outcome::kRetry;
  }

  // One answer of the stream; false ends this stream (`outcome` says whether to retry).
  bool handleLine(const std::string& endpoint, const std::string& line, Outcome& outcome) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      outcome = Outcome::kRetry;  // a garbled stream: open a new one
      return false;
    }
    Reader rd;
    if (const json* e = rd.field(j, "error")) {
      (void)e;
      Error err = etcdError(endpoint, j, 200);
      if (err.code == 503) {
        outcome = Outcome::kRetry;
      } else {
        fail(err);
        outcome = Outcome::kEnd;
      }
      return false;
    }
    const json& result = rd.object(j, "result");
    const int64_t revision = rd.i64(rd.object(result, "header"), "revision");
    const bool created = rd.boolean(result, "created");
    const bool canceled = rd.boolean(result, "canceled");
    const int64_t compacted = rd.i64(result, "compact_revision");
    const std::string reason = rd.str(result, "cancel_reason");
    std::vector<WatchEvent> events;
    for (const auto& e : rd.array(result, "events")) {
      WatchEvent ev;
      ev.type = rd.str(e, "type") == "DELETE" ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut;
      ev.kv = rd.kv(rd.object(e, "kv"));
      events.push_back(std::move(ev));
    }
    if (rd.bad) {
      outcome = Outcome::kRetry;
      return false;
    }
    if (created) {
      gotCreated_ = true;
      // "From now": what a resumed stream must start after is fixed by the first creation.
      if (next_ <= 0) next_ = revision + 1;
    }
    if (canceled) {
      if (compacted > 0) {
        fail(Error{"watch of '" + key_ + "' on " + endpoint + ": revision " +
                       std::to_string(next_) + " was compacted (the oldest kept is " +
                       std::to_string(compacted) + ")",
                   410});
        outcome = Outcome::kEnd;
      } else {
        outcome = Outcome::kRetry;  // e.g. the member lost its leader: try again
      }
      (void)reason;
      return false;
    }
    // Never deliver a revision twice: a resumed stream starts at next_, but keep the guarantee
    // even against a server that repeats itself.
    std::vector<WatchEvent> fresh;
    for (auto& ev : events) {
      if (ev.kv.modRevision >= next_) fresh.push_back(std::move(ev));
    }
    if (!fresh.empty()) {
      next_ = fresh.back().kv.modRevision + 1;
      if (onEvents_ && !stop_) onEvents_(std::move(fresh), revision);
    }
    return !stop_.load();
  }

  void fail(const Error& e) {
    if (onError_ && !stop_) onError_(e);
  }

  const EtcdOptions options_;
  size_t endpoint_;
  const std::string key_, rangeEnd_;
  int64_t next_;  // the first revision not yet delivered (0: not known yet, "from now")
  EtcdClient::OnEvents onEvents_;
  EtcdClient::OnWatchError onError_;
  bool gotCreated_ = false;

  std::mutex mutex_;
  std::condition_variable cv_;
  httplib::Client* current_ = nullptr;  // under mutex_
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Watch> EtcdClient::watch(const std::string& key, const std::string& rangeEnd,
                                         int64_t startRevision, OnEvents onEvents,
                                         OnWatchError onError) {
  return std::make_unique<WatchImpl>(options_, impl_->preferred.load(), key, rangeEnd,
                                     startRevision, std::move(onEvents), std::move(onError));
}

// ---------------------------------------------------------------------------------------------
// EtcdWorker

struct EtcdWorker::Impl {
  Impl(Reactor& reactor, EtcdClient& c) : client(c), handoff(reactor) {}

  EtcdClient& client;
  Handoff handoff;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::function<std::function<void()>(EtcdClient&)>> queue;  // under mutex
  bool stopping = false;                                                // under mutex
  std::atomic<size_t> pending{0};
  // Read and cleared on the reactor thread only: a result posted before the worker went is
  // dropped when it runs.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  std::thread thread;

  void loop() {
    for (;;) {
      std::function<std::function<void()>(EtcdClient&)> job;
      {
        std::unique_lock lock(mutex);
        cv.wait(lock, [this] { return stopping || !queue.empty(); });
        if (stopping) return;
        job = std::move(queue.front());
        queue.pop_front();
      }
      std::function<void()> done = job(client);
      handoff.post([this, alive = alive, done = std::move(done)]() mutable {
        if (!*alive) return;
        --pending;
        done();
      });
    }
  }
};

EtcdWorker::EtcdWorker(Reactor& reactor, EtcdClient& client)
    : impl_(std::make_unique<Impl>(reactor, client)) {
  impl_->thread = std::thread([this] { impl_->loop(); });
}

EtcdWorker::~EtcdWorker() {
  *impl_->alive = false;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    impl_->queue.clear();
  }
  impl_->cv.notify_all();
  impl_->handoff.close();
  // Waits for the call in progress, if any (bounded by the client's timeouts).
  impl_->thread.join();
}

void EtcdWorker::enqueue(std::function<std::function<void()>(EtcdClient&)> job) {
  ++impl_->pending;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->queue.push_back(std::move(job));
  }
  impl_->cv.notify_one();
}

size_t EtcdWorker::pending() const {
  return impl_->pending.load();
}

}  // namespace enjin::fleet
