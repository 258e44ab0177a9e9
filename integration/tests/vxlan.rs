//! VXLAN: two vswitchd hosts joined by a tunnel, and vswitchd against the Linux
//! kernel's own VXLAN device (the reference peer), with ping and TCP across.
//!
//! The tests without a `--fastpath` flag run in the mode `VSWITCH_FASTPATH` gives (CI
//! runs them with the fast path on and off); the `fast_path_*` tests set it per host:
//! with it, the kernel's external VXLAN device owns UDP 4789 and learned flows cross
//! the tunnel without vswitchd.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{assert_transfer, run_ok, wait_until, Lab, Proto};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "two_vswitchd_hosts_over_vxlan",
            two_vswitchd_hosts_over_vxlan,
        ),
        ("interop_with_kernel_vxlan", interop_with_kernel_vxlan),
        ("junk_datagrams_are_dropped", junk_datagrams_are_dropped),
        (
            "small_underlay_mtu_still_works",
            small_underlay_mtu_still_works,
        ),
        ("vxlan_errors", vxlan_errors),
        (
            "fast_path_tunnel_flows_skip_vswitchd",
            fast_path_tunnel_flows_skip_vswitchd,
        ),
        (
            "fast_path_host_and_userspace_host_interoperate",
            fast_path_host_and_userspace_host_interoperate,
        ),
        (
            "fast_path_vxlan_del_port_cleans_up",
            fast_path_vxlan_del_port_cleans_up,
        ),
        (
            "fast_path_vxlan_survives_kill_and_restart",
            fast_path_vxlan_survives_kill_and_restart,
        ),
        (
            "a_super_frame_in_two_trains_arrives_whole",
            a_super_frame_in_two_trains_arrives_whole,
        ),
        (
            "ipv6_tcp_and_udp_gso_cross_the_tunnel",
            ipv6_tcp_and_udp_gso_cross_the_tunnel,
        ),
        (
            "fast_path_routes_into_and_out_of_the_tunnel",
            fast_path_routes_into_and_out_of_the_tunnel,
        ),
    ])
}

fn ip(args: &[&str]) -> Result<String> {
    run_ok(std::process::Command::new("ip").args(args))
}

/// A host: its own Lab, namespace `sw` running vswitchd with bridge br0, and a
/// container `c` at `cidr` on it.
fn host(cidr: &str) -> Result<Lab> {
    host_with(cidr, &[])
}

/// As [`host`], with extra vswitchd flags (`--fastpath on|off`).
fn host_with(cidr: &str, flags: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", flags)?;
    lab.ctl_ok(&["add-br", "br0"])?;
    lab.container("sw", "c", "vc", cidr, None)?;
    lab.ctl_ok(&["add-port", "br0", "vc"])?;
    Ok(lab)
}

/// Port vx0 on br0 of lab `h`: a VXLAN tunnel (VNI 42) to `remote`.
fn vxlan_port(h: &Lab, remote: &str) -> Result<()> {
    h.ctl_ok(&[
        "add-port",
        "br0",
        "vx0",
        "--type",
        "vxlan",
        "--remote-ip",
        remote,
        "--vni",
        "42",
    ])?;
    Ok(())
}

/// An underlay link between the `sw` namespaces of two labs (192.0.2.0/24), with room
/// for the 50 bytes of VXLAN overhead.
fn underlay(a: &Lab, a_ip: &str, b_ns: &str, b_ip: &str) -> Result<()> {
    ip(&[
        "link",
        "add",
        "name",
        "u0",
        "netns",
        &a.ns("sw"),
        "type",
        "veth",
        "peer",
        "name",
        "u0",
        "netns",
        b_ns,
    ])?;
    for (ns, addr) in [(a.ns("sw"), a_ip), (b_ns.to_string(), b_ip)] {
        ip(&["-n", &ns, "addr", "add", addr, "dev", "u0"])?;
        ip(&["-n", &ns, "link", "set", "u0", "mtu", "1600", "up"])?;
    }
    Ok(())
}

/// Two hosts (containers 10.0.0.1 and 10.0.0.2) joined by an underlay link and a
/// VXLAN port on each towards the other.
fn tunnel_pair() -> Result<(Lab, Lab)> {
    tunnel_pair_with(&[], &[])
}

/// As [`tunnel_pair`], with vswitchd flags per host.
fn tunnel_pair_with(f1: &[&str], f2: &[&str]) -> Result<(Lab, Lab)> {
    let h1 = host_with("10.0.0.1/24", f1)?;
    let h2 = host_with("10.0.0.2/24", f2)?;
    underlay(&h1, "192.0.2.1/24", &h2.ns("sw"), "192.0.2.2/24")?;
    vxlan_port(&h1, "192.0.2.2")?;
    vxlan_port(&h2, "192.0.2.1")?;
    Ok((h1, h2))
}

