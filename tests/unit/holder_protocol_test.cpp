// The holder protocol's one codec: every message survives its trip, and what cannot be read is
// an error naming the message and the field.
#include "enjin/supervise/holder_protocol.hpp"

#include <gtest/gtest.h>

#include "enjin/supervise/spec_json.hpp"

namespace enjin::supervise::holder_proto {
namespace {

template <typename T>
T requestTrip(const Request& in) {
  auto out = decodeRequest(encode(in));
  EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
  EXPECT_TRUE(std::holds_alternative<T>(*out));
  return std::get<T>(*out);
}

template <typename T>
T replyTrip(const Reply& in) {
  auto out = decodeReply(encode(in));
  EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
  EXPECT_TRUE(std::holds_alternative<T>(*out));
  return std::get<T>(*out);
}

TEST(HolderProtocol, RequestsSurviveTheirTrip) {
  ProcessSpec spec;
  spec.name = "web";
  spec.command = {"/bin/sleep", "5"};
  spec.env["A"] = "1";
  const auto spawn = requestTrip<Spawn>(Spawn{"web", spec, {"NOTIFY_SOCKET=/n.sock"}, "/n.sock", {}});
  EXPECT_EQ(spawn.name, "web");
  EXPECT_EQ(spawn.spec, spec);
  EXPECT_EQ(spawn.env, std::vector<std::string>{"NOTIFY_SOCKET=/n.sock"});
  EXPECT_EQ(spawn.notify, "/n.sock");
  EXPECT_FALSE(requestTrip<Spawn>(Spawn{"web", spec, {}, std::nullopt, {}}).notify);

  const auto sig = requestTrip<Signal>(Signal{"web", SIGKILL, false});
  EXPECT_EQ(sig.signal, SIGKILL);
  EXPECT_FALSE(sig.group);
  EXPECT_EQ(requestTrip<Respawn>(Respawn{"a\"b"}).name, "a\"b");
  EXPECT_EQ(requestTrip<Close>(Close{"web"}).name, "web");
  requestTrip<Hello>(Hello{});
  requestTrip<Shutdown>(Shutdown{});
  // The fast paths write the same messages as the typed encoder.
  EXPECT_EQ(encodeRespawn("web"), encode(Respawn{"web"}));
  EXPECT_EQ(encodeSpawn("web", specToJson(spec).dump(), {}, std::nullopt),
            encode(Spawn{"web", spec, {}, std::nullopt, {}}));
}

TEST(HolderProtocol, ASpawnNamesItsListeningSockets) {
  ProcessSpec spec;
  spec.name = "web";
  spec.command = {"/bin/true"};
  spec.sockets = {{"http", "x/http"}, {"admin", "admin"}};
  const auto spawn = requestTrip<Spawn>(
      Spawn{"web", spec, {}, std::nullopt, {FdRole::kListen, FdRole::kListen}});
  EXPECT_EQ(spawn.spec.sockets, spec.sockets);
  EXPECT_EQ(spawn.fds, (std::vector<FdRole>{FdRole::kListen, FdRole::kListen}));
  EXPECT_EQ(encodeSpawn("web", specToJson(spec).dump(), {}, std::nullopt, 2),
            encode(Spawn{"web", spec, {}, std::nullopt, {FdRole::kListen, FdRole::kListen}}));
  // One fd per socket of the spec, and only listening sockets.
  auto missing = decodeRequest(encodeSpawn("web", specToJson(spec).dump(), {}, std::nullopt, 1));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("one listen fd per socket of the spec (2)"),
            std::string::npos)
      << missing.error().message;
  std::string notListen = encodeSpawn("web", specToJson(spec).dump(), {}, std::nullopt, 2);
  notListen.replace(notListen.find(R"("listen")"), 8, R"("out")");
  EXPECT_FALSE(decodeRequest(notListen).ok());
  // A slot's sources match its listen fds one to one.
  auto slot = decodeReply(
      R"({"op":"slot","name":"web","pid":1,"start_time":2,"running":true,"exit":null,)"
      R"("fds":["out","err","listen"],"sockets":[]})");
  ASSERT_FALSE(slot.ok());
  EXPECT_NE(slot.error().message.find("sockets"), std::string::npos) << slot.error().message;
}

TEST(HolderProtocol, RepliesSurviveTheirTrip) {
  ExitInfo killed;
  killed.kind = ExitInfo::Kind::kSignaled;
  killed.signal = SIGKILL;
  const auto slot = replyTrip<Slot>(
      Slot{"db", 42, 7, false, killed, true,
           {FdRole::kOut, FdRole::kErr, FdRole::kNotify, FdRole::kListen, FdRole::kListen},
           {"http", "x/admin"}, ExecIdentity{1000, 1001, {"PATH=/bin", "A=1"}}});
  EXPECT_EQ(slot.pid, 42);
  EXPECT_EQ(slot.startTime, 7u);
  ASSERT_TRUE(slot.exit);
  EXPECT_EQ(slot.exit->kind, ExitInfo::Kind::kSignaled);
  EXPECT_EQ(slot.exit->signal, SIGKILL);
  EXPECT_TRUE(slot.exitReported);
  EXPECT_EQ(slot.fds, (std::vector<FdRole>{FdRole::kOut, FdRole::kErr, FdRole::kNotify,
                                           FdRole::kListen, FdRole::kListen}));
  EXPECT_EQ(slot.sockets, (std::vector<std::string>{"http", "x/admin"}));
  ASSERT_TRUE(slot.identity);
  EXPECT_EQ(slot.identity->uid, 1000);
  EXPECT_EQ(slot.identity->gid, 1001);
  EXPECT_EQ(slot.identity->env, (std::vector<std::string>{"PATH=/bin", "A=1"}));
  const auto bare = replyTrip<Slot>(Slot{"db", 1, 2, true, std::nullopt, false, {}, {}, std::nullopt});
  EXPECT_FALSE(bare.exit);
  EXPECT_FALSE(bare.identity);

  const auto spawned = replyTrip<Spawned>(Spawned{"db", 9, 11, {FdRole::kErr}, std::nullopt});
  EXPECT_FALSE(spawned.identity);
  EXPECT_EQ(spawned.pid, 9);
  EXPECT_EQ(spawned.fds, std::vector<FdRole>{FdRole::kErr});
  EXPECT_EQ(replyTrip<SpawnFailed>(SpawnFailed{"db", "no such file", {}}).error, "no such file");
  ExitInfo three;
  three.kind = ExitInfo::Kind::kExited;
  three.code = 3;
  const auto exited = replyTrip<Exited>(Exited{"db", 9, three});
  EXPECT_EQ(exited.exit.kind, ExitInfo::Kind::kExited);
  EXPECT_EQ(exited.exit.code, 3);
  EXPECT_EQ(replyTrip<ErrorReply>(ErrorReply{"bad"}).error, "bad");
  replyTrip<HelloDone>(HelloDone{});
  replyTrip<Bye>(Bye{});
}

TEST(HolderProtocol, TheExitOfASiginfo) {
  siginfo_t info{};
  info.si_code = CLD_EXITED;
  info.si_status = 4;
  EXPECT_EQ(exitFromSiginfo(info).kind, ExitInfo::Kind::kExited);
  EXPECT_EQ(exitFromSiginfo(info).code, 4);
  info.si_code = CLD_KILLED;
  info.si_status = SIGTERM;
  EXPECT_EQ(exitFromSiginfo(info).kind, ExitInfo::Kind::kSignaled);
  EXPECT_EQ(exitFromSiginfo(info).signal, SIGTERM);
}

TEST(HolderProtocol, WhatCannotBeReadIsAnErrorNamingTheField) {
  const auto error = [](std::string_view text) {
    auto r = decodeRequest(text);
    return r.ok() ? std::string("decoded") : r.error().message;
  };
  EXPECT_EQ(error("not json"), "not a JSON object");
  EXPECT_EQ(error(R"({"name":"x"})"), "no \"op\"");
  EXPECT_EQ(error(R"({"op":"dance"})"), "unknown op 'dance'");
  EXPECT_EQ(error(R"({"op":"signal","name":"x","signal":"TERM"})"),
            "'signal': signal must be an integer");
  EXPECT_EQ(error(R"({"op":"close","name":3})"), "'close': name must be a string");
  EXPECT_EQ(error(R"({"op":"signal","name":"x","group":1})"), "'signal': group must be a boolean");

  // A spawn whose spec is unreadable still names its process, for the spawn_failed answer.
  std::string failed;
  auto r = decodeRequest(R"({"op":"spawn","name":"web","spec":{"name":"web"}})", &failed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(failed, "web");
  EXPECT_NE(r.error().message.find("'spawn' of 'web'"), std::string::npos) << r.error().message;

  auto reply = decodeReply(R"({"op":"spawned","name":"web","pid":"12","start_time":1})");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().message, "'spawned': pid must be an integer");
  reply = decodeReply(R"({"op":"slot","name":"w","pid":1,"start_time":1,"running":true,"fds":["in"]})");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().message, "'slot': fds must be out, err, notify or listen");
}

}  // namespace
}  // namespace enjin::supervise::holder_proto
