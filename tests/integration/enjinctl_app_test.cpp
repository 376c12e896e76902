// enjinctl app ...: the real binary against a recording HTTP server on a loopback port, which
// answers as the ring-1 API's /v1/apps would and keeps every request; and the --cmd splitter.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "argv_split.hpp"

extern char** environ;

namespace enjin::ctl {
namespace {

using nlohmann::json;
using Words = std::vector<std::string>;

// ---- the splitter ----

Words split(const std::string& s) {
  auto r = splitCommandLine(s);
  EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : Words{};
}

TEST(EnjinctlArgvSplit, PlainWordsAndBlanks) {
  EXPECT_EQ(split("/bin/srv -p 80"), (Words{"/bin/srv", "-p", "80"}));
  EXPECT_EQ(split("  a \t b\n c  "), (Words{"a", "b", "c"}));
  EXPECT_EQ(split(""), Words{});
  EXPECT_EQ(split("   "), Words{});
}

TEST(EnjinctlArgvSplit, SingleQuotesKeepEverything) {
  EXPECT_EQ(split("echo 'a  b' 'c\\d' '$HOME' '\"'"), (Words{"echo", "a  b", "c\\d", "$HOME", "\""}));
  EXPECT_EQ(split("x '' y"), (Words{"x", "", "y"}));
}

TEST(EnjinctlArgvSplit, DoubleQuotesEscapeOnlyTheirFive) {
  EXPECT_EQ(split(R"(say "a \"b\" \\ \$x \n" "")"), (Words{"say", R"(a "b" \ $x \n)", ""}));
  EXPECT_EQ(split("\"it's\""), (Words{"it's"}));
}

TEST(EnjinctlArgvSplit, BackslashOutsideQuotes) {
  EXPECT_EQ(split(R"(a\ b \'c \"d \\e)"), (Words{"a b", "'c", "\"d", "\\e"}));
  EXPECT_EQ(split("a\\\nb"), (Words{"ab"}));
  EXPECT_EQ(split(R"(\x)"), (Words{"x"}));
}

TEST(EnjinctlArgvSplit, PartsOfOneWordJoin) {
  EXPECT_EQ(split(R"(pre'mid dle'"end"\ x)"), (Words{"premid dleend x"}));
}

TEST(EnjinctlArgvSplit, NoExpansion) {
  EXPECT_EQ(split("ls * ~ $PATH `id` $(id) a;b |"),
            (Words{"ls", "*", "~", "$PATH", "`id`", "$(id)", "a;b", "|"}));
}

TEST(EnjinctlArgvSplit, UnbalancedQuotesAndATrailingBackslashAreErrors) {
  auto single = splitCommandLine("echo 'abc");
  ASSERT_FALSE(single.ok());
  EXPECT_EQ(single.error().code, 400);
  EXPECT_NE(single.error().message.find("single quote at column 6"), std::string::npos)
      << single.error().message;
  auto dbl = splitCommandLine(R"(echo "a\")");
  ASSERT_FALSE(dbl.ok());
  EXPECT_NE(dbl.error().message.find("double quote at column 6"), std::string::npos)
      << dbl.error().message;
  auto back = splitCommandLine("echo a\\");
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.error().message.find("backslash"), std::string::npos);
  EXPECT_FALSE(splitCommandLine("'a'\"").ok());
}

TEST(EnjinctlArgvSplit, JoinIsTheInverse) {
  const Words words{"/bin/srv", "a b", "it's", "", "$X", "--k=v"};
  const std::string joined = joinCommandLine(words);
  EXPECT_EQ(joined, R"(/bin/srv 'a b' 'it'\''s' '' '$X' --k=v)");
  EXPECT_EQ(split(joined), words);
}

// ---- the recording server ----

struct Recorded {
  std::string method;
  std::string path;
  std::map<std::string, std::string> params;
  std::string body;
  std::string authorization;
};

class RecordingServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  RecordingServer() {
    auto dispatch = [this](const httplib::Request& req, httplib::Response& res) {
      Handler h;
      {
        std::lock_guard lock(mu_);
        Recorded r{req.method, req.path, {}, req.body, req.get_header_value("Authorization")};
        for (const auto& [k, v] : req.params) r.params[k] = v;
        requests_.push_back(std::move(r));
        auto it = handlers_.find(req.method + " " + req.path);
        if (it != handlers_.end()) h = it->second;
      }
      if (h) {
        h(req, res);
      } else {
        res.status = 404;
        res.set_content(R"({"error":"not_found","message":"no route )" + req.method + " " + req.path + "\"}",
                        "application/json");
      }
    };
    server_.Get(".*", dispatch);
    server_.Post(".*", dispatch);
    server_.Put(".*", dispatch);
    server_.Delete(".*", dispatch);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~RecordingServer() {
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  void on(const std::string& method, const std::string& path, Handler h) {
    std::lock_guard lock(mu_);
    handlers_[method + " " + path] = std::move(h);
  }
  // `status` with `body` as JSON.
  void answer(const std::string& method, const std::string& path, int status, const json& body) {
    on(method, path, [status, body](const httplib::Request&, httplib::Response& res) {
      res.status = status;
      if (!body.is_null()) res.set_content(body.dump(), "application/json");
    });
  }
  std::vector<Recorded> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::string, Handler> handlers_;
  std::vector<Recorded> requests_;
};

json appObject(const std::string& name, const std::string& rollout, int revision,
               const std::string& message = "") {
  return {{"name", name},
          {"command", {"/srv/shop/bin/shop", "--title", "a shop"}},
          {"instances", 2},
          {"strategy", "unix-user"},
          {"health", "http:/healthz"},
          {"readiness", "http:/"},
          {"env", {{"MODE", "prod"}}},
          {"max_surge", 1},
          {"max_unavailable", 0},
          {"revision", revision},
          {"status",
           {{"rollout", rollout},
            {"message", message},
            {"urls", {"http://" + name + ".localhost:8080/"}},
            {"ready", rollout == "complete" ? 2 : 1},
            {"instances",
             {{{"name", name + "-1"}, {"node", name + "-1"}, {"port", 20001}, {"state", "ready"},
               {"restarts", 0}, {"revision", revision}, {"pid", 1234}, {"in_router", true}},
              {{"name", name + "-2"}, {"node", name + "-2"}, {"port", 20002}, {"state", "starting"},
               {"restarts", 3}, {"revision", revision}, {"pid", nullptr}, {"in_router", false}}}}}}};
}

struct CtlRun {
  int rc = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

class EnjinctlAppTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/enjinctl-app-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    writeCredentials("http://127.0.0.1:" + std::to_string(server_.port()));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void writeCredentials(const std::string& server) {
    const std::string conf = dir_ + "/config/enjin";
    std::filesystem::create_directories(conf);
    ::chmod((dir_ + "/config").c_str(), 0700);
    ::chmod(conf.c_str(), 0700);
    const std::string path = conf + "/credentials";
    {
      std::ofstream f(path);
      f << json{{"server", server}, {"user", "ops"}, {"token", "tok-123"}, {"expires_at", ""}}.dump();
    }
    ::chmod(path.c_str(), 0600);
  }

