// enjinctl fleet: a fleet member's view of the fleet (GET /v1/fleet) and its enrolment tokens
// (POST /v1/fleet/tokens), through the control API of the host logged in to.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <vector>

#include "api_common.hpp"
#include "commands.hpp"

namespace enjin::ctl {

using nlohmann::json;

namespace {

std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// One line of a host's tree: the name drawn under its parent, its state and pid.
void printEntry(const std::string& prefix, const json& n) {
  const std::string name = prefix + n.value("label", n.value("name", std::string("?")));
  // Padded by characters, not bytes: the tree is drawn with multi-byte box characters.
  size_t width = 0;
  for (unsigned char ch : name) width += (ch & 0xC0) != 0x80;
  const int pid = n.value("pid", 0);
  std::cout << name << std::string(width < 32 ? 32 - width : 0, ' ') << " " << n.value("state", "")
            << (pid > 0 ? "  pid " + std::to_string(pid) : std::string()) << "\n";
}


// Hosts with their ring-1 nodes as trees, then the fleet's nodes: where each runs, or why it
// runs nowhere.
void printFleet(const json& f) {
  std::cout << "scheduler: " << text(f, "scheduler") << "\n";
  for (const auto& h : f.value("hosts", json::array())) {
    std::cout << "\n"
              << text(h, "host") << "  compartment " << text(h, "compartment") << "  api "
              << text(h, "api");
    if (const std::string o = h.value("observe", ""); !o.empty()) std::cout << "  observe " << o;
    std::cout << "\n";
    if (h.value("nodes", json::array()).empty()) std::cout << "  (no ring-1 nodes)\n";
    drawChildren(h, "", printEntry);
  }
  std::cout << "\n";
  json nodes = json::array();
  for (const auto& n : f.value("nodes", json::array())) {
    nodes.push_back(
        {{"label", text(n, "label")}, {"host", text(n, "host")}, {"pending", text(n, "pending")}});
  }
  printTable(nodes, {{"NODE", "label"}, {"HOST", "host"}, {"PENDING", "pending"}});
}

}  // namespace

int runFleetStatus(bool asJson) {
  int exitCode = kExitOk;
  auto r = apiCall("GET", "/v1/fleet", json(), exitCode);
  if (!r) return exitCode;
  if (asJson) {
    std::cout << r->dump(2) << "\n";
  } else {
    printFleet(*r);
  }
  return kExitOk;
}

void addFleetCommands(CLI::App& app, int& exitCode) {
  auto* top = app.add_subcommand(
      "fleet", "The fleet of ring-0 hosts this host belongs to ([fleet] in ring0d.toml)");
  top->require_subcommand(1);

  auto* status = top->add_subcommand(
      "status", "Every host, its compartment and ring-1 nodes; each node's host, or why it is pending");
  auto asJson = std::make_shared<bool>(false);
  status->add_flag("--json", *asJson, "Print the server's JSON");
  status->callback([&exitCode, asJson] { exitCode = runFleetStatus(*asJson); });

  auto* token = top->add_subcommand(
      "token", "Mint an enrolment token: a new host joins with `ring0d --join TOKEN` (single use)");
  auto ttl = std::make_shared<int64_t>(3600);
  auto tokenJson = std::make_shared<bool>(false);
  token->add_option("--ttl", *ttl, "Seconds the token stays valid (1 to 604800)")->capture_default_str();
  token->add_flag("--json", *tokenJson, "Print the server's JSON (token and expires_at)");
  token->callback([&exitCode, ttl, tokenJson] {
    auto r = apiCall("POST", "/v1/fleet/tokens", json{{"ttl_s", *ttl}}, exitCode);
    if (!r) return;
    if (*tokenJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      std::cout << r->value("token", "") << "\n";
      std::cerr << "valid until " << r->value("expires_at", "") << ", once\n";
    }
  });
}

}  // namespace enjin::ctl