fn two_vswitchd_hosts_over_vxlan() -> Result<()> {
    let (mut h1, mut h2) = tunnel_pair()?;
    // Across the tunnel: h1's container reaches h2's (the Lab's ping runs in its own
    // namespaces, so ping h2's container from h1's).
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "no ping across the tunnel; h1 log:\n{}\nh2 log:\n{}",
        h1.log_tail(10),
        h2.log_tail(10)
    );
    h1.assert_ping("c", "10.0.0.2")?;
    // The MAC of h2's container is learned behind the remote VTEP.
    let mac2 = h2.mac("c", "eth0")?;
    let fdb = h1.ctl_json(&["fdb-show", "br0"])?;
    let e = fdb
        .as_array()
        .and_then(|a| a.iter().find(|e| e["mac"] == mac2.as_str()))
        .context("remote MAC not learned")?;
    ensure!(e["port"] == "vx0@192.0.2.2", "{e}");
    let stats = h1.ctl_json(&["stats", "vx0"])?;
    ensure!(
        stats[0]["port"] == "vx0@192.0.2.2" && stats[0]["tx_packets"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    // TCP: GSO super-frames are segmented before encapsulation.
    h2.iperf_server("c", "10.0.0.2")?;
    let bytes = h1.iperf_bytes("c", "10.0.0.2")?;
    ensure!(
        bytes > 1_000_000,
        "TCP across the tunnel moved {bytes} bytes"
    );
    // Every byte intact, both ways: super-frames cut into UDP GSO trains on one side,
    // trains joined back into super-frames on the other.
    assert_transfer(&h1, "c", &mut h2, "c", "10.0.0.2", 8 << 20)?;
    assert_transfer(&h2, "c", &mut h1, "c", "10.0.0.1", 8 << 20)?;
    let show = h1.ctl_ok(&["show"])?;
    ensure!(
        show.contains("Port vx0 (vxlan, up) vni 42 remote 192.0.2.2"),
        "{show}"
    );
    Ok(())
}

/// Datagrams to the VTEP that are not VXLAN for us, one by one and as one UDP GSO
/// train (received as a UDP GRO train), from a remote's address: dropped, counted as
/// malformed on that remote's port, and the tunnel goes on working. (The userspace
/// receive path: with the fast path the kernel's VXLAN device parses datagrams.)
fn junk_datagrams_are_dropped() -> Result<()> {
    let (h1, mut h2) = tunnel_pair_with(&["--fastpath", "off"], &[])?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping across the tunnel");
    let before = malformed(&h1)?;
    // From h2's VTEP address, another source port than its vswitchd's.
    let junk = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('192.0.2.2', 0))
dst = ('192.0.2.1', 4789)
vx = lambda vni: bytes([8, 0, 0, 0]) + vni.to_bytes(3, 'big') + bytes([0])
for p in [b'', b'\x08', bytes(8) + bytes(20), vx(43) + bytes(20), vx(42) + bytes(5)]:
    s.sendto(p, dst)
s.setsockopt(17, 103, 100)
s.sendto(bytes(range(7, 256)) * 4, dst)
"#;
    run_ok(h2.cmd("sw", "python3").args(["-c", junk]))?;
    // 5 single datagrams and a train of 10 (996 bytes in 100-byte datagrams).
    let counted = wait_until(Duration::from_secs(5), || {
        malformed(&h1).map(|n| n >= before + 15).unwrap_or(false)
    });
    ensure!(
        counted,
        "junk not counted: malformed {} -> {}",
        before,
        malformed(&h1)?
    );
    h1.assert_ping("c", "10.0.0.2")?;
    assert_transfer(&h1, "c", &mut h2, "c", "10.0.0.2", 1 << 20)?;
    Ok(())
}

/// An underlay MTU of 1500 under 1500-byte container frames: the kernel refuses the
/// UDP GSO trains, segments go one by one and IP-fragmented, every byte still arrives,
/// and the log says why it is slow.
fn small_underlay_mtu_still_works() -> Result<()> {
    let mut h1 = host("10.0.0.1/24")?;
    let mut h2 = host("10.0.0.2/24")?;
    underlay(&h1, "192.0.2.1/24", &h2.ns("sw"), "192.0.2.2/24")?;
    for h in [&h1, &h2] {
        ip(&["-n", &h.ns("sw"), "link", "set", "u0", "mtu", "1500"])?;
    }
    for (h, remote) in [(&mut h1, "192.0.2.2"), (&mut h2, "192.0.2.1")] {
        vxlan_port(h, remote)?;
    }
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping across the tunnel");
    assert_transfer(&h1, "c", &mut h2, "c", "10.0.0.2", 4 << 20)?;
    assert_transfer(&h2, "c", &mut h1, "c", "10.0.0.1", 4 << 20)?;
    // Userspace sends UDP GSO trains the kernel refuses; with the fast path the
    // kernel's VXLAN device sends the bulk, fragmenting as a kernel VTEP does.
    let fast = h1.ctl_ok(&["show"])?.contains("fastpath on");
    let log = h1.log_tail(50);
    ensure!(
        fast || log.contains("smaller MTU than a VXLAN datagram"),
        "no MTU warning in h1's log:\n{log}"
    );
    Ok(())
}

