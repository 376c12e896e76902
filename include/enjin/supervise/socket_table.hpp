// Listening sockets a daemon holds for its processes, by key, and the systemd socket-activation
// convention they travel with. A process whose spec names a socket (ProcessSpec::sockets) gets
// the daemon's fd for that source at fd 3 and up, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID;
// its holder keeps those fds across its restarts, so a connection made while it restarts waits
// in the accept queue instead of being refused.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin::supervise {

// Owns one fd per key. Keys are the `source` of a SocketRef: any text, '/' included.
class SocketTable {
 public:
  // Takes `fd`; an fd already under `key` is closed.
  void put(const std::string& key, UniqueFd fd);
  // The fd under `key` (still owned here), or -1.
  int find(std::string_view key) const;
  // Closes the fd under `key`, if any.
  void erase(std::string_view key);
  std::vector<std::string> keys() const;  // sorted
  size_t size() const { return fds_.size(); }

 private:
  std::map<std::string, UniqueFd, std::less<>> fds_;
};

// The first fd sd_listen_fds() hands over.
inline constexpr int kListenFdsStart = 3;

// sd_listen_fds() and sd_listen_fds_with_names() in one: when LISTEN_PID is this process's pid,
// takes fds 3 .. 3 + LISTEN_FDS - 1, keyed by their LISTEN_FDNAMES entries ("unknown" for one
// without a name, as systemd; a later fd of a name already taken replaces it), sets FD_CLOEXEC on
// them and unsets the three variables (whatever LISTEN_PID said), so no child inherits them by
// mistake. No LISTEN_PID, or another pid's: an empty table. Errors: LISTEN_FDS not a number, or
// one of its fds not open.
Result<SocketTable> socketsFromEnv();

}  // namespace enjin::supervise
