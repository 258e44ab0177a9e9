#!/usr/bin/env bash
# End-to-end benchmark: the same two-namespace topology switched by the Linux kernel
# bridge, Open vSwitch's userspace datapath (without and with userspace TSO) and
# vswitchd, measured in one run, interleaved round by round:
#   TCP 1 and 4 streams (iperf3), 64-byte UDP packet rate (trafgen), ping median/p99,
#   and the switch's CPU seconds during the 1-stream TCP test.
# Prints a table with ratios to the kernel bridge and writes it to docs/performance.md.
#
#   sudo benches/e2e/run.sh [--quick] [--no-build] [--rounds N] [--no-write]
#
# Safety: re-executes itself under `unshare --net` unconditionally; everything lives in
# namespaces it creates (10.0.0.0/24); every measurement is under `timeout`; it stops
# only the processes it started, by the PIDs it recorded.
set -euo pipefail

if [ -z "${VSWITCH_E2E_INNER:-}" ]; then
  export VSWITCH_E2E_INNER=1
  exec unshare --net -- "$0" "$@"
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CMDLINE="benches/e2e/run.sh $*"
QUICK=0; BUILD=1; ROUNDS=3; WRITE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1 ;;
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --no-write) WRITE=0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
T_TCP=5; UDP_COUNT=2000000; PINGS=300
if [ $QUICK = 1 ]; then T_TCP=2; UDP_COUNT=500000; PINGS=100; fi

if [ $BUILD = 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p vswitch -p vswitchctl)
fi
BIN=$ROOT/target/release
for t in iperf3 ping python3; do command -v $t >/dev/null || { echo "error: $t is not installed" >&2; exit 1; }; done

TMP=$(mktemp -d /tmp/vswitch-e2e.XXXXXX)
P="e2e$$"
SW=${P}sw; C1=${P}c1; C2=${P}c2
PIDFILES=()
cleanup() {
  set +e
  for f in "${PIDFILES[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  for n in $SW $C1 $C2 ${P}out ${P}sw2; do ip netns del $n 2>/dev/null; rm -rf /etc/netns/$n; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

VARIANTS=(kernel)
if command -v ovs-vswitchd >/dev/null && [ -f /usr/share/openvswitch/vswitch.ovsschema ]; then
  VARIANTS+=(ovs ovs-tso)
else
  echo "note: Open vSwitch not installed (apt-get install openvswitch-switch): OVS rows skipped" >&2
fi
VARIANTS+=(vswitchd)
GEN=none
command -v trafgen >/dev/null && GEN=trafgen

topo_up() {
  for n in $SW $C1 $C2; do
    ip netns add $n; mkdir -p /etc/netns/$n; echo "nameserver 127.0.0.1" > /etc/netns/$n/resolv.conf
    ip -n $n link set lo up
  done
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW type veth peer name eth0 netns $C2
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C2 addr add 10.0.0.2/24 dev eth0; ip -n $C2 link set eth0 up
}

topo_down() {
  for f in "${PIDFILES[@]}"; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  sleep 0.3
  PIDFILES=()
  for n in $SW $C1 $C2; do ip netns del $n 2>/dev/null || true; rm -rf /etc/netns/$n; done
}

SWITCH_PID=""
switch_up() {
  local v=$1
  SWITCH_PID=""
  case $v in
    kernel)
      ip -n $SW link add name br0 type bridge
      ip -n $SW link set br0 type bridge stp_state 0 forward_delay 0 2>/dev/null || true
      ip -n $SW link set v1 master br0; ip -n $SW link set v2 master br0
      for l in v1 v2 br0; do ip -n $SW link set $l up; done ;;
    ovs|ovs-tso)
      local d=$TMP/ovs; rm -rf $d; mkdir -p $d
      export OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d OVS_SYSCONFDIR=$d
      ovsdb-tool create $d/conf.db /usr/share/openvswitch/vswitch.ovsschema
      ip netns exec $SW ovsdb-server $d/conf.db --remote=punix:$d/db.sock --pidfile=$d/ovsdb.pid \
        --unixctl=$d/ovsdb.ctl --log-file=$d/ovsdb.log --detach
      PIDFILES+=($d/ovsdb.pid)
      local V="ovs-vsctl --db=unix:$d/db.sock --no-wait"
      $V init
      if [ $v = ovs-tso ]; then $V set Open_vSwitch . other_config:userspace-tso-enable=true; fi
      ip netns exec $SW ovs-vswitchd unix:$d/db.sock --pidfile=$d/vswitchd.pid --unixctl=$d/vswitchd.ctl \
        --log-file=$d/vswitchd.log --detach
      PIDFILES+=($d/vswitchd.pid)
      SWITCH_PID=$(cat $d/vswitchd.pid)
      ovs-vsctl --db=unix:$d/db.sock --timeout=20 add-br br0 -- set bridge br0 datapath_type=netdev
      ovs-vsctl --db=unix:$d/db.sock --timeout=20 add-port br0 v1 -- add-port br0 v2
      ip -n $SW link set v1 up; ip -n $SW link set v2 up
      if [ $v = ovs ]; then
        # Without userspace TSO, OVS's netdev datapath drops partial checksums: the
        # peers must compute them (this is the setting OVS documents).
        ip netns exec $C1 ethtool -K eth0 tx off >/dev/null 2>&1 || true
        ip netns exec $C2 ethtool -K eth0 tx off >/dev/null 2>&1 || true
      fi ;;
    vswitchd)
      ip netns exec $SW $BIN/vswitchd --socket $TMP/vs.sock --db $TMP/vs.db --workers 2 2>$TMP/vs.log &
      echo $! > $TMP/vs.pid; PIDFILES+=($TMP/vs.pid); SWITCH_PID=$!
      for _ in $(seq 100); do [ -S $TMP/vs.sock ] && break; sleep 0.05; done
      $BIN/vswitchctl --socket $TMP/vs.sock add-br br0
      $BIN/vswitchctl --socket $TMP/vs.sock add-port br0 v1
      $BIN/vswitchctl --socket $TMP/vs.sock add-port br0 v2 ;;
  esac
  for _ in $(seq 60); do
    ip netns exec $C1 ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1 && return 0
  done
  echo "error: $v: no connectivity" >&2; return 1
}

