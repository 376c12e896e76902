// enjinctl login | logout | user | role | membership | rule-set | compartment | network |
// network-interface | node | offer | audit: the control plane's HTTP API (ring0d's [api]).
//
// The session is kept in $XDG_CONFIG_HOME/enjin/credentials (~/.config/enjin/credentials): a
// JSON object {"server","user","token","expires_at"}, mode 0600 in a 0700 directory. A file
// others may read is refused: the token is as good as the password until it expires.
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <sodium.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <nlohmann/json.hpp>

#include "api_client.hpp"
#include "api_common.hpp"
#include "commands.hpp"
#include "enjin/acl/password.hpp"
#include "enjin/ring/tree.hpp"
#include "enjin/supervise/control_server.hpp"

namespace enjin::ctl {

const char* const kExitCodesHelp =
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 timeout, 4 not found (404), 5 not authenticated "
    "or denied (401/403), 6 server unreachable (connection refused, DNS, TLS).";

namespace {

using nlohmann::json;

std::string configDir() {
  if (const char* x = ::getenv("XDG_CONFIG_HOME"); x != nullptr && *x == '/') {
    return std::string(x) + "/enjin";
  }
  const char* home = ::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.config/enjin";
}
std::string credentialsPath() { return configDir() + "/credentials"; }

struct Credentials {
  std::string server;
  std::string user;
  std::string token;
};

// The stored session; an Error (code: an exit code) when there is none or it is unusable.
Result<Credentials> loadCredentials() {
  const std::string path = credentialsPath();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Error{"not logged in (no " + path + "): run enjinctl login --server URL --user NAME",
                 kExitDenied};
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error{"credentials file " + path + " has mode " + mode +
                     " and others may read it; refusing it: chmod 600 " + path,
                 kExitFailure};
  }
  std::ifstream in(path);
  json j = json::parse(in, nullptr, false);
  if (!j.is_object() || !j.value("server", json()).is_string() ||
      !j.value("token", json()).is_string()) {
    return Error{"credentials file " + path + " is not what enjinctl login writes; log in again",
                 kExitFailure};
  }
  return Credentials{j["server"], j.value("user", ""), j["token"]};
}

Status saveCredentials(const Credentials& c, const std::string& expiresAt) {
  const std::string dir = configDir();
  // The parents as a user's own, the enjin directory for this user only.
  for (size_t at = 1; at != std::string::npos;) {
    at = dir.find('/', at + 1);
    const std::string part = dir.substr(0, at);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return Error{"mkdir " + part + ": " + std::strerror(errno)};
    }
  }
  ::chmod(dir.c_str(), 0700);
  const std::string path = credentialsPath();
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Error{"open " + tmp + ": " + std::strerror(errno)};
  ::fchmod(fd, 0600);
  const std::string text =
      json{{"server", c.server}, {"user", c.user}, {"token", c.token}, {"expires_at", expiresAt}}
          .dump(2) +
      "\n";
  const bool wrote = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool closed = ::close(fd) == 0;
  if (!wrote || !closed || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Error{"write " + path + ": " + why};
  }
  return {};
}

// The exit code of an HTTP status.
int exitOfStatus(int status) {
  if (status >= 200 && status < 300) return kExitOk;
  if (status == 404) return kExitNotFound;
  if (status == 401 || status == 403) return kExitDenied;
  if (status == 408 || status == 503 || status == 504) return kExitTimeout;
  return kExitFailure;
}

int exitOfTransport(const Error& e) {
  if (e.code == kTransportUnreachable) return kExitUnreachable;
  if (e.code == kTransportTimeout) return kExitTimeout;
  return kExitFailure;
}

// The server's message in an error answer ({"error","message"}), or the body, or the status.
std::string messageOf(const ApiResponse& r) {
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) return j["message"];
  if (!r.body.empty() && r.body.size() < 512) return "HTTP " + std::to_string(r.status) + ": " + r.body;
  return "HTTP " + std::to_string(r.status);
}

