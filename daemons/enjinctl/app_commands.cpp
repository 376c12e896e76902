// enjinctl app deploy | ls | show | scale | restart | rm | logs: the apps of a ring-1 API
// (/v1/apps), through the stored session (enjinctl login --server URL-OF-THE-RING-1-API).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api_common.hpp"
#include "argv_split.hpp"
#include "commands.hpp"

namespace enjin::ctl {
namespace {

using nlohmann::json;

constexpr auto kWaitPoll = std::chrono::milliseconds(250);

const char* const kAppHelpFooter = R"(Examples:
  enjinctl login --server http://127.0.0.1:8481 --user ops     # the ring-1 API
  enjinctl app deploy shop --cmd '/srv/shop/bin/shop --log-format "text lines"' \
      --instances 2 --health http:/healthz --env MODE=prod --wait
  enjinctl app ls
  enjinctl app show shop
  enjinctl app scale shop 3
  enjinctl app restart shop
  enjinctl app logs shop -f -n 50
  enjinctl app rm shop)";

// `j[key]` when `j` is an object that has it, else null.
const json& field(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// 120, 0.5: as few digits as the value needs.
std::string seconds(double s) {
  std::ostringstream out;
  out << s;
  return out.str();
}

// The name of an app as a path segment: bytes outside [A-Za-z0-9-._~] percent-encoded.
std::string appPath(const std::string& name, const std::string& tail = "") {
  std::string out = "/v1/apps/";
  for (const unsigned char c : name) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      static const char* const kHex = "0123456789ABCDEF";
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + tail;
}

void printUrls(const json& app) {
  for (const auto& u : field(field(app, "status"), "urls")) {
    if (u.is_string()) std::cout << u.get<std::string>() << "\n";
  }
}

struct DeployArgs {
  std::string name;
  std::string cmd;
  std::optional<int> instances;
  std::string strategy;
  std::string health;
  std::string readiness;
  std::vector<std::string> env;
  std::optional<int> maxSurge;
  std::optional<int> maxUnavailable;
  bool wait = false;
  double timeoutS = 120;
  bool json = false;
};

// The POST body of a deploy; a bad --cmd or --env is a usage error (CLI::ValidationError).
json deployBody(const DeployArgs& a) {
  auto argv = splitCommandLine(a.cmd);
  if (!argv.ok()) throw CLI::ValidationError("--cmd", argv.error().message);
  if (argv->empty()) throw CLI::ValidationError("--cmd", "--cmd: no program to run");
  json body{{"name", a.name}, {"command", *argv}};
  if (a.instances) body["instances"] = *a.instances;
  if (!a.strategy.empty()) body["strategy"] = a.strategy;
  if (!a.health.empty()) body["health"] = a.health;
  if (!a.readiness.empty()) body["readiness"] = a.readiness;
  if (!a.env.empty()) {
    json env = json::object();
    for (const auto& kv : a.env) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw CLI::ValidationError("--env", "--env: expected K=V, not '" + kv + "'");
      }
      env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    body["env"] = std::move(env);
  }
  if (a.maxSurge) body["max_surge"] = *a.maxSurge;
  if (a.maxUnavailable) body["max_unavailable"] = *a.maxUnavailable;
  return body;
}

// Polls the app until its roll-out is complete (0), halted (1, its message printed) or
// `timeoutS` has passed (3). The last answer is printed as JSON with `asJson`.
int waitForRollout(const std::string& name, double timeoutS, bool asJson) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeoutS));
  for (;;) {
    int exitCode = kExitOk;
    auto app = apiCall("GET", appPath(name), json(), exitCode);
    if (!app) return exitCode;
    const json& status = field(*app, "status");
    const std::string rollout = text(field(status, "rollout"));
    const json& message = field(status, "message");
    const std::string why = message.is_string() && !message.get<std::string>().empty()
                                ? ": " + message.get<std::string>()
                                : "";
    if (rollout == "complete" || rollout == "halted") {
      if (asJson) std::cout << app->dump(2) << "\n";
    }
    if (rollout == "complete") {
      if (!asJson) {
        std::cout << "roll-out of app '" << name << "' complete: " << text(field(status, "ready"))
                  << " of " << text(field(*app, "instances")) << " instances ready (revision "
                  << text(field(*app, "revision")) << ")\n";
      }
      return kExitOk;
    }
    if (rollout == "halted") {
      complain("app '" + name + "': the roll-out halted" + why);
      return kExitFailure;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      if (asJson) std::cout << app->dump(2) << "\n";
      complain("app '" + name + "': the roll-out is not complete after " +
               seconds(timeoutS) + " s (" + rollout + why + ")");
      return kExitTimeout;
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(kWaitPoll, deadline - now));
  }
}

