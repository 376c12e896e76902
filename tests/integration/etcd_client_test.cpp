// The etcd client against a real etcd 3.4 on loopback (one member per test, its own data dir and
// ports), and against a raw TCP fake for answers no etcd sends.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "enjin/base/clock.hpp"
#include "enjin/fleet/etcd.hpp"
#include "enjin/reactor/reactor.hpp"
#include "fakes/free_port.hpp"
#include "fakes/temp_dir.hpp"
#include "fakes/wait.hpp"

namespace enjin::fleet {
namespace {

using enjin::testing::freeTcpPort;
using enjin::testing::TempDir;
using enjin::testing::waitFor;

constexpr const char* kEtcd = "/usr/bin/etcd";

bool haveEtcd() {
  return ::access(kEtcd, X_OK) == 0;
}

int64_t msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t)
      .count();
}

// One etcd member, owned: started by start(), SIGKILLed and reaped by kill() or the destructor
// (and by the kernel if this test process dies: PR_SET_PDEATHSIG).
class EtcdServer {
 public:
  struct Tls {
    std::string cert, key, ca;
  };

  EtcdServer(std::string dir, std::optional<Tls> tls = std::nullopt)
      : dir_(std::move(dir)),
        tls_(std::move(tls)),
        port_(freeTcpPort()),
        peerPort_(freeTcpPort()) {}
  ~EtcdServer() { kill(); }
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  std::string endpoint() const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  }

  void start() {
    const std::string peer = "http://127.0.0.1:" + std::to_string(peerPort_);
    std::vector<std::string> args = {kEtcd,
                                     "--name",
                                     "t",
                                     "--data-dir",
                                     dir_ + "/data",
                                     "--listen-client-urls",
                                     endpoint(),
                                     "--advertise-client-urls",
                                     endpoint(),
                                     "--listen-peer-urls",
                                     peer,
                                     "--initial-advertise-peer-urls",
                                     peer,
                                     "--initial-cluster",
                                     "t=" + peer};
    if (tls_) {
      for (const auto& a :
           {std::string("--cert-file"), tls_->cert, std::string("--key-file"), tls_->key,
            std::string("--trusted-ca-file"), tls_->ca, std::string("--client-cert-auth")}) {
        args.push_back(a);
      }
    }
    const std::string log = dir_ + "/etcd.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = std::fopen(log.c_str(), "a");
      if (f) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(kEtcd, argv.data());
      ::_exit(127);
    }
  }

  // Waits until the member answers `client` with a leader (bounded).
  bool waitHealthy(EtcdClient& client, int timeoutMs = 10000) {
    return waitFor(
        [&] {
          auto s = client.status(endpoint());
          return s.ok() && s->leader != 0;
        },
        timeoutMs);
  }

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  std::string log() const {
    std::ifstream in(dir_ + "/etcd.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string dir_;
  std::optional<Tls> tls_;
  int port_, peerPort_;
  pid_t pid_ = -1;
};

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!haveEtcd()) GTEST_SKIP() << kEtcd << " is missing (Debian package etcd-server)";
    server_ = std::make_unique<EtcdServer>(dir_.path());
    server_->start();
    auto c = EtcdClient::create(EtcdOptions{{server_->endpoint()}, {}, {}, {}, 1000});
    ASSERT_TRUE(c.ok()) << c.error().message;
    client_ = std::move(*c);
    ASSERT_TRUE(server_->waitHealthy(*client_)) << server_->log();
  }

  TempDir dir_;
  std::unique_ptr<EtcdServer> server_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdClientTest, PutGetPrefixAndDelete) {
  auto r1 = client_->put("/a/1", "one");
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  auto r2 = client_->put("/a/2", std::string("two\0bytes\xff", 10));
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_GT(*r2, *r1);
  ASSERT_TRUE(client_->put("/b/1", "other").ok());

  auto g = client_->get("/a/1");
  ASSERT_TRUE(g.ok()) << g.error().message;
  ASSERT_EQ(g->kvs.size(), 1u);
  EXPECT_EQ(g->kvs[0].value, "one");
  EXPECT_EQ(g->kvs[0].version, 1);
  EXPECT_EQ(g->kvs[0].createRevision, *r1);
  EXPECT_EQ(g->kvs[0].modRevision, *r1);
  EXPECT_GE(g->revision, *r2);

  auto missing = client_->get("/a/none");
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->kvs.empty());

  auto p = client_->prefix("/a/");
  ASSERT_TRUE(p.ok()) << p.error().message;
  ASSERT_EQ(p->kvs.size(), 2u);
  EXPECT_EQ(p->kvs[0].key, "/a/1");
  EXPECT_EQ(p->kvs[1].key, "/a/2");
  EXPECT_EQ(p->kvs[1].value, std::string("two\0bytes\xff", 10));

  auto d = client_->del("/a/", prefixEnd("/a/"));
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, 2);
  EXPECT_TRUE(client_->prefix("/a/")->kvs.empty());
  EXPECT_EQ(client_->get("/b/1")->kvs.size(), 1u);
  EXPECT_EQ(*client_->del("/a/1"), 0);

  EXPECT_EQ(prefixEnd("/a/"), "/a0");
  EXPECT_EQ(prefixEnd(std::string("a\xff", 2)), "b");
}

