// The supervisors supervise_bench compares: a bare fork+exec loop, enjin's ring2d, s6, runit and
// supervisord, each behind one interface (start with N stamp children, find its processes, stop).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_proc.hpp"
#include "enjin/supervise/control_server.hpp"

namespace enjin::bench {

using nlohmann::json;

// The bare loop itself (in its own process, supervise_bench --bare-loop): keeps `n` copies of
// `command` running.
int bareLoop(int n, const char* command);
// Service directories with ./run a symlink to stamp_child (s6 and runit exec ./run directly).
void makeServiceDirs(const std::string& scan, int n);

class Target {
 public:
  virtual ~Target() = default;
  virtual std::string name() const = 0;
  // Why it cannot run here, or "".
  virtual std::string missing() const { return ""; }
  // What it enforces between two starts of a service, as a fact.
  virtual std::string throttle() const = 0;
  virtual std::string settings() const = 0;
  // The largest number of services it takes, or 0 for no limit of its own.
  virtual int maxServices() const { return 0; }
  // Starts it with `n` stamp children reporting to `stampPath`, in a fresh temp dir.
  void start(int n, const std::string& stampPath) {
    char tmpl[] = "/tmp/enjin-sbench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = tmpl;
    root_ = doStart(n, stampPath);
  }
  pid_t root() const { return root_; }
  bool alive() const {
    for (const auto& p : scanProcs()) {
      if (p.pid == root_) return p.state != 'Z';
    }
    return false;
  }
  // The supervisor's processes: its root and every process below it but the stamp children.
  std::vector<pid_t> supervisorSide() const {
    std::vector<pid_t> out{root_};
    for (pid_t p : descendants(root_, scanProcs())) {
      if (exeOf(p) != gStampPath) out.push_back(p);
    }
    return out;
  }
  // Every live stamp child below the bench.
  static std::vector<pid_t> stampChildren() {
    const auto procs = scanProcs();
    std::set<pid_t> zombies;
    for (const auto& p : procs) {
      if (p.state == 'Z') zombies.insert(p.pid);
    }
    std::vector<pid_t> out;
    for (pid_t p : descendants(::getpid(), procs)) {
      if (!zombies.contains(p) && exeOf(p) == gStampPath) out.push_back(p);
    }
    return out;
  }
  void stop() {
    killEverything();
    root_ = -1;
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

 protected:
  virtual pid_t doStart(int n, const std::string& stampPath) = 0;
  std::string missingBinaries(std::initializer_list<const char*> names) const {
    std::string out;
    for (const char* n : names) {
      if (findOnPath(n).empty()) out += std::string(out.empty() ? "" : ", ") + n;
    }
    return out.empty() ? "" : "not installed (" + out + ")";
  }
  std::string dir_;
  pid_t root_ = -1;
};

class BareTarget : public Target {
 public:
  std::string name() const override { return "bare loop"; }
  std::string throttle() const override { return "none"; }
  std::string settings() const override {
    return "posix_spawn (vfork) + pidfd_open + epoll, respawn on exit, nothing else";
  }

 protected:
  pid_t doStart(int n, const std::string& stampPath) override {
    return launch({gBinDir + "/supervise_bench", "--bare-loop", std::to_string(n), gStampPath},
                  {"STAMP_FIFO=" + stampPath}, dir_ + "/bare.log");
  }
};


class EnjinTarget : public Target {
 public:
  std::string name() const override { return "enjin ring2d"; }
  std::string throttle() const override { return "none (restart_delay_ms = 0)"; }
  std::string settings() const override {
    return "restart_delay_ms = 0, max_restarts = 1000000000, restart_window_s = 1, log level info";
  }
  std::string stateDir() const { return dir_ + "/state"; }

  // ring2d's status: name -> pid of every process whose state is running or ready.
  std::optional<std::map<std::string, int>> running() const {
    auto reply =
        enjin::supervise::controlCall(stateDir() + "/control.sock", json{{"cmd", "status"}});
    if (!reply.ok()) return std::nullopt;
    std::map<std::string, int> out;
    for (const auto& p : (*reply)["processes"]) {
      const std::string state = p.value("state", "");
      if ((state == "running" || state == "ready") && p.value("pid", 0) > 0) {
        out[p.value("name", "")] = p.value("pid", 0);
      }
    }
    return out;
  }
  size_t total() const {
    auto reply =
        enjin::supervise::controlCall(stateDir() + "/control.sock", json{{"cmd", "status"}});
    return reply.ok() ? (*reply)["processes"].size() : 0;
  }

