#!/usr/bin/env bash
# Lab scale benchmark: an 8-host x 8-container lab (hosts in a VXLAN full mesh, one
# overlay network 10.40.0.0/24, 64 containers plumbed with pipework). Measures the time
# of `vswitch-lab up`, of an all-pairs ping (every container pings all 63 others once,
# 4 containers at a time, their pings in parallel), and of `vswitch-lab down`; writes the figures to
# docs/performance.md between the <!-- labscale:begin/end --> markers.
#
#   sudo benches/labscale/run.sh [--hosts N] [--per-host N] [--release] [--no-write]
#
# Safety: re-executes itself under `unshare --net` and refuses to go on in a
# namespace with any interface but lo; the lab lives in namespaces vswitch-lab creates
# (vl-scale-*), addresses in 10.40.0.0/24 and 192.0.2.0/24; `down` runs on every exit.
set -euo pipefail

. "$(dirname "$0")/../netns-guard.sh" "$@"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HOSTS=8; PER=8; PROFILE=debug; WRITE=1
CMDLINE="benches/labscale/run.sh${*:+ $*}"
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) HOSTS=$2; shift ;;
    --per-host) PER=$2; shift ;;
    --release) PROFILE=release ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$HOSTS" -lt 1 ] || [ "$HOSTS" -gt 16 ] || [ "$PER" -lt 1 ] || [ $((HOSTS * PER)) -gt 200 ]; then
  echo "error: 1..16 hosts and at most 200 containers" >&2; exit 2
fi
if [ $PROFILE = release ]; then
  (cd "$ROOT" && cargo build --release -q --workspace)
else
  (cd "$ROOT" && cargo build -q --workspace)
fi
LAB="$ROOT/target/$PROFILE/vswitch-lab"
WORK=$(mktemp -d)
FILE="$WORK/scale.toml"
{
  echo 'name = "scale"'
  for h in $(seq 1 "$HOSTS"); do
    printf '\n[[host]]\nname = "h%d"\nunderlay = "192.0.2.%d/24"\n' "$h" "$h"
  done
  printf '\n[[bridge]]\nname = "overlay"\nsubnet = "10.40.0.0/24"\ngateway = "10.40.0.1"\nvni = 40\n'
  n=0
  for h in $(seq 1 "$HOSTS"); do
    for c in $(seq 1 "$PER"); do
      n=$((n + 1))
      printf '\n[[container]]\nname = "c%d"\nhost = "h%d"\nbridge = "overlay"\nip = "10.40.0.%d/24"\n' "$n" "$h" $((n + 10))
    done
  done
} > "$FILE"
N=$((HOSTS * PER))

cleanup() { "$LAB" down "$FILE" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }
t0=$(now)
"$LAB" up "$FILE" > "$WORK/up.log"
t1=$(now)

# All pairs: every container pings every other once (ping -c 1 -W 2), 4 sending
# containers at a time, each with its 63 pings in flight at once. ARP caches are
# flushed as the run goes: the kernel's neighbour table is one table for all
# namespaces, capped at net.ipv4.neigh.default.gc_thresh3 (1024) entries, and 64
# containers that all know each other need 4032 ("neighbour table overflow", then
# lost pings, with the kernel bridge exactly as with vswitchd). A batch leaves 63
# entries in each sender (flushed by the sender itself when its pings are done) and
# one per sender in every other container (4 each, 256 in all): those are flushed in
# every namespace after every EVERY batches, as many as keep the table under ~900
# entries (2 for 64 containers: ~770 at most).
# (Flushing all 64 namespaces after every batch cost 0.24 s a batch of process starts
# alone, a third of the phase; the switch had nothing to do with it.)
ALL=$(seq 11 $((N + 10)) | sed 's/^/10.40.0./' | tr '\n' ' ')
EVERY=$(( (900 - 4 * N) / (4 * N) )); [ $EVERY -ge 1 ] || EVERY=1
i=1; batch=0
while [ $i -le $N ]; do
  for k in 0 1 2 3; do
    c=$((i + k)); [ $c -le $N ] || break
    ip netns exec "vl-scale-c$c" sh -c '
      me=$1; shift
      for ip in "$@"; do
        [ "$ip" = "$me" ] && continue
        ping -c 1 -W 2 -q "$ip" >/dev/null 2>&1 || echo F &
      done
      wait
      ip neigh flush all 2>/dev/null || true' -- "10.40.0.$((c + 10))" $ALL > "$WORK/fail.$c" &
  done
  wait
  batch=$((batch + 1)); i=$((i + 4))
  if [ $((batch % EVERY)) = 0 ] && [ $i -le $N ]; then
    for c in $(seq 1 $N); do ip -n "vl-scale-c$c" neigh flush all 2>/dev/null || true; done
  fi
done
t2=$(now)
FAILS=0
for i in $(seq 1 $N); do FAILS=$((FAILS + $(grep -c F "$WORK/fail.$i" || true))); done
PAIRS=$((N * (N - 1)))
t3=$(now)
"$LAB" down "$FILE" > /dev/null
t4=$(now)
trap 'rm -rf "$WORK"' EXIT

UP=$(echo "$t1 - $t0" | bc); PING=$(echo "$t2 - $t1" | bc); DOWN=$(echo "$t4 - $t3" | bc)
TOTAL=$(echo "$t2 - $t0" | bc)
CPUS=$(nproc); MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
REPORT=$(cat <<END
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $CPUS CPUs, $MODEL, kernel $(uname -r)
- command: \`sudo $CMDLINE\` ($PROFILE binaries, tree $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))
- lab: $HOSTS hosts in a VXLAN full mesh, $PER containers each ($N), one overlay network, containers plumbed with pipework

| step | seconds |
|---|---|
| \`vswitch-lab up\` ($HOSTS vswitchd, $N containers) | $(printf '%.1f' "$UP") |
| all-pairs ping ($PAIRS pings, 4 containers at a time; $FAILS failed) | $(printf '%.1f' "$PING") |
| up + all-pairs ping (target < 15 s) | $(printf '%.1f' "$TOTAL") |
| \`vswitch-lab down\` | $(printf '%.1f' "$DOWN") |
END
)
echo "$REPORT"
if [ $WRITE = 1 ]; then
  DOC="$ROOT/docs/performance.md"
  python3 - "$DOC" "$REPORT" <<'PY'
import sys
path, body = sys.argv[1], sys.argv[2]
s = open(path).read()
b, e = "<!-- labscale:begin -->", "<!-- labscale:end -->"
block = b + "\n" + body + "\n" + e
if b in s and e in s:
    s = s[: s.index(b)] + block + s[s.index(e) + len(e):]
else:
    s = s.rstrip("\n") + "\n\n## Lab scale\n\nBuilt by `benches/labscale/run.sh`.\n\n" + block + "\n"
open(path, "w").write(s)
PY
  echo "written to docs/performance.md"
fi