void runDeploy(const DeployArgs& a, int& exitCode) {
  const json body = deployBody(a);
  auto r = apiRequest("POST", "/v1/apps", body, exitCode);
  if (!r) return;
  // Deploy is create or update: an app of that name is changed to the same body.
  bool updated = false;
  if (r->status == 409) {
    const json err = json::parse(r->body, nullptr, false);
    if (field(err, "error") == "exists") {
      r = apiRequest("PUT", appPath(a.name), body, exitCode);
      if (!r) return;
      updated = true;
    }
  }
  auto app = apiAnswer(std::string(updated ? "PUT " : "POST ") + (updated ? appPath(a.name) : "/v1/apps"),
                       *r, exitCode);
  if (!app) return;
  if (a.json && !a.wait) std::cout << app->dump(2) << "\n";
  if (!a.json) {
    std::cout << (updated ? "updated" : "created") << " app '" << a.name << "' (revision "
              << text(field(*app, "revision")) << ")\n";
    printUrls(*app);
  }
  if (a.wait) exitCode = waitForRollout(a.name, a.timeoutS, a.json);
}

void printApps(const json& apps) {
  json rows = json::array();
  for (const auto& a : apps) {
    const json& status = field(a, "status");
    rows.push_back({{"name", field(a, "name")},
                    {"instances", field(a, "instances")},
                    {"ready", field(status, "ready")},
                    {"strategy", field(a, "strategy")},
                    {"rollout", field(status, "rollout")},
                    {"url", field(status, "urls")}});
  }
  printTable(rows, {{"NAME", "name"},
                    {"INSTANCES", "instances"},
                    {"READY", "ready"},
                    {"STRATEGY", "strategy"},
                    {"ROLLOUT", "rollout"},
                    {"URL", "url"}});
}

void printApp(const json& app) {
  const json& status = field(app, "status");
  std::string command = "-";
  if (field(app, "command").is_array()) {
    std::vector<std::string> words;
    for (const auto& w : field(app, "command")) words.push_back(text(w));
    command = joinCommandLine(words);
  }
  std::string env;
  if (field(app, "env").is_object()) {
    for (const auto& [k, v] : field(app, "env").items()) env += (env.empty() ? "" : " ") + k + "=" + text(v);
  }
  std::string urls;
  for (const auto& u : field(status, "urls")) urls += (urls.empty() ? "" : " ") + text(u);
  const std::vector<std::pair<std::string, std::string>> lines = {
      {"name", text(field(app, "name"))},
      {"command", command},
      {"instances", text(field(app, "instances"))},
      {"ready", text(field(status, "ready"))},
      {"strategy", text(field(app, "strategy"))},
      {"health", text(field(app, "health"))},
      {"readiness", text(field(app, "readiness"))},
      {"env", env.empty() ? "-" : env},
      {"max_surge", text(field(app, "max_surge"))},
      {"max_unavailable", text(field(app, "max_unavailable"))},
      {"revision", text(field(app, "revision"))},
      {"rollout", text(field(status, "rollout"))},
      {"urls", urls.empty() ? "-" : urls},
  };
  size_t w = 0;
  for (const auto& [k, v] : lines) w = std::max(w, k.size());
  for (const auto& [k, v] : lines) std::cout << k << ":" << std::string(w - k.size() + 1, ' ') << v << "\n";
  std::cout << "\n";
  const json& instances = field(status, "instances");
  printTable(instances.is_array() ? instances : json::array(),
             {{"INSTANCE", "name"},
              {"NODE", "node"},
              {"PORT", "port"},
              {"STATE", "state"},
              {"RESTARTS", "restarts"},
              {"REVISION", "revision"},
              {"PID", "pid"}});
  const json& message = field(status, "message");
  if (message.is_string() && !message.get<std::string>().empty()) {
    std::cout << "\nroll-out: " << message.get<std::string>() << "\n";
  }
}