 protected:
  pid_t doStart(int n, const std::string& stampPath) override {
    {
      std::ofstream spec(dir_ + "/spec.toml");
      spec << "# supervise_bench: " << n << " stamp children\n";
      for (int i = 0; i < n; ++i) {
        spec << "[[process]]\nname = \"s" << i << "\"\ncommand = [\"" << gStampPath
             << "\"]\nenv = { STAMP_FIFO = \"" << stampPath
             << "\" }\nrestart_delay_ms = 0\nmax_restarts = 1000000000\nrestart_window_s = 1\n\n";
      }
    }
    return launch({gBinDir + "/ring2d", "--spec", dir_ + "/spec.toml", "--state-dir", stateDir(),
                   "--holder", gBinDir + "/enjin-holder"},
                  {}, dir_ + "/ring2d.err");
  }
};


class S6Target : public Target {
 public:
  std::string name() const override { return "s6"; }
  std::string missing() const override { return missingBinaries({"s6-svscan", "s6-supervise"}); }
  std::string throttle() const override {
    return "1 s between two spawns of ./run, fixed; none once the service was ready for > 1 s";
  }
  std::string settings() const override {
    return "s6-svscan -c N+16; per service ./run and notification-fd 3 (stamp_child reports "
           "ready right after its stamp), no ./finish; defaults otherwise";
  }

 protected:
  pid_t doStart(int n, const std::string& stampPath) override {
    makeServiceDirs(dir_ + "/scan", n);
    // Without a readiness notification s6-supervise never sees the service ready, and then
    // pauses 1 s before every restart, however long the service ran.
    for (int i = 0; i < n; ++i) {
      std::ofstream(dir_ + "/scan/s" + std::to_string(i) + "/notification-fd") << "3\n";
    }
    return launch({findOnPath("s6-svscan"), "-c", std::to_string(n + 16), dir_ + "/scan"},
                  {"STAMP_FIFO=" + stampPath, "STAMP_READY_FD=3"}, dir_ + "/s6-svscan.log");
  }
};

class RunitTarget : public Target {
 public:
  std::string name() const override { return "runit"; }
  std::string missing() const override { return missingBinaries({"runsvdir", "runsv"}); }
  std::string throttle() const override {
    return "1 s pause before restarting a ./run that ran < 1 s, fixed";
  }
  std::string settings() const override {
    return "runsvdir DIR; per service only ./run (no ./finish, no log/); defaults";
  }
  int maxServices() const override { return 1000; }  // runsvdir's MAXSERVICES

 protected:
  pid_t doStart(int n, const std::string& stampPath) override {
    makeServiceDirs(dir_ + "/service", n);
    return launch({findOnPath("runsvdir"), dir_ + "/service"}, {"STAMP_FIFO=" + stampPath},
                  dir_ + "/runsvdir.log");
  }
};

class SupervisordTarget : public Target {
 public:
  std::string name() const override { return "supervisord"; }
  std::string missing() const override { return missingBinaries({"supervisord"}); }
  std::string throttle() const override {
    return "none configured; its main loop polls with a 1 s timeout";
  }
  std::string settings() const override {
    return "supervisord -n, autorestart=true, startsecs=0, default output capture (AUTO logs)";
  }

 protected:
  pid_t doStart(int n, const std::string& stampPath) override {
    std::filesystem::create_directories(dir_ + "/logs");
    rlimit nofile{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    const long minfds = std::min<long>(static_cast<long>(nofile.rlim_max), 6L * n + 1024);
    {
      std::ofstream conf(dir_ + "/supervisord.conf");
      conf << "[supervisord]\nnodaemon=true\nlogfile=" << dir_ << "/supervisord.log\npidfile="
           << dir_ << "/supervisord.pid\nchildlogdir=" << dir_ << "/logs\nminfds=" << minfds
           << "\nminprocs=" << (n + 200) << "\n\n";
      for (int i = 0; i < n; ++i) {
        conf << "[program:s" << i << "]\ncommand=" << gStampPath
             << "\nautorestart=true\nstartsecs=0\n\n";
      }
    }
    return launch({findOnPath("supervisord"), "-n", "-c", dir_ + "/supervisord.conf"},
                  {"STAMP_FIFO=" + stampPath}, dir_ + "/supervisord.out");
  }
};

}  // namespace enjin::bench
