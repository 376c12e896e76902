// A client of etcd's v3 API through its JSON gateway (HTTP/1.1 POSTs under /v3/, keys and values
// base64 in the JSON), over plain HTTP or TLS with a client certificate.
//
// Why the gateway and not gRPC: the gateway is part of every etcd 3.4 server (no extra
// process), speaks the same v3 API with the same semantics, and cpp-httplib (already used by the
// control plane) is all it needs; gRPC would add protobuf code generation and a second HTTP/2
// stack to the build for the handful of calls the fleet makes.
//
// Contracts:
// - Every call blocks its caller for at most `timeoutMs` per endpoint tried; never call one on a
//   reactor thread (EtcdWorker runs them on a thread of its own).
// - A call tries the endpoints in turn, starting with the last one that answered, and fails over
//   only on a transport failure (no connection, timeout) or a 503 (the member has no leader).
//   Any other answer from etcd (a failed compare, a missing lease) is the answer. A call that
//   failed on the transport may still have been applied (its answer was lost): writes that must
//   not happen twice are transactions with a compare.
// - An Error's code tells failures apart for callers: 503 = no endpoint could serve the request
//   (etcd unreachable or without quorum), 404 = the lease named does not exist (any more), 400 =
//   the request was refused as malformed, 410 = a watch's revision was compacted, 502 = an
//   answer that is not what etcd sends (not JSON, a field of the wrong type); the message names
//   the endpoint(s) and the cause. Nothing here throws on what a peer sends.
// - EtcdClient is thread-safe: calls on several threads each use their own connection (an idle
//   kept-alive one, or a new one).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin {
class Reactor;
}

namespace enjin::fleet {

struct EtcdOptions {
  // "http://10.0.0.1:2379" or "https://..."; at least one.
  std::vector<std::string> endpoints;
  // TLS (https:// endpoints): the CA that signed the members' certificates, and this client's
  // certificate and key (etcd's --client-cert-auth). Empty: no client certificate.
  std::string caFile, certFile, keyFile;
  int64_t timeoutMs = 1000;  // per request and endpoint: connect, write and read
};

struct KeyValue {
  std::string key, value;
  int64_t createRevision = 0, modRevision = 0, version = 0;
  int64_t lease = 0;
};

// One comparison of a transaction (etcd's Compare): target of `key` against a number or a value.
struct Compare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue, kLease };
  enum class Op { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kVersion;
  Op op = Op::kEqual;
  int64_t number = 0;  // for every target but kValue
  std::string value;   // for kValue

  // The key does not exist (version 0), or holds exactly `value`, or was last written at `rev`.
  static Compare absent(std::string key);
  static Compare valueIs(std::string key, std::string value);
  static Compare modRevisionIs(std::string key, int64_t rev);
};

// One operation of a transaction's branch (etcd's RequestOp).
struct TxnOp {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;     // kPut
  int64_t lease = 0;     // kPut: 0 = no lease
  std::string rangeEnd;  // kDelete / kGet: empty = the one key

  static TxnOp put(std::string key, std::string value, int64_t lease = 0);
  static TxnOp del(std::string key);
  static TxnOp get(std::string key);
};

struct TxnResult {
  bool succeeded = false;  // the compares held: the success branch ran
  int64_t revision = 0;    // the store's revision after the transaction
  // For each kGet of the branch that ran, in order: what it read.
  std::vector<std::vector<KeyValue>> reads;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision the read saw (a watch may start after it)
};

// One event of a watch.
struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for kDelete: the key and its mod revision (the delete's revision)
};

// The end of a prefix range: the key after every key that starts with `prefix` ("/a/" -> "/a0").
std::string prefixEnd(const std::string& prefix);

class EtcdClient;

// A watch on a key range, on a thread of its own, from a start revision on. Events arrive in
// revision order. After a broken stream it reconnects (any endpoint) and resumes after the last
// revision it delivered, so no event is lost or repeated; if etcd has compacted that revision
// away, onError hears it (code 410) and the watch ends: the caller must read the range again
// and start a new watch. Destroying the Watch ends it at once (it shuts its socket down), after
// the callback in progress if any: no callback runs after the destructor returns, and a callback
// must not destroy its own Watch. A Watch keeps its own copy of the options: it may outlive its
// client. A stream silent for 10 s is opened again (resuming), which bounds how long a member
// that accepts connections but never answers can hold a watch.
class Watch {
 public:
  virtual ~Watch() = default;
};

