// enjin-holder: keeps ring2d's children, their log pipes and notify sockets across ring2d's own
// restarts (see include/enjin/supervise/holder.hpp). Started by ring2d; not run by hand.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "enjin/base/clock.hpp"
#include "enjin/reactor/reactor.hpp"
#include "enjin/supervise/holder.hpp"
#include "enjin/supervise/spawn.hpp"

int main(int argc, char** argv) {
  std::string socketPath;
  int readyFd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--socket") == 0) socketPath = argv[i + 1];
    if (std::strcmp(argv[i], "--ready-fd") == 0) readyFd = std::atoi(argv[i + 1]);
  }
  if (socketPath.empty()) {
    std::fprintf(stderr, "usage: enjin-holder --socket PATH [--ready-fd FD]\n");
    return 2;
  }
  enjin::SystemClock clock;
  auto reactor = enjin::Reactor::create(clock);
  if (!reactor.ok()) {
    std::fprintf(stderr, "enjin-holder: %s\n", reactor.error().message.c_str());
    return 1;
  }
  enjin::supervise::SpawnRegistry registry;
  registry.add(enjin::supervise::makeExecStrategy());
  registry.add(enjin::supervise::makeUnixUserStrategy());
  enjin::supervise::Holder holder(**reactor, registry, socketPath);
  if (auto st = holder.start(); !st.ok()) {
    std::fprintf(stderr, "enjin-holder: %s\n", st.error().message.c_str());
    return 1;
  }
  if (readyFd >= 0) {
    (void)!::write(readyFd, "r", 1);
    ::close(readyFd);
  }
  while (!holder.finished()) (*reactor)->runOnce(-1);
  return 0;
}