/// A 64 KB TCP super-frame leaves a VTEP as two UDP GSO trains (43 + 2 segments: one
/// train carries at most 64 KB) and arrives as two GRO datagrams; the receiving
/// vswitchd hands the container one super-frame again, not two. The trains are built
/// here (from h2's VTEP address) while h1's vswitchd is frozen, so both wait in its
/// socket; a packet socket in h1's container sees what comes out of the bridge.
/// (The userspace receive path: with the fast path the kernel's device does GRO.)
fn a_super_frame_in_two_trains_arrives_whole() -> Result<()> {
    let (mut h1, h2) = tunnel_pair_with(&["--fastpath", "off"], &[])?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping across the tunnel");
    let (mac1, mac2) = (h1.mac("c", "eth0")?, h2.mac("c", "eth0")?);
    let capture = h1.dir().join("capture.txt");
    let sniff = format!(
        r#"
import socket, hashlib, select, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(('eth0', 0))
open('{cap}.ready', 'w').close()
seen = []
end = time.time() + 10
while time.time() < end and sum(n for n, _ in seen) < 45 * 1448:
    if not select.select([s], [], [], 0.2)[0]:
        continue
    f = s.recv(70000)
    if len(f) > 54 and f[23] == 6 and f[36:38] == (7001).to_bytes(2, 'big'):
        seen.append((len(f) - 54, hashlib.sha256(f[54:]).hexdigest()))
open('{cap}', 'w').write(repr(seen))
"#,
        cap = capture.display()
    );
    h1.spawn("c", "python3", &["-c", &sniff], "sniff.log")?;
    let ready = capture.with_extension("txt.ready");
    ensure!(
        wait_until(Duration::from_secs(5), || ready.exists()),
        "packet socket in h1's container did not start: {}",
        h1.read_log("sniff.log")
    );
    let send = format!(
        r#"
import socket, struct, hashlib
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
mac = lambda m: bytes.fromhex(m.replace(':', ''))
payload = bytes((i * 7 + 3) & 0xff for i in range(45 * 1448))
def seg(k):
    data = payload[k * 1448:(k + 1) * 1448]
    flags = 0x18 if k == 44 else 0x10
    tcp = struct.pack('!HHIIBBHHH', 40000, 7001, 1000 + k * 1448, 1, 0x50, flags, 512, 0, 0)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40 + len(data), k, 0x4000, 64, 6, 0,
                     socket.inet_aton('10.0.0.2'), socket.inet_aton('10.0.0.1'))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    pseudo = ip[12:20] + struct.pack('!BBH', 0, 6, 20 + len(data))
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp + data)) + tcp[18:]
    vx = bytes([8, 0, 0, 0, 0, 0, 42, 0])
    return vx + mac('{mac1}') + mac('{mac2}') + b'\x08\x00' + ip + tcp + data
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('192.0.2.2', 0))
s.setsockopt(17, 103, 8 + 14 + 40 + 1448)
s.sendto(b''.join(seg(k) for k in range(43)), ('192.0.2.1', 4789))
s.sendto(b''.join(seg(k) for k in range(43, 45)), ('192.0.2.1', 4789))
print(hashlib.sha256(payload).hexdigest())
"#
    );
    h1.pause_switch(true)?;
    let sent = run_ok(h2.cmd("sw", "python3").args(["-c", &send]));
    h1.pause_switch(false)?;
    let sent = sent?;
    let done = wait_until(Duration::from_secs(12), || capture.exists());
    ensure!(done, "no capture: {}", h1.read_log("sniff.log"));
    let seen = std::fs::read_to_string(&capture)?;
    let want = format!("[({}, '{}')]", 45 * 1448, sent.trim());
    ensure!(
        seen == want,
        "frames into the container (payload bytes, sha256): {seen}; want one super-frame \
         {want}; h1 stats: {}",
        h1.ctl_ok(&["stats", "vx0"]).unwrap_or_default()
    );
    Ok(())
}

/// Frames dropped as malformed on h1's port for remote 192.0.2.2.
fn malformed(h: &Lab) -> Result<u64> {
    let s = h.ctl_json(&["stats", "vx0"])?;
    Ok(s[0]["drops"]["malformed"].as_u64().unwrap_or(0))
}