TEST_F(EtcdClientTest, TxnCompareAndSwapAndReads) {
  // Create-if-absent succeeds once.
  auto first = client_->txn({Compare::absent("/lock")}, {TxnOp::put("/lock", "me")});
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_TRUE(first->succeeded);
  auto second =
      client_->txn({Compare::absent("/lock")}, {TxnOp::put("/lock", "you")}, {TxnOp::get("/lock")});
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE(second->succeeded);
  ASSERT_EQ(second->reads.size(), 1u);
  ASSERT_EQ(second->reads[0].size(), 1u);
  EXPECT_EQ(second->reads[0][0].value, "me");
  const int64_t rev = second->reads[0][0].modRevision;
  EXPECT_EQ(rev, first->revision);

  // A CAS on the mod revision: the first writer with the right revision wins, the stale one
  // loses and sees the new value.
  auto cas = client_->txn({Compare::modRevisionIs("/lock", rev)},
                          {TxnOp::put("/lock", "next"), TxnOp::get("/lock")});
  ASSERT_TRUE(cas.ok()) << cas.error().message;
  EXPECT_TRUE(cas->succeeded);
  ASSERT_EQ(cas->reads.size(), 1u);
  EXPECT_EQ(cas->reads[0].at(0).value, "next");
  auto stale = client_->txn({Compare::modRevisionIs("/lock", rev)}, {TxnOp::put("/lock", "lost")},
                            {TxnOp::get("/lock")});
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->succeeded);
  EXPECT_EQ(stale->reads.at(0).at(0).value, "next");

  // Value compare, delete in a branch, a ranged get.
  ASSERT_TRUE(client_->put("/r/1", "x").ok());
  ASSERT_TRUE(client_->put("/r/2", "y").ok());
  TxnOp all = TxnOp::get("/r/");
  all.rangeEnd = prefixEnd("/r/");
  auto byValue = client_->txn({Compare::valueIs("/lock", "next")}, {TxnOp::del("/lock"), all});
  ASSERT_TRUE(byValue.ok()) << byValue.error().message;
  EXPECT_TRUE(byValue->succeeded);
  ASSERT_EQ(byValue->reads.size(), 1u);
  EXPECT_EQ(byValue->reads[0].size(), 2u);
  EXPECT_TRUE(client_->get("/lock")->kvs.empty());
}

TEST_F(EtcdClientTest, LeaseKeepAliveExtendsItAndExpiryDeletesItsKeys) {
  auto lease = client_->leaseGrant(2);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(client_->put("/host/h1", "alive", *lease).ok());
  EXPECT_EQ(client_->get("/host/h1")->kvs.at(0).lease, *lease);

  // Kept alive for 3.5 s (longer than its TTL), the key stays.
  const auto t0 = std::chrono::steady_clock::now();
  while (msSince(t0) < 3500) {
    auto ttl = client_->leaseKeepAlive(*lease);
    ASSERT_TRUE(ttl.ok()) << ttl.error().message;
    EXPECT_GE(*ttl, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // the keepalive cadence
  }
  EXPECT_EQ(client_->get("/host/h1")->kvs.size(), 1u);

  // Left alone, the lease expires and takes the key with it.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_TRUE(waitFor([&] { return client_->get("/host/h1")->kvs.empty(); }, 6000));
  EXPECT_GE(msSince(t1), 1000);  // not before the TTL could have run out
  auto gone = client_->leaseKeepAlive(*lease);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, 404) << gone.error().message;
}

