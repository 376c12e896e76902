#include "enjin/supervise/holder_protocol.hpp"

#include <sys/wait.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "enjin/supervise/spec_json.hpp"

namespace enjin::supervise::holder_proto {

using nlohmann::json;

namespace {

constexpr std::string_view kRoleNames[] = {"out", "err", "notify", "listen"};

void putIdentity(json& j, const std::optional<ExecIdentity>& id) {
  if (id) j["exec_in"] = json{{"uid", id->uid}, {"gid", id->gid}, {"env", id->env}};
}

json rolesToJson(const std::vector<FdRole>& roles) {
  json out = json::array();
  for (FdRole r : roles) out.push_back(kRoleNames[static_cast<size_t>(r)]);
  return out;
}

// Reads the fields of one message, remembering the first problem so a decoder reads straight
// through and reports once.
class Fields {
 public:
  Fields(const json& j, std::string_view op) : j_(j), op_(op) {}

  std::string string(const char* key) {
    const auto it = j_.find(key);
    if (it == j_.end() || !it->is_string()) return fail(key, "a string"), std::string();
    return it->get<std::string>();
  }
  template <typename Int>
  Int integer(const char* key, Int fallback = 0, bool required = true) {
    const auto it = j_.find(key);
    if (it == j_.end() && !required) return fallback;
    if (it == j_.end() || !it->is_number_integer()) return fail(key, "an integer"), fallback;
    return it->get<Int>();
  }
  bool boolean(const char* key, bool fallback, bool required = true) {
    const auto it = j_.find(key);
    if (it == j_.end() && !required) return fallback;
    if (it == j_.end() || !it->is_boolean()) return fail(key, "a boolean"), fallback;
    return it->get<bool>();
  }
  std::vector<FdRole> roles() {
    std::vector<FdRole> out;
    const auto it = j_.find("fds");
    if (it == j_.end()) return out;
    if (!it->is_array()) return fail("fds", "an array of fd roles"), out;
    for (const auto& r : *it) {
      bool known = false;
      for (size_t i = 0; i < std::size(kRoleNames); ++i) {
        if (r.is_string() && r.get<std::string_view>() == kRoleNames[i]) {
          out.push_back(static_cast<FdRole>(i));
          known = true;
        }
      }
      if (!known) return fail("fds", "out, err, notify or listen"), out;
    }
    return out;
  }
  std::vector<std::string> strings(const char* key) {
    std::vector<std::string> out;
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return out;
    if (!it->is_array()) return fail(key, "an array of strings"), out;
    for (const auto& s : *it) {
      if (!s.is_string()) return fail(key, "an array of strings"), out;
      out.push_back(s.get<std::string>());
    }
    return out;
  }
  std::optional<std::string> optionalString(const char* key) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) return fail(key, "a string or null"), std::nullopt;
    return it->get<std::string>();
  }
  std::optional<ExecIdentity> identity() {
    const auto it = j_.find("exec_in");
    if (it == j_.end() || it->is_null()) return std::nullopt;
    if (!it->is_object()) return fail("exec_in", "an object"), std::nullopt;
    Fields inner(*it, op_);
    ExecIdentity id;
    id.uid = inner.integer<int>("uid", -1);
    id.gid = inner.integer<int>("gid", -1);
    id.env = inner.strings("env");
    if (!inner.error_.empty()) return fail("exec_in", "{uid, gid, env}"), std::nullopt;
    return id;
  }
  const json& raw(const char* key) const {
    static const json kNull;
    const auto it = j_.find(key);
    return it == j_.end() ? kNull : *it;
  }
  void fail(std::string_view key, std::string_view expected) {
    if (error_.empty()) error_ = "'" + std::string(op_) + "': " + std::string(key) + " must be " + std::string(expected);
  }
  // The first problem met, if any.
  std::optional<Error> failed() const {
    if (error_.empty()) return std::nullopt;
    return Error{error_};
  }

 private:
  const json& j_;
  std::string_view op_;
  std::string error_;
};