fn interop_with_kernel_vxlan() -> Result<()> {
    let mut h1 = host("10.0.0.1/24")?;
    // The peer host: a kernel VXLAN device and a kernel bridge.
    let mut h2 = Lab::new()?;
    h2.add_ns("sw")?;
    h2.container("sw", "c", "vc", "10.0.0.2/24", None)?;
    underlay(&h1, "192.0.2.1/24", &h2.ns("sw"), "192.0.2.2/24")?;
    h2.sh("sw", "ip link add name vx0 type vxlan id 42 remote 192.0.2.1 local 192.0.2.2 dstport 4789 && ip link set vx0 mtu 1500 && ip link add name br0 type bridge && ip link set vx0 master br0 && ip link set vc master br0 && ip link set vx0 up && ip link set vc up && ip link set br0 up")?;
    vxlan_port(&h1, "192.0.2.2")?;
    let ok = wait_until(Duration::from_secs(15), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "vswitchd → kernel VXLAN: no ping; log:\n{}",
        h1.log_tail(10)
    );
    h1.assert_ping("c", "10.0.0.2")?;
    h2.assert_ping("c", "10.0.0.1")?;
    if h1.ctl_ok(&["show"])?.contains("fastpath on") {
        // The kernel peer's datagrams are decapsulated by h1's external device, and
        // the learned flow is carried by the kernel both ways.
        wait_tunnel_entry(&h1, "vc", "vx0@192.0.2.2")?;
        wait_tunnel_entry(&h1, "vx0@192.0.2.2", "vc")?;
        h1.assert_pings("c", "10.0.0.2", 5)?;
        let e = wait_tunnel_entry(&h1, "vx0@192.0.2.2", "vc")?;
        ensure!(num(&e, "packets") >= 5, "{e}");
    }
    // TCP both ways.
    h2.iperf_server("c", "10.0.0.2")?;
    let bytes = h1.iperf_bytes("c", "10.0.0.2")?;
    ensure!(bytes > 1_000_000, "TCP vswitchd→kernel moved {bytes} bytes");
    h1.iperf_server("c", "10.0.0.1")?;
    let bytes = h2.iperf_bytes("c", "10.0.0.1")?;
    ensure!(bytes > 1_000_000, "TCP kernel→vswitchd moved {bytes} bytes");
    assert_transfer(&h1, "c", &mut h2, "c", "10.0.0.2", 8 << 20)?;
    assert_transfer(&h2, "c", &mut h1, "c", "10.0.0.1", 8 << 20)?;
    // A kernel peer without segmentation offload on its VXLAN device sends one
    // datagram per TCP segment (as over a real network): vswitchd joins them again.
    h2.sh("sw", "ethtool -K vx0 tso off gso off >/dev/null")?;
    assert_transfer(&h2, "c", &mut h1, "c", "10.0.0.1", 8 << 20)?;
    Ok(())
}

fn vxlan_errors() -> Result<()> {
    let h1 = host("10.0.0.1/24")?;
    let cases: &[(&[&str], &str)] = &[
        (
            &["add-port", "br0", "vx0", "--type", "vxlan", "--vni", "42"],
            "error: a vxlan port needs --remote-ip",
        ),
        (
            &[
                "add-port",
                "br0",
                "vx0",
                "--type",
                "vxlan",
                "--remote-ip",
                "192.0.2.2",
            ],
            "error: a vxlan port needs --vni",
        ),
        (
            &[
                "add-port",
                "br0",
                "vx0",
                "--type",
                "vxlan",
                "--remote-ip",
                "192.0.2.2",
                "--vni",
                "16777216",
            ],
            "error: bad VNI 16777216: must be 1..16777215",
        ),
        (
            &[
                "add-port",
                "br0",
                "vx0",
                "--type",
                "vxlan",
                "--remote-ip",
                "192.0.2.999",
                "--vni",
                "1",
            ],
            "error: bad IP address \"192.0.2.999\"",
        ),
        (
            &["add-port", "br0", "vc2", "--vni", "5"],
            "error: --remote-ip/--vni/--local-ip/--dst-port only apply to vxlan ports",
        ),
    ];
    for (args, want) in cases {
        let o = h1.ctl(args)?;
        ensure!(
            o.code != 0 && o.stderr.trim() == *want,
            "{args:?}: {:?}",
            o.stderr
        );
    }
    Ok(())
}

