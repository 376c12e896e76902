#include "ring0_fleet.hpp"

#include <dirent.h>
#include <httplib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "enjin/supervise/control_server.hpp"

namespace enjin::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kAdminPassword = "fleet-admin-password";
constexpr int kApiPort = 8480;


std::optional<std::pair<dev_t, ino_t>> identityOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

}  // namespace

Ring0Fleet::Ring0Fleet(std::unique_ptr<TestFleet> fleet, Ring0FleetOptions options)
    : fleet_(std::move(fleet)), options_(std::move(options)) {
  for (const auto& h : fleet_->hosts()) {
    if (auto id = identityOf("/run/netns/" + fleet_->netnsOf(h))) hostOfNetns_[*id] = h;
  }
}

Result<std::unique_ptr<Ring0Fleet>> Ring0Fleet::create(const Ring0FleetOptions& options) {
  if (auto why = TestFleet::etcdUnavailableReason()) return Error{"fleet of ring0d: " + *why};
  for (const char* bin : {"ring0d", "ring1d", "ring2d", "enjin-holder", "enjinctl"}) {
    if (::access((options.binDir + "/" + bin).c_str(), X_OK) != 0) {
      return Error{"fleet of ring0d: no " + options.binDir + "/" + bin + " (build first)"};
    }
  }
  auto f = TestFleet::create(
      {.etcdHeartbeatMs = options.etcdHeartbeatMs, .etcdElectionMs = options.etcdElectionMs});
  if (!f.ok()) return f.error().wrap("fleet of ring0d");
  auto formed = (*f)->startEtcd();
  if (!formed.ok()) return formed.error().wrap("fleet of ring0d");
  return std::unique_ptr<Ring0Fleet>(new Ring0Fleet(std::move(*f), options));
}

std::string Ring0Fleet::compartmentOf(const std::string& host) {
  return host == "h3" ? "dc/rack-b/h3" : "dc/rack-a/" + host;
}

std::string Ring0Fleet::stateOf(const std::string& host) const {
  return fleet_->dir() + "/" + host + "/state";
}

// ring0d's file: its API on the host's loopback, [fleet] with every member, its own first.
void Ring0Fleet::writeConfig(const std::string& h) {
  std::string etcd = "\"http://127.0.0.1:2379\"";
  for (const auto& other : fleet_->hosts()) {
    if (other != h) etcd += ", \"" + fleet_->clientUrl(other) + "\"";
  }
  const std::string dir = fleet_->dir() + "/" + h;
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/ring0d.toml")
      << "state_dir = \"" << stateOf(h) << "\"\n"
      << "[api]\nlisten = \"127.0.0.1:" << kApiPort << "\"\n"
      << "[fleet]\nhost = \"" << h << "\"\ncompartment = \"" << compartmentOf(h) << "\"\netcd = ["
      << etcd << "]\nlease_ttl_ms = " << options_.leaseTtlMs << "\ngrace_ms = " << options_.graceMs
      << "\n"
      << "advertise = \"" << fleet_->addressOf(h) << "\"\n";
  const std::string pw = dir + "/admin.pw";
  std::ofstream(pw) << kAdminPassword << "\n";
  ::chmod(pw.c_str(), 0600);
}