TEST_F(EtcdClientTest, LeaseRevokeDeletesItsKeysAndAGoneLeaseIs404) {
  auto lease = client_->leaseGrant(30);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(client_->put("/host/h2", "alive", *lease).ok());
  ASSERT_TRUE(client_->leaseRevoke(*lease).ok());
  EXPECT_TRUE(client_->get("/host/h2")->kvs.empty());
  auto again = client_->leaseKeepAlive(*lease);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, 404);
  auto revoke = client_->leaseRevoke(*lease);
  ASSERT_FALSE(revoke.ok());
  EXPECT_EQ(revoke.error().code, 404) << revoke.error().message;
  // A put under a lease that does not exist is refused, and says so.
  auto put = client_->put("/host/h3", "x", *lease);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, 404);
  EXPECT_NE(put.error().message.find("lease not found"), std::string::npos) << put.error().message;
}

// What a watch delivered, in order, for assertions from the test thread.
struct Recorder {
  std::mutex m;
  std::vector<WatchEvent> events;
  std::vector<Error> errors;

  EtcdClient::OnEvents onEvents() {
    return [this](std::vector<WatchEvent> evs, int64_t) {
      std::lock_guard lock(m);
      for (auto& e : evs) events.push_back(std::move(e));
    };
  }
  EtcdClient::OnWatchError onError() {
    return [this](const Error& e) {
      std::lock_guard lock(m);
      errors.push_back(e);
    };
  }
  size_t count() {
    std::lock_guard lock(m);
    return events.size();
  }
  std::vector<WatchEvent> snapshot() {
    std::lock_guard lock(m);
    return events;
  }
};

