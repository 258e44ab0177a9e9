#!/usr/bin/env bash
# Cluster benchmark: N hosts (vswitchd + vswitch-agent each, in namespaces) and a
# 3-member etcd on one underlay, E endpoints per host on one overlay network. For each
# N it measures the time from `pipework` on one host until every other host can ping
# the new endpoint (p50/p99), convergence after a node dies (kill -9 of its vswitchd and
# agent, until every other host dropped its tunnel), etcd writes per endpoint, and
# vswitchd/agent memory per node; writes the table to docs/cluster.md between the
# <!-- clusterbench:begin/end --> markers.
#
#   benches/cluster/run.sh [--hosts "4 8 16 32"] [--per-host 16] [--samples 20]   (as root)
#                               [--ttl 3] [--release] [--no-write]
#
# Safety: re-executes itself under `unshare --net` and refuses to go on in a namespace
# with any interface but lo; everything lives in namespaces the harness creates and
# removes (integration/src/cluster.rs), underlay 192.0.2.0/24, overlay 10.1.0.0/16.
set -euo pipefail

. "$(dirname "$0")/../netns-guard.sh" "$@"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SIZES="4 8 16 32"; PER=16; SAMPLES=20; TTL=3; PROFILE=debug; WRITE=1
CMDLINE="benches/cluster/run.sh"
for a in "$@"; do
  case "$a" in *" "*) CMDLINE="$CMDLINE \"$a\"" ;; *) CMDLINE="$CMDLINE $a" ;; esac
done
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) SIZES=$2; shift ;;
    --per-host) PER=$2; shift ;;
    --samples) SAMPLES=$2; shift ;;
    --ttl) TTL=$2; shift ;;
    --release) PROFILE=release ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $PROFILE = release ]; then
  (cd "$ROOT" && cargo build --release -q --workspace)
else
  (cd "$ROOT" && cargo build -q --workspace)
fi
BENCH="$ROOT/target/$PROFILE/vswitch-cluster-bench"
ROWS=""
for n in $SIZES; do
  echo "== $n hosts x $PER endpoints" >&2
  row=$(cd "$ROOT" && VSWITCH_LAB_INNER=1 "$BENCH" --hosts "$n" --per-host "$PER" --samples "$SAMPLES" --ttl "$TTL")
  echo "$row" >&2
  ROWS="$ROWS$row"$'\n'
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
CPUS=$(nproc); MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
REPORT=$(cat <<END
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $CPUS CPUs, $MODEL, kernel $(uname -r); load average (1/5/15 min) $LOAD0 at the start, $LOAD1 at the end (the CPUs are shared with other work)
- command: \`$CMDLINE\` (as root) ($PROFILE binaries); etcd $(etcd --version 2>/dev/null | awk '/etcd Version/{print $3}'), 3 members

| hosts | endpoints/host | samples | pipework → reachable everywhere p50 (s) | p99 (s) | convergence after a node dies (s) | etcd writes/endpoint | vswitchd RSS/node (MB) | agent RSS/node (MB) | time to publish all endpoints (s) | tree |
|---|---|---|---|---|---|---|---|---|---|---|
${ROWS%$'\n'}
END
)
echo "$REPORT"
if [ $WRITE = 1 ]; then
  python3 - "$ROOT/docs/cluster.md" "$REPORT" <<'PY'
import sys
path, body = sys.argv[1], sys.argv[2]
s = open(path).read()
b, e = "<!-- clusterbench:begin -->", "<!-- clusterbench:end -->"
block = b + "\n" + body + "\n" + e
if b in s and e in s:
    s = s[: s.index(b)] + block + s[s.index(e) + len(e):]
else:
    s = s.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(s)
PY
  echo "written to docs/cluster.md"
fi
