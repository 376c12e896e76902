// ring2d's state machine under operators, reloads, restarts of ring2d itself and misbehaving
// children: what was decided stays decided.
#include <sys/socket.h>
#include <sys/un.h>

#include <fstream>

#include "ring2d_fixture.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;

// A TOML literal string: the code reaches python exactly as written here.
std::string python(const std::string& code) {
  return "\"/usr/bin/python3\", \"-c\", '''" + code + "'''";
}

TEST_F(Ring2dTest, HostileStatusTextCannotCrashRing2d) {
  writeSpec(R"toml(
[[process]]
name = "rude"
command = [)toml" + python("import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'STATUS=\\xff\\xfe\\x01bad\\nREADY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)") + R"toml(]
readiness = "notify"

[[process]]
name = "sly"
command = [)toml" + python("import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'STATUS=\\xc0\\x80 \\xed\\xa0\\x80 \\xf4\\x90\\x80\\x80 \\xc3\\xa9\\nREADY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)") + R"toml(]
readiness = "notify"

[[process]]
name = "quoting"
command = [)toml" + python("import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'STATUS=say \"hi\" \\\\ back\\nREADY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)") + R"toml(]
readiness = "notify"
)toml");
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return stateOf("rude") == "ready"; }, 5000)) << ring2dErr();
  EXPECT_EQ(proc("rude")["detail"], "?? bad");
  // Byte patterns that pass a loose check but are not UTF-8 (an overlong NUL, a surrogate, a
  // code point past U+10FFFF) are replaced too; a real character stays.
  ASSERT_TRUE(waitFor([&] { return stateOf("sly") == "ready"; }, 5000)) << ring2dErr();
  EXPECT_EQ(proc("sly")["detail"], "?? ??? ???? \u00e9");
  ASSERT_TRUE(waitFor([&] { return stateOf("quoting") == "ready"; }, 5000)) << ring2dErr();
  EXPECT_EQ(proc("quoting")["detail"], "say \"hi\" \\ back");
  // state.json, written as text, stays JSON that reads back the same.
  auto detailSaved = [&](const char* name) {
    return stateJsonProcesses().value(name, json::object()).value("detail", "");
  };
  EXPECT_TRUE(waitFor([&] {
    return detailSaved("quoting") == "say \"hi\" \\ back" &&
           detailSaved("sly") == "?? ??? ???? \u00e9" && detailSaved("rude") == "?? bad";
  }, 5000)) << readFile(state() + "/state.json");
  EXPECT_TRUE(processAlive(ring2d_));
}

TEST_F(Ring2dTest, NotifyFromAStrangerIsIgnored) {
  // "slow" sends READY=1 itself once the test creates the file `go`: the control that shows
  // notify works here, so the stranger's message is ignored rather than lost.
  const std::string go = dir_ / "go";
  writeSpec(R"toml(
[[process]]
name = "slow"
command = [)toml" + python("import os,socket,time\nwhile not os.path.exists('" + go + "'): time.sleep(0.01)\ns=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)") + R"toml(]
readiness = "notify"
)toml");
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return stateOf("slow") == "running"; }, 5000));
  // This test process is not "slow" nor in its process group.
  int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = state() + "/notify/slow.sock";
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::sendto(fd, "READY=1", 7, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 7);
  ::close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(stateOf("slow"), "running");
  // The same message from the process itself is heard.
  std::ofstream(go).put('\n');
  EXPECT_TRUE(waitFor([&] { return stateOf("slow") == "ready"; }, 5000)) << ring2dErr();
}

TEST_F(Ring2dTest, WatchdogTriggerCannotPostponeTheKill) {
  writeSpec(R"toml(
[[process]]
name = "pest"
command = [)toml" + python("import os,signal,socket,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); [ (s.sendto(b'WATCHDOG=trigger', os.environ['NOTIFY_SOCKET']), time.sleep(0.05)) for _ in range(1000) ]") + R"toml(]
readiness = "notify"
stop_timeout_ms = 300
restart = "never"
)toml");
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return stateOf("pest") == "stopped"; }, 5000)) << ring2dErr();
  EXPECT_EQ(proc("pest")["last_exit"]["signal"], SIGKILL);
}