cpu_ticks() { # utime+stime of a PID, or system-wide softirq ticks for "kernel"
  if [ -n "$SWITCH_PID" ]; then awk '{print $14+$15}' /proc/$SWITCH_PID/stat
  else awk '/^cpu /{print $8}' /proc/stat; fi
}

iperf() { # streams -> Gbit/s
  ip netns exec $C2 timeout $((T_TCP + 15)) iperf3 -s -1 -B 10.0.0.2 >/dev/null 2>&1 &
  local sp=$!
  sleep 0.3
  local out
  out=$(ip netns exec $C1 timeout $((T_TCP + 10)) iperf3 -c 10.0.0.2 -t $T_TCP -P $1 -J 2>/dev/null || true)
  wait $sp 2>/dev/null || true
  echo "$out" | python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("nan")'
}

ping_stats() { # -> "median p99" in microseconds
  ip netns exec $C1 timeout 60 ping -c $PINGS -i 0.005 10.0.0.2 2>/dev/null | python3 -c 'import re,sys
t=sorted(float(m.group(1))*1000 for m in re.finditer(r"time=([0-9.]+) ms", sys.stdin.read()))
print("%.0f %.0f" % (t[len(t)//2], t[min(len(t)-1, int(len(t)*0.99))]) if t else "nan nan")'
}

udp64() { # -> "rx_pps loss_pct"
  [ $GEN = trafgen ] || { echo "nan nan"; return; }
  local mac2 mac1
  mac2=$(ip -n $C2 -j link show eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  mac1=$(ip -n $C1 -j link show eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  cat > $TMP/udp.cfg <<CFG
{ eth(da=$mac2, sa=$mac1, type=0x0800), ipv4(ttl=64, sa=10.0.0.1, da=10.0.0.2), udp(sp=9999, dp=9), fill(0x00, 18) }
CFG
  local rx0 tx0 rx1 tx1 t0 t1
  rx0=$(ip netns exec $C2 cat /sys/class/net/eth0/statistics/rx_packets)
  tx0=$(ip netns exec $C1 cat /sys/class/net/eth0/statistics/tx_packets)
  t0=$(date +%s.%N)
  ip netns exec $C1 timeout 60 trafgen --dev eth0 --conf $TMP/udp.cfg --cpus 1 -n $UDP_COUNT -q >/dev/null 2>&1 || true
  t1=$(date +%s.%N)
  sleep 0.5
  rx1=$(ip netns exec $C2 cat /sys/class/net/eth0/statistics/rx_packets)
  tx1=$(ip netns exec $C1 cat /sys/class/net/eth0/statistics/tx_packets)
  python3 -c "rx=$rx1-$rx0; tx=$tx1-$tx0; d=$t1-$t0
print('%.0f %.1f' % (rx/d, 100.0*(tx-rx)/tx if tx else float('nan')))"
}

declare -A R
for round in $(seq 1 $ROUNDS); do
  for v in "${VARIANTS[@]}"; do
    echo "round $round: $v" >&2
    topo_up
    if switch_up $v; then
      read -r pmed p99 < <(ping_stats)
      c0=$(cpu_ticks); t1=$(iperf 1); c1=$(cpu_ticks)
      t4=$(iperf 4)
      read -r pps loss < <(udp64)
      cpu=$(python3 -c "print('%.2f' % (($c1-$c0)/$(getconf CLK_TCK)))")
      R[$v,$round]="$t1 $t4 $pps $loss $pmed $p99 $cpu"
    else
      R[$v,$round]="nan nan nan nan nan nan nan"
    fi
    topo_down
  done
done

# A table of (TCP 1, TCP 4, CPU) medians from the associative array named $1, with
# ratios to the base variant $4: small_table ARRAY TITLE CPU_TITLE BASE NAME=LABEL.. -- VARIANT..
small_table() {
  local -n data=$1
  local title=$2 cputitle=$3 base=$4
  shift 4
  local labels=()
  while [ "$1" != "--" ]; do labels+=("$1"); shift; done
  shift
  for v in "$@"; do
    local line="$v"
    for r in $(seq 1 $ROUNDS); do line="$line|${data[$v,$r]}"; done
    echo "$line"
  done | python3 -c '
import sys, math, statistics
title, cputitle, base = sys.argv[1:4]
labels = dict(a.split("=", 1) for a in sys.argv[4:])
rows, order = {}, []
for l in sys.stdin.read().strip().splitlines():
    name, *rounds = l.split("|")
    order.append(name)
    cols = list(zip(*[[float(x) for x in r.split()] for r in rounds]))
    rows[name] = [statistics.median([c for c in col if not math.isnan(c)]) if any(not math.isnan(c) for c in col) else float("nan") for col in cols]
k = rows.get(base)
print("| %s | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | %s |" % (title, cputitle))
print("|---|---|---|---|")
for n in order:
    r = rows[n]
    def c(i):
        if math.isnan(r[i]): return "n/a"
        s = "%.2f" % r[i]
        if k and not math.isnan(k[i]) and k[i] > 0: s += " (%.2f×)" % (r[i] / k[i])
        return s
    cpu = "n/a" if math.isnan(r[2]) else ("%.2f" % r[2]) + (" (softirq, all CPUs)" if n == base else "")
    print("| %s | %s | %s | %s |" % (labels.get(n, n), c(0), c(1), cpu))
' "$title" "$cputitle" "$base" "${labels[@]}"
}

# NAT: c1 (10.0.0.1, behind the router) to an outside host (198.51.100.1) through
# masquerade: Linux forwarding + nftables masquerade vs vswitchd's masquerade.
OUT=${P}out
nat_up() {
  local v=$1
  for n in $SW $C1 $OUT; do
    ip netns add $n; mkdir -p /etc/netns/$n; echo "nameserver 127.0.0.1" > /etc/netns/$n/resolv.conf
    ip -n $n link set lo up
  done
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name vo netns $SW type veth peer name eth0 netns $OUT
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C1 route add default via 10.0.0.254
  ip -n $OUT addr add 198.51.100.1/24 dev eth0; ip -n $OUT link set eth0 up
  SWITCH_PID=""
  case $v in
    kernel-nat)
      ip -n $SW addr add 10.0.0.254/24 dev v1; ip -n $SW addr add 198.51.100.2/24 dev vo
      ip -n $SW link set v1 up; ip -n $SW link set vo up
      ip netns exec $SW sysctl -qw net.ipv4.ip_forward=1
      ip netns exec $SW nft -f - <<NFT
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "vo" masquerade
  }
}
NFT
      ;;
    vswitchd-nat)
      ip netns exec $SW $BIN/vswitchd --socket $TMP/vs.sock --db $TMP/vsn.db --workers 2 2>$TMP/vsn.log &
      echo $! > $TMP/vs.pid; PIDFILES+=($TMP/vs.pid); SWITCH_PID=$!
      for _ in $(seq 100); do [ -S $TMP/vs.sock ] && break; sleep 0.05; done
      local V="$BIN/vswitchctl --socket $TMP/vs.sock"
      $V add-br br1 --subnet 10.0.0.0/24 --gateway 10.0.0.254
      $V add-br wan --subnet 198.51.100.0/24 --gateway 198.51.100.2
      $V add-port br1 v1; $V add-port wan vo
      $V masquerade br1 --out wan ;;
  esac
  for _ in $(seq 60); do
    ip netns exec $C1 ping -c 1 -W 1 198.51.100.1 >/dev/null 2>&1 && return 0
  done
  echo "error: $v: no connectivity through NAT" >&2; return 1
}
nat_down() {
  for f in "${PIDFILES[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.3; PIDFILES=()
  for n in $SW $C1 $OUT; do ip netns del $n 2>/dev/null || true; rm -rf /etc/netns/$n; done
  rm -f $TMP/vsn.db
}
nat_iperf() { # streams -> Gbit/s, c1 -> outside
  ip netns exec $OUT timeout $((T_TCP + 15)) iperf3 -s -1 -B 198.51.100.1 >/dev/null 2>&1 &
  local sp=$!
  sleep 0.3
  local out
  out=$(ip netns exec $C1 timeout $((T_TCP + 10)) iperf3 -c 198.51.100.1 -t $T_TCP -P $1 -J 2>/dev/null || true)
  wait $sp 2>/dev/null || true
  echo "$out" | python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("nan")'
}
NAT_VARIANTS=()
command -v nft >/dev/null && NAT_VARIANTS+=(kernel-nat) || echo "note: nftables not installed: kernel NAT row skipped" >&2
NAT_VARIANTS+=(vswitchd-nat)
declare -A N
for round in $(seq 1 $ROUNDS); do
  for v in "${NAT_VARIANTS[@]}"; do
    echo "round $round: $v" >&2
    if nat_up $v; then
      c0=$(cpu_ticks); n1=$(nat_iperf 1); c1=$(cpu_ticks)
      n4=$(nat_iperf 4)
      cpu=$(python3 -c "print('%.2f' % (($c1-$c0)/$(getconf CLK_TCK)))")
      N[$v,$round]="$n1 $n4 $cpu"
    else
      N[$v,$round]="nan nan nan"
    fi
    nat_down
  done
done
NAT_TABLE=$(small_table N "NAT (masquerade, c1 → outside)" "router CPU s (TCP 1)" kernel-nat \
  "kernel-nat=Linux forwarding + nftables masquerade" "vswitchd-nat=vswitchd masquerade" -- "${NAT_VARIANTS[@]}")

# VXLAN: c1 on host 1, c2 on host 2, hosts joined by an underlay veth (192.0.2.0/24,
# MTU 1600): Linux VXLAN device + bridge on each host vs vswitchd with a vxlan port.
SW2=${P}sw2
vx_up() {
  local v=$1
  for n in $SW $SW2 $C1 $C2; do
    ip netns add $n; mkdir -p /etc/netns/$n; echo "nameserver 127.0.0.1" > /etc/netns/$n/resolv.conf
    ip -n $n link set lo up
  done
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW2 type veth peer name eth0 netns $C2
  ip link add name u0 netns $SW type veth peer name u0 netns $SW2
  ip -n $SW addr add 192.0.2.1/24 dev u0; ip -n $SW2 addr add 192.0.2.2/24 dev u0
  ip -n $SW link set u0 mtu 1600 up; ip -n $SW2 link set u0 mtu 1600 up
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C2 addr add 10.0.0.2/24 dev eth0; ip -n $C2 link set eth0 up
  SWITCH_PID=""
  case $v in
    kernel-vxlan)
      for pair in "$SW v1 192.0.2.1 192.0.2.2" "$SW2 v2 192.0.2.2 192.0.2.1"; do
        set -- $pair
        ip -n $1 link add name vx0 type vxlan id 42 local $3 remote $4 dstport 4789
        ip -n $1 link set vx0 mtu 1500
        ip -n $1 link add name br0 type bridge
        ip -n $1 link set br0 type bridge stp_state 0 forward_delay 0 2>/dev/null || true
        ip -n $1 link set vx0 master br0; ip -n $1 link set $2 master br0
        for l in vx0 $2 br0; do ip -n $1 link set $l up; done
      done ;;
    vswitchd-vxlan)
      local i=0
      for pair in "$SW v1 192.0.2.2" "$SW2 v2 192.0.2.1"; do
        set -- $pair
        i=$((i + 1))
        ip netns exec $1 $BIN/vswitchd --socket $TMP/vx$i.sock --db $TMP/vx$i.db --workers 2 2>$TMP/vx$i.log &
        echo $! > $TMP/vx$i.pid; PIDFILES+=($TMP/vx$i.pid)
        [ $i = 1 ] && SWITCH_PID=$!
        for _ in $(seq 100); do [ -S $TMP/vx$i.sock ] && break; sleep 0.05; done
        local V="$BIN/vswitchctl --socket $TMP/vx$i.sock"
        $V add-br br0; $V add-port br0 $2
        $V add-port br0 vx0 --type vxlan --remote-ip $3 --vni 42
      done ;;
  esac
  for _ in $(seq 60); do
    ip netns exec $C1 ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1 && return 0
  done
  echo "error: $v: no connectivity across the tunnel" >&2; return 1
}
vx_down() {
  for f in "${PIDFILES[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.3; PIDFILES=()
  for n in $SW $SW2 $C1 $C2; do ip netns del $n 2>/dev/null || true; rm -rf /etc/netns/$n; done
  rm -f $TMP/vx1.db $TMP/vx2.db
}
declare -A X
for round in $(seq 1 $ROUNDS); do
  for v in kernel-vxlan vswitchd-vxlan; do
    echo "round $round: $v" >&2
    if vx_up $v; then
      c0=$(cpu_ticks); x1=$(iperf 1); c1=$(cpu_ticks)
      x4=$(iperf 4)
      cpu=$(python3 -c "print('%.2f' % (($c1-$c0)/$(getconf CLK_TCK)))")
      X[$v,$round]="$x1 $x4 $cpu"
    else
      X[$v,$round]="nan nan nan"
    fi
    vx_down
  done