TEST_F(EtcdClientTest, WatchDeliversPutsAndDeletesInOrder) {
  auto start = client_->put("/w/start", "");
  ASSERT_TRUE(start.ok());
  Recorder rec;
  auto watch = client_->watch("/w/", prefixEnd("/w/"), *start + 1, rec.onEvents(), rec.onError());
  ASSERT_TRUE(client_->put("/w/1", "a").ok());
  ASSERT_TRUE(client_->put("/w/2", "b").ok());
  ASSERT_TRUE(client_->put("/other", "not watched").ok());
  ASSERT_TRUE(client_->del("/w/1").ok());
  ASSERT_TRUE(client_->put("/w/2", "c").ok());
  ASSERT_TRUE(waitFor([&] { return rec.count() >= 4; }, 5000));
  auto evs = rec.snapshot();
  ASSERT_EQ(evs.size(), 4u);
  EXPECT_EQ(evs[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(evs[0].kv.key, "/w/1");
  EXPECT_EQ(evs[0].kv.value, "a");
  EXPECT_EQ(evs[1].kv.key, "/w/2");
  EXPECT_EQ(evs[2].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(evs[2].kv.key, "/w/1");
  EXPECT_EQ(evs[3].kv.value, "c");
  EXPECT_EQ(evs[3].kv.version, 2);
  for (size_t i = 1; i < evs.size(); ++i)
    EXPECT_GT(evs[i].kv.modRevision, evs[i - 1].kv.modRevision);
  watch.reset();  // ends promptly; no callback after this
  const size_t n = rec.count();
  ASSERT_TRUE(client_->put("/w/3", "after").ok());
  EXPECT_EQ(rec.count(), n);
  EXPECT_TRUE(rec.errors.empty());
}

TEST_F(EtcdClientTest, WatchResumesWithoutLossOrDuplicatesAcrossAnEtcdRestart) {
  auto start = client_->put("/w/start", "");
  ASSERT_TRUE(start.ok());
  Recorder rec;
  auto watch = client_->watch("/w/", prefixEnd("/w/"), *start + 1, rec.onEvents(), rec.onError());
  ASSERT_TRUE(client_->put("/w/1", "before").ok());
  ASSERT_TRUE(client_->put("/w/2", "before").ok());
  ASSERT_TRUE(waitFor([&] { return rec.count() >= 2; }, 5000));

  server_->kill();  // SIGKILL: the stream breaks without a goodbye
  ASSERT_TRUE(client_->put("/w/lost", "x").error().code == 503);
  server_->start();
  ASSERT_TRUE(server_->waitHealthy(*client_)) << server_->log();
  ASSERT_TRUE(client_->put("/w/3", "after").ok());
  ASSERT_TRUE(client_->del("/w/1").ok());
  ASSERT_TRUE(client_->put("/w/end", "after").ok());
  ASSERT_TRUE(waitFor(
      [&] {
        auto evs = rec.snapshot();
        return !evs.empty() && evs.back().kv.key == "/w/end";
      },
      8000))
      << rec.count() << " events";
  auto evs = rec.snapshot();
  std::vector<std::string> got;
  for (const auto& e : evs)
    got.push_back((e.type == WatchEvent::Type::kDelete ? "-" : "+") + e.kv.key);
  EXPECT_EQ(got, (std::vector<std::string>{"+/w/1", "+/w/2", "+/w/3", "-/w/1", "+/w/end"}));
  for (size_t i = 1; i < evs.size(); ++i)
    EXPECT_GT(evs[i].kv.modRevision, evs[i - 1].kv.modRevision);
  EXPECT_TRUE(rec.errors.empty());
}

TEST_F(EtcdClientTest, AWatchFromACompactedRevisionEndsWith410) {
  auto first = client_->put("/c/1", "a");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(client_->put("/c/1", "b").ok());
  auto last = client_->put("/c/1", "c");
  ASSERT_TRUE(last.ok());
  // Compaction is no call of the client: etcdctl does it.
  const std::string cmd = "ETCDCTL_API=3 etcdctl --endpoints=" + server_->endpoint() +
                          " compaction " + std::to_string(*last) + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  Recorder rec;
  auto watch = client_->watch("/c/", prefixEnd("/c/"), *first, rec.onEvents(), rec.onError());
  ASSERT_TRUE(waitFor(
      [&] {
        std::lock_guard lock(rec.m);
        return !rec.errors.empty();
      },
      5000));
  std::lock_guard lock(rec.m);
  EXPECT_EQ(rec.errors[0].code, 410) << rec.errors[0].message;
  EXPECT_NE(rec.errors[0].message.find("compacted"), std::string::npos);
  EXPECT_TRUE(rec.events.empty());
}

// A loopback port that accepts connections into its backlog and never answers.
class BlackHole {
 public:
  BlackHole() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~BlackHole() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(EtcdClientTest, FailsOverPastADeadEndpoint) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(freeTcpPort());
  BlackHole hole;
  const std::string silent = "http://127.0.0.1:" + std::to_string(hole.port());
  auto c = EtcdClient::create(EtcdOptions{{dead, silent, server_->endpoint()}, {}, {}, {}, 500});
  ASSERT_TRUE(c.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto put = (*c)->put("/f/1", "x");
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_LT(msSince(t0), 3000);
  // The endpoint that answered is tried first from then on: no more timeouts.
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*c)->get("/f/1").ok());
  EXPECT_LT(msSince(t1), 400);
  // A watch starting at a dead endpoint moves on too.
  Recorder rec;
  auto watch = (*c)->watch("/f/", prefixEnd("/f/"), *put, rec.onEvents(), rec.onError());
  EXPECT_TRUE(waitFor([&] { return rec.count() == 1; }, 5000));
}

TEST(EtcdClientUnreachableTest, AllEndpointsDeadIs503WithinABoundedTimeNamingThem) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(freeTcpPort());
  BlackHole hole;
  const std::string silent = "http://127.0.0.1:" + std::to_string(hole.port());
  auto c = EtcdClient::create(EtcdOptions{{dead, silent}, {}, {}, {}, 300});
  ASSERT_TRUE(c.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto put = (*c)->put("/k", "v");
  const int64_t took = msSince(t0);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, 503);
  EXPECT_NE(put.error().message.find(dead), std::string::npos) << put.error().message;
  EXPECT_NE(put.error().message.find(silent), std::string::npos) << put.error().message;
  EXPECT_LT(took, 1500) << put.error().message;
  auto ka = (*c)->leaseKeepAlive(7);
  ASSERT_FALSE(ka.ok());
  EXPECT_EQ(ka.error().code, 503);  // not 404: nobody said the lease is gone

  EXPECT_FALSE(EtcdClient::create(EtcdOptions{}).ok());
  EXPECT_FALSE(EtcdClient::create(EtcdOptions{{"127.0.0.1:2379"}, {}, {}, {}, 300}).ok());
}

TEST(EtcdClientTlsTest, ClientCertificateWorksAndItsAbsenceIsAClearError) {
  if (!haveEtcd()) GTEST_SKIP() << kEtcd << " is missing (Debian package etcd-server)";
  TempDir dir;
  const std::string d = dir.path();
  std::ofstream(d + "/server.ext") << "subjectAltName=IP:127.0.0.1\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n";
  std::ofstream(d + "/client.ext") << "extendedKeyUsage=clientAuth\n";
  const std::string newKey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
  const std::string cmds =
      "cd " + d + " && openssl req -x509 " + newKey + "-days 1 -subj /CN=test-ca -keyout ca.key " +
      "-out ca.crt && " + "openssl req " + newKey +
      "-subj /CN=etcd -keyout server.key -out server.csr && " +
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 " +
      "-extfile server.ext -out server.crt && " + "openssl req " + newKey +
      "-subj /CN=client -keyout client.key -out client.csr && " +
      "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 " +
      "-extfile client.ext -out client.crt";
  ASSERT_EQ(std::system(("(" + cmds + ") >" + d + "/openssl.log 2>&1").c_str()), 0);

  EtcdServer server(d, EtcdServer::Tls{d + "/server.crt", d + "/server.key", d + "/ca.crt"});
  server.start();
  auto c = EtcdClient::create(
      EtcdOptions{{server.endpoint()}, d + "/ca.crt", d + "/client.crt", d + "/client.key", 1000});
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE(server.waitHealthy(**c)) << server.log();
  auto put = (*c)->put("/tls", "yes");
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_EQ((*c)->get("/tls")->kvs.at(0).value, "yes");

  auto anonymous =
      EtcdClient::create(EtcdOptions{{server.endpoint()}, d + "/ca.crt", {}, {}, 1000});
  ASSERT_TRUE(anonymous.ok());
  auto refused = (*anonymous)->get("/tls");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, 503);
  EXPECT_NE(refused.error().message.find(server.endpoint()), std::string::npos);
  EXPECT_NE(refused.error().message.find("certificate"), std::string::npos)
      << refused.error().message;

  // A CA that did not sign the server's certificate: the server is not trusted.
  std::ofstream(d + "/other.ext") << "\n";
  ASSERT_EQ(std::system(("cd " + d + " && openssl req -x509 " + newKey +
                         "-days 1 -subj /CN=other -keyout other.key -out other.crt >/dev/null 2>&1")
                            .c_str()),
            0);
  auto untrusted = EtcdClient::create(EtcdOptions{
      {server.endpoint()}, d + "/other.crt", d + "/client.crt", d + "/client.key", 1000});
  ASSERT_TRUE(untrusted.ok());
  auto bad = (*untrusted)->get("/tls");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("certificate"), std::string::npos) << bad.error().message;
}

