// Test hosts: an N-host fleet made of network namespaces on this machine, for tests of more than
// one host (docs/architecture.md, "Test hosts").
//
// Layout of a fleet with tag T (`<pid>x<counter>`, unique per process and fleet, so parallel
// ctest runs never collide):
// - `ejT-sw`: a "switch" namespace holding the bridge `br0` and one port `vI` per host;
// - `ejT-hI` (I = 1..N): a host namespace with `lo` and `eth0` (the peer of `vI`), address
//   `10.A.B.I/24`, A and B derived from the tag. A host has no route but its /24 and loopback,
//   so nothing it runs can reach an address outside the fleet.
// Every link is made inside the fleet's namespaces (the veth pairs are created in the switch
// namespace with their peer put straight into the host's), so the machine's own namespace is
// never touched: deleting the namespaces deletes every link.
//
// Ownership and cleanup: the fleet owns every process it spawns and everything left running
// inside its namespaces (grandchildren too: the constructor makes this process a child
// subreaper, so orphans of the hosts are reparented to it and reaped here, never left as
// zombies). teardown() (also run by the destructor) SIGKILLs and reaps every process inside the
// namespaces, deletes the namespaces and removes the fleet's temp dir. A fleet's children carry
// PR_SET_PDEATHSIG(SIGKILL), so they die with the test process even when it crashes; the
// namespaces and temp dir such a crash leaves are swept by the next fleet made on this machine
// (names carry the creating pid; only those of dead pids are removed).
//
// Not thread-safe: one thread drives a fleet (runIn's thread is joined before it returns).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin::testing {

// What exec() and runCommand() return: the raw wait status and what the command wrote.
struct CommandResult {
  int status = -1;  // as waitpid(2) gives it; -1: killed by us at the deadline
  std::string out, err;

  bool ok() const;               // exited with code 0
  int exitCode() const;          // the exit code, or 128 + signal, or -1 (timed out)
  std::string describe() const;  // "exit 1: <stderr>" for messages
};

// Runs argv (argv[0] a path or a name looked up in PATH) in the namespace `netnsFd` (-1: this
// process's), without a shell; stdout and stderr captured apart. Killed (SIGKILL) at the
// deadline. Fails only when it cannot start; a non-zero exit is a CommandResult.
Result<CommandResult> runCommand(const std::vector<std::string>& argv, int timeoutMs = 10000,
                                 int netnsFd = -1, const std::vector<std::string>& env = {});

// One process the fleet spawned inside a host. Reaped exactly once: pid() is 0 from then on and
// waitStatus() holds how it ended.
class HostProcess {
 public:
  HostProcess(std::string host, std::string name, pid_t pid, std::string logPath)
      : host_(std::move(host)), name_(std::move(name)), pid_(pid), logPath_(std::move(logPath)) {}
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  const std::string& host() const { return host_; }
  const std::string& name() const { return name_; }
  const std::string& logPath() const { return logPath_; }
  pid_t pid() const { return pid_; }
  // The pid it had, also after it was reaped (for tests that check it is gone).
  pid_t originalPid() const { return originalPid_; }
  std::optional<int> waitStatus() const { return waitStatus_; }

  // Reaps it if it has exited; true while it runs.
  bool running();
  // Sends `sig` (to the process only); false once reaped.
  bool signal(int sig);
  // Waits until it exits (reaping it), at most `timeoutMs`; its wait status, nullopt if it still
  // runs.
  std::optional<int> wait(int timeoutMs);
  // SIGTERM, then SIGKILL after `graceMs`; reaped when this returns.
  void stop(int graceMs = 3000);
  // The log file's contents (stdout and stderr of the process).
  std::string log() const;

 private:
  std::string host_, name_;
  pid_t pid_;
  pid_t originalPid_ = pid_;
  std::string logPath_;
  std::optional<int> waitStatus_;
};

struct FleetOptions {
  int hosts = 3;
  // etcd's raft timing (ms). A lost leader means no renewal until the others elect a new one
  // (one to two election timeouts): with the fleet's 1 s TTL, whose fence comes 0.9 s after the
  // last renewal, an election must end well inside that (docs/fleet.md, "etcd's timing").
  int etcdHeartbeatMs = 20;
  int etcdElectionMs = 200;
  // Bound on waiting for etcd to become healthy.
  int etcdReadyTimeoutMs = 20000;
  // etcd over TLS, as in production: create() makes a CA, a certificate per member and one per
  // host's client with `openssl`; the members serve https:// client URLs, require a client
  // certificate signed by the CA (--client-cert-auth) and speak TLS to each other too.
  bool tls = false;
};

// The files of a TLS fleet (FleetOptions::tls), per host, all under the fleet's temp dir.
struct FleetTlsFiles {
  std::string ca;                     // the CA's certificate: trusted by members and clients
  std::string serverCert, serverKey;  // the member's: SAN the host's address and 127.0.0.1
  std::string clientCert, clientKey;  // the host's client (ring0d, etcdctl): CN = the host
};

class TestFleet {
 public:
  // Why fleets cannot be made here (not root, no `ip`, namespaces refused), or nullopt. Probed
  // once per process by making and deleting a namespace. Tests GTEST_SKIP with it.
  static std::optional<std::string> unavailableReason();
  // As above, plus the etcd binaries (/usr/bin/etcd, /usr/bin/etcdctl).
  static std::optional<std::string> etcdUnavailableReason();

  // Sweeps what crashed earlier runs left, then makes the namespaces, bridge, links and
  // addresses. Every failure names the `ip` command and its stderr; what was made before it is
  // torn down again.
  static Result<std::unique_ptr<TestFleet>> create(const FleetOptions& options = {});