done
VX_TABLE=$(small_table X "VXLAN (two hosts, c1 → c2 across the tunnel)" "host 1 switch CPU s (TCP 1)" kernel-vxlan \
  "kernel-vxlan=Linux VXLAN device + bridge" "vswitchd-vxlan=vswitchd vxlan port" -- kernel-vxlan vswitchd-vxlan)

# Medians over rounds, ratios to the kernel bridge.
TABLE=$(for v in "${VARIANTS[@]}"; do
  line="$v"
  for r in $(seq 1 $ROUNDS); do line="$line|${R[$v,$r]}"; done
  echo "$line"
done | python3 -c '
import sys, math, statistics
rows = {}
order = []
for l in sys.stdin.read().strip().splitlines():
    name, *rounds = l.split("|")
    order.append(name)
    cols = list(zip(*[[float(x) for x in r.split()] for r in rounds]))
    rows[name] = [statistics.median([c for c in col if not math.isnan(c)]) if any(not math.isnan(c) for c in col) else float("nan") for col in cols]
k = rows.get("kernel")
hdr = ["switch", "TCP 1 stream Gbit/s", "TCP 4 streams Gbit/s", "UDP 64 B rx kpps", "UDP loss %", "ping median µs", "ping p99 µs", "switch CPU s (TCP 1)"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
def cell(v, i, scale=1, fmt="%.2f"):
    if math.isnan(v): return "n/a"
    s = fmt % (v * scale)
    if k and i in (0, 1, 2, 4, 5) and not math.isnan(k[i]) and k[i] > 0:
        s += " (%.2f×)" % (v / k[i])
    return s
labels = {"kernel": "Linux bridge", "ovs": "OVS userspace (tx csum off on peers)", "ovs-tso": "OVS userspace + TSO", "vswitchd": "vswitchd"}
for n in order:
    r = rows[n]
    cpu = ("%.2f" % r[6]) + (" (softirq, all CPUs)" if n == "kernel" else "")
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (labels.get(n, n), cell(r[0],0), cell(r[1],1), cell(r[2],2,0.001,"%.0f"), "n/a" if math.isnan(r[3]) else "%.1f" % r[3], cell(r[4],4,1,"%.0f"), cell(r[5],5,1,"%.0f"), cpu))
')
echo
echo "$TABLE"
echo
echo "$NAT_TABLE"
echo
echo "$VX_TABLE"

if [ $WRITE = 1 ]; then
  DOC=$ROOT/docs/performance.md
  FACTS="- date: $(date -u +%Y-%m-%dT%H:%MZ)
- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)
- command: \`$CMDLINE\` ($ROUNDS round(s), medians; TCP ${T_TCP} s per test; UDP generator: $GEN, $UDP_COUNT frames of 64 B; $PINGS pings at 5 ms)"
  BLOCK="<!-- e2e:begin -->
$FACTS

$TABLE

$NAT_TABLE

$VX_TABLE
<!-- e2e:end -->"
  if [ -f "$DOC" ] && grep -q '<!-- e2e:begin -->' "$DOC"; then
    python3 - "$DOC" "$BLOCK" <<'PY'
import sys, re
p, block = sys.argv[1], sys.argv[2]
s = open(p).read()
s = re.sub(r"<!-- e2e:begin -->.*?<!-- e2e:end -->", lambda m: block, s, flags=re.S)
open(p, "w").write(s)
PY
  else
    printf '# Performance\n\n%s\n' "$BLOCK" > "$DOC"
  fi
  echo "wrote $DOC"
fi
