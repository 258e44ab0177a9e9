#!/usr/bin/env bash
# Soak benchmark: vswitchd under mixed traffic and configuration churn for a bounded
# time. Traffic: one iperf3 TCP stream c1 -> c2 for the whole run (1 s intervals), and
# a ping c3 -> c1 every 200 ms. Churn: every 100 ms a configuration change on the
# same daemon (a scratch bridge added/removed, a TAP port added/removed on br0, a DNS
# name added/removed). Samples vswitchd's RSS every 10 s. Reports memory over time,
# TCP intervals with no data (a stalled established flow), ping loss and churn
# errors; writes them to docs/robustness.md between the <!-- soak:begin/end --> markers.
#
#   sudo benches/soak/run.sh [--minutes N] [--release] [--no-write]     (default 10)
#
# Safety: re-executes itself under `unshare --net`, refuses a namespace with any
# interface but lo, uses 10.0.0.0/24 only, stops only the processes it started (by
# PID), and every loop is bounded by the deadline.
set -euo pipefail
. "$(dirname "$0")/../netns-guard.sh" "$@"

HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
MIN=10; PROFILE=debug; WRITE=1; CMDLINE="benches/soak/run.sh${*:+ $*}"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MIN=$2; shift ;;
    --release) PROFILE=release ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$MIN" in ''|*[!0-9]*) echo "error: --minutes takes 1..120" >&2; exit 2 ;; esac
if [ "$MIN" -lt 1 ] || [ "$MIN" -gt 120 ]; then echo "error: --minutes takes 1..120" >&2; exit 2; fi
if [ $PROFILE = release ]; then (cd "$ROOT" && cargo build --release -q -p vswitch -p vswitchctl); else (cd "$ROOT" && cargo build -q -p vswitch -p vswitchctl); fi
B="$ROOT/target/$PROFILE"
W=$(mktemp -d); P="soak$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in sw c1 c2 c3; do ip netns del "$P-$n" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
for n in sw c1 c2 c3; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip netns exec "$P-sw" "$B/vswitchd" --socket "$W/s" --db "$W/db" > "$W/vswitchd.log" 2>&1 &
VS=$!; PIDS+=("$VS")
ctl() { "$B/vswitchctl" --socket "$W/s" "$@"; }
for i in $(seq 50); do ctl version >/dev/null 2>&1 && break; sleep 0.1; done
ctl add-br br0 --subnet 10.0.0.0/24 --gateway 10.0.0.254
for i in 1 2 3; do
  ip link add name "v$i" netns "$P-sw" type veth peer name eth0 netns "$P-c$i"
  ip -n "$P-c$i" addr add "10.0.0.$i/24" dev eth0; ip -n "$P-c$i" link set eth0 up
  ctl add-port br0 "v$i"
done
SECS=$((MIN * 60))
ip netns exec "$P-c2" iperf3 -s -1 -B 10.0.0.2 > /dev/null 2>&1 & PIDS+=("$!")
sleep 1
ip netns exec "$P-c1" timeout $((SECS + 30)) iperf3 -c 10.0.0.2 -t "$SECS" -i 1 -J > "$W/iperf.json" 2>/dev/null & IP=$!; PIDS+=("$IP")
ip netns exec "$P-c3" timeout $((SECS + 10)) ping -i 0.2 -c $((SECS * 5)) -W 1 10.0.0.1 > "$W/ping.txt" 2>&1 & PG=$!; PIDS+=("$PG")

rss() { awk '/VmRSS/{print $2}' "/proc/$VS/status"; }
echo "t_s rss_kb" > "$W/rss.txt"
START=$(date +%s); END=$((START + SECS)); NEXT=$START; ERRS=0; OPS=0; k=0
while [ "$(date +%s)" -lt "$END" ]; do
  now=$(date +%s)
  if [ "$now" -ge "$NEXT" ]; then echo "$((now - START)) $(rss)" >> "$W/rss.txt"; NEXT=$((NEXT + 10)); fi
  case $((k % 6)) in
    0) ctl add-br "scratch$((k % 7))" --subnet 10.9.$((k % 7)).0/24 >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
    1) ctl add-port br0 "tp$((k % 5))" --type tap >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
    2) ctl add-host br0 "n$((k % 11))" "10.0.0.$((100 + k % 11))" >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
    3) ctl del-host br0 "n$(((k - 1) % 11))" >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
    4) ctl del-port br0 "tp$(((k - 3) % 5))" >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
    5) ctl del-br "scratch$(((k - 5) % 7))" >/dev/null 2>&1 || ERRS=$((ERRS + 1)) ;;
  esac
  OPS=$((OPS + 1)); k=$((k + 1))
  sleep 0.1
done
echo "$(( $(date +%s) - START )) $(rss)" >> "$W/rss.txt"
wait "$IP" 2>/dev/null || true; wait "$PG" 2>/dev/null || true
ALIVE=yes; kill -0 "$VS" 2>/dev/null || ALIVE=no

read -r STALLS GBPS < <(python3 - "$W/iperf.json" <<'PY'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
    iv = [i["sum"]["bytes"] for i in j["intervals"]]
    print(sum(1 for b in iv if b == 0), round(j["end"]["sum_received"]["bits_per_second"] / 1e9, 2))
except Exception:
    print("?", "?")
PY
)
LOSS=$(grep -o '[0-9.]*% packet loss' "$W/ping.txt" | head -1 | cut -d% -f1); LOSS=${LOSS:-?}
read -r R0 RMAX RLAST < <(awk 'NR==2{f=$2} NR>1{if($2>m)m=$2; l=$2} END{print f, m, l}' "$W/rss.txt")
SERIES=$(awk 'NR>1{printf "%s%s s: %s", (NR>2?", ":""), $1, $2}' "$W/rss.txt")
REPORT=$(cat <<END
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, kernel $(uname -r); command: \`sudo $CMDLINE\` ($PROFILE build, tree $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown))
- $MIN min: $OPS configuration changes ($ERRS refused or failed), one TCP stream c1 → c2 throughout ($GBPS Gbit/s average, $STALLS one-second intervals with no data), ping c3 → router every 200 ms ($LOSS % loss), vswitchd alive at the end: $ALIVE
- vswitchd RSS (kB): first sample $R0, highest $RMAX, last $RLAST; every 10 s: $SERIES
END
)
echo "$REPORT"
if [ $WRITE = 1 ]; then
  python3 - "$ROOT/docs/robustness.md" "$REPORT" <<'PY'
import sys
path, body = sys.argv[1], sys.argv[2]
s = open(path).read()
b, e = "<!-- soak:begin -->", "<!-- soak:end -->"
s = s[: s.index(b)] + b + "\n" + body + "\n" + e + s[s.index(e) + len(e):]
open(path, "w").write(s)
PY
  echo "written to docs/robustness.md"
fi
