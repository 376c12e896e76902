// The messages between ring2d and its holder, typed, with their one encoding. Both sides (and
// the fake holder of the tests) go through encode()/decode*() here; nothing else assembles or
// picks apart the JSON.
//
// Wire form: one JSON object per SOCK_SEQPACKET datagram, named by "op"; fds ride along with
// SCM_RIGHTS in the order their roles are listed in "fds".
//   ring2d -> holder
//     {"op":"hello"}                      -> one "slot" per process, then {"op":"hello_done"}
//     {"op":"spawn","name","spec","env":[..],"notify":PATH|null,"fds":["listen",..]}
//                                         -> "spawned" (+ fds out, err[, notify] the first time
//                                            a name is spawned) or "spawn_failed"
//                                         "fds" (absent when none): one listening socket per
//                                         spec.sockets entry, in order, attached; the holder
//                                         keeps them for the name (a later full spawn replaces
//                                         them, "close" closes them)
//     {"op":"respawn","name"}             spawn again with the last spec, env, cwd and
//                                         listening sockets -> "spawned" or "spawn_failed"
//     {"op":"signal","name","signal","group":true}   (no reply)
//     {"op":"close","name"}               forget a stopped process and close its fds
//     {"op":"shutdown"}                   exit once nothing runs -> {"op":"bye"}
//   holder -> ring2d
//     {"op":"slot","name","pid","start_time","running","exit":EXIT|null,"exit_reported",
//      "fds":["out","err",..,"listen",..],"sockets":[SOURCE,..],"exec_in":ID}
//                                         "sockets": the spec's source of each "listen" fd, in
//                                         order, so a restarted ring2d puts back in its
//                                         SocketTable what it lacks (absent when none)
//     {"op":"spawned","name","pid","start_time","fds":[..],"exec_in":ID (after a full spawn)}
//     {"op":"spawn_failed","name","error","fds":[..]}
//     {"op":"exited","name","pid","exit":EXIT}
//     {"op":"bye"}
//     {"op":"error","error"}              a request the holder could not read
//   EXIT = {"kind":"exited","code":N} | {"kind":"signaled","signal":N} | {"kind":"unknown"}
//   ID   = {"uid":N,"gid":N,"env":["KEY=VALUE",..]}   (uid and gid -1: the holder's own)
#pragma once

#include <signal.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "enjin/base/result.hpp"
#include "enjin/supervise/process_spec.hpp"
#include "enjin/supervise/restart_policy.hpp"
#include "enjin/supervise/spawn.hpp"

namespace enjin::supervise::holder_proto {

// What an attached fd is for.
enum class FdRole { kOut, kErr, kNotify, kListen };

// --- ring2d -> holder ---------------------------------------------------------------------------
struct Hello {};
struct Spawn {
  std::string name;
  ProcessSpec spec;
  std::vector<std::string> env;       // "KEY=VALUE", added to the process's environment
  std::optional<std::string> notify;  // the notify socket's path, when it uses one
  // kListen, one per spec.sockets entry: the fds attached to the message.
  std::vector<FdRole> fds;
};
struct Respawn {
  std::string name;
};
struct Signal {
  std::string name;
  int signal = SIGTERM;
  bool group = true;  // the whole process group
};
struct Close {
  std::string name;
};
struct Shutdown {};
using Request = std::variant<Hello, Spawn, Respawn, Signal, Close, Shutdown>;

// --- holder -> ring2d ---------------------------------------------------------------------------
struct Slot {
  std::string name;
  int pid = 0;
  uint64_t startTime = 0;
  bool running = false;
  std::optional<ExitInfo> exit;  // the last exit, if it ever exited
  bool exitReported = false;     // a connected ring2d received that exit
  std::vector<FdRole> fds;
  std::vector<std::string> sockets;      // the source of each kListen fd, in order
  std::optional<ExecIdentity> identity;  // what its exec checks run as (SpawnStrategy::execIn)
};
struct HelloDone {};
struct Spawned {
  std::string name;
  int pid = 0;
  uint64_t startTime = 0;
  std::vector<FdRole> fds;  // attached the first time a name is spawned
  // What its exec checks run as, as its strategy's execIn() said: sent after a full spawn (a
  // respawn keeps the last), so ring2d never looks up an account itself.
  std::optional<ExecIdentity> identity;
};
struct SpawnFailed {
  std::string name;
  std::string error;
  std::vector<FdRole> fds;
};
struct Exited {
  std::string name;
  int pid = 0;
  ExitInfo exit;  // kind, code and signal only: the times are the supervisor's
};
struct Bye {};
struct ErrorReply {
  std::string error;
};
using Reply = std::variant<Slot, HelloDone, Spawned, SpawnFailed, Exited, Bye, ErrorReply>;

std::string encode(const Request& request);
std::string encode(const Reply& reply);
// The spawn request from a spec already encoded by specToJson(): ring2d keeps that text per spec
// so a full spawn does not serialize the spec again.
// `listenFds`: how many listening sockets ride along (spec.sockets.size()).
std::string encodeSpawn(std::string_view name, std::string_view specJson,
                        const std::vector<std::string>& env,
                        const std::optional<std::string>& notify, size_t listenFds = 0);
// The respawn request, the restart fast path: no JSON library involved.
std::string encodeRespawn(std::string_view name);

// Errors name the message and the field; the holder answers them with an ErrorReply, or, when
// `failedSpawn` is set (a spawn or respawn whose name could be read), with a SpawnFailed for it,
// so ring2d learns that this process did not start.
Result<Request> decodeRequest(std::string_view text, std::string* failedSpawn = nullptr);
Result<Reply> decodeReply(std::string_view text);

// A wait status as the holder collects it. Its JSON form (EXIT) is spec_json's exitToJson and
// exitFromJson, the one exit codec that state.json and the control socket use too.
ExitInfo exitFromSiginfo(const siginfo_t& info);

}  // namespace enjin::supervise::holder_proto
