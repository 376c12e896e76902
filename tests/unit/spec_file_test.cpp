#include "enjin/supervise/spec_file.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <ostream>
#include <string>
#include <vector>

#include "enjin/base/file.hpp"
#include "enjin/supervise/spec_json.hpp"
#include "fakes/temp_dir.hpp"

namespace enjin::supervise {
namespace {

constexpr const char* kFullSpec = R"(# two processes using every key
[[process]]
name = "db"
command = ["/usr/bin/postgres", "-D", "/var/lib/pg"]
readiness = "tcp:5432"

[[process]]
name = "web-1_main"
command = ["/usr/bin/web", "--port", "8080", ""]
env = { MODE = "prod", EMPTY = "" }
cwd = "/srv/web"
strategy = "unix-user"
depends_on = ["db"]
restart = "on-failure"
restart_delay_ms = 250
backoff_max_ms = 5000
stable_after_ms = 20000
max_restarts = 3
restart_window_s = 30
readiness = "notify"
readiness_timeout_ms = 15000
watchdog_ms = 2000
stop_signal = "SIGQUIT"
stop_timeout_ms = 0

[process.unix-user]
user = "www"
rlimits = { nofile = 4096, core = 0, as = 1073741824, cpu = 60, data = 1, fsize = 2, memlock = 3, nproc = 64, stack = 8388608 }

[process.health]
check = "http://127.0.0.1:8080/healthz"
interval_ms = 5000
timeout_ms = 1000
failures = 2
restart = false

[process.log]
max_bytes = 1048576
keep = 0
)";

TEST(SpecFileParse, FullSpecFieldByField) {
  auto specs = parseSpec(kFullSpec, "full.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  ASSERT_EQ(specs->size(), 2u);

  const ProcessSpec& db = (*specs)[0];
  EXPECT_EQ(db.name, "db");
  EXPECT_EQ(db.command, (std::vector<std::string>{"/usr/bin/postgres", "-D", "/var/lib/pg"}));
  EXPECT_EQ(db.readiness.kind, "tcp");
  EXPECT_EQ(db.readiness.host, "127.0.0.1");
  EXPECT_EQ(db.readiness.port, 5432);
  // Everything else keeps the defaults of process_spec.hpp.
  ProcessSpec defaults;
  EXPECT_EQ(db.env, defaults.env);
  EXPECT_EQ(db.cwd, "");
  EXPECT_EQ(db.strategy, "exec");
  EXPECT_EQ(db.strategyConfig, "");
  EXPECT_TRUE(db.dependsOn.empty());
  EXPECT_EQ(db.restart, defaults.restart);
  EXPECT_EQ(db.health, defaults.health);
  EXPECT_EQ(db.log, defaults.log);
  EXPECT_EQ(db.stopSignal, SIGTERM);
  EXPECT_EQ(db.stopTimeoutMs, defaults.stopTimeoutMs);

  const ProcessSpec& web = (*specs)[1];
  EXPECT_EQ(web.name, "web-1_main");
  EXPECT_EQ(web.command, (std::vector<std::string>{"/usr/bin/web", "--port", "8080", ""}));
  EXPECT_EQ(web.env, (std::map<std::string, std::string>{{"MODE", "prod"}, {"EMPTY", ""}}));
  EXPECT_EQ(web.cwd, "/srv/web");
  EXPECT_EQ(web.strategy, "unix-user");
  // The strategy's block, as canonical JSON for the strategy to read: keys sorted, no spaces.
  EXPECT_EQ(web.strategyConfig,
            R"({"rlimits":{"as":1073741824,"core":0,"cpu":60,"data":1,"fsize":2,"memlock":3,)"
            R"("nofile":4096,"nproc":64,"stack":8388608},"user":"www"})");
  EXPECT_EQ(web.dependsOn, (std::vector<std::string>{"db"}));
  EXPECT_EQ(web.restart.mode, RestartMode::kOnFailure);
  EXPECT_EQ(web.restart.delayMs, 250);
  EXPECT_EQ(web.restart.backoffMaxMs, 5000);
  EXPECT_EQ(web.restart.stableAfterMs, 20000);
  EXPECT_EQ(web.restart.maxRestarts, 3u);
  EXPECT_EQ(web.restart.windowS, 30);
  EXPECT_EQ(web.readiness.kind, "notify");
  EXPECT_EQ(web.readiness.timeoutMs, 15000);
  EXPECT_EQ(web.readiness.watchdogMs, 2000);
  EXPECT_EQ(web.health.kind, "http");
  EXPECT_EQ(web.health.url, "http://127.0.0.1:8080/healthz");
  EXPECT_EQ(web.health.intervalMs, 5000);
  EXPECT_EQ(web.health.timeoutMs, 1000);
  EXPECT_EQ(web.health.failures, 2u);
  EXPECT_FALSE(web.health.restartWhenUnhealthy);
  EXPECT_EQ(web.log.maxBytes, 1048576u);
  EXPECT_EQ(web.log.keep, 0u);
  EXPECT_EQ(web.stopSignal, SIGQUIT);
  EXPECT_EQ(web.stopTimeoutMs, 0);
}

// One process with `extra` lines added; returns the first spec.
ProcessSpec parseOne(const std::string& extra) {
  std::string text = "[[process]]\nname = \"p\"\ncommand = [\"/bin/true\"]\n" + extra + "\n";
  auto specs = parseSpec(text, "one.toml");
  EXPECT_TRUE(specs.ok()) << extra << ": " << specs.error().message;
  if (!specs.ok() || specs->empty()) return {};
  return specs->front();
}

TEST(SpecFileParse, ReadinessForms) {
  ProcessSpec p = parseOne("readiness = \"tcp:10.0.0.1:81\"");
  EXPECT_EQ(p.readiness.kind, "tcp");
  EXPECT_EQ(p.readiness.host, "10.0.0.1");
  EXPECT_EQ(p.readiness.port, 81);
  p = parseOne("readiness = \"tcp:[::1]:65535\"");
  EXPECT_EQ(p.readiness.host, "::1");
  EXPECT_EQ(p.readiness.port, 65535);
  p = parseOne("readiness = \"tcp:localhost:1\"");
  EXPECT_EQ(p.readiness.host, "localhost");
  EXPECT_EQ(p.readiness.port, 1);
  p = parseOne("readiness = \"http:http://localhost:8080/ready\"");
  EXPECT_EQ(p.readiness.kind, "http");
  EXPECT_EQ(p.readiness.url, "http://localhost:8080/ready");
  p = parseOne("readiness = \"http://[::1]/\"");
  EXPECT_EQ(p.readiness.kind, "http");
  EXPECT_EQ(p.readiness.url, "http://[::1]/");
  p = parseOne("readiness = \"none\"");
  EXPECT_EQ(p.readiness.kind, "none");
}

TEST(SpecFileParse, HealthForms) {
  ProcessSpec p = parseOne("health = { check = \"tcp:9000\" }");
  EXPECT_EQ(p.health.kind, "tcp");
  EXPECT_EQ(p.health.host, "127.0.0.1");
  EXPECT_EQ(p.health.port, 9000);
  EXPECT_TRUE(p.health.restartWhenUnhealthy);
  p = parseOne("health = { check = \"http:http://127.0.0.1/\" }");
  EXPECT_EQ(p.health.kind, "http");
  EXPECT_EQ(p.health.url, "http://127.0.0.1/");
  p = parseOne("health = { check = [\"/bin/check\", \"--quick\"], restart = true }");
  EXPECT_EQ(p.health.kind, "exec");
  EXPECT_EQ(p.health.command, (std::vector<std::string>{"/bin/check", "--quick"}));
}

TEST(SpecFileParse, StopSignalForms) {
  EXPECT_EQ(parseOne("stop_signal = \"TERM\"").stopSignal, SIGTERM);
  EXPECT_EQ(parseOne("stop_signal = \"SIGINT\"").stopSignal, SIGINT);
  EXPECT_EQ(parseOne("stop_signal = \"HUP\"").stopSignal, SIGHUP);
  EXPECT_EQ(parseOne("stop_signal = \"SIGUSR1\"").stopSignal, SIGUSR1);
  EXPECT_EQ(parseOne("stop_signal = \"USR2\"").stopSignal, SIGUSR2);
  EXPECT_EQ(parseOne("stop_signal = \"SIGKILL\"").stopSignal, SIGKILL);
  EXPECT_EQ(parseOne("stop_signal = 2").stopSignal, 2);
}

// [process.<strategy>] after [[process]] is a table of the last process (TOML's rule for arrays
// of tables); an inline table says the same.
TEST(SpecFileParse, StrategyBlocksBelongToTheirProcess) {
  auto specs = parseSpec(R"([[process]]
name = "a"
command = ["/bin/a"]
strategy = "unix-user"

[process.unix-user]
user = "app"
rlimits = { nofile = 1024 }

[[process]]
name = "b"
command = ["/bin/b"]
strategy = "unix-user"
unix-user = { user = "other" }

[[process]]
name = "c"
command = ["/bin/c"]

[process.exec]
)",
                         "blocks.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  ASSERT_EQ(specs->size(), 3u);
  EXPECT_EQ((*specs)[0].strategyConfig, R"({"rlimits":{"nofile":1024},"user":"app"})");
  EXPECT_EQ((*specs)[1].strategyConfig, R"({"user":"other"})");
  // An empty block is no block: the same spec as without it.
  EXPECT_EQ((*specs)[2].strategyConfig, "");
  // And it travels to the holder (and in node specs) as part of the spec's JSON.
  for (const ProcessSpec& spec : *specs) {
    auto back = specFromJson(specToJson(spec));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, spec);
  }
  EXPECT_EQ(specToJson((*specs)[0])["strategy_config"]["user"], "app");
  EXPECT_FALSE(specToJson((*specs)[2]).contains("strategy_config"));
}

// A spec from before strategy blocks (an older supervisor or parent) still reads: its "user" and
// "rlimits" become the block.
TEST(SpecJson, TopLevelUserAndRlimitsBecomeTheStrategyBlock) {
  ProcessSpec spec;
  spec.name = "old";
  spec.command = {"/bin/old"};
  spec.strategy = "unix-user";
  auto j = specToJson(spec);
  j["user"] = "app";
  j["rlimits"] = {{"nofile", 64}};
  auto back = specFromJson(j);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->strategyConfig, R"({"rlimits":{"nofile":64},"user":"app"})");
  j["user"] = "";
  j["rlimits"] = nlohmann::json::object();
  EXPECT_EQ(specFromJson(j)->strategyConfig, "");
}

