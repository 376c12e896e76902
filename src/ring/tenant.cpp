#include "enjin/ring/tenant.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "enjin/store/store.hpp"

namespace enjin::ring {

using nlohmann::json;

namespace {

constexpr uint32_t kMinTenantId = 1000;
constexpr const char* kMetaKey = "tenant_ids";

struct Assignments {
  json assigned = json::object();  // uuid -> supervisor uid
  json retired = json::array();    // supervisor uids
};

Result<Assignments> load(store::Store& store) {
  auto text = store.meta(kMetaKey);
  if (!text.ok()) return text.error();
  Assignments a;
  if (!*text) return a;
  json j = json::parse(**text, nullptr, false);
  if (!j.is_object() || !j.value("assigned", json()).is_object() ||
      !j.value("retired", json()).is_array()) {
    return Error{"store: meta " + std::string(kMetaKey) + ": not what this daemon writes"};
  }
  a.assigned = j["assigned"];
  a.retired = j["retired"];
  return a;
}

Status save(store::Store& store, const Assignments& a) {
  return store.setMeta(kMetaKey, json{{"assigned", a.assigned}, {"retired", a.retired}}.dump());
}

// Whether any process runs as `uid`: the owner of /proc/PID is its effective uid.
bool uidInUse(uint32_t uid) {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return true;  // cannot tell: assume so
  bool used = false;
  while (dirent* e = ::readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    struct stat st;
    const std::string dir = std::string("/proc/") + e->d_name;
    if (::stat(dir.c_str(), &st) == 0 && st.st_uid == uid) {
      used = true;
      break;
    }
  }
  ::closedir(proc);
  return used;
}

TenantIds idsFor(uint32_t uid, const UidRange& range) { return {uid, uid + 1, range.first}; }

Status chownPath(const std::string& path, uid_t uid, gid_t gid, mode_t mode) {
  if (::lchown(path.c_str(), uid, gid) != 0) return errnoError("chown " + path, errno);
  if (::chmod(path.c_str(), mode) != 0) return errnoError("chmod " + path, errno);
  return {};
}

}  // namespace

std::optional<std::pair<uint32_t, uint32_t>> splitNumberRange(std::string_view text) {
  const size_t dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto num = [](std::string_view s, uint32_t& out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && !s.empty();
  };
  std::pair<uint32_t, uint32_t> r;
  if (!num(text.substr(0, dash), r.first) || !num(text.substr(dash + 1), r.second)) {
    return std::nullopt;
  }
  return r;
}

Result<UidRange> parseUidRange(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Error{"tenant_uids '" + std::string(text) + "': " + why, 400};
  };
  if (text.find('-') == std::string_view::npos) return bad("expected FIRST-LAST, e.g. 60000-60999");
  auto split = splitNumberRange(text);
  if (!split) return bad("expected two numbers, FIRST-LAST");
  UidRange r;
  r.first = split->first;
  r.last = split->second;
  if (r.first < kMinTenantId) return bad("ids below 1000 belong to the system");
  if (r.last >= 0xFFFFFFFEU) return bad("the last id is too large");
  if (r.last < r.first + 2) return bad("too small: the bus group and one pair need 3 ids");
  return r;
}