/// Super-frames other than TCP/IPv4 cross the tunnel too: TCP over IPv6 (a veth's TSO
/// makes GSO_TCPV6 frames) and UDP sent with `UDP_SEGMENT` (GSO_UDP_L4), each cut in
/// software before encapsulation, every byte checked.
fn ipv6_tcp_and_udp_gso_cross_the_tunnel() -> Result<()> {
    let (mut h1, mut h2) = tunnel_pair()?;
    for (h, a) in [(&h1, "fd00::1/64"), (&h2, "fd00::2/64")] {
        h.sh("c", &format!("ip -6 addr add {a} dev eth0 nodad"))?;
    }
    let ok = wait_until(Duration::from_secs(10), || {
        h1.sh_out("c", "ping -6 -c 1 -W 1 fd00::2")
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    ensure!(ok, "no IPv6 ping across the tunnel");
    assert_transfer(&h1, "c", &mut h2, "c", "fd00::2", 4 << 20)?;
    assert_transfer(&h2, "c", &mut h1, "c", "fd00::1", 4 << 20)?;
    // TCP with a destination options header (IPV6_DSTOPTS on the socket): every
    // super-frame has an extension header between IPv6 and TCP that segmentation must
    // walk (it used to refuse such frames, and the connection stalled).
    let recv = r#"
import socket, hashlib
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("fd00::2", 7002))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(30)
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest())
"#;
    h2.spawn("c", "python3", &["-c", recv], "dstopts.out")?;
    ensure!(
        h2.wait_listening("c", Proto::Tcp, 7002),
        "TCP receiver did not start"
    );
    let send = r#"
import socket, hashlib, os
data = os.urandom(4 << 20)
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
s.settimeout(20)
s.connect(("fd00::2", 7002))
s.sendall(data)
s.close()
print(len(data), hashlib.sha256(data).hexdigest())
"#;
    let sent = h1.sh_out("c", &format!("timeout 30 python3 -c '{send}'"))?;
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    ensure!(!sent.is_empty(), "TCP sender with IPV6_DSTOPTS failed");
    let done = wait_until(Duration::from_secs(20), || {
        !h2.read_log("dstopts.out").trim().is_empty()
    });
    let got = h2.read_log("dstopts.out");
    ensure!(
        done && got.trim() == sent,
        "TCP with an IPv6 destination options header: received '{}', sent '{sent}'; h1 stats: {}",
        got.trim(),
        h1.ctl_ok(&["stats", "vx0"]).unwrap_or_default()
    );
    // UDP GSO: 20 sends of 12 000 bytes cut by the sender's stack into 1200-byte
    // datagrams (one super-frame each on the veth); the receiver counts datagrams and
    // checks every byte.
    let recv = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd00::2", 7001))
s.settimeout(5)
want = bytes((i * 7 + 3) % 251 for i in range(1200))
n = bad = 0
try:
    while n < 200:
        d = s.recv(2000)
        n += 1
        bad += d != want
except socket.timeout:
    pass
print(n, bad)
"#;
    h2.spawn("c", "python3", &["-c", recv], "udp-gso.out")?;
    ensure!(
        h2.wait_listening("c", Proto::Udp, 7001),
        "UDP receiver did not start"
    );
    let send = r#"
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1200)  # UDP_SEGMENT
chunk = bytes((i * 7 + 3) % 251 for i in range(1200))
for _ in range(20):
    s.sendto(chunk * 10, ("fd00::2", 7001))
    time.sleep(0.02)
"#;
    h1.sh("c", &format!("python3 -c '{send}'"))?;
    let done = wait_until(Duration::from_secs(10), || {
        !h2.read_log("udp-gso.out").trim().is_empty()
    });
    ensure!(done, "UDP receiver did not report");
    let out = h2.read_log("udp-gso.out");
    ensure!(
        out.trim() == "200 0",
        "UDP GSO across the tunnel: got '{}' (datagrams, corrupt), want '200 0'; h1 stats: {}",
        out.trim(),
        h1.ctl_ok(&["stats", "vx0"]).unwrap_or_default()
    );
    Ok(())
}

