// The command line of ring0d and ring1d, which are one program at two rings: parses it and
// runs ring::runParentDaemon. CLI11 lives here, outside libenjin.
#pragma once

namespace enjin::daemons {

// The whole main of ring0d (ring 0) and ring1d (ring 1).
int parentMain(int ring, int argc, char** argv);

}  // namespace enjin::daemons