TEST(SpecFileParse, EmptySpecHasNoProcesses) {
  auto specs = parseSpec("# nothing to run\n", "empty.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  EXPECT_TRUE(specs->empty());
}

TEST(SpecFileParse, InlineArrayOfTables) {
  auto specs = parseSpec(R"(process = [{ name = "a", command = ["/a"] }])", "inline.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ((*specs)[0].name, "a");
}

TEST(SpecFileLoad, ReadsAFileAndNamesItInErrors) {
  testing::TempDir dir;
  ASSERT_TRUE(writeFileAtomic(dir / "ok.toml", kFullSpec, 0644).ok());
  auto specs = loadSpecFile(dir / "ok.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  EXPECT_EQ(specs->size(), 2u);

  ASSERT_TRUE(writeFileAtomic(dir / "bad.toml", "[[process]]\nname = 1\n", 0644).ok());
  auto bad = loadSpecFile(dir / "bad.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            dir / "bad.toml" + ":2: process #1: name: expected a string, got an integer");

  auto missing = loadSpecFile(dir / "missing.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message,
            "open " + (dir / "missing.toml") + ": No such file or directory");
}

struct ErrorCase {
  std::string name;
  std::string text;
  std::string message;  // the whole error, exactly
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

// Process 'web' on lines 1-3, for cases that add keys from line 4 on.
const std::string kWeb = "[[process]]\nname = \"web\"\ncommand = [\"/bin/web\"]\n";

const std::vector<ErrorCase>& errorCases() {
  static const std::vector<ErrorCase> kCases = {
      // TOML syntax: toml++'s own message and line.
      {"syntax", kWeb + "restart = \n",
       "web.toml:4: Error while parsing key-value pair: expected value, saw '\\n'"},
      // Structure.
      {"topLevelKey", "version = 1\n", "web.toml:1: version: unknown key: a spec holds only "
                                       "[[process]] tables"},
      {"processNotArray", "[process]\nname = \"x\"\n",
       "web.toml:1: process: expected [[process]] tables, got a table"},
      {"unknownKey", kWeb + "restrat = \"always\"\n",
       "web.toml:4: process 'web': restrat: unknown key (did you mean restart?)"},
      {"unknownKeyFar", kWeb + "colour = \"blue\"\n",
       "web.toml:4: process 'web': colour: unknown key"},
      {"unknownHealthKey", kWeb + "[process.health]\ncheck = \"tcp:80\"\nintervall_ms = 5\n",
       "web.toml:6: process 'web': health.intervall_ms: unknown key (did you mean interval_ms?)"},
      {"unknownLogKey", kWeb + "log = { max_bytes = 4096, rotate = 1 }\n",
       "web.toml:4: process 'web': log.rotate: unknown key"},
      // Names.
      {"nameMissing", "[[process]]\ncommand = [\"/bin/x\"]\n",
       "web.toml:1: process #1: name: missing"},
      {"nameNotString", "[[process]]\nname = 1\n",
       "web.toml:2: process #1: name: expected a string, got an integer"},
      {"nameBadChar", "[[process]]\nname = \"we b\"\ncommand = [\"/x\"]\n",
       "web.toml:2: process #1: name: 'we b': expected 1 to 64 of A-Z a-z 0-9 _ -"},
      {"nameTooLong", "[[process]]\nname = \"" + std::string(65, 'a') + "\"\ncommand = [\"/x\"]\n",
       "web.toml:2: process #1: name: '" + std::string(65, 'a') +
           "': expected 1 to 64 of A-Z a-z 0-9 _ -"},
      {"nameDotDot", "[[process]]\nname = \"..\"\ncommand = [\"/x\"]\n",
       "web.toml:2: process #1: name: '..': expected 1 to 64 of A-Z a-z 0-9 _ -"},
      // A name is one segment of obs.r2.NODE.NAME: a dot would split it.
      {"nameDot", "[[process]]\nname = \"web.1\"\ncommand = [\"/x\"]\n",
       "web.toml:2: process #1: name: 'web.1': expected 1 to 64 of A-Z a-z 0-9 _ -"},
      {"nameDuplicate", kWeb + "\n" + kWeb,
       "web.toml:6: process 'web': name: duplicate: already used at line 2"},
      // Command.
      {"commandMissing", "[[process]]\nname = \"web\"\n",
       "web.toml:1: process 'web': command: missing"},
      {"commandEmpty", "[[process]]\nname = \"web\"\ncommand = []\n",
       "web.toml:3: process 'web': command: must not be empty"},
      {"commandNotArray", "[[process]]\nname = \"web\"\ncommand = \"/bin/web --x\"\n",
       "web.toml:3: process 'web': command: expected an array of strings, got a string"},
      {"commandElement", "[[process]]\nname = \"web\"\ncommand = [\"/bin/web\", 8080]\n",
       "web.toml:3: process 'web': command[1]: expected a string, got an integer"},
      {"commandEmptyProgram", "[[process]]\nname = \"web\"\ncommand = [\"\", \"x\"]\n",
       "web.toml:3: process 'web': command[0]: must not be empty"},
      {"commandNul", "[[process]]\nname = \"web\"\ncommand = [\"/bin/w\\u0000eb\"]\n",
       "web.toml:3: process 'web': command[0]: contains a NUL byte"},
      // env, cwd, strategy, user, rlimits.
      {"envNotString", kWeb + "env = { PORT = 8080 }\n",
       "web.toml:4: process 'web': env.PORT: expected a string, got an integer"},
      {"envBadName", kWeb + "env = { \"A=B\" = \"x\" }\n",
       "web.toml:4: process 'web': env.A=B: a variable name is non-empty, without '=' or NUL"},
      {"cwdRelative", kWeb + "cwd = \"srv\"\n",
       "web.toml:4: process 'web': cwd: 'srv': expected an absolute path"},
      {"strategyEmpty", kWeb + "strategy = \"\"\n",
       "web.toml:4: process 'web': strategy: must not be empty"},
      // Strategy blocks. What is in one is the strategy's to check (spawn_test.cpp).
      {"userMoved", kWeb + "user = \"www\"\n",
       "web.toml:4: process 'web': 'user' moved to [process.unix-user]"},
      {"rlimitsMoved", kWeb + "rlimits = { nofile = 10 }\n",
       "web.toml:4: process 'web': 'rlimits' moved to [process.exec]"},
      {"rlimitsMovedUnixUser", kWeb + "strategy = \"unix-user\"\nrlimits = { nofile = 10 }\n",
       "web.toml:5: process 'web': 'rlimits' moved to [process.unix-user]"},
      {"blockOfAnotherStrategy", kWeb + "[process.unix-user]\nuser = \"www\"\n",
       "web.toml:4: process 'web': [process.unix-user] holds settings of strategy 'unix-user', "
       "but this process's strategy is 'exec' (set strategy = \"unix-user\")"},
      {"blockNotTable", kWeb + "exec = 1\n",
       "web.toml:4: process 'web': exec: expected a table, got an integer"},
      {"blockDate", kWeb + "[process.exec]\nwhen = 1979-05-27\n",
       "web.toml:5: process 'web': exec.when: expected a string, number, boolean, array or "
       "table, got a date"},
      {"blockNul", kWeb + "[process.exec]\nx = [\"a\\u0000b\"]\n",
       "web.toml:5: process 'web': exec.x[0]: contains a NUL byte"},
      // Restart.
      {"restartBad", kWeb + "restart = \"sometimes\"\n",
       "web.toml:4: process 'web': restart: expected one of always, on-failure, never, got "
       "'sometimes'"},
      {"delayNegative", kWeb + "restart_delay_ms = -5\n",
       "web.toml:4: process 'web': restart_delay_ms: expected 0 to 31536000000, got -5"},
      {"delayFloat", kWeb + "restart_delay_ms = 1.5\n",
       "web.toml:4: process 'web': restart_delay_ms: expected an integer, got a float"},
      {"backoffBelowDelay", kWeb + "restart_delay_ms = 500\nbackoff_max_ms = 100\n",
       "web.toml:5: process 'web': backoff_max_ms: must be at least restart_delay_ms (500), got "
       "100"},
      {"maxRestartsZero", kWeb + "max_restarts = 0\n",
       "web.toml:4: process 'web': max_restarts: expected 1 to 4294967295, got 0"},
      {"windowZero", kWeb + "restart_window_s = 0\n",
       "web.toml:4: process 'web': restart_window_s: expected 1 to 31536000, got 0"},
      {"stableNegative", kWeb + "stable_after_ms = -1\n",
       "web.toml:4: process 'web': stable_after_ms: expected 0 to 31536000000, got -1"},
      // Readiness.
      {"readinessBad", kWeb + "readiness = \"ready\"\n",
       "web.toml:4: process 'web': readiness: expected none, notify, tcp:PORT, tcp:HOST:PORT or "
       "http://URL, got 'ready'"},
      {"readinessPortZero", kWeb + "readiness = \"tcp:0\"\n",
       "web.toml:4: process 'web': readiness: port '0': expected 1 to 65535"},
      {"readinessPortHigh", kWeb + "readiness = \"tcp:127.0.0.1:65536\"\n",
       "web.toml:4: process 'web': readiness: port '65536': expected 1 to 65535"},
      {"readinessHostName", kWeb + "readiness = \"tcp:db.example:5432\"\n",
       "web.toml:4: process 'web': readiness: host 'db.example': expected a numeric IPv4 or IPv6 "
       "address or localhost"},
      {"readinessIpv6NoBrackets", kWeb + "readiness = \"tcp:::1:80\"\n",
       "web.toml:4: process 'web': readiness: host '::1': an IPv6 address goes in brackets, "
       "[::1]:PORT"},
      {"readinessHttps", kWeb + "readiness = \"https://127.0.0.1/\"\n",
       "web.toml:4: process 'web': readiness: expected none, notify, tcp:PORT, tcp:HOST:PORT or "
       "http://URL, got 'https://127.0.0.1/'"},
      {"readinessHttpPrefixHttps", kWeb + "readiness = \"http:https://127.0.0.1/\"\n",
       "web.toml:4: process 'web': readiness: URL 'https://127.0.0.1/': https is not supported, "
       "only http://"},
      {"readinessHttpNoHost", kWeb + "readiness = \"http:///x\"\n",
       "web.toml:4: process 'web': readiness: URL 'http:///x': no host"},
      {"readinessHttpBadPort", kWeb + "readiness = \"http://127.0.0.1:99999/\"\n",
       "web.toml:4: process 'web': readiness: URL 'http://127.0.0.1:99999/': port '99999': "
       "expected 1 to 65535"},
      {"readinessTimeoutZero", kWeb + "readiness_timeout_ms = 0\n",
       "web.toml:4: process 'web': readiness_timeout_ms: expected 1 to 31536000000, got 0"},
      {"watchdogWithoutNotify", kWeb + "readiness = \"tcp:80\"\nwatchdog_ms = 1000\n",
       "web.toml:5: process 'web': watchdog_ms: only with readiness = \"notify\""},
      {"watchdogWithoutReadiness", kWeb + "watchdog_ms = 1000\n",
       "web.toml:4: process 'web': watchdog_ms: only with readiness = \"notify\""},
      // Health.
      {"healthNotTable", kWeb + "health = \"tcp:80\"\n",
       "web.toml:4: process 'web': health: expected a table, got a string"},
      {"healthNoCheck", kWeb + "\n[process.health]\ninterval_ms = 100\n",
       "web.toml:5: process 'web': health.check: missing"},
      {"healthBadCheck", kWeb + "health = { check = \"ping\" }\n",
       "web.toml:4: process 'web': health.check: expected tcp:PORT, tcp:HOST:PORT, http://URL or "
       "a command (an array of strings), got 'ping'"},
      {"healthEmptyCommand", kWeb + "health = { check = [] }\n",
       "web.toml:4: process 'web': health.check: must not be empty"},
      {"healthIntervalZero", kWeb + "health = { check = \"tcp:80\", interval_ms = 0 }\n",
       "web.toml:4: process 'web': health.interval_ms: expected 1 to 31536000000, got 0"},
      {"healthFailuresZero", kWeb + "health = { check = \"tcp:80\", failures = 0 }\n",
       "web.toml:4: process 'web': health.failures: expected 1 to 1000, got 0"},
      {"healthRestartNotBool", kWeb + "health = { check = \"tcp:80\", restart = \"yes\" }\n",
       "web.toml:4: process 'web': health.restart: expected true or false, got a string"},
      // Log.
      {"logSmall", kWeb + "\n[process.log]\nmax_bytes = 4095\n",
       "web.toml:6: process 'web': log.max_bytes: expected at least 4096, got 4095"},
      {"logKeepHigh", kWeb + "log = { keep = 101 }\n",
       "web.toml:4: process 'web': log.keep: expected 0 to 100, got 101"},
      // Stop.
      {"stopSignalUnknown", kWeb + "stop_signal = \"SIGSTOPP\"\n",
       "web.toml:4: process 'web': stop_signal: unknown signal 'SIGSTOPP': expected SIGHUP, "
       "SIGINT, SIGQUIT, SIGABRT, SIGKILL, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM, SIGWINCH or a "
       "number"},
      {"stopSignalZero", kWeb + "stop_signal = 0\n",
       "web.toml:4: process 'web': stop_signal: expected 1 to 64, got 0"},
      {"stopSignalBool", kWeb + "stop_signal = true\n",
       "web.toml:4: process 'web': stop_signal: expected a string, got a boolean"},
      {"stopTimeoutNegative", kWeb + "stop_timeout_ms = -1\n",
       "web.toml:4: process 'web': stop_timeout_ms: expected 0 to 31536000000, got -1"},
      // Dependencies.
      {"dependsNotArray", kWeb + "depends_on = \"db\"\n",
       "web.toml:4: process 'web': depends_on: expected an array of strings, got a string"},
      {"dependsUnknown", kWeb + "depends_on = [\n  \"db\",\n]\n",
       "web.toml:5: process 'web': depends_on: no process named 'db'"},
      {"dependsTwice",
       "[[process]]\nname = \"db\"\ncommand = [\"/db\"]\n" + kWeb + "depends_on = [\"db\", \"db\"]\n",
       "web.toml:7: process 'web': depends_on: 'db' listed twice"},
      {"dependsSelf", kWeb + "depends_on = [\"web\"]\n",
       "web.toml:4: process 'web': depends_on: cycle web -> web"},
      // The first error in the file wins.
      {"firstErrorWins", kWeb + "restart = \"x\"\n[[process]]\nname = 2\n",
       "web.toml:4: process 'web': restart: expected one of always, on-failure, never, got 'x'"},
  };
  return kCases;
}

class SpecFileErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(SpecFileErrors, NamesFileLineProcessAndKey) {
  const ErrorCase& c = GetParam();
  auto specs = parseSpec(c.text, "web.toml");
  ASSERT_FALSE(specs.ok()) << c.text;
  EXPECT_EQ(specs.error().message, c.message) << c.text;
}

INSTANTIATE_TEST_SUITE_P(SpecFile, SpecFileErrors, ::testing::ValuesIn(errorCases()),
                         [](const ::testing::TestParamInfo<ErrorCase>& p) { return p.param.name; });

TEST(SpecFileCycle, NamesTheWholeCycleFromItsFirstMember) {
  // x is independent; b -> c -> a -> b is the cycle, reported from b (its first member in the
  // file) at the line of b's depends_on entry that leads into it.
  auto specs = parseSpec(R"([[process]]
name = "x"
command = ["/x"]
[[process]]
name = "b"
command = ["/b"]
depends_on = ["c"]
[[process]]
name = "a"
command = ["/a"]
depends_on = ["x",
  "b"]
[[process]]
name = "c"
command = ["/c"]
depends_on = ["a"]
)",
                         "ring.toml");
  ASSERT_FALSE(specs.ok());
  EXPECT_EQ(specs.error().message, "ring.toml:7: process 'b': depends_on: cycle b -> c -> a -> b");
}

TEST(SpecFileCycle, NoCycleInADiamond) {
  auto specs = parseSpec(R"([[process]]
name = "top"
command = ["/t"]
depends_on = ["left", "right"]
[[process]]
name = "left"
command = ["/l"]
depends_on = ["base"]
[[process]]
name = "right"
command = ["/r"]
depends_on = ["base"]
[[process]]
name = "base"
command = ["/b"]
)",
                         "diamond.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
}

// One process, its table on line 2, with an env value of `n` bytes.
std::string specWithEnvValue(size_t n) {
  return "# big\n[[process]]\nname = \"big\"\ncommand = [\"/x\"]\nenv = { BLOB = \"" +
         std::string(n, 'x') + "\" }\n";
}

TEST(SpecFileSize, ASpecTooLargeForOneHolderMessageIsRefused) {
  constexpr size_t kProbe = 1000;
  auto small = parseSpec(specWithEnvValue(kProbe), "big.toml");
  ASSERT_TRUE(small.ok()) << small.error().message;
  // The serialized size of everything but the value.
  const size_t rest = specToJson((*small)[0]).dump().size() - kProbe;

  auto at = parseSpec(specWithEnvValue(kMaxSerializedSpecBytes - rest), "big.toml");
  ASSERT_TRUE(at.ok()) << at.error().message;
  EXPECT_EQ(specToJson((*at)[0]).dump().size(), kMaxSerializedSpecBytes);

  auto over = parseSpec(specWithEnvValue(kMaxSerializedSpecBytes - rest + 1), "big.toml");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message,
            "big.toml:2: process 'big': spec is 49153 bytes serialized, more than 49152 (large env "
            "values belong in files)");
}

std::vector<std::string> names(const std::vector<const ProcessSpec*>& order) {
  std::vector<std::string> out;
  for (const ProcessSpec* p : order) out.push_back(p->name);
  return out;
}

ProcessSpec proc(std::string name, std::vector<std::string> deps = {}) {
  ProcessSpec p;
  p.name = std::move(name);
  p.command = {"/bin/true"};
  p.dependsOn = std::move(deps);
  return p;
}

TEST(SpecFileStartOrder, IndependentProcessesKeepSpecOrder) {
  std::vector<ProcessSpec> specs = {proc("c"), proc("a"), proc("b")};
  EXPECT_EQ(names(startOrder(specs)), (std::vector<std::string>{"c", "a", "b"}));
}

TEST(SpecFileStartOrder, DependenciesFirstThenSpecOrder) {
  std::vector<ProcessSpec> specs = {proc("web", {"db", "cache"}), proc("worker", {"db"}),
                                    proc("db"), proc("cache"), proc("cron")};
  // Ready at first: db, cache, cron. Taking db readies worker, which comes before cache in the
  // spec; taking cache readies web, which comes before cron.
  EXPECT_EQ(names(startOrder(specs)),
            (std::vector<std::string>{"db", "worker", "cache", "web", "cron"}));
}

TEST(SpecFileStartOrder, DiamondAndPointersIntoSpecs) {
  std::vector<ProcessSpec> specs = {proc("top", {"left", "right"}), proc("left", {"base"}),
                                    proc("right", {"base"}), proc("base")};
  auto order = startOrder(specs);
  EXPECT_EQ(names(order), (std::vector<std::string>{"base", "left", "right", "top"}));
  EXPECT_EQ(order[0], &specs[3]);
}

TEST(SpecFileStartOrder, ParsedSpec) {
  auto specs = parseSpec(kFullSpec, "full.toml");
  ASSERT_TRUE(specs.ok()) << specs.error().message;
  EXPECT_EQ(names(startOrder(*specs)), (std::vector<std::string>{"db", "web-1_main"}));
}

TEST(SpecFileStartOrder, NamesOutsideTheListImposeNoOrder) {
  std::vector<ProcessSpec> specs = {proc("a", {"elsewhere"}), proc("b")};
  EXPECT_EQ(names(startOrder(specs)), (std::vector<std::string>{"a", "b"}));
}

TEST(SpecFileStartOrder, CycleMembersGoLastInSpecOrder) {
  // Not from parseSpec (it refuses cycles), but a supervisor mixing a process's old spec with
  // its neighbours' new ones may build one: every process is still in the order, once.
  std::vector<ProcessSpec> specs = {proc("a", {"b"}), proc("x"), proc("b", {"a"}),
                                    proc("y", {"x"})};
  EXPECT_EQ(names(startOrder(specs)), (std::vector<std::string>{"x", "y", "a", "b"}));
}

}  // namespace
}  // namespace enjin::supervise