Result<json> parseObject(std::string_view text, std::string& op) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Error{"not a JSON object"};
  const auto it = j.find("op");
  if (it == j.end() || !it->is_string()) return Error{"no \"op\""};
  op = it->get<std::string>();
  return j;
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

std::string encodeSpawn(std::string_view name, std::string_view specJson,
                        const std::vector<std::string>& env,
                        const std::optional<std::string>& notify, size_t listenFds) {
  std::string out = R"({"op":"spawn","name":)";
  out += json(name).dump();
  out += R"(,"spec":)";
  out += specJson;
  if (notify) out += R"(,"notify":)" + json(*notify).dump();
  if (!env.empty()) out += R"(,"env":)" + json(env).dump();
  if (listenFds > 0) {
    out += R"(,"fds":[)";
    for (size_t i = 0; i < listenFds; ++i) out += i == 0 ? R"("listen")" : R"(,"listen")";
    out += ']';
  }
  out += '}';
  return out;
}

std::string encodeRespawn(std::string_view name) {
  return R"({"op":"respawn","name":)" + json(name).dump() + "}";
}

std::string encode(const Request& request) {
  return std::visit(
      Overloaded{
          [](const Hello&) { return std::string(R"({"op":"hello"})"); },
          [](const Spawn& m) {
            return encodeSpawn(m.name, specToJson(m.spec).dump(), m.env, m.notify, m.fds.size());
          },
          [](const Respawn& m) { return encodeRespawn(m.name); },
          [](const Signal& m) {
            return json{{"op", "signal"}, {"name", m.name}, {"signal", m.signal}, {"group", m.group}}.dump();
          },
          [](const Close& m) { return json{{"op", "close"}, {"name", m.name}}.dump(); },
          [](const Shutdown&) { return std::string(R"({"op":"shutdown"})"); },
      },
      request);
}

std::string encode(const Reply& reply) {
  // Errors and names may carry bytes that are not UTF-8: replaced, never thrown on.
  const auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  return std::visit(
      Overloaded{
          [&](const Slot& m) {
            json j{{"op", "slot"},
                   {"name", m.name},
                   {"pid", m.pid},
                   {"start_time", m.startTime},
                   {"running", m.running},
                   {"exit", exitToJson(m.exit)},
                   {"exit_reported", m.exitReported},
                   {"fds", rolesToJson(m.fds)}};
            if (!m.sockets.empty()) j["sockets"] = m.sockets;
            putIdentity(j, m.identity);
            return dump(j);
          },
          [](const HelloDone&) { return std::string(R"({"op":"hello_done"})"); },
          [&](const Spawned& m) {
            json j{{"op", "spawned"},
                   {"name", m.name},
                   {"pid", m.pid},
                   {"start_time", m.startTime},
                   {"fds", rolesToJson(m.fds)}};
            putIdentity(j, m.identity);
            return dump(j);
          },
          [&](const SpawnFailed& m) {
            return dump(json{{"op", "spawn_failed"},
                             {"name", m.name},
                             {"error", m.error},
                             {"fds", rolesToJson(m.fds)}});
          },
          [&](const Exited& m) {
            return dump(json{{"op", "exited"}, {"name", m.name}, {"pid", m.pid}, {"exit", exitToJson(m.exit)}});
          },
          [](const Bye&) { return std::string(R"({"op":"bye"})"); },
          [&](const ErrorReply& m) { return dump(json{{"op", "error"}, {"error", m.error}}); },
      },
      reply);
}

