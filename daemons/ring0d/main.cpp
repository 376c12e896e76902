// ring0d: the meta ring, under systemd: creates, keys and supervises the ring-1 nodes.
#include "enjin/ring/daemon.hpp"

int main(int argc, char** argv) { return enjin::ring::parentDaemonMain(0, argc, argv); }