// A password: the first line of stdin, or typed on the terminal without echo.
Result<std::string> readPassword(bool fromStdin, const std::string& prompt) {
  std::string pw;
  if (fromStdin) {
    if (!std::getline(std::cin, pw) && pw.empty()) return Error{"no password on stdin"};
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
    return pw;
  }
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error{"no terminal to read a password from; use --password-stdin"};
  struct termios old {};
  const bool tty = ::tcgetattr(fd, &old) == 0;
  if (tty) {
    struct termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  (void)!::write(fd, prompt.data(), prompt.size());
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n') pw.push_back(ch);
  if (tty) ::tcsetattr(fd, TCSAFLUSH, &old);
  ::close(fd);
  return pw;
}

// ---- tables ----

std::string cell(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v) {
      std::string one;
      if (e.is_object() && e.contains("effect")) {
        one = e.value("effect", "") + ":" + e.value("action", "") + ":" + e.value("resource", "");
      } else if (e.is_object() && e.contains("label")) {
        one = e.value("label", "");
      } else {
        one = cell(e);
      }
      out += (out.empty() ? "" : ",") + one;
    }
    return out.empty() ? "-" : out;
  }
  return v.dump();
}

}  // namespace

void printTable(const json& rows, std::vector<Column> columns) {
  if (!rows.is_array()) {
    std::cout << rows.dump(2) << "\n";
    return;
  }
  if (columns.empty() && !rows.empty() && rows[0].is_object()) {
    for (const auto& [k, v] : rows[0].items()) {
      if (v.is_object()) continue;
      std::string h = k;
      for (auto& c : h) c = c == '_' ? ' ' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      columns.push_back({h, k});
    }
  }
  std::vector<std::vector<std::string>> table;
  std::vector<std::string> head;
  for (const auto& c : columns) head.push_back(c.header);
  table.push_back(head);
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (const auto& c : columns) line.push_back(r.is_object() ? cell(r.value(c.key, json())) : cell(r));
    table.push_back(std::move(line));
  }
  std::vector<size_t> width(columns.size(), 0);
  for (const auto& line : table) {
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  for (const auto& line : table) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      out += line[i];
      if (i + 1 < line.size()) out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  }
}