/// TX and RX packets of `ifname` in namespace `ns` of `h`.
fn link_packets(h: &Lab, ns: &str, ifname: &str) -> Result<(u64, u64)> {
    let out = h.sh(ns, &format!("ip -j -s link show {ifname}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v[0]["stats64"];
    Ok((
        s["tx"]["packets"].as_u64().context("tx")?,
        s["rx"]["packets"].as_u64().context("rx")?,
    ))
}

/// `stats PORT` of `h` as JSON (its first row).
fn port_stats(h: &Lab, port: &str) -> Result<serde_json::Value> {
    let v = h.ctl_json(&["stats", port])?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("no stats for {port}"))
}

fn num(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// Quiet links on host `h`: only what the switch forwards reaches its container (the
/// switch namespace's kernel would send IPv6 on vc, straight to the container).
fn quiet_ipv6(h: &Lab) -> Result<()> {
    for (ns, dev) in [("c", "eth0"), ("sw", "vc")] {
        h.sh(
            ns,
            &format!(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.{dev}.disable_ipv6=1"
            ),
        )?;
    }
    Ok(())
}

/// `h1`'s container pings 10.0.0.2 (`h2`'s) `n` times, every one answered, and each
/// container receives exactly what the other sent (nothing twice, nothing lost).
fn pings_arrive_once(h1: &Lab, h2: &Lab, n: usize) -> Result<()> {
    let c1 = link_packets(h1, "c", "eth0")?;
    let c2 = link_packets(h2, "c", "eth0")?;
    h1.assert_pings("c", "10.0.0.2", n)?;
    let c1a = link_packets(h1, "c", "eth0")?;
    let c2a = link_packets(h2, "c", "eth0")?;
    ensure!(
        c2a.1 - c2.1 == c1a.0 - c1.0 && c1a.1 - c1.1 == c2a.0 - c2.0,
        "c1 sent {} received {}, c2 sent {} received {}",
        c1a.0 - c1.0,
        c1a.1 - c1.1,
        c2a.0 - c2.0,
        c2a.1 - c2.1
    );
    Ok(())
}

/// iperf3 from `h1`'s container to `h2`'s (10.0.0.2), mostly through `h1`'s fast path
/// (more than 100 frames counted on its port vc), then 8 MiB each way intact (back to
/// `back_to`, h1's container).
fn tcp_through_the_fast_path(h1: &mut Lab, h2: &mut Lab, back_to: &str) -> Result<()> {
    let before = num(&port_stats(h1, "vc")?, "fastpath_rx_packets");
    h2.iperf_server("c", "10.0.0.2")?;
    let bytes = h1.iperf_bytes("c", "10.0.0.2")?;
    ensure!(
        bytes > 1_000_000,
        "TCP across the tunnel moved {bytes} bytes"
    );
    let fast = num(&port_stats(h1, "vc")?, "fastpath_rx_packets") - before;
    ensure!(
        fast > 100,
        "only {fast} frames of the TCP test took the fast path"
    );
    assert_transfer(h1, "c", h2, "c", "10.0.0.2", 8 << 20)?;
    assert_transfer(h2, "c", h1, "c", back_to, 8 << 20)?;
    Ok(())
}

/// The fast-path entry of `h` from `in_port` to `out_port`, once cached.
fn wait_tunnel_entry(h: &Lab, in_port: &str, out_port: &str) -> Result<serde_json::Value> {
    let find = || -> Option<serde_json::Value> {
        let v = h.ctl_json(&["fastpath-show", "br0"]).ok()?;
        v["entries"]
            .as_array()?
            .iter()
            .find(|e| e["in_port"] == in_port && e["out_port"] == out_port)
            .cloned()
    };
    let ok = wait_until(Duration::from_secs(5), || find().is_some());
    ensure!(
        ok,
        "no fast-path entry {in_port} -> {out_port}: {}\nlog:\n{}",
        h.ctl_ok(&["fastpath-show", "br0"]).unwrap_or_default(),
        h.log_tail(15)
    );
    find().context("entry vanished")
}

/// Both hosts with the fast path: the external device owns UDP 4789, the learned flows
/// (container → remote VTEP and back) are cached and carried by the kernel, every
/// frame arrives once (each container receives exactly what the other sent), the
/// remote MAC stays learned behind its VTEP, and TCP crosses intact.
fn fast_path_tunnel_flows_skip_vswitchd() -> Result<()> {
    let on = ["--fastpath", "on"];
    let (mut h1, mut h2) = tunnel_pair_with(&on, &on)?;
    for h in [&h1, &h2] {
        quiet_ipv6(h)?;
        let dev = h.sh("sw", "ip -d link show vsvx4789")?;
        ensure!(
            dev.contains("vxlan external"),
            "no external VXLAN device: {dev}"
        );
    }
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "no ping across the tunnel; h1 log:\n{}",
        h1.log_tail(15)
    );
    wait_tunnel_entry(&h1, "vc", "vx0@192.0.2.2")?;
    wait_tunnel_entry(&h1, "vx0@192.0.2.2", "vc")?;
    wait_tunnel_entry(&h2, "vc", "vx0@192.0.2.1")?;
    wait_tunnel_entry(&h2, "vx0@192.0.2.1", "vc")?;
    let (v1, r2) = (port_stats(&h1, "vc")?, port_stats(&h2, "vx0")?);
    pings_arrive_once(&h1, &h2, 20)?;
    let (v1a, r2a) = (port_stats(&h1, "vc")?, port_stats(&h2, "vx0")?);
    let enc = num(&v1a, "fastpath_rx_packets") - num(&v1, "fastpath_rx_packets");
    let dec = num(&r2a, "fastpath_rx_packets") - num(&r2, "fastpath_rx_packets");
    ensure!(
        enc >= 20 && dec >= 20,
        "fast path: {enc} frames encapsulated on h1, {dec} decapsulated on h2 (want >= 20)"
    );
    // fastpath-show: the tunnel entries with hits.
    let e = wait_tunnel_entry(&h2, "vx0@192.0.2.1", "vc")?;
    ensure!(num(&e, "packets") >= 20, "{e}");
    let show = h1.ctl_ok(&["fastpath-show", "br0"])?;
    ensure!(show.contains("vx0@192.0.2.2"), "{show}");
    eprintln!("h1$ vswitchctl fastpath-show br0\n{show}");
    // The remote MAC is still learned behind its VTEP.
    let mac2 = h2.mac("c", "eth0")?;
    let fdb = h1.ctl_json(&["fdb-show", "br0"])?;
    let fe = fdb
        .as_array()
        .and_then(|a| a.iter().find(|e| e["mac"] == mac2.as_str()))
        .context("remote MAC not learned")?;
    ensure!(fe["port"] == "vx0@192.0.2.2", "{fe}");
    // TCP through the kernel both ways, every byte intact.
    tcp_through_the_fast_path(&mut h1, &mut h2, "10.0.0.1")
}

/// h1 with the fast path, h2 without (its own socket on 4789): standard VXLAN both
/// ways, so they talk; h1's kernel carries its side of the learned flows.
fn fast_path_host_and_userspace_host_interoperate() -> Result<()> {
    let (h1, mut h2) = tunnel_pair_with(&["--fastpath", "on"], &["--fastpath", "off"])?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "no ping across the tunnel; h1 log:\n{}",
        h1.log_tail(15)
    );
    h1.assert_pings("c", "10.0.0.2", 5)?;
    h2.assert_ping("c", "10.0.0.1")?;
    wait_tunnel_entry(&h1, "vc", "vx0@192.0.2.2")?;
    wait_tunnel_entry(&h1, "vx0@192.0.2.2", "vc")?;
    h1.assert_pings("c", "10.0.0.2", 10)?;
    assert_transfer(&h1, "c", &mut h2, "c", "10.0.0.2", 8 << 20)?;
    let mut h1 = h1;
    assert_transfer(&h2, "c", &mut h1, "c", "10.0.0.1", 8 << 20)?;
    let show = h2.ctl_ok(&["show"])?;
    ensure!(show.contains("fastpath off"), "{show}");
    Ok(())
}

