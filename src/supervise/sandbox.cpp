// The system-call filter of enjin-sandbox (sandbox.hpp), built with libseccomp.
#include "enjin/supervise/sandbox.hpp"

#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <seccomp.h>

#include <cstddef>

#include "enjin/base/unique_fd.hpp"

namespace enjin::supervise {
namespace {

// Refused with EPERM whatever their arguments.
constexpr const char* kDenied[] = {
    "keyctl",         "add_key",           "request_key",     "bpf",
    "userfaultfd",    "perf_event_open",   "kexec_load",      "kexec_file_load",
    "mount",          "umount2",           "pivot_root",      "move_mount",
    "open_tree",      "fsopen",            "fsmount",         "fspick",
    "mount_setattr",  "unshare",           "setns",           "ptrace",
    "process_vm_readv", "process_vm_writev", "init_module",   "finit_module",
    "delete_module",  "iopl",              "ioperm",          "swapon",
    "swapoff",        "reboot",            "acct",            "lookup_dcookie",
};

// The namespace flags of clone(). CLONE_NEWTIME is not among them: clone() reads its bit as part
// of the exit signal and the kernel takes it from clone3() and unshare() only.
constexpr unsigned long kCloneNewFlags[] = {
    CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID,   CLONE_NEWNET,
};

#if defined(__x86_64__)
constexpr uint32_t kNativeArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kNativeArch = AUDIT_ARCH_AARCH64;
#else
#error "enjin-sandbox's personality filter knows x86_64 and aarch64 only"
#endif
constexpr uint32_t kPerLinux = 0;
constexpr uint32_t kPersonalityQuery = 0xffffffffU;

// personality(2) but PER_LINUX and the query, refused with EPERM. libseccomp 2.5 cannot compare
// one argument twice in a rule, so this part is written by hand and stacked on libseccomp's
// (the kernel runs both, the stricter answer wins). Another architecture is allowed here: the
// first filter kills it. Little-endian: the upper half of args[0] is at +4.
constexpr uint32_t kArg0Low = offsetof(seccomp_data, args[0]);
constexpr uint32_t kArg0High = offsetof(seccomp_data, args[0]) + 4;
const sock_filter kPersonalityFilter[] = {
    /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
    /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kNativeArch, 0, 7),
    /* 2 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
    /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 0, 5),
    /* 4 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg0High),
    /* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 4),
    /* 6 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArg0Low),
    /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kPerLinux, 1, 0),
    /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kPersonalityQuery, 0, 1),
    /* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    /* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
};

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

// libseccomp returns -errno.
Status check(int rc, const std::string& what) {
  if (rc < 0) return errnoError("seccomp: " + what, -rc);
  return {};
}

Result<Ctx> buildFilter() {
  Ctx ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Error{"seccomp: seccomp_init failed"};
  // Only the native architecture is in the filter (seccomp_init adds it); a call through any
  // other ABI, x32 included, takes this action.
  if (auto s = check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                     "bad-arch action");
      !s) {
    return s.error();
  }
  // The caller sets PR_SET_NO_NEW_PRIVS itself (loadSeccompProgram does not go through
  // libseccomp).
  if (auto s = check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "nnp attribute"); !s) {
    return s.error();
  }

  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not a call of this architecture
    if (auto s = check(seccomp_rule_add(ctx.get(), eperm, nr, 0), name); !s) return s.error();
  }

  // clone() with any namespace flag, one rule per flag (rules of one call are ORed). The flags
  // are the first argument on x86_64 and aarch64.
  for (unsigned long flag : kCloneNewFlags) {
    if (auto s = check(seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(clone), 1,
                                        SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                       "clone");
        !s) {
      return s.error();
    }
  }
  if (auto s = check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0),
                     "clone3");
      !s) {
    return s.error();
  }

  // The request number of ioctl is an int: the upper half of the register is not compared.
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI),
                                static_cast<unsigned long>(TIOCLINUX)}) {
    if (auto s = check(seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(ioctl), 1,
                                        SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, request)),
                       "ioctl");
        !s) {
      return s.error();
    }
  }
  return ctx;
}

}  // namespace

std::vector<std::string> sandboxDeniedSyscalls() {
  std::vector<std::string> out(std::begin(kDenied), std::end(kDenied));
  out.insert(out.end(), {"personality", "clone", "clone3", "ioctl"});
  return out;
}

Result<SeccompProgram> compileSeccompFilter() {
  auto ctx = buildFilter();
  if (!ctx) return ctx.error();
  // libseccomp 2.5 exports the BPF to an fd only; a memfd holds it until it is read back.
  UniqueFd fd(::memfd_create("enjin-seccomp", MFD_CLOEXEC));
  if (!fd) return errnoError("seccomp: memfd_create", errno);
  if (auto s = check(seccomp_export_bpf(ctx->get(), fd.get()), "export"); !s) return s.error();
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return errnoError("seccomp: lseek", errno);
  if (size == 0 || size % sizeof(sock_filter) != 0 || size / sizeof(sock_filter) > BPF_MAXINSNS) {
    return Error{"seccomp: exported program has " + std::to_string(size) + " bytes"};
  }
  SeccompProgram program;
  program.instructions.resize(size / sizeof(sock_filter));
  ssize_t got = ::pread(fd.get(), program.instructions.data(), size, 0);
  if (got < 0) return errnoError("seccomp: read", errno);
  if (got != size) return Error{"seccomp: short read of the exported program"};
  return program;
}

int loadSeccompProgram(const SeccompProgram& program) {
  sock_fprog prog = program.fprog();
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return errno;
  sock_fprog personality{static_cast<unsigned short>(std::size(kPersonalityFilter)),
                         const_cast<sock_filter*>(kPersonalityFilter)};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &personality) != 0) return errno;
  return 0;
}

Status installSeccompFilter() {
  auto program = compileSeccompFilter();
  if (!program) return program.error();
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errnoError("seccomp: no_new_privs", errno);
  if (int err = loadSeccompProgram(*program); err != 0) return errnoError("seccomp: prctl", err);
  return {};
}

}  // namespace enjin::supervise