namespace {

// One object as "key: value" lines, keys aligned.
void printObject(const json& o) {
  if (!o.is_object()) {
    std::cout << o.dump(2) << "\n";
    return;
  }
  size_t w = 0;
  for (const auto& [k, v] : o.items()) w = std::max(w, k.size());
  for (const auto& [k, v] : o.items()) {
    std::cout << k << ":" << std::string(w - k.size() + 1, ' ')
              << (v.is_object() || (v.is_array() && !v.empty() && v[0].is_object() &&
                                    !v[0].contains("effect"))
                      ? v.dump()
                      : cell(v))
              << "\n";
  }
}

// ---- request bodies ----

// --json BODY|@FILE|-: a JSON object.
json parseBodyArg(const std::string& arg) {
  std::string text = arg;
  if (arg == "-") {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    text = ss.str();
  } else if (arg.starts_with("@")) {
    std::ifstream in(arg.substr(1));
    if (!in) throw CLI::ValidationError("--json", "cannot read " + arg.substr(1));
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) throw CLI::ValidationError("--json", "the body must be a JSON object");
  return j;
}

// EFFECT:ACTION:RESOURCE, ACTION being "*" or COLLECTION:VERB: "allow:nodes:*:*".
json parseRule(const std::string& s) {
  const size_t first = s.find(':');
  const size_t last = s.rfind(':');
  if (first == std::string::npos || last == first) {
    throw CLI::ValidationError("--rule", "'" + s + "': expected EFFECT:ACTION:RESOURCE, e.g. allow:nodes:read:*");
  }
  const std::string effect = s.substr(0, first);
  if (effect != "allow" && effect != "deny") {
    throw CLI::ValidationError("--rule", "'" + s + "': the effect is allow or deny");
  }
  return json{{"effect", effect},
              {"action", s.substr(first + 1, last - first - 1)},
              {"resource", s.substr(last + 1)}};
}

// The flags of a kind's create and update, set on a body when given.
struct Flags {
  std::string body;  // --json
  bool passwordStdin = false;
  std::vector<std::string> ruleSets, rules, parents, admins;
  std::string user, role, strategy, cidr, network, node, address, compartment, apiListen;
  std::optional<int> ring;
};

struct KindSpec {
  std::string command;     // "rule-set"
  std::string path;        // "/v1/access-rule-sets"
  std::string singular;    // "access rule set"
  std::string nameKey;     // "name" ("label" for nodes)
  std::vector<Column> columns;
};

void addFlags(CLI::App* sub, const KindSpec& k, Flags& f) {
  sub->add_option("--json", f.body,
                  "The body as JSON: inline, @FILE, or - for stdin; the flags below are set on it");
  if (k.command == "user") {
    sub->add_flag("--password-stdin", f.passwordStdin,
                  "Read the password from stdin's first line (default: ask on the terminal)");
  } else if (k.command == "role") {
    sub->add_option("--rule-set", f.ruleSets, "An access rule set of the role (repeatable)");
  } else if (k.command == "membership") {
    sub->add_option("--user", f.user, "The member");
    sub->add_option("--role", f.role, "The role");
  } else if (k.command == "rule-set") {
    sub->add_option("--rule", f.rules,
                    "EFFECT:ACTION:RESOURCE, repeatable, in order: EFFECT allow or deny, ACTION "
                    "* or COLLECTION:VERB (nodes:read, users:*), RESOURCE a path pattern "
                    "(*, nodes/web). Example: --rule allow:nodes:*:* --rule deny:nodes:delete:*");
  } else if (k.command == "compartment") {
    sub->add_option("--parent", f.parents, "A parent compartment (repeatable)");
  } else if (k.command == "network") {
    sub->add_option("--ring", f.ring, "0, 1 or 2");
    sub->add_option("--strategy", f.strategy, "local or vpn");
    sub->add_option("--cidr", f.cidr, "The network, e.g. 10.1.0.0/16");
  } else if (k.command == "network-interface") {
    sub->add_option("--network", f.network, "The network");
    sub->add_option("--node", f.node, "The node's label");
    sub->add_option("--address", f.address, "An IPv4 or IPv6 address");
  } else if (k.command == "node") {
    sub->add_option("--strategy", f.strategy, "How the node runs");
    sub->add_option("--compartment", f.compartment, "The compartment the node belongs to");
    sub->add_option("--api-listen", f.apiListen, "The node's API address, HOST:PORT");
    sub->add_option("--admin", f.admins,
                    "An admin of the node's own API, USER:HASH with HASH from `enjinctl "
                    "hash-password` (repeatable)");
  }
}

// Sets what the flags say on `body`; returns false (after complaining) on a bad flag value.
void applyFlags(const KindSpec& k, const Flags& f, json& body, bool creating) {
  if (k.command == "user" && (creating || f.passwordStdin)) {
    auto pw = readPassword(f.passwordStdin, "Password for the new user: ");
    if (!pw.ok()) throw CLI::ValidationError("--password-stdin", pw.error().message);
    body["password"] = *pw;
  }
  if (!f.ruleSets.empty()) body["rule_sets"] = f.ruleSets;
  if (!f.rules.empty()) {
    json rules = json::array();
    for (const auto& r : f.rules) rules.push_back(parseRule(r));
    body["rules"] = rules;
  }
  if (f.parents.size() == 1) body["parent_compartment"] = f.parents[0];
  if (f.parents.size() > 1) body["parent_compartment"] = f.parents;
  if (!f.user.empty()) body["user"] = f.user;
  if (!f.role.empty()) body["role"] = f.role;
  if (f.ring) body["ring"] = *f.ring;
  if (!f.strategy.empty()) body["strategy"] = f.strategy;
  if (!f.cidr.empty()) body["cidr"] = f.cidr;
  if (!f.network.empty()) body["network"] = f.network;
  if (!f.node.empty()) body["node"] = f.node;
  if (!f.address.empty()) body["address"] = f.address;
  if (!f.compartment.empty()) body["compartment"] = f.compartment;
  if (!f.apiListen.empty()) body["api_listen"] = f.apiListen;
  if (!f.admins.empty()) {
    json admins = json::array();
    for (const auto& a : f.admins) {
      const auto colon = a.find(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == a.size()) {
        throw CLI::ValidationError("--admin", "expected USER:HASH (HASH from enjinctl hash-password), not '" + a + "'");
      }
      admins.push_back({{"user", a.substr(0, colon)}, {"password_hash", a.substr(colon + 1)}});
    }
    body["admins"] = std::move(admins);
  }
}

void addKind(CLI::App& app, const KindSpec& k, int& exitCode) {
  auto* top = app.add_subcommand(k.command, "Create, list, show, update or delete " + k.singular +
                                                "s (" + k.path + ")");
  top->require_subcommand(1);
  const std::string nameHelp = k.nameKey == "label" ? "The node's label" : "The " + k.singular + "'s name";

  auto* list = top->add_subcommand("list", "List the " + k.singular + "s");
  auto listJson = std::make_shared<bool>(false);
  list->add_flag("--json", *listJson, "Print the server's JSON");
  list->callback([&exitCode, k, listJson] {
    auto r = apiCall("GET", k.path, json(), exitCode);
    if (!r) return;
    if (*listJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printTable(*r, k.columns);
    }
  });

  auto* show = top->add_subcommand("show", "Show one " + k.singular);
  auto showName = std::make_shared<std::string>();
  auto showJson = std::make_shared<bool>(false);
  show->add_option("NAME", *showName, nameHelp)->required();
  show->add_flag("--json", *showJson, "Print the server's JSON");
  show->callback([&exitCode, k, showName, showJson] {
    auto r = apiCall("GET", k.path + "/" + *showName, json(), exitCode);
    if (!r) return;
    if (*showJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printObject(*r);
    }
  });

  auto* create = top->add_subcommand("create", "Create a " + k.singular);
  auto cName = std::make_shared<std::string>();
  auto cFlags = std::make_shared<Flags>();
  auto cOut = std::make_shared<std::string>("text");
  if (k.command != "membership") create->add_option("NAME", *cName, nameHelp);
  addFlags(create, k, *cFlags);
  create->add_option("-o,--output", *cOut, "text or json (the server's answer)")
      ->check(CLI::IsMember({"text", "json"}));
  create->callback([&exitCode, k, cName, cFlags, cOut] {
    json body = cFlags->body.empty() ? json::object() : parseBodyArg(cFlags->body);
    if (!cName->empty()) body[k.nameKey] = *cName;
    applyFlags(k, *cFlags, body, true);
    if (k.command != "membership" && !body.contains(k.nameKey)) {
      throw CLI::ValidationError("NAME", "give the " + k.singular + "'s " + k.nameKey);
    }
    auto r = apiCall("POST", k.path, body, exitCode);
    if (!r) return;
    if (*cOut == "json") {
      std::cout << r->dump(2) << "\n";
    } else {
      std::cout << "created " << k.singular << " '" << r->value(k.nameKey, body.value(k.nameKey, ""))
                << "'\n";
    }
  });

  auto* update = top->add_subcommand(
      "update", "Change a " + k.singular + ": the stored body with the flags set on it, or the "
                "--json body as given");
  auto uName = std::make_shared<std::string>();
  auto uFlags = std::make_shared<Flags>();
  auto uOut = std::make_shared<std::string>("text");
  update->add_option("NAME", *uName, nameHelp)->required();
  addFlags(update, k, *uFlags);
  update->add_option("-o,--output", *uOut, "text or json (the server's answer)")
      ->check(CLI::IsMember({"text", "json"}));
  update->callback([&exitCode, k, uName, uFlags, uOut] {
    json body;
    if (!uFlags->body.empty()) {
      body = parseBodyArg(uFlags->body);
    } else if (k.nameKey == "label") {
      body = json::object();  // a node's GET is its state, not its spec
    } else {
      auto cur = apiCall("GET", k.path + "/" + *uName, json(), exitCode);
      if (!cur) return;
      body = *cur;
      body.erase("created_at");
      body.erase("updated_at");
    }
    applyFlags(k, *uFlags, body, false);
    auto r = apiCall("PUT", k.path + "/" + *uName, body, exitCode);
    if (!r) return;
    if (*uOut == "json") {
      std::cout << r->dump(2) << "\n";
    } else {
      std::cout << "updated " << k.singular << " '" << *uName << "'\n";
    }
  });

  auto* del = top->add_subcommand("delete", "Delete a " + k.singular);
  auto dName = std::make_shared<std::string>();
  del->add_option("NAME", *dName, nameHelp)->required();
  del->callback([&exitCode, k, dName] {
    if (apiCall("DELETE", k.path + "/" + *dName, json(), exitCode)) {
      std::cout << "deleted " << k.singular << " '" << *dName << "'\n";
    }
  });
}

int runLogin(std::string server, const std::string& user, bool passwordStdin) {
  if (server.empty()) {
    if (const char* env = ::getenv("ENJIN_SERVER"); env != nullptr) server = env;
  }
  if (server.empty()) {
    complain("login: give --server URL (or set ENJIN_SERVER)");
    return kExitUsage;
  }
  auto pw = readPassword(passwordStdin, "Password for " + user + " at " + server + ": ");
  if (!pw.ok()) {
    complain("login: " + pw.error().message);
    return kExitUsage;
  }
  ApiClient client(server, "");
  auto r = client.request("POST", "/v1/sessions", json{{"user", user}, {"password", *pw}}.dump());
  if (!r.ok()) {
    complain(r.error().message);
    return exitOfTransport(r.error());
  }
  if (r->status != 201) {
    complain(messageOf(*r));
    return exitOfStatus(r->status) == kExitOk ? kExitFailure : exitOfStatus(r->status);
  }
  json j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || !j.value("token", json()).is_string()) {
    complain("login: the server's answer has no token");
    return kExitFailure;
  }
  const std::string expires = j.value("expires_at", "");
  if (auto st = saveCredentials({server, user, j["token"]}, expires); !st.ok()) {
    complain(st.error().message);
    return kExitFailure;
  }
  std::cout << "logged in to " << server << " as " << user
            << (expires.empty() ? "" : " until " + expires) << "\n";
  return kExitOk;
}