// Two decisions to keep: "held" stopped by an operator, "broken" failed by its restart policy;
// returns once state.json records both.
class Ring2dDecisionsTest : public Ring2dTest {
 protected:
  void makeTwoDecisions() {
    writeSpec(R"(
[[process]]
name = "held"
command = [)" + crasher("sleep:600000") + R"(]

[[process]]
name = "broken"
command = [)" + crasher("exit:1") + R"(]
restart_delay_ms = 10
max_restarts = 2
)");
    startRing2d();
    ASSERT_TRUE(waitFor([&] { return stateOf("held") == "ready" && stateOf("broken") == "failed"; }, 5000));
    ASSERT_TRUE(call({{"cmd", "stop"}, {"name", "held"}})["ok"].get<bool>());
    ASSERT_TRUE(waitFor([&] {
      auto saved = stateJsonProcesses();
      return saved.value("held", json::object()).value("held_down", false) &&
             saved.value("broken", json::object()).value("state", "") == "failed";
    }, 5000));
  }
};

TEST_F(Ring2dDecisionsTest, SurviveARestartOfRing2d) {
  ASSERT_NO_FATAL_FAILURE(makeTwoDecisions());
  const int restarts = proc("broken")["restarts"];
  killRing2d(SIGKILL);
  startRing2d();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(stateOf("held"), "stopped");
  EXPECT_EQ(stateOf("broken"), "failed");
  EXPECT_EQ(proc("broken")["restarts"], restarts);
  // An identical spec on SIGHUP starts nothing either.
  ::kill(ring2d_, SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(stateOf("held"), "stopped");
  EXPECT_EQ(stateOf("broken"), "failed");
  // An operator's start does.
  ASSERT_TRUE(call({{"cmd", "start"}, {"name", "held"}})["ok"].get<bool>());
  EXPECT_TRUE(waitFor([&] { return stateOf("held") == "ready"; }, 5000));
}

// What a power cut can leave on filesystems that do not order a rename after its data: an
// empty state.json (it is replaced without fsync between decisions). The decisions come back
// from state.durable.json, written with fsync whenever they change.
TEST_F(Ring2dDecisionsTest, SurviveAnEmptiedStateFile) {
  ASSERT_NO_FATAL_FAILURE(makeTwoDecisions());
  // The machine goes down: ring2d, its holder and the file's content.
  const pid_t holder = holderPid();
  killRing2d(SIGKILL);
  ASSERT_GT(holder, 0);
  ::kill(holder, SIGKILL);
  ASSERT_TRUE(waitFor([&] { return !processAlive(holder); }, 5000));
  ASSERT_EQ(::truncate((state() + "/state.json").c_str(), 0), 0);
  startRing2d();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(stateOf("held"), "stopped");
  EXPECT_EQ(stateOf("broken"), "failed");
  EXPECT_NE(ring2dErr().find("state.json is unreadable"), std::string::npos) << ring2dErr();
}

TEST_F(Ring2dTest, ADependencyRestartDoesNotRerunAFinishedJob) {
  writeSpec(R"(
[[process]]
name = "db"
command = [)" + crasher("sleep:600000") + R"(]

[[process]]
name = "job"
command = [)" + crasher("exit:125") + R"(]
depends_on = ["db"]
)");
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return stateOf("job") == "stopped" && stateOf("db") == "ready"; }, 5000));
  const int db = proc("db")["pid"];
  ASSERT_TRUE(call({{"cmd", "restart"}, {"name", "db"}})["ok"].get<bool>());
  ASSERT_TRUE(waitFor([&] { return stateOf("db") == "ready" && proc("db")["pid"] != db; }, 5000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(stateOf("job"), "stopped");
  EXPECT_EQ(readFile(state() + "/logs/job.log"), "");  // crasher exit:125 writes nothing, ran once
  EXPECT_EQ(proc("job")["restarts"], 0);
}

TEST_F(Ring2dTest, StartWhileStoppingStartsItAgain) {
  writeSpec(R"(
[[process]]
name = "deaf"
command = [)" + crasher("ignore-term") + R"(]
stop_timeout_ms = 300
)");
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return readFile(state() + "/logs/deaf.log").find("ready") != std::string::npos; }, 5000));
  const int pid = proc("deaf")["pid"];
  ASSERT_TRUE(call({{"cmd", "stop"}, {"name", "deaf"}})["ok"].get<bool>());
  ASSERT_TRUE(call({{"cmd", "start"}, {"name", "deaf"}})["ok"].get<bool>());
  ASSERT_TRUE(waitFor([&] { return stateOf("deaf") == "ready" && proc("deaf")["pid"] != pid; }, 5000))
      << proc("deaf").dump();
}

