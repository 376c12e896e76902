// One process's log file: bytes from its stdout and stderr pipes become lines stamped with the
// time and the stream ("2026-11-26T06:40:00.123456Z stdout hello"), appended to NAME.log, which
// is rotated by size to NAME.log.1 .. NAME.log.KEEP.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "enjin/base/result.hpp"
#include "enjin/base/unique_fd.hpp"
#include "enjin/supervise/process_spec.hpp"

namespace enjin::supervise {

enum class LogStream { kStdout, kStderr };

class LogWriter {
 public:
  // A line longer than this is cut and written in pieces, each marked as continued.
  static constexpr size_t kMaxLineBytes = 16 * 1024;

  static Result<LogWriter> open(std::string path, LogConfig config);

  // Appends a chunk read from `stream`. Complete lines are written at once; a trailing partial
  // line waits for its end (per stream, so stdout and stderr never interleave inside a line).
  Status append(LogStream stream, std::string_view chunk, int64_t wallMicros);
  // The stream closed: writes its partial line, if any.
  Status finish(LogStream stream, int64_t wallMicros);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

 private:
  LogWriter(std::string path, LogConfig config, UniqueFd fd, uint64_t size);
  // Writes one whole line's text, cut into pieces of at most kMaxLineBytes.
  Status writeText(LogStream stream, std::string_view text, int64_t wallMicros);
  Status writeLine(LogStream stream, std::string_view line, int64_t wallMicros, bool continued);
  Status rotate();

  std::string path_;
  LogConfig config_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string partial_[2];
  // Per stream: the line in partial_ already had a piece written (it outgrew kMaxLineBytes before
  // its newline came), so the rest is written as continued. Keeps partial_ bounded.
  bool continued_[2] = {false, false};
};

}  // namespace enjin::supervise