Result<TenantIds> assignTenantIds(store::Store& store, const UidRange& range,
                                  const std::string& uuid) {
  auto a = load(store);
  if (!a.ok()) return a.error();
  if (auto it = a->assigned.find(uuid); it != a->assigned.end()) {
    return idsFor(it->get<uint32_t>(), range);
  }
  std::set<uint32_t> taken;
  for (const auto& [key, value] : a->assigned.items()) taken.insert(value.get<uint32_t>());
  std::set<uint32_t> retired;
  for (const auto& v : a->retired) retired.insert(v.get<uint32_t>());
  std::optional<uint32_t> pick;
  for (uint32_t uid = range.first + 1; uid + 1 <= range.last; uid += 2) {
    // Not one some process runs as either: another daemon's (a range given twice) included.
    if (!taken.contains(uid) && !retired.contains(uid) && !uidInUse(uid) && !uidInUse(uid + 1)) {
      pick = uid;
      break;
    }
  }
  if (!pick) {
    for (uint32_t uid : retired) {
      if (uid > range.first && uid + 1 <= range.last && !uidInUse(uid) && !uidInUse(uid + 1)) {
        pick = uid;
        a->retired.erase(std::find(a->retired.begin(), a->retired.end(), json(uid)));
        break;
      }
    }
  }
  if (!pick) {
    return Error{"tenant_uids " + std::to_string(range.first) + "-" + std::to_string(range.last) +
                     ": no free pair of ids left (" + std::to_string(taken.size()) +
                     " nodes hold one)",
                 409};
  }
  a->assigned[uuid] = *pick;
  if (auto st = save(store, *a); !st.ok()) return st.error();
  return idsFor(*pick, range);
}

Status retireTenantIds(store::Store& store, const std::string& uuid) {
  auto a = load(store);
  if (!a.ok()) return a.error();
  auto it = a->assigned.find(uuid);
  if (it == a->assigned.end()) return {};
  a->retired.push_back(*it);
  a->assigned.erase(it);
  return save(store, *a);
}

std::string tenantHome(const std::string& dir) { return dir + "/home"; }

Status prepareTenantDir(const std::string& dir, const TenantIds& ids) {
  namespace fs = std::filesystem;
  const std::string home = tenantHome(dir);
  std::error_code ec;
  fs::create_directories(home, ec);
  if (ec) return Error{"create " + home + ": " + ec.message()};
  // Everything but the home: the supervisor's alone. Symlinks are changed, never followed. A
  // dir that is the node's already needs only what this daemon writes into it (its top level:
  // keys, config); the whole tree is walked once, when the dir is not yet the node's.
  struct stat top;
  if (::stat(dir.c_str(), &top) != 0) return errnoError("stat " + dir, errno);
  const bool whole = top.st_uid != ids.uid || top.st_gid != ids.appUid;
  auto fix = [&](const fs::directory_entry& entry) -> Status {
    const std::string path = entry.path().string();
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return {};
    if (::lchown(path.c_str(), ids.uid, ids.uid) != 0) return errnoError("chown " + path, errno);
    if (!S_ISLNK(st.st_mode) && ::chmod(path.c_str(), st.st_mode & 07700) != 0) {
      return errnoError("chmod " + path, errno);
    }
    return {};
  };
  if (whole) {
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::none, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->path() == home) {
        it.disable_recursion_pending();
        continue;
      }
      if (auto st = fix(*it); !st.ok()) return st;
    }
  } else {
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (it->path() == home) continue;
      if (auto st = fix(*it); !st.ok()) return st;
    }
  }
  if (ec) return Error{"walk " + dir + ": " + ec.message()};
  if (auto st = chownPath(dir, ids.uid, ids.appUid, 0710); !st.ok()) return st;
  return chownPath(home, ids.appUid, ids.appUid, 0700);
}

void disownTenantDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  (void)::lchown(dir.c_str(), 0, 0);
  (void)::chmod(dir.c_str(), 0700);
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    (void)::lchown(it->path().c_str(), 0, 0);
  }
}

Status makeTraversable(const std::string& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir);
  for (; !p.empty(); p = p.parent_path()) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return errnoError("stat " + p.string(), errno);
    if ((st.st_mode & S_IXOTH) == 0 && ::chmod(p.c_str(), (st.st_mode & 07777) | S_IXOTH) != 0) {
      return errnoError("chmod o+x " + p.string(), errno);
    }
    if (p == p.root_path()) break;
  }
  return {};
}

Status shareSocketWithGroup(const std::string& endpoint, gid_t gid) {
  constexpr std::string_view kIpc = "ipc://";
  if (!endpoint.starts_with(kIpc)) return {};
  const std::string path = endpoint.substr(kIpc.size());
  return chownPath(path, 0, gid, 0660);
}

}  // namespace enjin::ring