int runLogout() {
  auto creds = loadCredentials();
  if (!creds.ok()) {
    complain(creds.error().message);
    return creds.error().code;
  }
  ApiClient client(creds->server, creds->token);
  auto r = client.request("DELETE", "/v1/sessions/current");
  if (!r.ok()) {
    complain(r.error().message + " (the credentials are kept; retry, or remove " +
             credentialsPath() + ")");
    return exitOfTransport(r.error());
  }
  // A session the server no longer knows (401) is as good as ended.
  const bool ended = r->status == 204 || r->status == 200 || r->status == 401;
  if (!ended) complain(messageOf(*r));
  if (::unlink(credentialsPath().c_str()) != 0 && errno != ENOENT) {
    complain("remove " + credentialsPath() + ": " + std::strerror(errno));
    return kExitFailure;
  }
  if (ended) std::cout << "logged out of " << creds->server << "\n";
  return ended ? kExitOk : exitOfStatus(r->status);
}

// The node paths of the tree (for completion): through the API when logged in, else from the
// daemon at the state dir. Silent: a completion has nowhere to complain.
void listNodePaths(const CLI::App& app, const std::string& stateDir) {
  json tree;
  if (useApi(app)) {
    auto creds = loadCredentials();
    if (!creds.ok()) return;
    auto r = ApiClient(creds->server, creds->token).request("GET", "/v1/tree");
    if (!r.ok() || r->status != 200) return;
    tree = json::parse(r->body, nullptr, false);
  } else {
    auto reply = supervise::controlCall(stateDir + "/control.sock", {{"cmd", "tree"}});
    if (!reply.ok()) return;
    tree = (*reply)["tree"];
  }
  if (!tree.is_object()) return;
  for (const auto& [path, node] : ring::flattenTree(tree)) std::cout << path << "\n";
}

}  // namespace

