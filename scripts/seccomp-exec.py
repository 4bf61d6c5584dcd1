#!/usr/bin/python3
"""Run a command under a seccomp profile written in the format the kubelet reads.

    seccomp-exec.py --profile deploy/seccomp/kubearmor-relay.json [--log-denied] [--name-refused]
                    [--node-option=OPT ...] -- CMD ARGS...

The profile (defaultAction, architectures, syscalls[{names, action, errnoRet?, args?}]) is
turned into a libseccomp filter with Debian's python3-seccomp (`import seccomp`), loaded
into this process, and the command is exec'd: the filter is inherited across execve and
by every thread and child, exactly as in a container started by a runtime with
`seccompProfile: {type: Localhost}`. libseccomp sets no_new_privs before loading, which
lets an unprivileged user load a filter (containers get no_new_privs from
`allowPrivilegeEscalation: false` as well).

--log-denied sets SECCOMP_FILTER_FLAG_LOG: refused calls still fail with EPERM, and the
kernel also writes an audit record for each (type=1326, with syscall=NR; see the
"errno" entry of /proc/sys/kernel/seccomp/actions_logged). To log without refusing, use
the audit profile (defaultAction SCMP_ACT_LOG) instead.

--name-refused makes each refused call fail with errno 3000 + its syscall number on this
machine's architecture instead of EPERM (3999 when a call is refused for its arguments, or
its number is unknown to libseccomp), so that the program under test can say which call was
refused: `kubearmor-relay seccomp check` and test/seccomp-profile.test.ts decode it. What is
allowed does not change.

--node-option inserts an option right after the command (a node binary): V8 flags such as
--no-wasm-memory-protection-keys, which NODE_OPTIONS does not accept.

Run it with the interpreter that has the Debian module: /usr/bin/python3.
"""

import argparse
import errno
import json
import os
import sys

try:
    import seccomp
except ImportError:  # pragma: no cover - reported to the user
    sys.stderr.write(
        "seccomp-exec: the Python module `seccomp` is missing; install Debian's python3-seccomp "
        "and run this script with /usr/bin/python3\n"
    )
    sys.exit(126)

ARCHES = {
    "SCMP_ARCH_X86_64": seccomp.Arch.X86_64,
    "SCMP_ARCH_X86": seccomp.Arch.X86,
    "SCMP_ARCH_X32": seccomp.Arch.X32,
    "SCMP_ARCH_AARCH64": seccomp.Arch.AARCH64,
    "SCMP_ARCH_ARM": seccomp.Arch.ARM,
}

OPS = {
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


# errno values of --name-refused: REFUSED_BASE + syscall number, REFUSED_OTHER otherwise
# (both below the kernel's MAX_ERRNO, 4095, and far above any errno the kernel itself returns).
REFUSED_BASE = 3000
REFUSED_OTHER = 3999
MAX_SYSCALL_NR = 1024


def warn(text):
    sys.stderr.write("seccomp-exec: %s\n" % text)


def action(name, errno_ret):
    """A libseccomp action for a kubelet/OCI action name."""
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        # runc and crun default to EPERM when errnoRet is absent; so does the kubelet's
        # RuntimeDefault. Keep that, so that a refused call looks the same here as in a pod.
        return seccomp.ERRNO(errno_ret if errno_ret is not None else errno.EPERM)
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    raise ValueError("unsupported action %s" % name)


def build(profile, log_denied, name_refused=False):
    default_errno = REFUSED_OTHER if name_refused else profile.get("defaultErrnoRet")
    default = action(profile["defaultAction"], default_errno)
    f = seccomp.SyscallFilter(defaction=default)
    native = seccomp.system_arch() & 0xFFFFFFFF  # the filter starts with this one
    arches = profile.get("architectures") or []
    for name in arches:
        if name not in ARCHES:
            raise ValueError("unknown architecture %s" % name)
        arch = ARCHES[name]
        if (int(arch) & 0xFFFFFFFF) != native:
            f.add_arch(arch)
    try:
        # a binary tree instead of a linear chain of comparisons: cheaper per call
        f.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (RuntimeError, ValueError, OSError):
        pass  # libseccomp older than 2.5
    if log_denied:
        # SECCOMP_FILTER_FLAG_LOG: the kernel logs every action but ALLOW (so denials too).
        f.set_attr(seccomp.Attr.CTL_LOG, 1)
    unknown = []
    rules = 0
    for rule in profile.get("syscalls") or []:
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue  # libseccomp refuses rules that repeat the default action
        args = []
        for a in rule.get("args") or []:
            op = OPS[a["op"]]
            if op == seccomp.MASKED_EQ:
                args.append(seccomp.Arg(a["index"], op, a["value"], a.get("valueTwo", 0)))
            else:
                args.append(seccomp.Arg(a["index"], op, a["value"]))
        for name in rule["names"]:
            try:
                f.add_rule(act, name, *args)
                rules += 1
            except (RuntimeError, ValueError, OSError) as err:
                # The syscall is unknown to this libseccomp (or to every listed arch);
                # runc skips such names the same way.
                unknown.append("%s (%s)" % (name, err))
    for u in unknown:
        warn("skipped syscall unknown to this libseccomp: %s" % u)
    if name_refused and profile["defaultAction"] == "SCMP_ACT_ERRNO":
        rules += number_refused(f, seccomp.Arch.NATIVE, {n for r in profile.get("syscalls") or [] for n in r["names"]})
    return f, rules


def number_refused(f, native, named):
    """Gives every call the profile does not name its own errno: REFUSED_BASE + its number."""
    added = 0
    for nr in range(MAX_SYSCALL_NR):
        try:
            name = seccomp.resolve_syscall(native, nr)
        except ValueError:
            continue
        name = name.decode() if isinstance(name, bytes) else name
        if name in named:
            continue
        f.add_rule(seccomp.ERRNO(REFUSED_BASE + nr), name)
        added += 1
    return added


def main(argv):
    parser = argparse.ArgumentParser(prog="seccomp-exec.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="seccomp profile JSON in the kubelet (OCI) format")
    parser.add_argument("--log-denied", action="store_true", help="also have the kernel log the calls the filter refuses")
    parser.add_argument("--name-refused", action="store_true", help="refused calls fail with errno 3000 + syscall number instead of EPERM")
    parser.add_argument("--node-option", action="append", default=[], help="option inserted after the command (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    opts = parser.parse_args(argv)
    cmd = opts.command
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        parser.error("no command given (use: --profile FILE -- CMD ARGS...)")
    with open(opts.profile, "r", encoding="utf-8") as fh:
        profile = json.load(fh)
    try:
        f, _ = build(profile, opts.log_denied, opts.name_refused)
    except (KeyError, ValueError) as err:
        warn("bad profile %s: %s" % (opts.profile, err))
        return 2
    cmd = cmd[:1] + opts.node_option + cmd[1:]
    f.load()
    try:
        os.execvp(cmd[0], cmd)
    except OSError as err:
        # execve itself is in the allow-list; anything else (ENOENT, EACCES) is the command.
        warn("cannot run %s: %s" % (cmd[0], err))
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
