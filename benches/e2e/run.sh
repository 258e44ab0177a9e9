#!/usr/bin/env bash
# End-to-end benchmark: the same two-namespace topology switched by the Linux kernel
# bridge, Open vSwitch's userspace datapath (without and with userspace TSO), vswitchd
# in userspace (--fastpath off) and with its kernel fast path (--fastpath on), and a
# direct veth pair as the ceiling, measured in one run, interleaved round by round:
#   TCP 1 and 4 streams (iperf3), 64-byte UDP packet rate and loss (trafgen, or a
#   Python AF_PACKET sender), ping median/p99, and the switch's CPU seconds during the
#   1-stream TCP test. Then smaller cases: routing between two subnets (Linux IPv4
#   forwarding vs vswitchd's router, --fastpath off and on), NAT (nftables masquerade vs
#   vswitchd masquerade, --fastpath off and on) and VXLAN between two "hosts" (kernel VXLAN + bridge vs
#   vswitchd --fastpath off and on, and vswitchd with the kernel's VXLAN device as a
#   system port as a reference).
# Prints tables with ratios to the kernel and writes them to docs/performance.md
# (only between the <!-- e2e:begin --> and <!-- e2e:end --> markers).
#
#   sudo benches/e2e/run.sh [--quick] [--no-build] [--rounds N] [--l2-only]
#                           [--vxlan-only] [--routed-only] [--nat-only]
#                           [--gen trafgen|python] [--no-write]
# (--vxlan-only, --routed-only, --nat-only: just those rows, printed, not written)
#
# Safety: re-executes itself under `unshare --net` unconditionally and refuses to run
# in a namespace that has any interface but lo; everything else lives in namespaces it
# creates (names carry its PID), with addresses in 10.0.0.0/24 (and, for the NAT and
# VXLAN cases, 198.51.100.0/24 and 192.0.2.0/24); every measurement runs under
# `timeout`; it stops only processes it started, by the PIDs it recorded; it installs
# nothing and changes no setting outside its namespaces.
set -euo pipefail

. "$(dirname "$0")/../netns-guard.sh" "$@"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CMDLINE="benches/e2e/run.sh${*:+ $*}"
QUICK=0; BUILD=1; ROUNDS=3; WRITE=1; L2ONLY=0; VXONLY=0; RTONLY=0; NATONLY=0; GEN=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1 ;;
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --l2-only) L2ONLY=1 ;;
    --vxlan-only) VXONLY=1; WRITE=0 ;;
    --routed-only) RTONLY=1; WRITE=0 ;;
    --nat-only) NATONLY=1; WRITE=0 ;;
    --gen) GEN=$2; shift ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# TCP seconds per test, UDP measuring window (s) and frame bound, pings (at 10 ms)
T_TCP=5; UDP_T=3; UDP_MAX=20000000; PINGS=300
if [ $QUICK = 1 ]; then T_TCP=2; UDP_T=1; UDP_MAX=5000000; PINGS=100; fi
START=$(date +%s)

if [ $BUILD = 1 ]; then
  if ! (cd "$ROOT" && cargo build --release -q -p vswitch -p vswitchctl); then
    echo "error: cargo build failed (--no-build measures the binaries already in target/release)" >&2
    exit 1
  fi
fi
for t in iperf3 ping python3 timeout ss "$ROOT/target/release/vswitchd" "$ROOT/target/release/vswitchctl"; do
  command -v "$t" >/dev/null || { echo "error: $t is missing" >&2; exit 1; }
done
VS_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git -C "$ROOT" status --porcelain -- switch proto ctl 2>/dev/null)" ] && VS_REV="$VS_REV + uncommitted changes in switch/, ctl/ or proto/"

TMP=$(mktemp -d /tmp/vswitch-e2e.XXXXXX)
# Measure copies: a rebuild in the tree during the run cannot swap the binary under test.
BIN=$TMP/bin; mkdir -p $BIN
cp "$ROOT/target/release/vswitchd" "$ROOT/target/release/vswitchctl" $BIN/
VS_BUILT=$(date -u -r "$ROOT/target/release/vswitchd" +'%Y-%m-%d %H:%M UTC')
RES=$TMP/results.tsv; : > "$RES"
NOTES=$TMP/notes; : > "$NOTES"
note() { echo "note: $*" >&2; echo "- $*" >> "$NOTES"; }
P="e2e$$"
SW=$P-sw; SW2=$P-sw2; C1=$P-c1; C2=$P-c2; OUT=$P-out
ALLNS="$SW $SW2 $C1 $C2 $OUT"