void complain(const std::string& message) { std::cerr << "enjinctl: " << message << "\n"; }

std::optional<ApiResponse> apiRequest(const std::string& method, const std::string& path,
                                      const json& body, int& exitCode) {
  auto creds = loadCredentials();
  if (!creds.ok()) {
    complain(creds.error().message);
    exitCode = creds.error().code;
    return std::nullopt;
  }
  ApiClient client(creds->server, creds->token);
  auto r = client.request(method, path, body.is_null() ? "" : body.dump());
  if (!r.ok()) {
    complain(r.error().message);
    exitCode = exitOfTransport(r.error());
    return std::nullopt;
  }
  return *r;
}

std::optional<json> apiAnswer(const std::string& what, const ApiResponse& r, int& exitCode) {
  if (r.status == 401) {
    complain(messageOf(r) + " (log in again: enjinctl login)");
    exitCode = kExitDenied;
    return std::nullopt;
  }
  if (r.status < 200 || r.status >= 300) {
    complain(messageOf(r));
    exitCode = exitOfStatus(r.status);
    return std::nullopt;
  }
  exitCode = kExitOk;
  if (r.body.empty()) return json();
  json j = json::parse(r.body, nullptr, false);
  if (j.is_discarded()) {
    complain(what + ": the server's answer is not JSON");
    exitCode = kExitFailure;
    return std::nullopt;
  }
  return j;
}

