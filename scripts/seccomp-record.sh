#!/usr/bin/env bash
# Records the system calls the relay really makes, as input for deploy/seccomp/.
#
#   scripts/seccomp-record.sh [TRACE_DIR]
#
# Builds, then runs under `strace -f` (every thread of the relay process, nothing else):
#   - the end-to-end suites that start the relay process through startRelayProcess
#     (test/relay*.test.ts, any test/tls-*.test.ts that does, and test/seccomp.test.ts,
#     whose scenarios cover mutual TLS, rotation through a `..data` swap, the self
#     provider and discovery with --kubeconfig), with RELAY_LAUNCHER pointing here;
#   - the demo (`node dist/scripts/demo.js --seconds 2`, mutual TLS, and --insecure), whose
#     relay child is picked out of the trace by its execve of dist/server/main.js;
#   - the relay's own error paths: --help, a usage error, unreadable TLS material.
# Prints the sorted union of syscall names (relay processes and their threads only, from
# their execve of main.js on) and the names missing from / extra in the current profile.
# A cross-check only: the profile is built from what the runtime can call, not from what one
# machine recorded (see deploy/seccomp/README.md).
#
# Internal: `seccomp-record.sh --trace CMD...` is the RELAY_LAUNCHER form.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "${1:-}" == "--trace" ]]; then
  shift
  : "${SECCOMP_TRACE_DIR:?set by seccomp-record.sh}"
  # strace -o FILE PROG blocks fatal signals, so the test's SIGTERM would never reach the
  # relay: run it in the background and forward SIGTERM/SIGINT to the traced process.
  strace -f -qq -o "$SECCOMP_TRACE_DIR/relay.$$.$RANDOM.trace" "$@" &
  tracer=$!
  forward() { for c in $(cat /proc/$tracer/task/*/children 2>/dev/null); do kill -s "$1" "$c" 2>/dev/null || true; done; }
  trap 'forward TERM' TERM
  trap 'forward INT' INT
  while :; do
    rc=0
    wait "$tracer" || rc=$?
    kill -0 "$tracer" 2>/dev/null || exit "$rc"
  done
fi

command -v strace >/dev/null || { echo "seccomp-record: strace is not installed (apt-get install strace)" >&2; exit 1; }
TRACE_DIR="${1:-$(mktemp -d /tmp/relay-seccomp-trace.XXXXXX)}"
mkdir -p "$TRACE_DIR"
export SECCOMP_TRACE_DIR="$TRACE_DIR"
# SECCOMP_RECORD_NODE=/path/to/node records with another Node (e.g. the image's Node 24):
# vitest, the demo and therefore every relay they start run on it.
NODE_BIN="${SECCOMP_RECORD_NODE:-node}"
cd "$ROOT"

echo "seccomp-record: building" >&2
npx tsc -p . && node scripts/postbuild.mjs

SUITES=(test/relay*.test.ts test/seccomp.test.ts)
for f in test/tls-*.test.ts; do
  [[ -e "$f" ]] && grep -q startRelayProcess "$f" && SUITES+=("$f")
done
LAUNCH="$ROOT/scripts/seccomp-record.sh --trace"
echo "seccomp-record: running ${SUITES[*]} with the relay under strace" >&2
# The tests of the profile file itself may fail while it is being rebuilt: record anyway.
RELAY_LAUNCHER="$LAUNCH" SECCOMP_TEST_LAUNCHER="$LAUNCH" "$NODE_BIN" node_modules/vitest/vitest.mjs run "${SUITES[@]}" >&2 || echo "seccomp-record: some tests failed (see above); the traces are kept" >&2

echo "seccomp-record: demo (mutual TLS, then plaintext)" >&2
strace -f -qq -o "$TRACE_DIR/demo-tls.trace" "$NODE_BIN" dist/scripts/demo.js --seconds 2 >/dev/null
strace -f -qq -o "$TRACE_DIR/demo-insecure.trace" "$NODE_BIN" dist/scripts/demo.js --seconds 2 --insecure >/dev/null

echo "seccomp-record: error paths" >&2
"$ROOT/scripts/seccomp-record.sh" --trace "$NODE_BIN" dist/server/main.js --help >/dev/null || true
"$ROOT/scripts/seccomp-record.sh" --trace "$NODE_BIN" dist/server/main.js --gRPCPort=x 2>/dev/null || true
"$ROOT/scripts/seccomp-record.sh" --trace "$NODE_BIN" dist/server/main.js --listenAddress=127.0.0.1 --gRPCPort=0 --httpPort=0 --tlsEnabled --tlsCertPath=/nonexistent 2>/dev/null || true

# Node daemons given by host name (--nodes / KUBEARMOR_SERVICE, e.g. localhost:32767):
# name resolution (getaddrinfo, and c-ares for grpc-js's TXT lookup) needs calls of its
# own. Recorded in a user+network namespace where only loopback exists and
# /etc/resolv.conf names a stub on 127.0.0.1 that answers NXDOMAIN, so nothing leaves.
echo "seccomp-record: node daemons by host name (loopback-only network namespace)" >&2
if unshare -rmn true 2>/dev/null; then
  unshare -rmn bash -c '
    set -e
    ip link set lo up
    printf "nameserver 127.0.0.1\n" >"$SECCOMP_TRACE_DIR/resolv.conf"
    mount --bind "$SECCOMP_TRACE_DIR/resolv.conf" /etc/resolv.conf
    /usr/bin/python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((\"127.0.0.1\", 53))
while True:
    q, a = s.recvfrom(512)
    s.sendto(q[:2] + b\"\\x81\\x83\" + q[4:6] + bytes(6) + q[12:], a)
" &
    dns=$!
    "$0" --trace "$1" dist/server/main.js --listenAddress=127.0.0.1 --gRPCPort=0 --httpPort=0 \
      --nodes=localhost:32000,kubearmor.kubearmor.svc:32767 >/dev/null &
    relay=$!
    sleep 8
    kill -TERM "$relay"
    wait "$relay" || true
    kill "$dns"
  ' "$ROOT/scripts/seccomp-record.sh" "$NODE_BIN" || echo "seccomp-record: the host-name run failed" >&2
else
  echo "seccomp-record: no unprivileged user namespaces here; host-name resolution not recorded" >&2
fi

/usr/bin/python3 - "$TRACE_DIR" "$ROOT/deploy/seccomp/kubearmor-relay.json" <<'PY'
import glob, json, os, re, sys

trace_dir, profile_path = sys.argv[1], sys.argv[2]
LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. ([a-z0-9_]+) resumed>(.*)|([a-z0-9_]+)\((.*))$")
CLONES = {"clone", "clone3", "fork", "vfork"}
RESULT = re.compile(r"=\s+(\d+)(?:\s|$)")
union, per_file = set(), {}
for path in sorted(glob.glob(os.path.join(trace_dir, "*.trace"))):
    with open(path, errors="replace") as fh:
        lines = [m for m in (LINE.match(l.rstrip("\n")) for l in fh) if m]  # skips ---, +++
    # Pass 1: relay roots (a pid from its execve of main.js on) and thread/process
    # creation edges. A new thread may be printed before its parent's clone returns,
    # hence two passes.
    roots, children = {}, {}
    for i, m in enumerate(lines):
        pid = int(m.group(1))
        name, rest = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
        if name == "execve" and not m.group(2) and "dist/server/main.js" in rest and pid not in roots:
            roots[pid] = i
        if name in CLONES and "<unfinished" not in rest:
            r = RESULT.search(rest)
            if r:
                children.setdefault(pid, []).append((i, int(r.group(1))))
    relay = {}  # pid -> first line index that belongs to the relay
    todo = list(roots.items())
    while todo:
        pid, since = todo.pop()
        if pid in relay:
            continue
        relay[pid] = since
        todo.extend((child, 0) for (i, child) in children.get(pid, []) if i >= since)
    names = set()
    for i, m in enumerate(lines):
        pid = int(m.group(1))
        if not m.group(2) and pid in relay and i >= relay[pid]:
            names.add(m.group(4))
    per_file[os.path.basename(path)] = names
    union |= names
    if not roots:
        print("note: no relay process in %s" % path, file=sys.stderr)
print("recorded %d syscalls from %d traces in %s:" % (len(union), len(per_file), trace_dir))
print(" ".join(sorted(union)))
try:
    with open(profile_path) as fh:
        allowed = {n for r in json.load(fh)["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    print("recorded but not in the profile: %s" % (" ".join(sorted(union - allowed)) or "(none)"))
    print("in the profile but not recorded here: %s" % (" ".join(sorted(allowed - union)) or "(none)"))
except FileNotFoundError:
    pass
PY
