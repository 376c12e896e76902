// A host account that lives only as long as the test that needs it: a passwd and a group entry
// (and their shadow entries where those files exist) for a uid/gid no one uses, added when it is
// made and removed when it goes. Tests of the unix-user strategy need a real entry (it looks
// spec.user up with getpwnam_r), and an account made with useradd would outlive the test.
//
// Needs root. Every change to the account files happens under lckpwdf(), the lock useradd,
// userdel and passwd take too, so tests running side by side (and the host's own tools) do not
// lose each other's lines; the uid is picked under that lock for the same reason.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <shadow.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace enjin::testing {

class ThrowawayUser {
 public:
  // Check ok() (and error()) before use: a constructor that cannot make the account says why
  // rather than throwing out of a test's fixture.
  ThrowawayUser() {
    if (::geteuid() != 0) {
      error_ = "needs root";
      return;
    }
    if (::lckpwdf() != 0) {
      error_ = std::string("lckpwdf: ") + std::strerror(errno);
      return;
    }
    if (pickIds()) add();
    ::ulckpwdf();
  }

  ~ThrowawayUser() {
    if (added_.empty()) return;
    if (::lckpwdf() != 0) {
      std::fprintf(stderr, "ThrowawayUser: lckpwdf: %s; %s stays\n", std::strerror(errno),
                   name_.c_str());
      return;
    }
    for (const auto& [path, line] : added_) {
      std::string err = removeLine(path, line);
      if (!err.empty()) std::fprintf(stderr, "ThrowawayUser: %s\n", err.c_str());
    }
    ::ulckpwdf();
  }

  ThrowawayUser(const ThrowawayUser&) = delete;
  ThrowawayUser& operator=(const ThrowawayUser&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  // The home its passwd entry names: a directory that does not exist, as for system accounts.
  static constexpr const char* home() { return "/nonexistent"; }

 private:
  // A name no entry has (a test killed before its destructor ran may have left "enjin-t<pid>")
  // and one number free as both a uid and a gid.
  bool pickIds() {
    static int made = 0;  // a test may make more than one
    for (int n = made++;; n = made++) {
      name_ = "enjin-t" + std::to_string(::getpid()) + (n == 0 ? "" : "-" + std::to_string(n));
      if (::getpwnam(name_.c_str()) == nullptr && ::getgrnam(name_.c_str()) == nullptr) break;
      if (n > 100) {
        error_ = "no free name like " + name_;
        return false;
      }
    }
    for (unsigned id = 64000; id < 65000; ++id) {
      if (::getpwuid(id) == nullptr && ::getgrgid(id) == nullptr) {
        uid_ = id;
        gid_ = id;
        return true;
      }
    }
    error_ = "no free uid/gid in 64000..64999";
    return false;
  }

  void add() {
    const std::string id = std::to_string(uid_);
    const std::vector<std::pair<std::string, std::string>> entries{
        {"/etc/passwd", name_ + ":x:" + id + ":" + id + ":enjin test:" + home() + ":/usr/sbin/nologin"},
        {"/etc/group", name_ + ":x:" + id + ":"},
        {"/etc/shadow", name_ + ":!:::::::"},
        {"/etc/gshadow", name_ + ":!::"},
    };
    for (const auto& [path, line] : entries) {
      const bool optional = path == "/etc/shadow" || path == "/etc/gshadow";
      if (optional && ::access(path.c_str(), F_OK) != 0) continue;
      std::string err = appendLine(path, line);
      if (!err.empty()) {
        error_ = err;
        return;  // the destructor takes out what was added
      }
      added_.emplace_back(path, line);
    }
  }

  static std::string readFile(const std::string& path, std::string& out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "open " + path + ": " + std::strerror(errno);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    const int readErrno = errno;
    ::close(fd);
    return n < 0 ? "read " + path + ": " + std::strerror(readErrno) : "";
  }

  // One write of the whole line (after a newline if the file lacks its last one).
  static std::string appendLine(const std::string& path, const std::string& line) {
    std::string text;
    if (auto err = readFile(path, text); !err.empty()) return err;
    std::string chunk = (text.empty() || text.back() == '\n' ? "" : "\n") + line + "\n";
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return "open " + path + ": " + std::strerror(errno);
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    const int writeErrno = errno;
    const bool synced = ::fsync(fd) == 0;
    ::close(fd);
    if (n != static_cast<ssize_t>(chunk.size())) {
      return "write " + path + ": " + (n < 0 ? std::strerror(writeErrno) : "short write");
    }
    return synced ? "" : "fsync " + path + ": " + std::strerror(errno);
  }

  // Rewrites `path` without the first line equal to `line`: a temp file in /etc with the
  // original's mode and owner, then rename, so a reader sees the old file or the new one.
  static std::string removeLine(const std::string& path, const std::string& line) {
    std::string text;
    if (auto err = readFile(path, text); !err.empty()) return err;
    std::string kept;
    bool removed = false;
    size_t at = 0;
    while (at < text.size()) {
      size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      const std::string_view current(text.data() + at, end - at);
      if (!removed && current == line) {
        removed = true;
      } else {
        kept.append(current);
        if (end < text.size()) kept.push_back('\n');
      }
      at = end + 1;
    }
    if (!removed) return path + " no longer has: " + line;

    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) return "stat " + path + ": " + std::strerror(errno);
    std::string tmp = path + ".enjin-XXXXXX";
    int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0) return "mkstemp " + tmp + ": " + std::strerror(errno);
    std::string err;
    if (::fchown(fd, st.st_uid, st.st_gid) != 0 || ::fchmod(fd, st.st_mode & 07777) != 0) {
      err = "chown/chmod " + tmp + ": " + std::strerror(errno);
    } else if (::write(fd, kept.data(), kept.size()) != static_cast<ssize_t>(kept.size())) {
      err = "write " + tmp + ": " + std::strerror(errno);
    } else if (::fsync(fd) != 0) {
      err = "fsync " + tmp + ": " + std::strerror(errno);
    }
    ::close(fd);
    if (err.empty() && ::rename(tmp.c_str(), path.c_str()) != 0) {
      err = "rename " + tmp + ": " + std::strerror(errno);
    }
    if (!err.empty()) ::unlink(tmp.c_str());
    return err;
  }

  std::string error_;
  std::string name_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::vector<std::pair<std::string, std::string>> added_;  // file, line
};

}  // namespace enjin::testing