std::optional<json> apiCall(const std::string& method, const std::string& path, const json& body,
                            int& exitCode) {
  auto r = apiRequest(method, path, body, exitCode);
  if (!r) return std::nullopt;
  return apiAnswer(method + " " + path, *r, exitCode);
}

int apiStream(const std::string& path, const std::string& accept,
              const std::function<bool(const char*, size_t)>& onData) {
  auto creds = loadCredentials();
  if (!creds.ok()) {
    complain(creds.error().message);
    return creds.error().code;
  }
  auto r = ApiClient(creds->server, creds->token).stream(path, onData, accept);
  if (!r.ok()) {
    complain(r.error().message);
    return exitOfTransport(r.error());
  }
  if (r->status != 200) {
    int exitCode = kExitOk;
    (void)apiAnswer("GET " + path, *r, exitCode);
    return exitCode == kExitOk ? kExitFailure : exitCode;
  }
  return kExitOk;
}

bool useApi(const CLI::App& app) {
  if (app.get_option("--state-dir")->count() > 0) return false;
  if (const char* env = ::getenv("ENJIN_STATE_DIR"); env != nullptr && *env != '\0') return false;
  struct stat st;
  return ::stat(credentialsPath().c_str(), &st) == 0;
}

int apiEvents(const std::string& path, const std::function<bool(const SseEvent&)>& onEvent) {
  auto creds = loadCredentials();
  if (!creds.ok()) {
    complain(creds.error().message);
    return creds.error().code;
  }
  // Lines are cut at "\n" (a "\r" before it dropped); a blank line ends an event; a line that
  // starts with ':' is a comment (the server's keepalive).
  std::string pending;
  SseEvent ev;
  bool stopped = false;
  auto r = ApiClient(creds->server, creds->token).stream(path, [&](const char* data, size_t len) {
    pending.append(data, len);
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) {
        if (!ev.data.empty() || !ev.type.empty()) {
          if (ev.type.empty()) ev.type = "message";
          if (!ev.data.empty() && ev.data.back() == '\n') ev.data.pop_back();
          if (!onEvent(ev)) {
            stopped = true;
            return false;
          }
        }
        ev = SseEvent{ev.id, "", ""};
        continue;
      }
      if (line.front() == ':') continue;
      const size_t colon = line.find(':');
      const std::string field = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.erase(0, 1);
      if (field == "data") {
        ev.data += value + "\n";
      } else if (field == "event") {
        ev.type = value;
      } else if (field == "id") {
        ev.id = value;
      }
    }
    return true;
  });
  if (stopped) return kExitOk;
  if (!r.ok()) {
    complain(r.error().message);
    return exitOfTransport(r.error());
  }
  if (r->status != 200) {
    complain(messageOf(*r));
    return exitOfStatus(r->status) == kExitOk ? kExitFailure : exitOfStatus(r->status);
  }
  complain("the server ended the event stream");
  return kExitFailure;
}

std::optional<json> apiTree(int& exitCode) { return apiCall("GET", "/v1/tree", json(), exitCode); }

