"""Seccomp profiles for containers: runtime/default (an allowlist in the style of the
default profiles of containerd and Docker), unconfined, and localhost/<path> files.

A profile is the OCI `linux.seccomp` object. The default profile denies with EPERM every
system call not listed; calls that need a capability are allowed only when the container
has it, as the reference profiles do: without CAP_SYS_ADMIN no unshare, setns, clone with a
namespace flag (a user namespace would hand the container every capability over new network
and mount namespaces) or clone3 (ENOSYS: its flags cannot be inspected).
"""
from __future__ import annotations

import json
import os
import stat
from typing import Any

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument

ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
EPERM = 1

ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid
getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self
lchown lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr
mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink
mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat
renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid
setsockopt set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget
shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat
stat64 statfs statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill
time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64
times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
arch_prctl modify_ldt socket personality
""".split()

# calls allowed only when the container holds the capability
BY_CAPABILITY = {
    "CAP_SYS_ADMIN": """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr
        move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
        umount umount2 unshare""".split(),
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}


# clone(2) flags that make new namespaces (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
# without CAP_SYS_ADMIN, clone is allowed only when its flags (argument 0 on x86) carry none of them,
# as in the default profiles of Docker and containerd
NAMESPACE_FLAGS = 0x7E020000
# clone3 passes its flags in memory, out of seccomp's sight: without CAP_SYS_ADMIN it answers
# ENOSYS, so the C library falls back to clone, whose flags are checked
ENOSYS = 38


def default_profile(capabilities: list[str]) -> dict[str, Any]:
    names = list(ALLOWED)
    for cap, calls in BY_CAPABILITY.items():
        if cap in capabilities:
            names += [c for c in calls if c not in names]
    syscalls: list[dict[str, Any]] = [{"names": sorted(names), "action": "SCMP_ACT_ALLOW"}]
    if "CAP_SYS_ADMIN" not in capabilities:
        syscalls += [
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": syscalls,
    }


MAX_PROFILE_BYTES = 1024 * 1024  # Docker's default profile is some 20 KiB


def localhost_profile(path: str) -> dict[str, Any]:
    """A profile file (Docker's format or the OCI object) from the node."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"seccomp profile path {path!r} is not absolute")
    if "\0" in path:
        raise InvalidArgument(f"seccomp profile path {path!r} contains NUL")
    try:  # never blocks (a FIFO), never reads without end (a device, a huge file)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidArgument(f"seccomp profile {path} is not a regular file")
            data = f.read(MAX_PROFILE_BYTES + 1)
        if len(data) > MAX_PROFILE_BYTES:
            raise InvalidArgument(f"seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
        doc = json.loads(data)
    except OSError as exc:
        raise InvalidArgument(f"cannot read seccomp profile {path}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"seccomp profile {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "defaultAction" not in doc:
        raise InvalidArgument(f"seccomp profile {path} has no defaultAction")
    profile: dict[str, Any] = {"defaultAction": doc["defaultAction"]}
    if "defaultErrnoRet" in doc:
        profile["defaultErrnoRet"] = doc["defaultErrnoRet"]
    arches = doc.get("architectures") or [a for m in doc.get("archMap") or []
                                          for a in [m.get("architecture"), *m.get("subArchitectures", [])] if a]
    if arches:
        profile["architectures"] = arches
    syscalls = []
    for rule in doc.get("syscalls") or []:
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        entry = {"names": names, "action": rule["action"]}
        for key in ("errnoRet", "args"):
            if rule.get(key) is not None:
                entry[key] = rule[key]
        syscalls.append(entry)
    profile["syscalls"] = syscalls
    return profile


def for_container(security: cri.LinuxContainerSecurityContext, capabilities: list[str]) -> dict[str, Any] | None:
    """The OCI seccomp object for a container, or None for unconfined."""
    if security.privileged:
        return None
    if security.HasField("seccomp"):
        profile = security.seccomp
        if profile.profile_type == cri.SecurityProfile.ProfileType.RuntimeDefault:
            return default_profile(capabilities)
        if profile.profile_type == cri.SecurityProfile.ProfileType.Localhost:
            return localhost_profile(profile.localhost_ref)
        return None
    legacy = security.seccomp_profile_path
    if legacy in ("runtime/default", "docker/default"):
        return default_profile(capabilities)
    if legacy.startswith("localhost/"):
        return localhost_profile(legacy.removeprefix("localhost/"))
    if legacy in ("", "unconfined"):
        return None
    raise InvalidArgument(f"unknown seccomp profile {legacy!r}")


def check_apparmor(security: cri.LinuxContainerSecurityContext) -> None:
    """This machine has no AppArmor: refuse a profile other than unconfined or the runtime's default."""
    wanted = security.apparmor.profile_type if security.HasField("apparmor") else None
    legacy = security.apparmor_profile
    if wanted == cri.SecurityProfile.ProfileType.Localhost or legacy.startswith("localhost/"):
        if not os.path.exists("/sys/kernel/security/apparmor"):
            raise InvalidArgument("AppArmor is not enabled on this node: a localhost AppArmor profile cannot be applied")