# --- processes we started: PID list, stopped by PID only ---------------------------
PIDS=()          # everything started in the background by this script
SWITCH_PIDS=()   # the switch processes whose CPU time is measured
alive() { [ -e /proc/$1 ] && ! grep -q '^[0-9]* (.*) Z' /proc/$1/stat 2>/dev/null; }
stop_pid() { # PID: SIGTERM, up to 5 s, then SIGKILL; reap if it is our child
  local p=$1 i
  alive $p || { wait $p 2>/dev/null || true; return 0; }
  kill -TERM $p 2>/dev/null || true
  for i in $(seq 50); do alive $p || break; sleep 0.1; done
  if alive $p; then echo "warning: PID $p ignored SIGTERM; SIGKILL" >&2; kill -KILL $p 2>/dev/null || true; fi
  wait $p 2>/dev/null || true
}
stop_all() {
  local p
  for p in "${PIDS[@]}"; do stop_pid $p; done
  PIDS=(); SWITCH_PIDS=()
}
ns_del_all() {
  local n
  for n in $ALLNS; do
    [ -e /run/netns/$n ] && ip netns del $n 2>/dev/null
    rm -rf /etc/netns/$n
  done
  return 0
}
cleanup() {
  set +e
  trap - EXIT INT TERM
  stop_all
  ns_del_all
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

ns_add() {
  local n
  for n in "$@"; do
    ip netns add $n
    mkdir -p /etc/netns/$n; echo "nameserver 127.0.0.1" > /etc/netns/$n/resolv.conf
    ip -n $n link set lo up
  done
}
teardown() { stop_all; ns_del_all; rm -f "$TMP"/*.db "$TMP"/*.sock; }

# --- variants ------------------------------------------------------------------------
VARIANTS=(kernel)
if command -v ovsdb-server >/dev/null && command -v ovs-vswitchd >/dev/null && command -v ovs-vsctl >/dev/null \
   && command -v ovsdb-tool >/dev/null && [ -f /usr/share/openvswitch/vswitch.ovsschema ]; then
  VARIANTS+=(ovs ovs-tso)
  if ! command -v ethtool >/dev/null; then
    note "ethtool missing: OVS without TSO cannot turn tx checksumming off on the peers; its TCP rows will likely fail"
  fi
else
  note "Open vSwitch binaries missing (Debian package openvswitch-switch): OVS rows skipped"
fi
VARIANTS+=(vswitchd vswitchd-fp vswitchd-fp-nopeer veth)
if [ $GEN = auto ]; then
  if command -v trafgen >/dev/null; then GEN=trafgen; else GEN=python; fi
fi
case $GEN in
  trafgen) GEN_DESC="trafgen (netsniff-ng $( (trafgen -v 2>/dev/null || true) | head -1 | awk '{print $2}'), one CPU, TX ring, qdisc bypass)" ;;
  python) GEN_DESC="benches/e2e/udpgen.py (one Python thread, AF_PACKET send() with qdisc bypass; trafgen not installed — slower)" ;;
  *) echo "error: --gen trafgen|python" >&2; exit 2 ;;
esac
echo "UDP generator: $GEN_DESC" >&2

# --- the L2 topology: c1 -- v1 [sw] v2 -- c2 ----------------------------------------------
topo_l2() {
  ns_add $SW $C1 $C2
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW type veth peer name eth0 netns $C2
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C2 addr add 10.0.0.2/24 dev eth0; ip -n $C2 link set eth0 up
}

wait_ping() { # NS ADDR: up to ~30 s
  local i
  for i in $(seq 30); do
    ip netns exec $1 timeout 2 ping -c 1 -W 1 $2 >/dev/null 2>&1 && return 0
  done
  return 1
}

start_vswitchd() { # NS NAME [FLAGS..]: vswitchd in NS with a fresh db and socket under $TMP
  local ns=$1 name=$2 i
  shift 2
  rm -f "$TMP/$name.db" "$TMP/$name.sock"
  # --fastpath off unless the caller gives flags: the userspace rows stay userspace.
  [ $# -gt 0 ] || set -- --fastpath off
  ip netns exec $ns "$BIN/vswitchd" --socket "$TMP/$name.sock" --db "$TMP/$name.db" --workers 2 \
    "$@" >>"$TMP/$name.log" 2>&1 &
  local pid=$!
  PIDS+=($pid); SWITCH_PIDS+=($pid)
  for i in $(seq 100); do
    "$BIN/vswitchctl" --socket "$TMP/$name.sock" version >/dev/null 2>&1 && return 0
    alive $pid || break
    sleep 0.05
  done
  echo "error: vswitchd ($name) did not come up; log:" >&2; tail -5 "$TMP/$name.log" >&2
  return 1
}

start_ovs() { # TSO(0|1): ovsdb-server + ovs-vswitchd inside $SW, private dirs under $TMP/ovs
  local tso=$1 d=$TMP/ovs i
  rm -rf $d; mkdir -p $d
  export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d
  ovsdb-tool create $d/conf.db /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec $SW ovsdb-server $d/conf.db --remote=punix:$d/db.sock --unixctl=$d/ovsdb.ctl \
    --log-file=$d/ovsdb.log -vconsole:off >>$d/ovsdb.stderr 2>&1 &
  PIDS+=($!)
  for i in $(seq 100); do [ -S $d/db.sock ] && break; sleep 0.05; done
  local V="timeout 20 ovs-vsctl --db=unix:$d/db.sock"
  $V --no-wait init
  if [ $tso = 1 ]; then $V --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true; fi
  ip netns exec $SW ovs-vswitchd unix:$d/db.sock --unixctl=$d/vswitchd.ctl \
    --log-file=$d/vswitchd.log -vconsole:off >>$d/vswitchd.stderr 2>&1 &
  PIDS+=($!); SWITCH_PIDS+=($!)
  $V add-br br0 -- set bridge br0 datapath_type=netdev
  $V add-port br0 v1 -- add-port br0 v2
  ip -n $SW link set v1 up; ip -n $SW link set v2 up
  ip -n $SW link set br0 up 2>/dev/null || true
}

switch_up() { # VARIANT on the L2 topology
  local v=$1 c
  case $v in
    kernel)
      ip -n $SW link add name br0 type bridge
      ip -n $SW link set br0 type bridge stp_state 0 forward_delay 0
      ip -n $SW link set v1 master br0; ip -n $SW link set v2 master br0
      for l in v1 v2 br0; do ip -n $SW link set $l up; done ;;
    ovs|ovs-tso)
      if [ $v = ovs ]; then start_ovs 0; else start_ovs 1; fi
      if [ $v = ovs ]; then
        # Without userspace TSO, OVS's netdev datapath cannot carry partial checksums
        # (TCP dies on the default offloads): the peers must compute them. Only here.
        for c in $C1 $C2; do
          if ! ip netns exec $c ethtool -K eth0 tx off >/dev/null 2>&1; then
            note "ethtool -K eth0 tx off failed in $c (OVS without TSO)"
          fi
        done
      fi ;;
    vswitchd|vswitchd-fp|vswitchd-fp-nopeer)
      if [ $v = vswitchd-fp ]; then start_vswitchd $SW vs --fastpath on || return 1
      elif [ $v = vswitchd-fp-nopeer ]; then
        VSWITCH_FASTPATH_PEER=off start_vswitchd $SW vs --fastpath on || return 1
      else start_vswitchd $SW vs || return 1; fi
      local V="$BIN/vswitchctl --socket $TMP/vs.sock"
      $V add-br br0 >/dev/null && $V add-port br0 v1 >/dev/null && $V add-port br0 v2 >/dev/null || return 1 ;;
    veth) ;; # no switch: topo_direct joined c1 and c2
  esac
}

# The ceiling: c1 and c2 joined by one veth pair, no switch at all.
topo_direct() {
  ns_add $SW $C1 $C2
  ip link add name eth0 netns $C1 type veth peer name eth0 netns $C2
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C2 addr add 10.0.0.2/24 dev eth0; ip -n $C2 link set eth0 up
}

# --- metrics -------------------------------------------------------------------------------
proc_ticks() { # utime+stime of PID (all threads)
  sed 's/.*) //' /proc/$1/stat 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
cpu_sample() { # -> "switch_ticks softirq_ticks"; switch ticks are the sum over SWITCH_PIDS
  local t=0 p
  for p in "${SWITCH_PIDS[@]}"; do t=$((t + $(proc_ticks $p))); done
  echo "$t $(awk '/^cpu /{print $8}' /proc/stat)"
}

# The functions that start background processes set globals instead of printing, so
# that they run in this shell (not a $(...) subshell) and every PID lands in PIDS.
iperf() { # CLIENT_NS SERVER_NS SERVER_ADDR STREAMS -> GBPS (Gbit/s received)
  local cns=$1 sns=$2 addr=$3 n=$4 i
  ip netns exec $sns timeout $((T_TCP + 20)) iperf3 -s -1 -B $addr >/dev/null 2>>"$TMP/iperf.err" &
  local sp=$!
  PIDS+=($sp)
  for i in $(seq 60); do
    [ -n "$(ip netns exec $sns ss -Hltn 'sport = :5201' 2>/dev/null)" ] && break; sleep 0.05
  done
  local out
  out=$(ip netns exec $cns timeout $((T_TCP + 15)) iperf3 -c $addr -t $T_TCP -P $n -J 2>>"$TMP/iperf.err" || true)
  stop_pid $sp
  GBPS=$(echo "$out" | python3 -c 'import json,sys
try: print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("nan")')
}

ping_stats() { # [DST] -> "median p99" in microseconds (c1 → DST, default c2 10.0.0.2)
  ip netns exec $C1 timeout $((PINGS / 50 + 20)) ping -c $PINGS -i 0.01 -W 1 ${1:-10.0.0.2} 2>/dev/null | python3 -c 'import re,sys
t=sorted(float(m.group(1))*1000 for m in re.finditer(r"time=([0-9.]+) ms", sys.stdin.read()))
print("%.1f %.1f" % (t[len(t)//2], t[min(len(t)-1, int(len(t)*0.99))]) if t else "nan nan")' || echo "nan nan"
}

# c1's frames offered to its veth (tx_packets + tx_dropped: the generator's rings count a
# frame the peer's backlog refused as sent) and c2's received frames.
sent_c1() { ip netns exec $C1 cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/tx_dropped | awk '{s+=$1} END {print s}'; }
rx_c2() { ip netns exec $C2 cat /sys/class/net/eth0/statistics/rx_packets; }

udp64() { # -> UDP="sent_kpps rx_kpps loss_pct"
  local mac1 mac2 gp i s0 r0 s s1 r1 t1 s2 r2 t2 sa ra
  mac1=$(ip netns exec $C1 cat /sys/class/net/eth0/address)
  mac2=$(ip netns exec $C2 cat /sys/class/net/eth0/address)
  s0=$(sent_c1); r0=$(rx_c2)
  if [ $GEN = trafgen ]; then
    # 14 + 20 + 8 + 18 = 60 bytes (64 on the wire); trafgen fills lengths and checksums.
    echo "{ eth(da=$mac2, sa=$mac1, type=0x0800), ipv4(ttl=64, sa=10.0.0.1, da=10.0.0.2), udp(sp=9999, dp=9), fill(0x00, 18) }" > $TMP/udp.cfg
    # leave net.core socket memory and IRQ affinity alone (trafgen tunes them by default)
    ip netns exec $C1 timeout -s INT $((UDP_T + 8)) trafgen --dev eth0 --conf $TMP/udp.cfg --cpus 1 \
      -n $UDP_MAX --no-sock-mem --notouch-irq --no-cpu-stats >/dev/null 2>>"$TMP/gen.err" &
  else
    ip netns exec $C1 timeout -s INT $((UDP_T + 8)) python3 "$HERE/udpgen.py" eth0 $mac2 $mac1 10.0.0.1 10.0.0.2 \
      $UDP_MAX $((UDP_T + 6)) 2>>"$TMP/gen.err" &
  fi
  gp=$!
  PIDS+=($gp)
  # the window starts once frames flow, so generator start-up does not count
  for i in $(seq 100); do s=$(sent_c1); [ $((s - s0)) -gt 1000 ] && break; sleep 0.05; done
  t1=$(date +%s.%N); s1=$(sent_c1); r1=$(rx_c2)
  sleep $UDP_T
  t2=$(date +%s.%N); s2=$(sent_c1); r2=$(rx_c2)
  stop_pid $gp
  sleep 0.5   # let queues drain before the totals
  sa=$(sent_c1); ra=$(rx_c2)
  UDP=$(python3 -c "
d=$t2-$t1; s=$s2-$s1; r=$r2-$r1; S=$sa-$s0; R=$ra-$r0
if s < 1000: print('nan nan nan')
else: print('%.1f %.1f %.2f' % (s/d/1e3, r/d/1e3, 100.0*(S-R)/S))")
}

ticks_s() { python3 -c "print('%.2f' % (($1) / $(getconf CLK_TCK)))"; }

# --- L2: kernel bridge vs OVS userspace (±TSO) vs vswitchd ----------------------------------
measure_l2() { # VARIANT ROUND
  local v=$1 r=$2 pmed p99 a b a2 b2 t1 t4 sent rx loss cpu sirq
  if [ $v = veth ]; then topo_direct; else topo_l2; fi
  if ! switch_up $v || ! wait_ping $C1 10.0.0.2; then
    echo "error: $v: no connectivity c1 -> c2; row left empty" >&2
    printf 'l2\t%s\t%s\ttcp1=nan tcp4=nan udp_sent_kpps=nan udp_rx_kpps=nan udp_loss=nan ping_med=nan ping_p99=nan cpu=nan softirq=nan\n' $v $r >> "$RES"
    teardown; return
  fi
  read -r pmed p99 < <(ping_stats)
  read -r a b < <(cpu_sample)
  iperf $C1 $C2 10.0.0.2 1; t1=$GBPS
  read -r a2 b2 < <(cpu_sample)
  iperf $C1 $C2 10.0.0.2 4; t4=$GBPS
  udp64; read -r sent rx loss <<< "$UDP"
  sirq=$(ticks_s "$b2 - $b")
  if [ ${#SWITCH_PIDS[@]} -gt 0 ]; then cpu=$(ticks_s "$a2 - $a"); else cpu=$sirq; fi
  printf 'l2\t%s\t%s\ttcp1=%s tcp4=%s udp_sent_kpps=%s udp_rx_kpps=%s udp_loss=%s ping_med=%s ping_p99=%s cpu=%s softirq=%s\n' \
    $v $r $t1 $t4 $sent $rx $loss $pmed $p99 $cpu $sirq >> "$RES"
  echo "  $v: tcp1=$t1 tcp4=$t4 Gbit/s, udp sent=$sent rx=$rx kpps loss=$loss%, ping=$pmed/$p99 µs, cpu=$cpu s, softirq=$sirq s" >&2
  teardown
}

# --- NAT: c1 (10.0.0.1) behind the router to an outside host (198.51.100.1) ----------------
nat_up() {
  local v=$1
  ns_add $SW $C1 $OUT
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name vo netns $SW type veth peer name eth0 netns $OUT
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C1 route add default via 10.0.0.254
  ip -n $OUT addr add 198.51.100.1/24 dev eth0; ip -n $OUT link set eth0 up
  case $v in
    kernel-nat)
      ip -n $SW addr add 10.0.0.254/24 dev v1; ip -n $SW addr add 198.51.100.2/24 dev vo
      ip -n $SW link set v1 up; ip -n $SW link set vo up
      ip netns exec $SW sysctl -qw net.ipv4.ip_forward=1
      ip netns exec $SW nft -f - <<'NFT'
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "vo" masquerade
  }
}
NFT
      ;;
    vswitchd-nat|vswitchd-nat-fp)
      if [ $v = vswitchd-nat-fp ]; then start_vswitchd $SW vsn --fastpath on || return 1
      else start_vswitchd $SW vsn || return 1; fi
      local V="$BIN/vswitchctl --socket $TMP/vsn.sock"
      $V add-br br1 --subnet 10.0.0.0/24 --gateway 10.0.0.254 >/dev/null &&
      $V add-br wan --subnet 198.51.100.0/24 --gateway 198.51.100.2 >/dev/null &&
      $V add-port br1 v1 >/dev/null && $V add-port wan vo >/dev/null &&
      $V masquerade br1 --out wan >/dev/null || return 1 ;;
  esac
}

# --- Routed: c1 (10.0.0.1/24) and c2 (10.1.0.1/24), the router between them -----------
route_up() {
  local v=$1
  ns_add $SW $C1 $C2
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW type veth peer name eth0 netns $C2
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C1 route add default via 10.0.0.254
  ip -n $C2 addr add 10.1.0.1/24 dev eth0; ip -n $C2 link set eth0 up
  ip -n $C2 route add default via 10.1.0.254
  case $v in
    kernel-route)
      ip -n $SW addr add 10.0.0.254/24 dev v1; ip -n $SW addr add 10.1.0.254/24 dev v2
      ip -n $SW link set v1 up; ip -n $SW link set v2 up
      ip netns exec $SW sysctl -qw net.ipv4.ip_forward=1 ;;
    vswitchd-route|vswitchd-route-fp)
      if [ $v = vswitchd-route-fp ]; then start_vswitchd $SW vsr --fastpath on || return 1
      else start_vswitchd $SW vsr || return 1; fi
      local V="$BIN/vswitchctl --socket $TMP/vsr.sock"
      $V add-br br1 --subnet 10.0.0.0/24 --gateway 10.0.0.254 >/dev/null &&
      $V add-br br2 --subnet 10.1.0.0/24 --gateway 10.1.0.254 >/dev/null &&
      $V add-port br1 v1 >/dev/null && $V add-port br2 v2 >/dev/null || return 1 ;;
  esac
}

# --- Routed IPv6: c1 (fd00:10::1/64) and c2 (fd00:11::1/64), the router between them ------
route6_up() {
  local v=$1 ns
  ns_add $SW $C1 $C2
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW type veth peer name eth0 netns $C2
  for ns in $C1 $C2; do ip netns exec $ns sysctl -qw net.ipv6.conf.eth0.accept_ra=0; done
  ip -n $C1 addr add fd00:10::1/64 dev eth0 nodad; ip -n $C1 link set eth0 up
  ip -n $C1 -6 route add default via fd00:10::fe
  ip -n $C2 addr add fd00:11::1/64 dev eth0 nodad; ip -n $C2 link set eth0 up
  ip -n $C2 -6 route add default via fd00:11::fe
  case $v in
    kernel-route6)
      ip -n $SW addr add fd00:10::fe/64 dev v1 nodad; ip -n $SW addr add fd00:11::fe/64 dev v2 nodad
      ip -n $SW link set v1 up; ip -n $SW link set v2 up
      ip netns exec $SW sysctl -qw net.ipv6.conf.all.forwarding=1 ;;
    vswitchd-route6|vswitchd-route6-fp)
      if [ $v = vswitchd-route6-fp ]; then start_vswitchd $SW vsr6 --fastpath on || return 1
      else start_vswitchd $SW vsr6 || return 1; fi
      local V="$BIN/vswitchctl --socket $TMP/vsr6.sock"
      $V add-br br1 --subnet fd00:10::/64 --gateway fd00:10::fe >/dev/null &&
      $V add-br br2 --subnet fd00:11::/64 --gateway fd00:11::fe >/dev/null &&
      $V add-port br1 v1 >/dev/null && $V add-port br2 v2 >/dev/null || return 1 ;;
  esac
}

# --- VXLAN: c1 on host 1 ($SW), c2 on host 2 ($SW2), underlay 192.0.2.0/24 MTU 1600 --------
vx_up() {
  local v=$1 i=0 ns port local_ip remote_ip
  ns_add $SW $SW2 $C1 $C2
  ip link add name v1 netns $SW type veth peer name eth0 netns $C1
  ip link add name v2 netns $SW2 type veth peer name eth0 netns $C2
  ip link add name u0 netns $SW type veth peer name u0 netns $SW2
  ip -n $SW addr add 192.0.2.1/24 dev u0; ip -n $SW2 addr add 192.0.2.2/24 dev u0
  ip -n $SW link set u0 mtu 1600 up; ip -n $SW2 link set u0 mtu 1600 up
  ip -n $C1 addr add 10.0.0.1/24 dev eth0; ip -n $C1 link set eth0 up
  ip -n $C2 addr add 10.0.0.2/24 dev eth0; ip -n $C2 link set eth0 up
  for spec in "$SW v1 192.0.2.1 192.0.2.2" "$SW2 v2 192.0.2.2 192.0.2.1"; do
    read -r ns port local_ip remote_ip <<< "$spec"
    i=$((i + 1))
    case $v in
      kernel-vxlan)
        ip -n $ns link add name vx0 type vxlan id 42 local $local_ip remote $remote_ip dstport 4789
        ip -n $ns link set vx0 mtu 1500
        ip -n $ns link add name br0 type bridge
        ip -n $ns link set br0 type bridge stp_state 0 forward_delay 0
        ip -n $ns link set vx0 master br0; ip -n $ns link set $port master br0
        for l in vx0 $port br0; do ip -n $ns link set $l up; done ;;
      vswitchd-vxlan|vswitchd-vxlan-fp)
        if [ $v = vswitchd-vxlan-fp ]; then start_vswitchd $ns vx$i --fastpath on || return 1
        else start_vswitchd $ns vx$i || return 1; fi
        local V="$BIN/vswitchctl --socket $TMP/vx$i.sock"
        $V add-br br0 >/dev/null && $V add-port br0 $port >/dev/null &&
        $V add-port br0 vx0 --type vxlan --remote-ip $remote_ip --vni 42 >/dev/null || return 1 ;;
      vswitchd-kvxlan)
        # Reference, not a product configuration: the kernel's VXLAN device does the
        # tunnel (no copy, UDP tunnel GSO) and vswitchd attaches it as a system port,
        # so only the two switching hops run in userspace. Its ratio bounds what any
        # userspace tunnel endpoint could reach with both hops in vswitchd.
        ip -n $ns link add name vx0 type vxlan id 42 local $local_ip remote $remote_ip dstport 4789
        ip -n $ns link set vx0 mtu 1500 up
        start_vswitchd $ns vx$i || return 1
        local V="$BIN/vswitchctl --socket $TMP/vx$i.sock"
        $V add-br br0 >/dev/null && $V add-port br0 $port >/dev/null &&
        $V add-port br0 vx0 >/dev/null || return 1 ;;
    esac
  done
}

measure_tcp() { # SECTION VARIANT ROUND UPFN DST
  local sec=$1 v=$2 r=$3 up=$4 dst=$5 a b a2 b2 t1 t4 cpu sirq dns
  local extra=""
  if [ $sec = nat ]; then dns=$OUT; else dns=$C2; fi
  if ! $up $v || ! wait_ping $C1 $dst; then
    echo "error: $v: no connectivity c1 -> $dst; row left empty" >&2
    printf '%s\t%s\t%s\ttcp1=nan tcp4=nan cpu=nan softirq=nan\n' $sec $v $r >> "$RES"
    teardown; return
  fi
  if [ $sec = routed ] || [ $sec = routed6 ]; then
    local pmed p99
    read -r pmed p99 < <(ping_stats $dst)
    extra=" ping_med=$pmed ping_p99=$p99"
  fi
  read -r a b < <(cpu_sample)
  iperf $C1 $dns $dst 1; t1=$GBPS
  read -r a2 b2 < <(cpu_sample)
  iperf $C1 $dns $dst 4; t4=$GBPS
  sirq=$(ticks_s "$b2 - $b")
  if [ ${#SWITCH_PIDS[@]} -gt 0 ]; then cpu=$(ticks_s "$a2 - $a"); else cpu=$sirq; fi
  printf '%s\t%s\t%s\ttcp1=%s tcp4=%s cpu=%s softirq=%s%s\n' $sec $v $r $t1 $t4 $cpu $sirq "$extra" >> "$RES"
  echo "  $v: tcp1=$t1 tcp4=$t4 Gbit/s, cpu=$cpu s, softirq=$sirq s$extra" >&2
  teardown
}

NAT_VARIANTS=()
RT_VARIANTS=()
RT6_VARIANTS=()
VX_VARIANTS=(kernel-vxlan vswitchd-vxlan vswitchd-vxlan-fp vswitchd-kvxlan)
if [ $VXONLY = 1 ] || [ $RTONLY = 1 ] || [ $NATONLY = 1 ]; then VARIANTS=(); fi
if [ $RTONLY = 1 ] || [ $NATONLY = 1 ]; then VX_VARIANTS=(); fi
if [ $L2ONLY = 0 ] && [ $VXONLY = 0 ] && [ $NATONLY = 0 ]; then
  RT_VARIANTS=(kernel-route vswitchd-route vswitchd-route-fp)
  RT6_VARIANTS=(kernel-route6 vswitchd-route6 vswitchd-route6-fp)
fi
if [ $L2ONLY = 0 ] && [ $VXONLY = 0 ] && [ $RTONLY = 0 ]; then
  if command -v nft >/dev/null; then NAT_VARIANTS+=(kernel-nat); else note "nft missing: kernel NAT row skipped"; fi
  NAT_VARIANTS+=(vswitchd-nat vswitchd-nat-fp)
fi

echo "variants: ${VARIANTS[*]:-(no L2 rows)}${RT_VARIANTS[*]:+; routed: ${RT_VARIANTS[*]}}${RT6_VARIANTS[*]:+; routed IPv6: ${RT6_VARIANTS[*]}}${NAT_VARIANTS[*]:+; NAT: ${NAT_VARIANTS[*]}}$([ $L2ONLY = 0 ] && [ ${#VX_VARIANTS[@]} -gt 0 ] && echo "; VXLAN: ${VX_VARIANTS[*]}"); $ROUNDS round(s)" >&2
for round in $(seq 1 $ROUNDS); do
  for v in "${VARIANTS[@]}"; do
    echo "round $round/$ROUNDS: $v" >&2
    measure_l2 $v $round
  done
  for v in "${RT_VARIANTS[@]}"; do
    echo "round $round/$ROUNDS: $v" >&2
    measure_tcp routed $v $round route_up 10.1.0.1
  done
  for v in "${RT6_VARIANTS[@]}"; do
    echo "round $round/$ROUNDS: $v" >&2
    measure_tcp routed6 $v $round route6_up fd00:11::1
  done
  for v in "${NAT_VARIANTS[@]}"; do
    echo "round $round/$ROUNDS: $v" >&2
    measure_tcp nat $v $round nat_up 198.51.100.1
  done
  if [ $L2ONLY = 0 ]; then
    for v in "${VX_VARIANTS[@]+"${VX_VARIANTS[@]}"}"; do
      echo "round $round/$ROUNDS: $v" >&2
      measure_tcp vxlan $v $round vx_up 10.0.0.2
    done
  fi
done

ELAPSED=$(( $(date +%s) - START ))
TABLE=$(python3 "$HERE/report.py" "$RES" l2)
RT_TABLE=$(python3 "$HERE/report.py" "$RES" routed)
RT6_TABLE=$(python3 "$HERE/report.py" "$RES" routed6)
NAT_TABLE=$(python3 "$HERE/report.py" "$RES" nat)
VX_TABLE=$(python3 "$HERE/report.py" "$RES" vxlan)
RAW=$(python3 "$HERE/report.py" "$RES" raw)
echo
echo "$TABLE"
[ -n "$RT_TABLE" ] && { echo; echo "$RT_TABLE"; }
[ -n "$RT6_TABLE" ] && { echo; echo "$RT6_TABLE"; }
[ -n "$NAT_TABLE" ] && { echo; echo "$NAT_TABLE"; }
[ -n "$VX_TABLE" ] && { echo; echo "$VX_TABLE"; }
echo
echo "run time: $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
for f in iperf.err gen.err; do
  if [ -s "$TMP/$f" ]; then echo "stderr of ${f%.err} (last lines):" >&2; tail -3 "$TMP/$f" >&2; fi
done

if [ $WRITE = 1 ]; then
  DOC=$ROOT/docs/performance.md
  NOTESTXT=$(cat "$NOTES")
  OVSV=$(command -v ovs-vswitchd >/dev/null && ovs-vswitchd --version 2>/dev/null | head -1 | awk '{print $NF}' || echo "not installed")
  BLOCK="<!-- e2e:begin -->
<!-- Written by benches/e2e/run.sh; edits between these markers are overwritten. -->
- date: $(date -u +'%Y-%m-%d %H:%M UTC')
- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -m | awk '/Mem:/{printf "%.1f GiB", $2/1024}') memory, kernel $(uname -r)
- command: \`sudo $CMDLINE\` — run time $((ELAPSED / 60)) min $((ELAPSED % 60)) s
- software: vswitchd (release binary built $VS_BUILT, tree at run time $VS_REV; \`--workers 2\`); Open vSwitch $OVSV; $( (iperf3 -v || true) | head -1 | awk '{print "iperf3 " $2}'); UDP generator: $GEN_DESC
- method: $ROUNDS round(s); in each round every variant in turn gets a freshly built topology and all its tests, then is torn down (interleaved); figures are medians over rounds, ratios are to the kernel row. TCP: iperf3 c1 → c2, ${T_TCP} s per test, Gbit/s received. UDP: 60-byte frames (64 B on the wire) c1 → c2 10.0.0.2:9; rates over a ${UDP_T} s window once frames flow (sent = c1 eth0 tx_packets + tx_dropped, rx = c2 eth0 rx_packets), loss over the whole burst after 0.5 s of drain. Ping: $PINGS at 10 ms, c1 → c2. CPU during the 1-stream TCP test: switch = utime+stime of vswitchd / ovs-vswitchd from /proc/PID/stat (for the VXLAN case, both hosts' vswitchd); † for the kernel rows it is the system-wide softirq time from /proc/stat, which also contains the endpoints' receive processing. OVS without TSO runs with \`ethtool -K eth0 tx off\` in c1 and c2 (needed for its TCP to work); every other row keeps the default offloads.${NOTESTXT:+
$NOTESTXT}

$TABLE
${RT_TABLE:+
$RT_TABLE
}${RT6_TABLE:+
$RT6_TABLE
}${NAT_TABLE:+
$NAT_TABLE
}${VX_TABLE:+
$VX_TABLE
}
<details><summary>Every round</summary>

$RAW

</details>
<!-- e2e:end -->"
  if [ -f "$DOC" ] && grep -q '<!-- e2e:begin -->' "$DOC" && grep -q '<!-- e2e:end -->' "$DOC"; then
    python3 - "$DOC" "$BLOCK" <<'PY'
import re, sys
path, block = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- e2e:begin -->.*?<!-- e2e:end -->", lambda m: block, text, count=1, flags=re.S)
open(path, "w").write(text)
PY
  else
    printf '# Performance\n\n%s\n' "$BLOCK" >> "$DOC"
  fi
  echo "wrote $DOC" >&2
fi