Result<Request> decodeRequest(std::string_view text, std::string* failedSpawn) {
  std::string op;
  auto j = parseObject(text, op);
  if (!j.ok()) return j.error();
  Fields f(*j, op);
  if (failedSpawn != nullptr && (op == "spawn" || op == "respawn")) {
    const auto name = j->find("name");
    if (name != j->end() && name->is_string()) *failedSpawn = name->get<std::string>();
  }
  if (op == "hello") return Request{Hello{}};
  if (op == "shutdown") return Request{Shutdown{}};
  if (op == "respawn" || op == "close") {
    std::string name = f.string("name");
    if (auto e = f.failed()) return *e;
    if (op == "close") return Request{Close{std::move(name)}};
    return Request{Respawn{std::move(name)}};
  }
  if (op == "signal") {
    Signal m;
    m.name = f.string("name");
    m.signal = f.integer<int>("signal", SIGTERM, false);
    m.group = f.boolean("group", true, false);
    if (auto e = f.failed()) return *e;
    return Request{std::move(m)};
  }
  if (op == "spawn") {
    Spawn m;
    m.name = f.string("name");
    m.env = f.strings("env");
    m.notify = f.optionalString("notify");
    m.fds = f.roles();
    for (FdRole r : m.fds) {
      if (r != FdRole::kListen) f.fail("fds", "listen roles only");
    }
    auto spec = specFromJson(f.raw("spec"));
    if (!spec.ok()) return spec.error().wrap("'spawn' of '" + m.name + "'");
    m.spec = std::move(*spec);
    if (m.fds.size() != m.spec.sockets.size()) {
      f.fail("fds", "one listen fd per socket of the spec (" +
                        std::to_string(m.spec.sockets.size()) + ")");
    }
    if (auto e = f.failed()) return *e;
    return Request{std::move(m)};
  }
  return Error{"unknown op '" + op + "'"};
}

Result<Reply> decodeReply(std::string_view text) {
  std::string op;
  auto j = parseObject(text, op);
  if (!j.ok()) return j.error();
  Fields f(*j, op);
  if (op == "hello_done") return Reply{HelloDone{}};
  if (op == "bye") return Reply{Bye{}};
  if (op == "error") {
    ErrorReply m{f.string("error")};
    if (auto e = f.failed()) return *e;
    return Reply{std::move(m)};
  }
  if (op == "slot") {
    Slot m;
    m.name = f.string("name");
    m.pid = f.integer<int>("pid");
    m.startTime = f.integer<uint64_t>("start_time");
    m.running = f.boolean("running", false);
    m.exit = exitFromJson(f.raw("exit"));
    m.exitReported = f.boolean("exit_reported", true, false);
    m.fds = f.roles();
    m.sockets = f.strings("sockets");
    if (static_cast<size_t>(std::count(m.fds.begin(), m.fds.end(), FdRole::kListen)) !=
        m.sockets.size()) {
      f.fail("sockets", "one source per listen fd");
    }
    m.identity = f.identity();
    if (auto e = f.failed()) return *e;
    return Reply{std::move(m)};
  }
  if (op == "spawned") {
    Spawned m;
    m.name = f.string("name");
    m.pid = f.integer<int>("pid");
    m.startTime = f.integer<uint64_t>("start_time");
    m.fds = f.roles();
    m.identity = f.identity();
    if (auto e = f.failed()) return *e;
    return Reply{std::move(m)};
  }
  if (op == "spawn_failed") {
    SpawnFailed m;
    m.name = f.string("name");
    m.error = f.string("error");
    m.fds = f.roles();
    if (auto e = f.failed()) return *e;
    return Reply{std::move(m)};
  }
  if (op == "exited") {
    Exited m;
    m.name = f.string("name");
    m.pid = f.integer<int>("pid");
    m.exit = exitFromJson(f.raw("exit")).value_or(ExitInfo{});
    if (auto e = f.failed()) return *e;
    return Reply{std::move(m)};
  }
  return Error{"unknown op '" + op + "'"};
}

ExitInfo exitFromSiginfo(const siginfo_t& info) {
  ExitInfo e;
  if (info.si_code == CLD_EXITED) {
    e.kind = ExitInfo::Kind::kExited;
    e.code = info.si_status;
  } else {
    e.kind = ExitInfo::Kind::kSignaled;
    e.signal = info.si_status;
  }
  return e;
}

}  // namespace enjin::supervise::holder_proto