class EtcdClient {
 public:
  static Result<std::unique_ptr<EtcdClient>> create(EtcdOptions options);
  ~EtcdClient();

  // KV
  Result<int64_t> put(const std::string& key, const std::string& value, int64_t lease = 0);
  Result<RangeResult> get(const std::string& key);
  Result<RangeResult> range(const std::string& key, const std::string& rangeEnd);
  Result<RangeResult> prefix(const std::string& prefix) { return range(prefix, prefixEnd(prefix)); }
  // Deletes the key (or [key, rangeEnd)); returns how many keys went.
  Result<int64_t> del(const std::string& key, const std::string& rangeEnd = {});
  Result<TxnResult> txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                        const std::vector<TxnOp>& failure = {});

  // Leases. grant returns the lease id; keepAlive refreshes it and returns the TTL etcd granted
  // again (404 when the lease expired or was revoked).
  Result<int64_t> leaseGrant(int64_t ttlSeconds);
  Result<int64_t> leaseKeepAlive(int64_t lease);
  Status leaseRevoke(int64_t lease);

  // The member's view of the cluster: whether it has a leader (a member cut off from the
  // majority answers this without one). For fleet status and for telling "etcd down" apart
  // from "no quorum".
  struct MemberStatus {
    std::string endpoint;
    std::string version;
    uint64_t leader = 0;  // 0: no leader known
    uint64_t memberId = 0;
    int64_t raftTerm = 0;
  };
  Result<MemberStatus> status(const std::string& endpoint);

  using OnEvents = std::function<void(std::vector<WatchEvent> events, int64_t revision)>;
  using OnWatchError = std::function<void(const Error& error)>;
  // Watches [key, rangeEnd) (rangeEnd empty: the one key) from `startRevision` (0: from the
  // revision etcd reports when the watch is first established). Callbacks run on the watch's
  // thread. Failures to reach etcd are retried (every 100 ms .. 1 s) and are not errors;
  // onError hears only what ends the watch (compaction, a refused request).
  std::unique_ptr<Watch> watch(const std::string& key, const std::string& rangeEnd,
                               int64_t startRevision, OnEvents onEvents, OnWatchError onError);

  const EtcdOptions& options() const { return options_; }

 private:
  explicit EtcdClient(EtcdOptions options);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  EtcdOptions options_;
};

// Runs etcd calls on a thread of its own, in order, and hands each result to the reactor thread
// (a Handoff): what the reactor-side fleet code uses, so that no etcd round trip ever blocks the
// reactor. Create and destroy on the reactor thread; a result whose worker was destroyed is
// dropped (its callback never runs). The destructor drops the calls not started and waits for
// the one in progress (bounded by the client's timeouts), so it may block the reactor that long.
//
//   worker.run<int64_t>([](EtcdClient& c) { return c.leaseGrant(2); },
//                       [this](Result<int64_t> lease) { ... on the reactor ... });
class EtcdWorker {
 public:
  EtcdWorker(Reactor& reactor, EtcdClient& client);
  ~EtcdWorker();
  EtcdWorker(const EtcdWorker&) = delete;
  EtcdWorker& operator=(const EtcdWorker&) = delete;

  template <class T>
  void run(std::function<Result<T>(EtcdClient&)> call, std::function<void(Result<T>)> done) {
    enqueue([call = std::move(call), done = std::move(done)](EtcdClient& c) mutable {
      auto r = std::make_shared<Result<T>>(call(c));
      return std::function<void()>([r, done = std::move(done)]() mutable { done(std::move(*r)); });
    });
  }
  // Calls queued and not yet finished.
  size_t pending() const;

 private:
  void enqueue(std::function<std::function<void()>(EtcdClient&)> job);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace enjin::fleet
