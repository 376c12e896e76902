// ring1d: the infrastructure ring: creates, keys and supervises the ring-2 nodes ring0d asks for.
#include "enjin/ring/daemon.hpp"

int main(int argc, char** argv) { return enjin::ring::parentDaemonMain(1, argc, argv); }
