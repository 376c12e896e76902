// enjinctl status | start | stop | restart | logs: a ring2d through its control socket and its
// log files.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "enjin/base/unix_socket.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/control_server.hpp"

namespace enjin::ctl {
namespace {

using nlohmann::json;

// One request, one reply, over DIR/control.sock.
Result<json> call(const std::string& stateDir, const json& request) {
  auto reply = supervise::controlCall(stateDir + "/control.sock", request);
  if (!reply.ok() && reply.error().message.starts_with("connect ")) {
    return Error{reply.error().message + " (is ring2d running with --state-dir " + stateDir + "?)"};
  }
  return reply;
}

std::string formatDuration(int64_t ms) {
  if (ms < 0) ms = 0;
  const int64_t s = ms / 1000;
  char out[32];
  if (s < 60) {
    std::snprintf(out, sizeof out, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(out, sizeof out, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(out, sizeof out, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  } else {
    std::snprintf(out, sizeof out, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s / 3600 % 24));
  }
  return out;
}

std::string formatExit(const json& e) {
  if (!e.is_object()) return "-";
  const std::string kind = e.value("kind", "");
  if (kind == "exited") return "exit " + std::to_string(e.value("code", 0));
  if (kind == "signaled") {
    const char* name = ::sigabbrev_np(e.value("signal", 0));
    return name ? std::string("SIG") + name : "signal " + std::to_string(e.value("signal", 0));
  }
  return "unknown";
}

int runStatus(const std::string& stateDir, bool asJson) {
  auto reply = call(stateDir, {{"cmd", "status"}});
  if (!reply.ok()) {
    std::cerr << "enjinctl status: " << reply.error().message << "\n";
    return kExitFailure;
  }
  if (asJson) {
    std::cout << (*reply)["processes"].dump(2) << "\n";
    return kExitOk;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::printf("%-20s %-10s %8s %9s %8s  %-10s %s\n", "NAME", "STATE", "PID", "UPTIME", "RESTARTS",
              "LAST EXIT", "DETAIL");
  for (const auto& p : (*reply)["processes"]) {
    const int pid = p.value("pid", 0);
    const int64_t started = p.value("started_wall_ms", int64_t{0});
    std::printf("%-20s %-10s %8s %9s %8llu  %-10s %s\n", p.value("name", "").c_str(),
                p.value("state", "").c_str(), pid > 0 ? std::to_string(pid).c_str() : "-",
                started > 0 ? formatDuration(now - started).c_str() : "-",
                static_cast<unsigned long long>(p.value("restarts", uint64_t{0})),
                formatExit(p.value("last_exit", json())).c_str(), p.value("detail", "").c_str());
  }
  return kExitOk;
}

int runCommand(const std::string& stateDir, const std::string& cmd, const std::string& name) {
  auto reply = call(stateDir, {{"cmd", cmd}, {"name", name}});
  if (!reply.ok()) {
    std::cerr << "enjinctl " << cmd << ": " << reply.error().message << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

// Copies what `fd` holds from its current offset to stdout.
void drain(int fd) {
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    if (std::fwrite(buf, 1, static_cast<size_t>(n), stdout) != static_cast<size_t>(n)) return;
  }
  std::fflush(stdout);
}

// The offset where the last `lines` lines of a file of `size` bytes begin (0: all of it).
off_t tailOffset(int fd, off_t size, size_t lines) {
  if (lines == 0) return 0;
  size_t seen = 0;
  std::string chunk;
  for (off_t pos = size; pos > 0;) {
    const off_t step = std::min<off_t>(pos, 65536);
    pos -= step;
    chunk.resize(static_cast<size_t>(step));
    if (::pread(fd, chunk.data(), chunk.size(), pos) != step) return 0;
    for (size_t i = chunk.size(); i-- > 0;) {
      const off_t at = pos + static_cast<off_t>(i);
      // The newline that ends the file ends the last line; it does not start another.
      if (chunk[i] == '\n' && at != size - 1 && ++seen == lines) return at + 1;
    }
  }
  return 0;
}

int runLogs(const std::string& stateDir, const std::string& name, bool follow, size_t lines) {
  const std::string dir = stateDir + "/logs";
  const std::string path = dir + "/" + name + ".log";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    std::cerr << "enjinctl logs: no log for '" << name << "' (" << path << ": " << std::strerror(errno) << ")\n";
    return kExitFailure;
  }
  struct stat st;
  ::fstat(fd.get(), &st);
  const off_t start = tailOffset(fd.get(), st.st_size, lines);
  ::lseek(fd.get(), start, SEEK_SET);
  drain(fd.get());
  if (!follow) return kExitOk;
  // Follow, across rotations: when NAME.log is renamed to NAME.log.1, finish the old file and
  // go on with the new one.
  UniqueFd in(::inotify_init1(IN_CLOEXEC));
  if (!in || ::inotify_add_watch(in.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
    std::cerr << "enjinctl logs: inotify on " << dir << ": " << std::strerror(errno) << "\n";
    return kExitFailure;
  }
  char events[4096];
  for (;;) {
    if (::read(in.get(), events, sizeof events) <= 0 && errno != EINTR) return kExitFailure;
    drain(fd.get());
    struct stat now;
    if (::stat(path.c_str(), &now) == 0) {
      ::fstat(fd.get(), &st);
      if (now.st_ino != st.st_ino) {
        UniqueFd next(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (next) {
          drain(fd.get());
          fd = std::move(next);
          drain(fd.get());
        }
      }
    }
  }
}

}  // namespace

void addRing2dCommands(CLI::App& app, const std::string& stateDir, int& exitCode) {
  auto* status = app.add_subcommand("status", "Show every process: state, pid, uptime, restarts, last exit");
  auto asJson = std::make_shared<bool>(false);
  status->add_flag("--json", *asJson, "As JSON, one object per process");
  status->callback([&, asJson] { exitCode = runStatus(stateDir, *asJson); });

  for (const char* cmd : {"start", "stop", "restart"}) {
    auto* sub = app.add_subcommand(cmd, std::string(cmd) + " one process");
    auto name = std::make_shared<std::string>();
    sub->add_option("NAME", *name, "The process, as named in the spec")->required();
    sub->callback([&, name, c = std::string(cmd)] { exitCode = runCommand(stateDir, c, *name); });
  }

  auto* logs = app.add_subcommand("logs", "Print a process's log (DIR/logs/NAME.log)");
  auto name = std::make_shared<std::string>();
  auto follow = std::make_shared<bool>(false);
  auto lines = std::make_shared<size_t>(0);
  logs->add_option("NAME", *name, "The process")->required();
  logs->add_flag("-f,--follow", *follow, "Keep printing new lines, across rotations");
  logs->add_option("-n,--lines", *lines, "Start this many lines from the end (0: all)");
  logs->callback([&, name, follow, lines] { exitCode = runLogs(stateDir, *name, *follow, *lines); });
}

}  // namespace enjin::ctl
