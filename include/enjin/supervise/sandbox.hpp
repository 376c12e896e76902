// The system-call filter of enjin-sandbox (daemons/sandbox): what an application run in the
// sandbox may not ask of the kernel.
//
// The filter allows every call except those that reach past the sandbox's namespaces or into
// the kernel itself: keyrings, BPF, userfaultfd, perf, kexec, the mount API, namespace creation
// and entry, ptrace and cross-process memory access, modules, port I/O, swap, reboot, process
// accounting, lookup_dcookie, personality changes other than PER_LINUX (and the 0xffffffff
// query), clone() with a CLONE_NEW* flag, the TIOCSTI and TIOCLINUX ioctls (typing into the
// terminal). Those fail with EPERM; clone3 fails with ENOSYS, since its flags sit in memory a
// filter cannot read, so that libc falls back to clone(). A call made through another
// architecture's ABI (i386 int 0x80, x32) kills the process: the filter is written for the
// native one only.
#pragma once

#include <linux/filter.h>

#include <string>
#include <vector>

#include "enjin/base/result.hpp"

namespace enjin::supervise {

// The names of the calls the filter refuses outright or by argument, in the order the filter
// adds them; the ones unknown to this architecture included (they are skipped).
std::vector<std::string> sandboxDeniedSyscalls();

// The libseccomp part of the filter, compiled, ready for prctl(PR_SET_SECCOMP): made in a parent
// so that a forked child installs it with system calls only, no allocation.
struct SeccompProgram {
  std::vector<sock_filter> instructions;
  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(instructions.size()),
                      const_cast<sock_filter*>(instructions.data())};
  }
};

// Builds the filter with libseccomp and exports its BPF.
Result<SeccompProgram> compileSeccompFilter();

// Installs `program`, then the personality filter (a static one, see sandbox.cpp), on the calling
// thread: async-signal-safe. PR_SET_NO_NEW_PRIVS must be set
// already (or the caller hold CAP_SYS_ADMIN). Returns 0, or the errno of prctl.
int loadSeccompProgram(const SeccompProgram& program);

// compileSeccompFilter(), then PR_SET_NO_NEW_PRIVS and loadSeccompProgram() on this thread.
Status installSeccompFilter();

}  // namespace enjin::supervise