void addApiCommands(CLI::App& app, const std::string& stateDir, int& exitCode) {
  auto* hash = app.add_subcommand(
      "hash-password", "Print the argon2id hash of a password, for a ring-1 node's admins "
                       "([[ring1.admin]] password_hash, node create --admin USER:HASH)");
  auto hashStdin = std::make_shared<bool>(false);
  hash->add_flag("--password-stdin", *hashStdin,
                 "Read the password from stdin's first line (default: ask on the terminal)");
  hash->callback([&exitCode, hashStdin] {
    auto pw = readPassword(*hashStdin, "Password: ");
    if (!pw.ok()) {
      std::cerr << "enjinctl: " << pw.error().message << "\n";
      exitCode = kExitUsage;
      return;
    }
    Status policy = acl::checkPasswordPolicy(*pw);
    auto h = policy.ok() ? acl::hashPassword(*pw) : Result<std::string>(policy.error());
    sodium_memzero(pw->data(), pw->size());
    if (!h.ok()) {
      std::cerr << "enjinctl: " << h.error().message << "\n";
      exitCode = kExitFailure;
      return;
    }
    std::cout << *h << "\n";
  });

  auto* login = app.add_subcommand(
      "login", "Sign in to the control API; the session is kept in "
               "$XDG_CONFIG_HOME/enjin/credentials (default ~/.config/enjin/credentials, 0600)");
  auto server = std::make_shared<std::string>();
  auto user = std::make_shared<std::string>();
  auto pwStdin = std::make_shared<bool>(false);
  login->add_option("--server", *server, "http://HOST:PORT or https://HOST:PORT (default: $ENJIN_SERVER)");
  login->add_option("--user", *user, "The user")->required();
  login->add_flag("--password-stdin", *pwStdin,
                  "Read the password from stdin's first line (default: ask on the terminal)");
  login->callback([&exitCode, server, user, pwStdin] {
    exitCode = runLogin(*server, *user, *pwStdin);
  });

  auto* logout = app.add_subcommand("logout", "End the session and remove the credentials file");
  logout->callback([&exitCode] { exitCode = runLogout(); });

  const std::vector<KindSpec> kinds = {
      {"user", "/v1/users", "user", "name", {{"NAME", "name"}, {"CREATED", "created_at"}, {"UPDATED", "updated_at"}}},
      {"role", "/v1/roles", "role", "name", {{"NAME", "name"}, {"RULE SETS", "rule_sets"}, {"UPDATED", "updated_at"}}},
      {"membership", "/v1/memberships", "membership", "name",
       {{"NAME", "name"}, {"USER", "user"}, {"ROLE", "role"}, {"CREATED", "created_at"}}},
      {"rule-set", "/v1/access-rule-sets", "access rule set", "name",
       {{"NAME", "name"}, {"RULES", "rules"}, {"UPDATED", "updated_at"}}},
      {"compartment", "/v1/compartments", "compartment", "name",
       {{"NAME", "name"}, {"PARENT", "parent_compartment"}, {"UPDATED", "updated_at"}}},
      {"network", "/v1/networks", "network", "name",
       {{"NAME", "name"}, {"RING", "ring"}, {"STRATEGY", "strategy"}, {"CIDR", "cidr"}}},
      {"network-interface", "/v1/network-interfaces", "network interface", "name",
       {{"NAME", "name"}, {"NETWORK", "network"}, {"NODE", "node"}, {"ADDRESS", "address"}}},
      {"node", "/v1/nodes", "node", "label",
       {{"LABEL", "label"}, {"STATE", "state"}, {"PID", "pid"}, {"RESTARTS", "restarts"}, {"DETAIL", "detail"}}},
  };
  for (const auto& k : kinds) addKind(app, k, exitCode);

  auto* offer = app.add_subcommand("offer", "Job offers (/v1/job-offers)");
  offer->require_subcommand(1);
  auto* offers = offer->add_subcommand("list", "List the job offers");
  auto offersJson = std::make_shared<bool>(false);
  offers->add_flag("--json", *offersJson, "Print the server's JSON");
  offers->callback([&exitCode, offersJson] {
    auto r = apiCall("GET", "/v1/job-offers", json(), exitCode);
    if (!r) return;
    if (*offersJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printTable(*r, {});
    }
  });

  auto* audit = app.add_subcommand("audit", "The audit log of the control API, oldest first");
  auto after = std::make_shared<long long>(0);
  auto limit = std::make_shared<long>(100);
  auto auditJson = std::make_shared<bool>(false);
  audit->add_option("--after", *after, "Only records with an id above N")->capture_default_str();
  audit->add_option("--limit", *limit, "At most N records (1 to 1000)")->capture_default_str();
  audit->add_flag("--json", *auditJson, "Print the server's JSON");
  audit->callback([&exitCode, after, limit, auditJson] {
    auto r = apiCall("GET", "/v1/audit?after=" + std::to_string(*after) + "&limit=" + std::to_string(*limit),
                  json(), exitCode);
    if (!r) return;
    if (*auditJson) {
      std::cout << r->dump(2) << "\n";
    } else {
      printTable(*r, {{"ID", "id"}, {"TIME", "time"}, {"USER", "user"}, {"ACTION", "action"},
                      {"RESOURCE", "resource"}, {"RESULT", "result"}, {"STATUS", "status"},
                      {"SOURCE", "source"}});
    }
  });

  auto* nodes = app.add_subcommand("__complete-nodes", "The node paths of the tree, one a line");
  nodes->group("");  // hidden: used by the bash completion
  nodes->callback([&app, &stateDir] { listNodePaths(app, stateDir); });
}

}  // namespace enjin::ctl