Status Ring0Fleet::startRing0(const std::string& h, const std::string& token) {
  const std::string dir = fleet_->dir() + "/" + h;
  if (!std::filesystem::exists(dir + "/ring0d.toml")) writeConfig(h);
  const std::string bin = options_.binDir + "/ring0d";
  if (!std::filesystem::exists(stateOf(h) + "/ring0d.db")) {
    auto init = fleet_->exec(h, {bin, "--config", dir + "/ring0d.toml", "--init",
                                 "--admin-password-file", dir + "/admin.pw"});
    if (!init.ok()) return init.error().wrap("ring0d --init on " + h);
    if (!init->ok()) return Error{"ring0d --init on " + h + ": " + init->describe()};
  }
  std::vector<std::string> argv{bin, "--config", dir + "/ring0d.toml", "--log-level", "debug"};
  if (!token.empty()) argv.insert(argv.end(), {"--join", token});
  auto p = fleet_->spawn(h, argv, {}, "ring0d-" + h);
  if (!p.ok()) return p.error().wrap("ring0d on " + h);
  ring0_[h] = *p;
  if (!waitFor([&] { return loggedIn(h) || !(*p)->running(); }, 20'000) || !(*p)->running()) {
    return Error{"ring0d on " + h + ": its API did not answer within 20 s\n" + (*p)->log()};
  }
  return Status{};
}

HostProcess* Ring0Fleet::ring0(const std::string& host) {
  auto it = ring0_.find(host);
  return it == ring0_.end() ? nullptr : it->second;
}

Status Ring0Fleet::start() {
  if (Status st = startRing0("h1"); !st.ok()) return st;
  for (const char* h : {"h2", "h3"}) {
    auto t = api("h1", "POST", "/v1/fleet/tokens", {{"ttl_s", 600}});
    if (t.status != 201) return Error{"enrolment token from h1: " + t.body.dump()};
    if (Status st = startRing0(h, t.body.value("token", "")); !st.ok()) return st;
  }
  if (!waitFor(
          [&] {
            return api("h1", "GET", "/v1/fleet").body.value("hosts", json::array()).size() == 3;
          },
          10'000)) {
    return Error{"fleet: h1 does not see three hosts within 10 s\n" + logs()};
  }
  return Status{};
}

Status Ring0Fleet::restartHost(const std::string& h) {
  if (Status st = fleet_->startEtcd(h); !st.ok()) return st.error().wrap("restart of " + h);
  if (Status st = startRing0(h); !st.ok()) return st.error().wrap("restart of " + h);
  if (!waitFor([&] { return holdsLease(h); }, 15'000)) {
    return Error{"restart of " + h + ": no lease within 15 s\n" + ring0_[h]->log()};
  }
  return Status{};
}

bool Ring0Fleet::loggedIn(const std::string& h) {
  tokens_.erase(h);
  auto a = api(h, "POST", "/v1/sessions", {{"user", "admin"}, {"password", kAdminPassword}});
  if (a.status != 201) return false;
  tokens_[h] = a.body.value("token", "");
  return true;
}

ApiAnswer Ring0Fleet::api(const std::string& h, const std::string& method, const std::string& path,
                          const json& body) {
  ApiAnswer out;
  const std::string token = tokens_.count(h) != 0 ? tokens_[h] : "";
  (void)fleet_->runIn(h, [&] {
    httplib::Client client("127.0.0.1", kApiPort);
    client.set_connection_timeout(2);
    client.set_read_timeout(10);
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    const std::string text = body.is_null() ? "" : body.dump();
    httplib::Result r =
        method == "GET"    ? client.Get(path.c_str(), headers)
        : method == "POST" ? client.Post(path.c_str(), headers, text, "application/json")
        : method == "PUT"  ? client.Put(path.c_str(), headers, text, "application/json")
                           : client.Delete(path.c_str(), headers);
    if (r) out = {r->status, json::parse(r->body, nullptr, false)};
  });
  return out;
}

json Ring0Fleet::node(const std::string& label, const std::string& compartment,
                      const std::string& spread) {
  json n{{"label", label}, {"strategy", "exec"}};
  if (!compartment.empty()) n["compartment"] = compartment;
  if (!spread.empty()) n["spread"] = spread;
  return n;
}

std::optional<std::set<std::string>> Ring0Fleet::hostsSeenBy(const std::string& viewer) {
  auto a = api(viewer, "GET", "/v1/fleet");
  if (a.status != 200 || !a.body.is_object()) return std::nullopt;
  std::set<std::string> out;
  for (const auto& h : a.body.value("hosts", json::array())) out.insert(h.value("host", ""));
  if (out.count(viewer) == 0) return std::nullopt;
  return out;
}

json Ring0Fleet::treeOf(const std::string& h) {
  auto r = supervise::controlCall(stateOf(h) + "/control.sock", {{"cmd", "tree"}});
  return r.ok() ? r->value("tree", json::object()) : json::object();
}

bool Ring0Fleet::readyOn(const std::string& h, const std::string& label) {
  for (const auto& n : treeOf(h).value("nodes", json::array())) {
    if (n.value("label", "") == label && n.value("state", "") == "ready") return true;
  }
  return false;
}

std::string Ring0Fleet::schedulerSeenBy(const std::string& h) {
  json f = treeOf(h).value("fleet", json::object());
  return f.value("scheduler", json()).is_string() ? f["scheduler"].get<std::string>() : "";
}

bool Ring0Fleet::holdsLease(const std::string& h) {
  json f = treeOf(h).value("fleet", json::object());
  return f.value("lease", false) && !f.value("fenced", true);
}

std::map<std::string, std::set<std::string>> Ring0Fleet::ring1dHosts() const {
  std::map<std::string, std::set<std::string>> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  const std::string marker = "/state/nodes/";
  const std::string& root = fleet_->dir();
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string proc = std::string("/proc/") + e->d_name;
    const std::string cmd = procCmdline(proc);
    if (cmd.find("ring1d") == std::string::npos) continue;
    // A ring1d of this fleet: <fleet dir>/<host>/state/nodes/<label>/... on its command line.
    const size_t at = cmd.find(root + "/");
    if (at == std::string::npos) continue;
    const size_t nodes = cmd.find(marker, at);
    if (nodes == std::string::npos) continue;
    const size_t begin = nodes + marker.size();
    const size_t end = cmd.find('/', begin);
    if (end == std::string::npos) continue;
    auto id = identityOf(proc + "/ns/net");
    if (!id) continue;  // gone meanwhile
    auto host = hostOfNetns_.find(*id);
    if (host != hostOfNetns_.end()) out[cmd.substr(begin, end - begin)].insert(host->second);
  }
  ::closedir(d);
  return out;
}

std::string Ring0Fleet::hostOf(const std::string& label) const {
  auto all = ring1dHosts();
  auto it = all.find(label);
  return it == all.end() || it->second.size() != 1 ? "" : *it->second.begin();
}

bool Ring0Fleet::waitFor(const std::function<bool()>& cond, int timeoutMs) const {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!stopping()) {
    if (cond()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string Ring0Fleet::logs() const {
  std::string s;
  for (const auto& [h, p] : ring0_) s += "---- ring0d " + h + "\n" + p->log();
  return s;
}

}  // namespace enjin::testing
