// ring1d: the infrastructure ring: creates, keys and supervises the ring-2 nodes ring0d asks for.
#include "../common/parent_main.hpp"

int main(int argc, char** argv) { return enjin::daemons::parentMain(1, argc, argv); }