  // Runs build/bin/enjinctl ARGS with this test's credentials; `whileRunning` is called with
  // its stdout so far every 10 ms until it exits (at most 30 s).
  CtlRun ctl(const Words& args, const std::function<void(const std::string&)>& whileRunning = {}) {
    const std::string bin = std::string(ENJIN_BIN_DIR) + "/enjinctl";
    std::vector<std::string> argStore{bin};
    argStore.insert(argStore.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argStore) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> envStore{"HOME=" + dir_, "XDG_CONFIG_HOME=" + dir_ + "/config",
                                      "PATH=/usr/bin:/bin"};
    std::vector<char*> envp;
    for (auto& e : envStore) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string outPath = dir_ + "/out", errPath = dir_ + "/err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    const int spawned = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    CtlRun run;
    if (spawned != 0) {
      ADD_FAILURE() << "spawn " << bin << ": " << std::strerror(spawned);
      return run;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int status = 0;
    for (;;) {
      const pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        ADD_FAILURE() << "enjinctl did not exit within 30 s";
        break;
      }
      if (whileRunning) whileRunning(slurp(outPath));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    run.out = slurp(outPath);
    run.err = slurp(errPath);
    return run;
  }

  RecordingServer server_;
  std::string dir_;
};

TEST_F(EnjinctlAppTest, DeploySendsEveryFlagAndPrintsTheUrls) {
  server_.answer("POST", "/v1/apps", 201, appObject("shop", "in progress", 1));
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", R"(/srv/shop/bin/shop --title 'a shop' "x\"y")",
               "--instances", "2", "--strategy", "sandbox", "--health", "http:/healthz",
               "--readiness", "http:/", "--env", "MODE=prod", "--env", "EQ=a=b", "--max-surge", "1",
               "--max-unavailable", "0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].path, "/v1/apps");
  EXPECT_EQ(reqs[0].authorization, "Bearer tok-123");
  EXPECT_EQ(json::parse(reqs[0].body),
            (json{{"name", "shop"},
                  {"command", {"/srv/shop/bin/shop", "--title", "a shop", "x\"y"}},
                  {"instances", 2},
                  {"strategy", "sandbox"},
                  {"health", "http:/healthz"},
                  {"readiness", "http:/"},
                  {"env", {{"MODE", "prod"}, {"EQ", "a=b"}}},
                  {"max_surge", 1},
                  {"max_unavailable", 0}}));
  EXPECT_EQ(lines(r.out), (Words{"created app 'shop' (revision 1)", "http://shop.localhost:8080/"}));
}

TEST_F(EnjinctlAppTest, DeployOmitsWhatIsNotGiven) {
  server_.answer("POST", "/v1/apps", 201, appObject("shop", "in progress", 1));
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/true"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(json::parse(reqs[0].body), (json{{"name", "shop"}, {"command", {"/bin/true"}}}));
}

TEST_F(EnjinctlAppTest, EachEnvTakesOneValue) {
  server_.answer("POST", "/v1/apps", 201, appObject("shop", "in progress", 1));
  CtlRun r = ctl({"app", "deploy", "--env", "A=1", "shop", "--env", "B=2", "--cmd", "/bin/true"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(json::parse(reqs[0].body),
            (json{{"name", "shop"}, {"command", {"/bin/true"}}, {"env", {{"A", "1"}, {"B", "2"}}}}));
}

TEST_F(EnjinctlAppTest, DeployOfAnExistingAppPutsTheSameBody) {
  server_.answer("POST", "/v1/apps", 409, {{"error", "exists"}, {"message", "app 'shop': exists"}});
  server_.answer("PUT", "/v1/apps/shop", 200, appObject("shop", "in progress", 2));
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv -v", "--instances", "3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[1].method, "PUT");
  EXPECT_EQ(reqs[1].path, "/v1/apps/shop");
  EXPECT_EQ(json::parse(reqs[1].body), json::parse(reqs[0].body));
  EXPECT_EQ(json::parse(reqs[1].body),
            (json{{"name", "shop"}, {"command", {"/bin/srv", "-v"}}, {"instances", 3}}));
  EXPECT_EQ(lines(r.out), (Words{"updated app 'shop' (revision 2)", "http://shop.localhost:8080/"}));
}

TEST_F(EnjinctlAppTest, AnotherConflictIsAFailureWithoutAPut) {
  server_.answer("POST", "/v1/apps", 409,
                 {{"error", "conflict"}, {"message", "app 'shop': port range exhausted"}});
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("enjinctl: app 'shop': port range exhausted"), std::string::npos) << r.err;
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(EnjinctlAppTest, BadCmdOrEnvIsAUsageErrorAndSendsNothing) {
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv 'oops"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("single quote at column 10 is never closed"), std::string::npos) << r.err;
  EXPECT_EQ(ctl({"app", "deploy", "shop", "--cmd", "  "}).rc, 2);
  EXPECT_EQ(ctl({"app", "deploy", "shop", "--cmd", "/bin/srv", "--env", "NOEQUALS"}).rc, 2);
  EXPECT_EQ(ctl({"app", "deploy", "shop", "--cmd", "/bin/srv", "--strategy", "vm"}).rc, 2);
  EXPECT_EQ(ctl({"app", "deploy", "shop"}).rc, 2);  // --cmd is required
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(EnjinctlAppTest, WaitEndsWithExit1AndTheMessageWhenTheRolloutHalts) {
  server_.answer("POST", "/v1/apps", 201, appObject("shop", "in progress", 1));
  std::atomic<int> gets{0};
  server_.on("GET", "/v1/apps/shop", [&](const httplib::Request&, httplib::Response& res) {
    const int n = ++gets;
    res.set_content(
        (n < 3 ? appObject("shop", "in progress", 1)
               : appObject("shop", "halted", 1, "shop-2 failed its health check 3 times"))
            .dump(),
        "application/json");
  });
  const auto start = std::chrono::steady_clock::now();
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv", "--wait"});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_NE(r.err.find("app 'shop': the roll-out halted: shop-2 failed its health check 3 times"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(gets.load(), 3);
  // Two pauses of 250 ms between the three polls.
  EXPECT_GE(took, std::chrono::milliseconds(450));
}

TEST_F(EnjinctlAppTest, WaitEndsWithExit0WhenComplete) {
  server_.answer("POST", "/v1/apps", 409, {{"error", "exists"}, {"message", "exists"}});
  server_.answer("PUT", "/v1/apps/shop", 200, appObject("shop", "in progress", 4));
  std::atomic<int> gets{0};
  server_.on("GET", "/v1/apps/shop", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(appObject("shop", ++gets < 2 ? "in progress" : "complete", 4).dump(),
                    "application/json");
  });
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv", "--wait"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(lines(r.out), (Words{"updated app 'shop' (revision 4)", "http://shop.localhost:8080/",
                                 "roll-out of app 'shop' complete: 2 of 2 instances ready (revision 4)"}));
  EXPECT_EQ(gets.load(), 2);
}

TEST_F(EnjinctlAppTest, WaitGivesUpAfterTheTimeoutWithExit3) {
  server_.answer("POST", "/v1/apps", 201, appObject("shop", "in progress", 1));
  server_.answer("GET", "/v1/apps/shop", 200, appObject("shop", "in progress", 1, "shop-2 starting"));
  const auto start = std::chrono::steady_clock::now();
  CtlRun r = ctl({"app", "deploy", "shop", "--cmd", "/bin/srv", "--wait", "--timeout", "0.6"});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.rc, 3) << r.err;
  EXPECT_NE(r.err.find("not complete after 0.6 s (in progress: shop-2 starting)"), std::string::npos)
      << r.err;
  EXPECT_GE(took, std::chrono::milliseconds(600));
  EXPECT_LT(took, std::chrono::seconds(5));
  size_t gets = 0;
  for (const auto& q : server_.requests()) gets += q.method == "GET" ? 1 : 0;
  EXPECT_GE(gets, 3u);
}

