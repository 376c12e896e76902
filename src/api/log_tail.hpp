// The apps' logs as GET /v1/apps/NAME/logs serves them: the log files of several instances
// (supervise/log_writer.hpp: "TIME STREAM TEXT" lines, rotated by size) read as one, each line
// prefixed by its instance ("shop-2 | 2026-...Z stdout hello"), in time order. Runs on the HTTP
// threads; only reads files.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace enjin::api {

// {instance, path of its log file}
using LogFiles = std::vector<std::pair<std::string, std::string>>;

class LogTail {
 public:
  // The last `lines` lines of all the files together, oldest first; remembers where each ends.
  std::string start(const LogFiles& files, size_t lines);
  // The whole lines written since the last call. A file new since then is read from its start,
  // one that shrank (rotated) from its start again; a line not finished yet waits.
  std::string poll(const LogFiles& files);

 private:
  struct Position {
    std::string path;
    uint64_t offset = 0;
    uint64_t inode = 0;
  };
  std::map<std::string, Position> at_;  // by instance
};

// Follows until `write` says stop: polls every 250 ms, asks `refresh` for the instances' files
// every 2 s (nullopt: keep the last list).
void followLogs(LogTail& tail, const std::function<std::optional<LogFiles>()>& refresh,
                const std::function<bool(const std::string&)>& write);

}  // namespace enjin::api