TEST_F(Ring2dTest, ReloadToNotifyReadinessWorks) {
  const std::string sleeper = R"(
[[process]]
name = "svc"
command = [)" + crasher("sleep:600000") + R"(]
)";
  writeSpec(sleeper);
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return stateOf("svc") == "ready"; }, 5000));
  writeSpec(R"toml(
[[process]]
name = "svc"
command = [)toml" + python("import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)") + R"toml(]
readiness = "notify"
)toml");
  ::kill(ring2d_, SIGHUP);
  ASSERT_TRUE(waitFor([&] {
    json p = proc("svc");
    return p.is_object() && p["state"] == "ready" && p["restarts"] == 0 &&
           stateJsonProcesses().value("svc", json::object()).value("ready", false) &&
           ring2dErr().find("changed; restarting") != std::string::npos;
  }, 5000)) << ring2dErr();
  EXPECT_EQ(proc("svc")["restarts"], 0);
}

TEST_F(Ring2dTest, HalfWrittenLineSurvivesADeath) {
  writeSpec(R"toml(
[[process]]
name = "slowpoke"
command = [)toml" + python("import os,time; os.write(1, b'first half, '); time.sleep(0.6); os.write(1, b'second half\\n'); time.sleep(60)") + R"toml(]
)toml");
  startRing2d();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the first half is written
  killRing2d(SIGKILL);
  startRing2d();
  ASSERT_TRUE(waitFor([&] { return readFile(state() + "/logs/slowpoke.log").find("second half") != std::string::npos; }, 5000));
  const std::string log = readFile(state() + "/logs/slowpoke.log");
  EXPECT_NE(log.find("stdout first half, second half\n"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
}

TEST_F(Ring2dTest, ExecHealthCheckRunsAsTheProcessUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  const ThrowawayUser& user = throwawayUser();
  ASSERT_TRUE(user.ok()) << "could not add a throwaway user: " << user.error();
  // The check writes down who it ran as and what environment it saw, in a directory only that
  // user may write to: the file appears only if a check ran at all, and as that user.
  TempDir out;
  ASSERT_EQ(::chown(out.path().c_str(), user.uid(), user.gid()), 0);
  const std::string seen = out / "seen";
  writeSpec(R"(
[[process]]
name = "svc"
command = [)" + crasher("sleep:600000") + R"(]
strategy = "unix-user"
env = { MARK = "yes" }
health = { check = ["/bin/sh", "-c", "echo $(id -u) $(id -g) $MARK > )" + seen + ".tmp && mv " +
            seen + ".tmp " + seen + R"("], interval_ms = 50, failures = 1 }

[process.unix-user]
user = ")" + user.name() + R"("
)");
  startRing2d();
  const std::string expected =
      std::to_string(user.uid()) + " " + std::to_string(user.gid()) + " yes\n";
  EXPECT_TRUE(waitFor([&] { return readFile(seen) == expected; }, 5000))
      << "saw: '" << readFile(seen) << "'\n" << ring2dErr();
  EXPECT_EQ(stateOf("svc"), "ready") << ring2dErr();
  EXPECT_EQ(proc("svc")["restarts"], 0);
}

}  // namespace
}  // namespace enjin::testing