TEST_F(EnjinctlAppTest, LsPrintsATable) {
  json b = appObject("blog", "halted", 7, "boom");
  b["instances"] = 1;
  b["strategy"] = "sandbox";
  server_.answer("GET", "/v1/apps", 200, json::array({appObject("shop", "complete", 2), b}));
  CtlRun r = ctl({"app", "ls"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(lines(r.out),
            (Words{"NAME  INSTANCES  READY  STRATEGY   ROLLOUT   URL",
                   "shop  2          2      unix-user  complete  http://shop.localhost:8080/",
                   "blog  1          1      sandbox    halted    http://blog.localhost:8080/"}));
  CtlRun j = ctl({"app", "ls", "--json"});
  ASSERT_EQ(j.rc, 0);
  EXPECT_EQ(json::parse(j.out), json::array({appObject("shop", "complete", 2), b}));
}

TEST_F(EnjinctlAppTest, ShowPrintsFieldsInstancesAndTheMessage) {
  server_.answer("GET", "/v1/apps/shop", 200,
                 appObject("shop", "in progress", 3, "waiting for shop-2 to be ready"));
  CtlRun r = ctl({"app", "show", "shop"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(lines(r.out),
            (Words{"name:            shop",
                   "command:         /srv/shop/bin/shop --title 'a shop'",
                   "instances:       2",
                   "ready:           1",
                   "strategy:        unix-user",
                   "health:          http:/healthz",
                   "readiness:       http:/",
                   "env:             MODE=prod",
                   "max_surge:       1",
                   "max_unavailable: 0",
                   "revision:        3",
                   "rollout:         in progress",
                   "urls:            http://shop.localhost:8080/",
                   "",
                   "INSTANCE  NODE    PORT   STATE     RESTARTS  REVISION  PID",
                   "shop-1    shop-1  20001  ready     0         3         1234",
                   "shop-2    shop-2  20002  starting  3         3         -",
                   "",
                   "roll-out: waiting for shop-2 to be ready"}));
  CtlRun j = ctl({"app", "show", "shop", "--json"});
  ASSERT_EQ(j.rc, 0);
  EXPECT_EQ(json::parse(j.out), appObject("shop", "in progress", 3, "waiting for shop-2 to be ready"));
}

TEST_F(EnjinctlAppTest, ScaleRestartAndRmSendTheirRequests) {
  server_.answer("PUT", "/v1/apps/shop", 200, appObject("shop", "in progress", 5));
  server_.answer("POST", "/v1/apps/shop/restart", 202, appObject("shop", "in progress", 6));
  server_.answer("DELETE", "/v1/apps/shop", 204, json());
  CtlRun s = ctl({"app", "scale", "shop", "3"});
  EXPECT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(s.out, "scaled app 'shop' to 3 instances (revision 5)\n");
  CtlRun rs = ctl({"app", "restart", "shop"});
  EXPECT_EQ(rs.rc, 0) << rs.err;
  EXPECT_EQ(rs.out, "restarting app 'shop' (revision 6), one instance at a time\n");
  CtlRun rm = ctl({"app", "rm", "shop"});
  EXPECT_EQ(rm.rc, 0) << rm.err;
  EXPECT_EQ(rm.out, "removed app 'shop'\n");
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].method + " " + reqs[0].path, "PUT /v1/apps/shop");
  EXPECT_EQ(json::parse(reqs[0].body), (json{{"instances", 3}}));
  EXPECT_EQ(reqs[1].method + " " + reqs[1].path, "POST /v1/apps/shop/restart");
  EXPECT_EQ(reqs[2].method + " " + reqs[2].path, "DELETE /v1/apps/shop");
  for (const auto& q : reqs) EXPECT_EQ(q.authorization, "Bearer tok-123");
  EXPECT_EQ(ctl({"app", "scale", "shop", "-1"}).rc, 2);
  EXPECT_EQ(ctl({"app", "scale", "shop", "two"}).rc, 2);
  EXPECT_EQ(server_.requests().size(), 3u);
}

TEST_F(EnjinctlAppTest, LogsStreamAsTheyArrive) {
  // The second chunk is sent only once enjinctl has printed the first: it must not wait for the
  // end of the answer.
  std::mutex mu;
  std::condition_variable cv;
  bool sawFirst = false;
  server_.on("GET", "/v1/apps/shop/logs", [&](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/plain", [&](size_t, httplib::DataSink& sink) {
      const std::string first = "shop-1 | listening\n";
      sink.write(first.data(), first.size());
      std::unique_lock lock(mu);
      const bool seen = cv.wait_for(lock, std::chrono::seconds(10), [&] { return sawFirst; });
      const std::string second = seen ? "shop-2 | GET / 200\n" : "never seen\n";
      sink.write(second.data(), second.size());
      sink.done();
      return true;
    });
  });
  CtlRun r = ctl({"app", "logs", "shop", "-f", "-n", "5"}, [&](const std::string& out) {
    if (out.find("shop-1 | listening\n") == std::string::npos) return;
    std::lock_guard lock(mu);
    sawFirst = true;
    cv.notify_all();
  });
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "shop-1 | listening\nshop-2 | GET / 200\n");
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/apps/shop/logs");
  EXPECT_EQ(reqs[0].params, (std::map<std::string, std::string>{{"lines", "5"}, {"follow", "1"}}));
  EXPECT_EQ(reqs[0].authorization, "Bearer tok-123");
}

