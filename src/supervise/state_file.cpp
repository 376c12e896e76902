#include "supervisor_impl.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "enjin/base/file.hpp"
#include "enjin/supervise/spec_json.hpp"

namespace enjin::supervise {

void Supervisor::Impl::restore(Proc& p, const json& prev) {
  if (!prev.is_object()) return;
  try {
    p.restarts = prev.value("restarts", uint64_t{0});
    if (prev.value("held_down", false)) {
      // The machine starts where that decision left it.
      p.goal = Goal::kHold;
      p.phase = prev.value("state", "stopped") == "failed" ? Phase::kFailed : Phase::kDown;
      p.detail = prev.value("detail", "");
    }
    const json& exit = prev.contains("last_exit") ? prev["last_exit"] : json();
    if (exit.is_object()) p.lastExit = exitFromJson(exit);
    // Restart times were saved as wall-clock times; the window is measured on the monotonic
    // clock, so carry each over as "so long ago".
    const int64_t nowWall = wallMs();
    const json& h = prev.contains("history") ? prev["history"] : json();
    if (h.is_object()) {
      p.history.backoffStep = h.value("backoff_step", 0u);
      for (const auto& at : h.value("restarts_wall_ms", json::array())) {
        if (at.is_number_integer()) {
          p.history.restartsAtNs.push_back(nowNs() - (nowWall - at.get<int64_t>()) * 1'000'000);
        }
      }
    }
  } catch (const json::exception&) {
    spdlog::warn("process '{}': its saved state is unreadable; starting it afresh",
                 p.spec.name);
  }
}


// ---------------------------------------------------------------------------------------------
// State file and events

void Supervisor::Impl::scheduleSave() {
  if (saveTimer_ != 0) return;
  saveTimer_ = timers_.after(kSaveDelayMs, [this] {
    saveTimer_ = 0;
    save();
    // save() builds and drops a JSON tree of every process, which leaves the heap full of holes:
    // once things are quiet, hand the free pages back. Measured with 1000 processes: 3.3 MB of
    // ring2d's 10.6 MB PSS. Not after every save: there a trim took several ms.
    if (trimTimer_ != 0) timers_.cancel(trimTimer_);
    trimTimer_ = timers_.after(kTrimDelayMs, [this] {
      trimTimer_ = 0;
      ::malloc_trim(0);
    });
  });
}

namespace {

// `s` as a JSON string; bytes that are not UTF-8 become U+FFFD, as nlohmann's replace handler
// makes them. Names, states and most details need no escaping and take the short way.
void appendJsonString(std::string& out, std::string_view s) {
  const bool plain = std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x80 && c != '"' && c != '\\';
  });
  if (plain) {
    out += '"';
    out += s;
    out += '"';
    return;
  }
  out += json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

template <typename Int>
void appendInt(std::string& out, Int v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace

// Written as text, one process per line, without building a JSON tree: with 1000 processes the
// tree took 8-20 ms of the reactor and left the heap full of holes. Reading it back is
// nlohmann's (restore()), so the shape is the one a tree would have had.
void Supervisor::Impl::save() {
  std::string text = "{\"version\":1,\"processes\":{";
  text.reserve(procs_.size() * 320 + 64);
  // What must survive the machine, not only ring2d: an operator's stop, the policy giving up.
  std::string decisions;
  const int64_t nowWall = wallMs(), now = nowNs();
  bool first = true;
  for (const auto& [name, p] : procs_) {
    text += first ? "\n" : ",\n";
    first = false;
    appendJsonString(text, name);
    text += ":{\"pid\":";
    appendInt(text, p->pid);
    text += ",\"start_time\":";
    appendInt(text, p->startTime);
    text += ",\"started_wall_ms\":";
    appendInt(text, p->startedWallMs);
    text += ",\"restarts\":";
    appendInt(text, p->restarts);
    text += isReady(p->phase) ? ",\"ready\":true" : ",\"ready\":false";
    text += ",\"state\":\"";
    text += stateName(published(p->phase));
    text += "\",\"detail\":";
    appendJsonString(text, p->detail);
    const bool held = p->goal == Goal::kHold;
    text += held ? ",\"held_down\":true" : ",\"held_down\":false";
    text += ",\"last_exit\":";
    text += exitToJson(p->lastExit).dump();
    text += ",\"history\":{\"backoff_step\":";
    appendInt(text, p->history.backoffStep);
    text += ",\"restarts_wall_ms\":[";
    for (size_t i = 0; i < p->history.restartsAtNs.size(); ++i) {
      if (i > 0) text += ',';
      appendInt(text, nowWall - (now - p->history.restartsAtNs[i]) / 1'000'000);
    }
    text += "]}}";
    if (held || p->phase == Phase::kFailed) {
      decisions += name;
      decisions += held ? "\n" : "\t";
    }
  }
  text += "\n}}\n";
  // Pids, counts and histories matter only while the holder lives, and the page cache outlives
  // a ring2d crash: those are written without fsync (the rename alone keeps it whole). A change
  // of decisions is flushed to disk, so a power cut does not bring back a stopped process.
  // Filesystems that do not order a rename after the data it replaces (XFS; ext4 without
  // auto_da_alloc) can leave the file empty after a power cut: the decisions are also kept in
  // state.durable.json, which start() reads when state.json is unreadable.
  const bool durable = !savedOnce_ || decisions != savedDecisions_;
  if (durable) {
    if (auto st = writeFileAtomic(options_.stateDir + "/state.durable.json", text, 0600);
        !st.ok()) {
      spdlog::error("{}", st.error().message);
      return;
    }
  }
  if (auto st = writeFileAtomic(options_.stateDir + "/state.json", text, 0600, Replace::kYes,
                                durable ? Sync::kDurable : Sync::kAtomicOnly);
      !st.ok()) {
    spdlog::error("{}", st.error().message);
    return;
  }
  if (durable) {
    savedOnce_ = true;
    savedDecisions_ = std::move(decisions);
  }
}

}  // namespace enjin::supervise