TEST_F(EtcdClientTest, WorkerHandsResultsToTheReactorThreadInOrder) {
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok());
  EtcdWorker worker(**reactor, *client_);
  std::vector<int64_t> revisions;
  std::vector<std::thread::id> threads;
  std::optional<Result<RangeResult>> read;
  for (int i = 0; i < 3; ++i) {
    worker.run<int64_t>([i](EtcdClient& c) { return c.put("/wk/" + std::to_string(i), "v"); },
                        [&](Result<int64_t> r) {
                          ASSERT_TRUE(r.ok()) << r.error().message;
                          revisions.push_back(*r);
                          threads.push_back(std::this_thread::get_id());
                        });
  }
  worker.run<RangeResult>([](EtcdClient& c) { return c.prefix("/wk/"); },
                          [&](Result<RangeResult> r) { read = std::move(r); });
  EXPECT_EQ(worker.pending(), 4u);
  const auto t0 = std::chrono::steady_clock::now();
  while (!read && msSince(t0) < 5000) (*reactor)->runOnce(100);
  ASSERT_TRUE(read.has_value());
  ASSERT_TRUE(read->ok());
  EXPECT_EQ((*read)->kvs.size(), 3u);
  ASSERT_EQ(revisions.size(), 3u);
  EXPECT_LT(revisions[0], revisions[1]);
  EXPECT_LT(revisions[1], revisions[2]);
  for (auto t : threads) EXPECT_EQ(t, std::this_thread::get_id());
  EXPECT_EQ(worker.pending(), 0u);
}