/// del-port of a fast-path vxlan port removes the kernel device and the TAP, and the
/// port can come back (the UDP port is free again).
fn fast_path_vxlan_del_port_cleans_up() -> Result<()> {
    let on = ["--fastpath", "on"];
    let (mut h1, _h2) = tunnel_pair_with(&on, &on)?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping across the tunnel");
    h1.ctl_ok(&["del-port", "br0", "vx0"])?;
    let gone = wait_until(Duration::from_secs(5), || {
        h1.sh("sw", "ip -br link show")
            .is_ok_and(|l| !l.contains("vsvx4789"))
    });
    ensure!(gone, "{}", h1.sh("sw", "ip -br link show")?);
    h1.assert_no_ping("c", "10.0.0.2")?;
    vxlan_port(&h1, "192.0.2.2")?;
    // A second vxlan port on the same UDP port, even from another local address, is
    // refused (the configuration check; port/vxlan.rs also never takes a device it
    // owns for a stale one), and the first one keeps working.
    h1.sh("sw", "ip addr add 192.0.2.11/24 dev u0")?;
    let r = h1.ctl(&[
        "add-port",
        "br0",
        "vx1",
        "--type",
        "vxlan",
        "--remote-ip",
        "192.0.2.3",
        "--vni",
        "43",
        "--local-ip",
        "192.0.2.11",
    ])?;
    ensure!(r.code != 0, "second vxlan port on 4789 accepted");
    ensure!(
        r.stderr.contains("already uses UDP port 4789"),
        "{}",
        r.stderr
    );
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "no ping after the port came back; log:\n{}",
        h1.log_tail(15)
    );
    // A clean exit (SIGTERM, within the Lab's 10 s) takes the device with it.
    let t = std::time::Instant::now();
    let code = h1.stop_switch()?;
    ensure!(code == 0, "vswitchd exited {code}");
    eprintln!("stop took {:?}", t.elapsed());
    let links = h1.sh("sw", "ip -br link show")?;
    ensure!(!links.contains("vsvx4789"), "left after exit: {links}");
    Ok(())
}

