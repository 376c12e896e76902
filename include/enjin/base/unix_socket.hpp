// Unix-domain sockets: listening, connecting, and messages that carry file descriptors
// (SCM_RIGHTS). Every fd made here is close-on-exec.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"

namespace enjin {

// At most this many fds ride on one message (the kernel's SCM_MAX_FD is 253).
inline constexpr size_t kMaxFdsPerMessage = 64;

// Binds `path` (replacing a stale socket file) with `mode`, and listens. `type` is SOCK_STREAM
// or SOCK_SEQPACKET. The socket is non-blocking.
Result<UniqueFd> listenUnix(const std::string& path, int type, unsigned mode);
// Connects to `path`; blocking connect, then the socket is set non-blocking if `nonBlocking`.
Result<UniqueFd> connectUnix(const std::string& path, int type, bool nonBlocking = true);

// Sends one message with `fds` attached. For SOCK_SEQPACKET the message arrives whole.
Status sendWithFds(int socket, std::string_view data, std::span<const int> fds);

// Receives one message into `data` and its fds into `fds`. Returns false when the peer closed;
// an error with errno EAGAIN means nothing is waiting, EMSGSIZE that a message longer than
// `maxBytes` (or with too many fds) was received and dropped.
Result<bool> recvWithFds(int socket, std::string& data, std::vector<UniqueFd>& fds,
                         size_t maxBytes = 64 * 1024);

// The uid of the process at the other end of a connected unix socket.
Result<uid_t> peerUid(int socket);

}  // namespace enjin
