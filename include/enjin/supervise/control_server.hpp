// ring2d's control socket: DIR/control.sock, a 0600 unix stream socket. One request per
// connection, one JSON object per line each way:
//   {"cmd":"status"}                         -> {"ok":true,"node":..,"processes":[{..},..]}
//   {"cmd":"start"|"stop"|"restart","name":N} -> {"ok":true} | {"ok":false,"error":".."}
//   {"cmd":"reload"}                          -> the same as SIGHUP
// A daemon adds commands of its own with setExtension (ring0d and ring1d: "tree", "revoke",
// commands forwarded down the tree); an extension may answer later, within the deadline.
// Served on the reactor without blocking: partial reads and writes wait for the fd.
//
// Limits, so that a stuck or hostile local client cannot take the reactor down or make it spin:
// at most kMaxConnections at once (further clients wait in the listen backlog, the listener
// unwatched until one closes); each connection is closed kConnectionDeadlineMs after it was
// accepted, answered or not; when accept fails for lack of fds (EMFILE, ENFILE) the listener is
// unwatched for kAcceptRetryMs. A request with wrong JSON types gets {"ok":false,"error":..};
// invalid UTF-8 in any reply text is replaced (U+FFFD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/supervisor.hpp"

namespace enjin::supervise {

class ControlServer {
 public:
  // `reactor` and `supervisor` must outlive the server. `reload` runs the SIGHUP path.
  ControlServer(Reactor& reactor, Supervisor& supervisor, std::string node,
                std::function<Status()> reload);
  ~ControlServer();
  Status listen(const std::string& path);

  // Sees every request first. Returns false to leave it to the built-in commands; true when it
  // took the request, and then calls `respond` once, now or later (a reply that comes after
  // the connection's deadline is dropped).
  using Respond = std::function<void(nlohmann::json reply)>;
  using Extension = std::function<bool(const nlohmann::json& request, Respond respond)>;
  void setExtension(Extension extension) { extension_ = std::move(extension); }

  static constexpr size_t kMaxConnections = 32;
  static constexpr int64_t kConnectionDeadlineMs = 5000;
  static constexpr int64_t kAcceptRetryMs = 100;

 private:
  struct Conn {
    UniqueFd fd;
    std::string in;
    std::string out;
    size_t written = 0;
    Reactor::TimerId deadline = 0;
    uint64_t serial = 0;   // tells a later connection on the same fd from this one
    bool waiting = false;  // an extension owes the reply
  };
  void reply(int fd, std::string line);
  void onAccept();
  void onConn(int fd, uint32_t events);
  // The reply line to one request; never throws.
  std::string handle(const nlohmann::json& request);
  nlohmann::json answer(const nlohmann::json& request);
  void close(int fd);
  Status watchListener();
  void pauseAccepting();
  // Watches the listener again unless it is watched, a retry is pending or the cap is reached.
  void resumeAccepting();

  Reactor& reactor_;
  Supervisor& supervisor_;
  std::string node_;
  std::function<Status()> reload_;
  Extension extension_;
  uint64_t nextSerial_ = 1;
  UniqueFd listener_;
  bool listening_ = false;              // listener_ is watched by the reactor
  Reactor::TimerId acceptRetry_ = 0;    // pending re-watch after EMFILE/ENFILE
  std::map<int, std::unique_ptr<Conn>> conns_;
};

// The client side: one request to the control socket at `socketPath`, one reply. A reply with
// "ok":false comes back as an error carrying ring2d's message.
Result<nlohmann::json> controlCall(const std::string& socketPath, const nlohmann::json& request);

// {"name","state","pid","started_wall_ms","restarts","last_exit","detail"} for one process.
// Declared here so ring2d's observation stream, the ring trees and the control socket say the
// same thing. Its strings are valid UTF-8 (a STATUS= text is cleaned as it arrives), so it
// can be dumped strictly; statusJson is the serialized form.
nlohmann::json statusToJson(const ProcessStatus& s);
std::string statusJson(const ProcessStatus& s);

}  // namespace enjin::supervise