  ~TestFleet();
  TestFleet(const TestFleet&) = delete;
  TestFleet& operator=(const TestFleet&) = delete;

  const std::string& tag() const { return tag_; }
  // "h1".."hN".
  const std::vector<std::string>& hosts() const { return hosts_; }
  // The namespace of a host ("h2" → "ej<tag>-h2") and of the switch.
  std::string netnsOf(const std::string& host) const;
  std::string switchNetns() const { return "ej" + tag_ + "-sw"; }
  // Every namespace of this fleet (switch and hosts).
  std::vector<std::string> netnsNames() const;
  std::string addressOf(const std::string& host) const;  // "10.A.B.I"
  const std::string& dir() const { return dir_; }        // the temp dir, removed at teardown

  // Starts argv inside the host's namespace, its own process group, a clean environment (`env`,
  // "K=V" each, plus PATH), stdout and stderr appended to `<dir>/logs/<logName>.log`. Fails if
  // the exec fails (reported back through a close-on-exec pipe).
  Result<HostProcess*> spawn(const std::string& host, const std::vector<std::string>& argv,
                             const std::vector<std::string>& env, const std::string& logName);
  // Runs argv inside the host's namespace to completion (bounded) and returns what it wrote.
  Result<CommandResult> exec(const std::string& host, const std::vector<std::string>& argv,
                             int timeoutMs = 10000);
  // Runs `fn` on a thread that has entered the host's network namespace, and joins it: sockets
  // made in `fn` (cpp-httplib clients too) live in that host. `fn` must not spawn processes.
  Status runIn(const std::string& host, const std::function<void()>& fn);

  // etcd: one member per host, named like the host, client URL http://ADDR:2379 (also
  // http://127.0.0.1:2379 inside the host), peers on :2380, a static initial cluster of all
  // hosts, data in <dir>/etcd-<host>. startEtcd() waits, bounded, until every member reports
  // healthy and returns how long formation took.
  Result<int64_t> startEtcd();
  // Starts the member of one host again (its data dir kept) and waits until it is healthy.
  Status startEtcd(const std::string& host);
  // SIGTERM (then SIGKILL) to the host's member; reaped when it returns.
  void stopEtcd(const std::string& host);
  std::string clientUrl(const std::string& host) const;  // "http://10.A.B.I:2379" (https: tls)
  // The URL of the host's own member from inside that host: "http(s)://127.0.0.1:2379".
  std::string localClientUrl() const;
  bool tls() const { return options_.tls; }
  // The certificate files of a TLS fleet (empty strings when it is not one).
  FleetTlsFiles tlsFiles(const std::string& host) const;
  std::vector<std::string> allClientUrls() const;
  std::string allClientUrlsJoined() const;       // comma-separated, for --endpoints
  HostProcess* etcdOf(const std::string& host);  // nullptr when not running
  // `etcdctl --endpoints=<endpoints> endpoint health` from inside `fromHost`, every 100 ms, until
  // it succeeds or `timeoutMs` passed.
  Status waitEtcdHealthy(const std::string& fromHost, const std::string& endpoints, int timeoutMs);
  // etcdctl with `args` from inside `host`, against `endpoints` (default: that host's member),
  // with a command timeout of `commandTimeoutMs`.
  Result<CommandResult> etcdctl(const std::string& host, const std::vector<std::string>& args,
                                const std::string& endpoints = "", int commandTimeoutMs = 2000);
  // The host whose etcd member is the raft leader, as `etcdctl endpoint status` over every member
  // says, asked from `fromHost`; "" when no member answers as leader.
  std::string etcdLeader(const std::string& fromHost);

  // Partitions a host from the others (its bridge port down; the host keeps its address and
  // loopback) and restores it.
  Status cut(const std::string& host);
  Status heal(const std::string& host);
  // Losing a host: SIGKILL every process inside its namespace (its etcd member too) and reap.
  // The namespace and its links stay, so a test may start the host's processes again.
  Status killHost(const std::string& host);
  // The pids of every process inside a namespace (what `ip netns pids` reports).
  static std::vector<pid_t> pidsIn(const std::string& netns);

  // Kills and reaps every process, deletes the namespaces, removes the temp dir. Idempotent; the
  // destructor runs it and prints, on stderr, what it could not remove.
  Status teardown();

 private:
  TestFleet(std::string tag, int hosts);
  Status build();
  Result<UniqueFd> openNetns(const std::string& netns) const;
  Status killNetns(const std::string& netns);
  Result<HostProcess*> spawnEtcd(const std::string& host, bool fresh);
  Status makeCertificates();
  std::string scheme() const { return options_.tls ? "https://" : "http://"; }
  std::string hostOfIndex(int i) const { return "h" + std::to_string(i); }
  int indexOf(const std::string& host) const;

  std::string tag_;
  std::vector<std::string> hosts_;
  int octetA_ = 200, octetB_ = 0;
  std::string dir_;
  FleetOptions options_;
  std::vector<std::string> madeNetns_;  // namespaces created, deleted at teardown
  std::vector<std::unique_ptr<HostProcess>> procs_;
  std::map<std::string, HostProcess*> etcd_;
  bool tornDown_ = false;
};

// Removes namespaces `ej<pid>x<n>-*` and temp dirs `enjin-fleet-<pid>x<n>-*` of pids that no
// longer run (left by a crashed run), killing what still runs inside them. Returns how many
// namespaces it removed. Run by TestFleet::create.
int sweepStaleFleets();

// /proc/PID/cmdline of `procDir` ("/proc/1234"), NULs and all; empty when the process is gone or
// exits while it is read (its read then fails with ESRCH, which an ifstream throws for).
std::string procCmdline(const std::string& procDir);

}  // namespace enjin::testing
