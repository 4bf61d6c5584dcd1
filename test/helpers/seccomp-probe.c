/*
 * Calls system calls by name with arguments that do nothing harmful when the kernel does run
 * them (null or invalid pointers, invalid descriptors, no-op flags, read-only queries), and
 * prints "<name> <errno>" for each (0 when the call succeeded). Compiled by
 * test/seccomp-profile.test.ts and run under the relay's seccomp profile, which answers a
 * call it refuses with EPERM, or, with seccomp-exec.py --name-refused, with an errno that
 * names the call (3000 + its number; 3999 for a call refused for its arguments).
 *
 *   seccomp-probe NAME...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

static long probe(const char *name) {
  static char page[8192] __attribute__((aligned(4096)));
  struct rlimit rl;
  if (!strcmp(name, "ptrace")) return syscall(SYS_ptrace, 2 /* PTRACE_PEEKDATA */, 0, 0, 0);
  if (!strcmp(name, "mount")) return syscall(SYS_mount, NULL, NULL, NULL, 0, NULL);
  if (!strcmp(name, "umount2")) return syscall(SYS_umount2, "/nonexistent-probe", 0);
  if (!strcmp(name, "bpf")) return syscall(SYS_bpf, -1, NULL, 0);
  if (!strcmp(name, "perf_event_open")) return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
  if (!strcmp(name, "setns")) return syscall(SYS_setns, -1, 0);
  if (!strcmp(name, "unshare")) return syscall(SYS_unshare, 0); /* no flag: changes nothing */
  if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, -1, 0, 0, 0, 0);
  if (!strcmp(name, "add_key")) return syscall(SYS_add_key, NULL, NULL, NULL, 0, 0);
  if (!strcmp(name, "request_key")) return syscall(SYS_request_key, NULL, NULL, NULL, 0);
  if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL);
  if (!strcmp(name, "kexec_file_load")) return syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xdead0000UL);
  if (!strcmp(name, "init_module")) return syscall(SYS_init_module, NULL, 0, NULL);
  if (!strcmp(name, "finit_module")) return syscall(SYS_finit_module, -1, "", 0);
  if (!strcmp(name, "delete_module")) return syscall(SYS_delete_module, "kubearmor_relay_probe_none", 0);
  if (!strcmp(name, "process_vm_readv")) return syscall(SYS_process_vm_readv, getpid(), NULL, 0, NULL, 0, 0);
  if (!strcmp(name, "process_vm_writev")) return syscall(SYS_process_vm_writev, getpid(), NULL, 0, NULL, 0, 0);
  if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, -1 /* invalid flags */);
  if (!strcmp(name, "personality")) return syscall(SYS_personality, 0xffffffffUL); /* a query */
  if (!strcmp(name, "chroot")) return syscall(SYS_chroot, "/nonexistent-probe");
  if (!strcmp(name, "pivot_root")) return syscall(SYS_pivot_root, "/nonexistent-probe", "/nonexistent-probe");
  if (!strcmp(name, "setpriority")) return syscall(SYS_setpriority, PRIO_PROCESS, 0, 19); /* lowers our own */
  if (!strcmp(name, "io_uring_setup")) return syscall(SYS_io_uring_setup, 0, NULL);
  if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0); /* EINVAL from the kernel */
  /* CLONE_NEWUSER with CLONE_FS is refused by the kernel (EINVAL): never a new process */
  if (!strcmp(name, "clone/CLONE_NEWUSER")) return syscall(SYS_clone, CLONE_NEWUSER | CLONE_FS, NULL, NULL, NULL, 0);
  if (!strcmp(name, "socket/AF_PACKET")) return syscall(SYS_socket, 17, SOCK_RAW, 0);
  if (!strcmp(name, "socket/AF_VSOCK")) return syscall(SYS_socket, 40, SOCK_STREAM, 0);
  if (!strcmp(name, "socket/AF_ALG")) return syscall(SYS_socket, 38, SOCK_SEQPACKET, 0);
  if (!strcmp(name, "socket/NETLINK_NETFILTER")) return syscall(SYS_socket, 16, SOCK_RAW, 12);
  if (!strcmp(name, "socket/NETLINK_ROUTE")) return syscall(SYS_socket, 16, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (!strcmp(name, "prctl/PR_GET_DUMPABLE")) return syscall(SYS_prctl, 3, 0, 0, 0, 0);
  if (!strcmp(name, "prlimit64/pid1")) return syscall(SYS_prlimit64, 1, RLIMIT_NOFILE, NULL, &rl);
  if (!strcmp(name, "prlimit64/self")) return syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl);
  if (!strcmp(name, "pkey_alloc")) return syscall(SYS_pkey_alloc, 0, 0);
  if (!strcmp(name, "pkey_mprotect")) return syscall(SYS_pkey_mprotect, page, 4096, PROT_READ | PROT_WRITE, -1);
  if (!strcmp(name, "pkey_free")) return syscall(SYS_pkey_free, 15);
  /* sleeps 2 s; stopped and continued meanwhile, the kernel resumes it with restart_syscall */
  if (!strcmp(name, "clock_nanosleep/stopped")) {
    struct timespec t = {2, 0};
    printf("sleeping\n");
    fflush(stdout);
    int rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
    if (rc != 0) errno = rc;
    return rc == 0 ? 0 : -1;
  }
  errno = ENOTSUP;
  fprintf(stderr, "seccomp-probe: no probe for %s\n", name);
  return -2;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    errno = 0;
    long r = probe(argv[i]);
    if (r == -2) return 2;
    printf("%s %d\n", argv[i], r == -1 ? errno : 0);
  }
  return 0;
}
