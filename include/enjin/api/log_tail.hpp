// The apps' logs as GET /v1/apps/NAME/logs serves them: the log files of several instances
// (supervise/log_writer.hpp: "TIME STREAM TEXT" lines, rotated by size) read as one, each line
// prefixed by its instance ("shop-2 | 2026-...Z stdout hello"), in time order. Runs on the HTTP
// threads; only reads files.
//
// The files are a tenant's: its daemon writes them, and it can put a symlink anywhere in its own
// folder. They are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) below the node's
// state dir (a path only root controls), so no component of the path may be a symlink, and a
// file not owned by the node's uid (or root) is refused. A file that cannot be read says why,
// once, as a line of its instance ("shop-2 | enjin: cannot read ...").
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "enjin/base/unique_fd.hpp"

namespace enjin::api {

// One instance's log file.
struct LogFile {
  std::string instance;
  std::string dir;   // the node's state dir: every component of it root's to change
  std::string file;  // below `dir`, every component a plain directory or file ("logs/shop.log")
  uint32_t uid = 0;  // who may own the file besides root (the node's tenant uid; 0: root only)
  bool operator==(const LogFile&) const = default;
};
using LogFiles = std::vector<LogFile>;

class LogTail {
 public:
  // The last `lines` lines of all the files together, oldest first; remembers where each ends.
  std::string start(const LogFiles& files, size_t lines);
  // The whole lines written since the last call. A file new since then is read from its start.
  // A file rotated meanwhile (another inode under its name) is read to its end through the fd
  // kept open, then the new one from its start; after more than 4 MiB at once, reading resumes
  // at the next line start. A line not finished yet waits.
  std::string poll(const LogFiles& files);

 private:
  struct Position {
    std::string where;  // dir/file: another one is read from its start
    UniqueFd fd;        // the file being read; kept, so that a rotated file is finished
    uint64_t offset = 0;
    uint64_t inode = 0;
    bool skip = false;  // drop what comes before the next newline (a jump cut a line)
    std::string error;  // the last error said, so that it is said once
  };
  // Reads what `p.fd` has past `p.offset` into whole lines of `instance`.
  void readLines(const std::string& instance, Position& p, uint64_t limit,
                 std::vector<std::string>& out);
  std::map<std::string, Position> at_;  // by instance
};

// Follows until `write` says stop: polls every 250 ms, asks `refresh` for the instances' files
// every 2 s (nullopt: keep the last list).
void followLogs(LogTail& tail, const std::function<std::optional<LogFiles>()>& refresh,
                const std::function<bool(const std::string&)>& write);

}  // namespace enjin::api