TEST_F(EtcdClientTest, ResultsOfADestroyedWorkerAreDropped) {
  SystemClock clock;
  auto reactor = Reactor::create(clock);
  ASSERT_TRUE(reactor.ok());
  std::atomic<bool> started{false}, finished{false};
  bool delivered = false;
  auto worker = std::make_unique<EtcdWorker>(**reactor, *client_);
  worker->run<int64_t>(
      [&](EtcdClient& c) {
        started = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a slow round trip
        auto r = c.put("/wk/slow", "v");
        finished = true;
        return r;
      },
      [&](Result<int64_t>) { delivered = true; });
  worker->run<int64_t>([&](EtcdClient& c) { return c.put("/wk/queued", "v"); },
                       [&](Result<int64_t>) { delivered = true; });
  ASSERT_TRUE(waitFor([&] { return started.load(); }, 2000));
  worker.reset();  // mid-call: waits for the call, drops its result and the queued call
  EXPECT_TRUE(finished);
  for (int i = 0; i < 5; ++i) (*reactor)->runOnce(20);
  EXPECT_FALSE(delivered);
  EXPECT_EQ(client_->get("/wk/slow")->kvs.size(), 1u);
  EXPECT_TRUE(client_->get("/wk/queued")->kvs.empty());
}

// A raw TCP server on loopback that answers each connection with the next canned bytes (read
// after the request's headers) and closes it.
class FakeServer {
 public:
  explicit FakeServer(std::vector<std::string> answers) : answers_(std::move(answers)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (const auto& answer : answers_) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos) {
          const ssize_t n = ::read(c, buf, sizeof buf);
          if (n <= 0) break;
          req.append(buf, size_t(n));
        }
        (void)!::write(c, answer.data(), answer.size());
        ::shutdown(c, SHUT_RDWR);
        ::close(c);
      }
    });
  }
  ~FakeServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  std::vector<std::string> answers_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

std::string http200(const std::string& body, size_t claimedLength = 0) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
         "Content-Length: " +
         std::to_string(claimedLength ? claimedLength : body.size()) + "\r\n\r\n" + body;
}

TEST(EtcdClientHostileTest, MalformedAnswersAreErrorsNeverThrowsOrCrashes) {
  const std::vector<std::string> answers = {
      http200("not json at all"),
      http200("{\"header\":{\"revision\":", 200),  // truncated: the peer closes early
      http200("[1,2,3]"),
      http200("{\"header\":{\"revision\":{}}}"),
      http200("{\"kvs\":[{\"key\":\"!!!not base64\"}]}"),
      http200("{\"kvs\":\"nope\"}"),
      http200("{\"result\":{\"TTL\":\"12x\"}}"),
      http200("{\"succeeded\":\"yes\"}"),
      "garbage that is not HTTP\r\n\r\n",
      "HTTP/1.1 500 Internal\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"a\":",
      http200("{\"ID\":\"99999999999999999999999\"}"),
  };
  FakeServer fake(answers);
  auto c = EtcdClient::create(EtcdOptions{{fake.endpoint()}, {}, {}, {}, 1000});
  ASSERT_TRUE(c.ok());
  EtcdClient& client = **c;
  EXPECT_FALSE(client.put("/k", "v").ok());
  EXPECT_FALSE(client.put("/k", "v").ok());
  EXPECT_FALSE(client.get("/k").ok());
  EXPECT_FALSE(client.put("/k", "v").ok());
  EXPECT_FALSE(client.get("/k").ok());
  EXPECT_FALSE(client.get("/k").ok());
  EXPECT_FALSE(client.leaseKeepAlive(1).ok());
  EXPECT_FALSE(client.txn({Compare::absent("/k")}, {}).ok());
  auto notHttp = client.get("/k");
  ASSERT_FALSE(notHttp.ok());
  EXPECT_NE(notHttp.error().message.find(fake.endpoint()), std::string::npos);
  auto e500 = client.get("/k");
  ASSERT_FALSE(e500.ok());
  EXPECT_EQ(e500.error().code, 500) << e500.error().message;
  EXPECT_FALSE(client.leaseGrant(5).ok());
}

}  // namespace
}  // namespace enjin::fleet