/// vswitchd killed with SIGKILL leaves its VXLAN device behind (the TAP goes with the
/// process); the next vswitchd replaces it and the tunnel works again, through the
/// kernel.
fn fast_path_vxlan_survives_kill_and_restart() -> Result<()> {
    let on = ["--fastpath", "on"];
    let (mut h1, _h2) = tunnel_pair_with(&on, &on)?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping across the tunnel");
    h1.kill_switch()?;
    let left = h1.sh("sw", "ip -br link show")?;
    ensure!(
        left.contains("vsvx4789 "),
        "device gone with the process? {left}"
    );
    h1.start_switch_with("sw", &on)?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(ok, "no ping after the restart; log:\n{}", h1.log_tail(15));
    let links = h1.sh("sw", "ip -br link show")?;
    ensure!(
        links.matches("vsvx4789 ").count() == 1 && links.matches("vsvx4789u ").count() == 1,
        "{links}"
    );
    wait_tunnel_entry(&h1, "vc", "vx0@192.0.2.2")?;
    wait_tunnel_entry(&h1, "vx0@192.0.2.2", "vc")?;
    h1.assert_pings("c", "10.0.0.2", 5)?;
    Ok(())
}

/// h1 routes between br1 (its container, 10.1.0.5) and br0 (10.0.0.0/24, gateway
/// 10.0.0.254), whose only port is the tunnel to h2; h2's container (10.0.0.2) uses
/// h1's gateway across the tunnel. With the fast path on both, the routed flow is
/// cached both ways on h1 (into the tunnel: routed, then encapsulated; out of it:
/// decapsulated, then routed), every frame arrives once, and TCP crosses intact.
fn fast_path_routes_into_and_out_of_the_tunnel() -> Result<()> {
    let on = ["--fastpath", "on"];
    let mut h1 = Lab::new()?;
    h1.start_switch_with("sw", &on)?;
    for (br, net, gw) in [
        ("br0", "10.0.0.0/24", "10.0.0.254"),
        ("br1", "10.1.0.0/24", "10.1.0.1"),
    ] {
        h1.ctl_ok(&["add-br", br, "--subnet", net, "--gateway", gw])?;
    }
    h1.container("sw", "c", "vc", "10.1.0.5/24", Some("10.1.0.1"))?;
    h1.ctl_ok(&["add-port", "br1", "vc"])?;
    let mut h2 = host_with("10.0.0.2/24", &on)?;
    h2.sh("c", "ip route add default via 10.0.0.254")?;
    underlay(&h1, "192.0.2.1/24", &h2.ns("sw"), "192.0.2.2/24")?;
    vxlan_port(&h1, "192.0.2.2")?;
    vxlan_port(&h2, "192.0.2.1")?;
    quiet_ipv6(&h1)?;
    quiet_ipv6(&h2)?;
    let ok = wait_until(Duration::from_secs(10), || h1.ping_once("c", "10.0.0.2"));
    ensure!(
        ok,
        "no routed ping across the tunnel; h1 log:\n{}",
        h1.log_tail(15)
    );
    let entry = |in_port: &str, out_port: &str| -> Result<serde_json::Value> {
        let find = || -> Option<serde_json::Value> {
            let v = h1.ctl_json(&["fastpath-show"]).ok()?;
            v["entries"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["in_port"] == in_port && e["out_port"] == out_port && e["route"].is_object()
                })
                .cloned()
        };
        let ok = wait_until(Duration::from_secs(5), || {
            h1.ping_once("c", "10.0.0.2") && find().is_some()
        });
        ensure!(
            ok,
            "no routed fast-path entry {in_port} -> {out_port}: {}\nlog:\n{}",
            h1.ctl_ok(&["fastpath-show"]).unwrap_or_default(),
            h1.log_tail(15)
        );
        find().context("entry vanished")
    };
    entry("vc", "vx0@192.0.2.2")?;
    entry("vx0@192.0.2.2", "vc")?;
    let (v1, t1) = (port_stats(&h1, "vc")?, port_stats(&h1, "vx0")?);
    pings_arrive_once(&h1, &h2, 20)?;
    let (v1a, t1a) = (port_stats(&h1, "vc")?, port_stats(&h1, "vx0")?);
    let enc = num(&v1a, "fastpath_rx_packets") - num(&v1, "fastpath_rx_packets");
    let dec = num(&t1a, "fastpath_rx_packets") - num(&t1, "fastpath_rx_packets");
    ensure!(
        enc >= 20 && dec >= 20,
        "h1's fast path routed {enc} frames into the tunnel and {dec} out of it (want >= 20)"
    );
    let show = h1.ctl_ok(&["fastpath-show"])?;
    eprintln!("h1$ vswitchctl fastpath-show\n{show}");
    tcp_through_the_fast_path(&mut h1, &mut h2, "10.1.0.5")
}