TEST_F(EnjinctlAppTest, LogsWithoutFollowAskForLinesOnly) {
  server_.on("GET", "/v1/apps/shop/logs", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("shop-1 | a\nshop-2 | b\n", "text/plain");
  });
  CtlRun r = ctl({"app", "logs", "shop"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "shop-1 | a\nshop-2 | b\n");
  auto reqs = server_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].params, (std::map<std::string, std::string>{{"lines", "100"}}));
}

TEST_F(EnjinctlAppTest, ExitCodesOfNotFoundDeniedAndUnauthenticated) {
  server_.answer("GET", "/v1/apps/ghost", 404, {{"error", "not_found"}, {"message", "app 'ghost': no such app"}});
  server_.answer("DELETE", "/v1/apps/shop", 403,
                 {{"error", "forbidden"}, {"message", "user 'ops' may not apps:delete apps/shop"}});
  server_.answer("GET", "/v1/apps", 401, {{"error", "unauthenticated"}, {"message", "session expired"}});
  server_.answer("GET", "/v1/apps/ghost/logs", 404,
                 {{"error", "not_found"}, {"message", "app 'ghost': no such app"}});
  CtlRun show = ctl({"app", "show", "ghost"});
  EXPECT_EQ(show.rc, 4);
  EXPECT_EQ(show.err, "enjinctl: app 'ghost': no such app\n");
  EXPECT_TRUE(show.out.empty());
  CtlRun rm = ctl({"app", "rm", "shop"});
  EXPECT_EQ(rm.rc, 5);
  EXPECT_EQ(rm.err, "enjinctl: user 'ops' may not apps:delete apps/shop\n");
  CtlRun ls = ctl({"app", "ls"});
  EXPECT_EQ(ls.rc, 5);
  EXPECT_NE(ls.err.find("session expired (log in again: enjinctl login)"), std::string::npos) << ls.err;
  CtlRun logs = ctl({"app", "logs", "ghost", "-f"});
  EXPECT_EQ(logs.rc, 4);
  EXPECT_EQ(logs.err, "enjinctl: app 'ghost': no such app\n");
  EXPECT_TRUE(logs.out.empty());
}