// --wait and --timeout, for the commands that start a roll-out.
struct WaitArgs {
  bool wait = false;
  double timeoutS = 120;
};
void addWait(CLI::App* sub, WaitArgs& w) {
  sub->add_flag("--wait", w.wait, "Wait until the roll-out is complete (exit 0) or halted (exit 1)");
  sub->add_option("--timeout", w.timeoutS, "With --wait: give up after SECONDS (exit 3)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

// Adds NAME (required) and --json to `sub`.
void nameAndJson(CLI::App* sub, std::string& name, bool* asJson) {
  sub->add_option("NAME", name, "The app's name")->required();
  if (asJson != nullptr) sub->add_flag("--json", *asJson, "Print the server's JSON");
}

}  // namespace

void addAppCommands(CLI::App& app, int& exitCode) {
  auto* top = app.add_subcommand(
      "app", "Deploy, list, show, scale, restart, remove apps and read their logs (/v1/apps of "
             "a ring-1 API)");
  top->require_subcommand(1);
  top->footer(std::string(kAppHelpFooter) + "\n\n" + kExitCodesHelp);

  auto d = std::make_shared<DeployArgs>();
  auto* deploy = top->add_subcommand(
      "deploy", "Create an app, or change the app of that name to these settings; prints its URLs");
  deploy->add_option("NAME", d->name, "The app's name")->required();
  deploy->add_option("--cmd", d->cmd,
                     "The command, cut into words as a shell would (quotes, backslashes; no "
                     "expansion)")
      ->required();
  deploy->add_option("--instances", d->instances, "How many instances run")->check(CLI::NonNegativeNumber);
  deploy->add_option("--strategy", d->strategy, "How each instance runs: unix-user or sandbox")
      ->check(CLI::IsMember({"unix-user", "sandbox"}));
  deploy->add_option("--health", d->health, "The health check, http:/PATH");
  deploy->add_option("--readiness", d->readiness, "The readiness check, http:/PATH");
  // One K=V per --env, so `--env A=1 NAME` leaves NAME to the positional.
  deploy->add_option("--env", d->env, "An environment variable K=V (repeatable)")
      ->allow_extra_args(false);
  deploy->add_option("--max-surge", d->maxSurge, "Instances above --instances during a roll-out")
      ->check(CLI::NonNegativeNumber);
  deploy->add_option("--max-unavailable", d->maxUnavailable,
                     "Instances below --instances during a roll-out")
      ->check(CLI::NonNegativeNumber);
  deploy->add_flag("--wait", d->wait,
                   "Wait until the roll-out is complete (exit 0) or halted (exit 1)");
  deploy->add_option("--timeout", d->timeoutS, "With --wait: give up after SECONDS (exit 3)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  deploy->add_flag("--json", d->json, "Print the server's JSON (with --wait: the last answer)");
  deploy->footer(kAppHelpFooter);
  deploy->callback([&exitCode, d] { runDeploy(*d, exitCode); });

  auto lsJson = std::make_shared<bool>(false);
  auto* ls = top->add_subcommand("ls", "List the apps");
  ls->add_flag("--json", *lsJson, "Print the server's JSON");
  ls->callback([&exitCode, lsJson] {
    auto r = apiCall("GET", "/v1/apps", json(), exitCode);
    if (!r) return;
    if (*lsJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printApps(r->is_array() ? *r : json::array());
    }
  });

  auto showName = std::make_shared<std::string>();
  auto showJson = std::make_shared<bool>(false);
  auto* show = top->add_subcommand("show", "Show an app, its instances and its roll-out");
  nameAndJson(show, *showName, showJson.get());
  show->callback([&exitCode, showName, showJson] {
    auto r = apiCall("GET", appPath(*showName), json(), exitCode);
    if (!r) return;
    if (*showJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printApp(*r);
    }
  });

  auto scaleName = std::make_shared<std::string>();
  auto scaleN = std::make_shared<int>(0);
  auto scaleJson = std::make_shared<bool>(false);
  auto* scale = top->add_subcommand("scale", "Change how many instances of an app run");
  nameAndJson(scale, *scaleName, scaleJson.get());
  scale->add_option("N", *scaleN, "The number of instances")->required()->check(CLI::NonNegativeNumber);
  auto scaleWait = std::make_shared<WaitArgs>();
  addWait(scale, *scaleWait);
  scale->callback([&exitCode, scaleName, scaleN, scaleJson, scaleWait] {
    auto r = apiCall("PUT", appPath(*scaleName), json{{"instances", *scaleN}}, exitCode);
    if (!r) return;
    if (*scaleJson && !scaleWait->wait) {
      std::cout << r->dump(2) << "\n";
    } else if (!*scaleJson) {
      std::cout << "scaled app '" << *scaleName << "' to " << *scaleN << " instances (revision "
                << text(field(*r, "revision")) << ")\n";
    }
    if (scaleWait->wait) exitCode = waitForRollout(*scaleName, scaleWait->timeoutS, *scaleJson);
  });

  auto restartName = std::make_shared<std::string>();
  auto restartJson = std::make_shared<bool>(false);
  auto* restart = top->add_subcommand("restart", "Restart every instance of an app, as a roll-out");
  nameAndJson(restart, *restartName, restartJson.get());
  auto restartWait = std::make_shared<WaitArgs>();
  addWait(restart, *restartWait);
  restart->callback([&exitCode, restartName, restartJson, restartWait] {
    auto r = apiCall("POST", appPath(*restartName, "/restart"), json(), exitCode);
    if (!r) return;
    if (*restartJson && !restartWait->wait) {
      std::cout << r->dump(2) << "\n";
    } else if (!*restartJson) {
      std::cout << "restarting app '" << *restartName << "' (revision "
                << text(field(*r, "revision")) << "), one instance at a time\n";
    }
    if (restartWait->wait) {
      exitCode = waitForRollout(*restartName, restartWait->timeoutS, *restartJson);
    }
  });

  auto rmName = std::make_shared<std::string>();
  auto rmJson = std::make_shared<bool>(false);
  auto* rm = top->add_subcommand("rm", "Remove an app and stop its instances");
  nameAndJson(rm, *rmName, rmJson.get());
  rm->callback([&exitCode, rmName, rmJson] {
    auto r = apiCall("DELETE", appPath(*rmName), json(), exitCode);
    if (!r) return;
    if (*rmJson) {
      if (!r->is_null()) std::cout << r->dump(2) << "\n";  // 204: no body, nothing to print
    } else {
      std::cout << "removed app '" << *rmName << "'\n";
    }
  });

  auto logsName = std::make_shared<std::string>();
  auto logsFollow = std::make_shared<bool>(false);
  auto logsLines = std::make_shared<int>(100);
  auto* logs = top->add_subcommand(
      "logs", "Print the logs of an app's instances, each line as \"INSTANCE | ...\"");
  nameAndJson(logs, *logsName, nullptr);
  logs->add_flag("-f,--follow", *logsFollow, "Keep printing lines as they come");
  logs->add_option("-n,--lines", *logsLines, "The last LINES lines of each instance first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  logs->callback([&exitCode, logsName, logsFollow, logsLines] {
    const std::string path = appPath(*logsName, "/logs") + "?lines=" + std::to_string(*logsLines) +
                             (*logsFollow ? "&follow=1" : "");
    exitCode = apiStream(path, "text/plain", [](const char* data, size_t len) {
      std::cout.write(data, static_cast<std::streamsize>(len));
      std::cout.flush();
      return static_cast<bool>(std::cout);
    });
  });

  // Hidden, for the bash completion: the apps' names, one a line; silent on any failure.
  auto* names = app.add_subcommand("__complete-apps", "The apps' names, one a line");
  names->group("");
  names->callback([] {
    int ignored = kExitOk;
    std::cerr.setstate(std::ios::failbit);  // a completion has nowhere to complain
    auto r = apiCall("GET", "/v1/apps", json(), ignored);
    std::cerr.clear();
    if (!r || !r->is_array()) return;
    for (const auto& a : *r) {
      if (field(a, "name").is_string()) std::cout << field(a, "name").get<std::string>() << "\n";
    }
  });
}

}  // namespace enjin::ctl
