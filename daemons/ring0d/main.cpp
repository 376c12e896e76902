// ring0d: the meta ring, under systemd: creates, keys and supervises the ring-1 nodes.
#include "../common/parent_main.hpp"

int main(int argc, char** argv) { return enjin::daemons::parentMain(0, argc, argv); }