TEST_F(EnjinctlAppTest, AnUnreachableServerIsExit6) {
  // A port that was free a moment ago and has nobody listening.
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
    ::close(fd);  // never listened on: a connection is refused
  }
  writeCredentials("http://127.0.0.1:" + std::to_string(port));
  CtlRun ls = ctl({"app", "ls"});
  EXPECT_EQ(ls.rc, 6);
  EXPECT_NE(ls.err.find("cannot reach http://127.0.0.1:" + std::to_string(port)), std::string::npos)
      << ls.err;
  EXPECT_EQ(ctl({"app", "deploy", "shop", "--cmd", "/bin/srv"}).rc, 6);
  EXPECT_EQ(ctl({"app", "logs", "shop", "-f"}).rc, 6);
}

TEST_F(EnjinctlAppTest, NotLoggedInIsExit5) {
  std::filesystem::remove(dir_ + "/config/enjin/credentials");
  CtlRun r = ctl({"app", "ls"});
  EXPECT_EQ(r.rc, 5);
  EXPECT_NE(r.err.find("not logged in"), std::string::npos) << r.err;
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(EnjinctlAppTest, CompletionAndHelpKnowTheAppCommands) {
  CtlRun c = ctl({"completion", "bash"});
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_NE(c.out.find(R"(["enjinctl app"]="deploy ls show scale restart rm logs")"), std::string::npos)
      << c.out;
  EXPECT_NE(c.out.find("--follow -f --lines -n"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find(R"(["enjinctl app show"]=1)"), std::string::npos);
  EXPECT_EQ(c.out.find(R"(["enjinctl app deploy"]=1)"), std::string::npos);
  EXPECT_NE(c.out.find("__complete-apps"), std::string::npos);

  server_.answer("GET", "/v1/apps", 200, json::array({appObject("shop", "complete", 1), appObject("blog", "complete", 1)}));
  CtlRun names = ctl({"__complete-apps"});
  EXPECT_EQ(names.rc, 0);
  EXPECT_EQ(names.out, "shop\nblog\n");

  CtlRun help = ctl({"app", "--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_NE(help.out.find("enjinctl app deploy shop --cmd"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("Exit codes:"), std::string::npos);
  CtlRun dhelp = ctl({"app", "deploy", "--help"});
  EXPECT_NE(dhelp.out.find("--max-unavailable"), std::string::npos) << dhelp.out;
  EXPECT_NE(dhelp.out.find("Examples:"), std::string::npos);
}

}  // namespace
}  // namespace enjin::ctl
