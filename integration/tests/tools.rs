//! The lab tools against real traffic: `trace` agrees with what the data path then
//! does to the same packets.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::time::Duration;
use vswitch_integration::{wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "trace_agrees_with_the_datapath",
            trace_agrees_with_the_datapath,
        ),
        (
            "trace_agrees_on_mac_and_vlan_drops",
            trace_agrees_on_mac_and_vlan_drops,
        ),
        ("trace_agrees_on_frame_drops", trace_agrees_on_frame_drops),
        ("trace_errors", trace_errors),
        ("capture_pings_with_tcpdump", capture_pings_with_tcpdump),
        ("capture_drops_with_reason", capture_drops_with_reason),
        (
            "capture_slow_reader_loses_frames",
            capture_slow_reader_loses_frames,
        ),
        ("capture_errors", capture_errors),
        (
            "impair_delay_loss_corrupt_down",
            impair_delay_loss_corrupt_down,
        ),
        ("impair_rate_limits_iperf3", impair_rate_limits_iperf3),
        ("impair_figures_as_measured", impair_figures_as_measured),
        ("impair_errors", impair_errors),
        (
            "mirror_copies_to_the_output_port",
            mirror_copies_to_the_output_port,
        ),
    ])
}

/// br1 10.0.0.0/24 (gw .1) with c1 10.0.0.5 (v1) and c2 10.0.0.6 (v2, locked to its
/// MAC and address); br2 10.1.0.0/24 (gw .1, isolated) with c3 10.1.0.5 (v3); wan
/// 198.51.100.0/24 (gw .2) with the outside host `out` .1 (vo); br1 masqueraded
/// behind wan.
fn tools_lab() -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.masquerade_lab("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br2",
        "--subnet",
        "10.1.0.0/24",
        "--gateway",
        "10.1.0.1",
        "--isolated",
    ])?;
    lab.container("sw", "c2", "v2", "10.0.0.6/24", Some("10.0.0.1"))?;
    lab.container("sw", "c3", "v3", "10.1.0.5/24", Some("10.1.0.1"))?;
    let mac2 = lab.mac("c2", "eth0")?;
    lab.ctl_ok(&[
        "add-port",
        "br1",
        "v2",
        "--lock-mac",
        &mac2,
        "--lock-ip",
        "10.0.0.6",
    ])?;
    lab.ctl_ok(&["add-port", "br2", "v3"])?;
    Ok(lab)
}

fn trace(lab: &Lab, br: &str, port: &str, flow: &str) -> Result<Value> {
    lab.ctl_json(&["trace", br, port, flow])
}

/// `verdict` and the output ports (or the drop reason / punt) of a trace.
fn decision(t: &Value) -> String {
    let ports: Vec<&str> = t["outputs"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["port"].as_str()).collect())
        .unwrap_or_default();
    match t["verdict"].as_str().unwrap_or("?") {
        "drop" => format!("drop {}", t["drop_reason"].as_str().unwrap_or("?")),
        "router" => format!("router {}", t["punt"].as_str().unwrap_or("?")),
        v => format!("{v} {}", ports.join(",")),
    }
}

fn stage_text(t: &Value) -> String {
    t["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s["stage"].as_str().unwrap_or(""),
                        s["text"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A port's counter (`tx_packets`, …) or drop count by reason.
fn counter(lab: &Lab, port: &str, what: &str) -> Result<u64> {
    let v = lab.ctl_json(&["stats", port])?;
    let s = &v[0];
    Ok(s[what]
        .as_u64()
        .or_else(|| s["drops"][what].as_u64())
        .unwrap_or(0))
}

fn trace_agrees_with_the_datapath() -> Result<()> {
    let lab = tools_lab()?;
    let mac1 = lab.mac("c1", "eth0")?;
    let mac2 = lab.mac("c2", "eth0")?;

    // An unknown destination is flooded (to v2 only: the other ports are on other
    // bridges), and the trace learns nothing.
    let t = trace(
        &lab,
        "br1",
        "v1",
        "dl_src=02:00:00:00:00:42,dl_dst=02:00:00:00:00:43,icmp,nw_src=10.0.0.5,nw_dst=10.0.0.6",
    )?;
    ensure!(
        decision(&t) == "flood v2",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    let fdb = lab.ctl_ok(&["fdb-show", "br1"])?;
    ensure!(!fdb.contains("02:00:00:00:00:42"), "a trace learned: {fdb}");
    let flow = format!("dl_src={mac1},dl_dst={mac2},icmp,nw_src=10.0.0.5,nw_dst=10.0.0.6");

    // Both learned: the same flow goes to v2 alone, and so do the real pings.
    lab.assert_ping("c1", "10.0.0.6")?;
    let t = trace(&lab, "br1", "v1", &flow)?;
    ensure!(
        decision(&t) == "output v2",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    let before = counter(&lab, "v2", "tx_packets")?;
    lab.assert_pings("c1", "10.0.0.6", 5)?;
    ensure!(
        counter(&lab, "v2", "tx_packets")? >= before + 5,
        "pings did not leave by v2"
    );
    // With the kernel fast path, the pings installed the flow: the trace says so.
    let fp = lab.ctl_json(&["fastpath-show"])?;
    let t = trace(&lab, "br1", "v1", &flow)?;
    let s = stage_text(&t);
    if fp["mode"] == "on" {
        ensure!(
            s.contains("fastpath: offloaded: the kernel fast path carries this flow"),
            "after 5 pings:\n{s}\n{fp}"
        );
    } else {
        ensure!(!s.contains("fastpath:"), "{s}");
        eprintln!("note: kernel fast path off here; the offload stage is not tested");
    }

    // Routed and masqueraded to the outside host (its MAC is known once c1 pinged it).
    lab.assert_ping("c1", "198.51.100.1")?;
    let t = trace(&lab, "br1", "v1", "icmp,nw_dst=198.51.100.1")?;
    ensure!(
        decision(&t) == "output vo",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    let s = stage_text(&t);
    ensure!(
        s.contains(&format!(
            "dl_dst={} (the router's MAC",
            router_mac(&lab, "br1")?
        )),
        "the guest would send to its gateway:\n{s}"
    );
    ensure!(s.contains("masquerade: new connection icmp 10.0.0.5:1 → 198.51.100.1:0 becomes icmp 198.51.100.2:"), "{s}");
    ensure!(
        t["out_flow"]
            .as_str()
            .is_some_and(|f| f.contains("nw_src=198.51.100.2") && f.contains("nw_ttl=63")),
        "out flow: {}",
        t["out_flow"]
    );
    let before = counter(&lab, "vo", "tx_packets")?;
    lab.assert_pings("c1", "198.51.100.1", 3)?;
    ensure!(counter(&lab, "vo", "tx_packets")? >= before + 3);

    // TTL 1 towards another subnet: the router answers time exceeded, in the trace and
    // for ping.
    let t = trace(&lab, "br1", "v1", "icmp,nw_dst=198.51.100.1,nw_ttl=1")?;
    ensure!(decision(&t) == "router ttl_exceeded", "{}", decision(&t));
    let o = lab.sh_out("c1", "ping -c 1 -W 2 -t 1 198.51.100.1")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(text.contains("Time to live exceeded"), "ping -t 1: {text}");

    // Isolation: br2 reaches no other bridge.
    lab.assert_ping("c3", "10.1.0.1")?;
    let t = trace(&lab, "br2", "v3", "icmp,nw_dst=10.0.0.5")?;
    ensure!(
        decision(&t) == "drop isolated",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    let before = counter(&lab, "v3", "isolated")?;
    lab.assert_no_ping("c3", "10.0.0.5")?;
    ensure!(
        counter(&lab, "v3", "isolated")? > before,
        "no isolated drop counted"
    );

    // Port security: v2 may send only from 10.0.0.6.
    let t = trace(&lab, "br1", "v2", "icmp,nw_src=10.0.0.99,nw_dst=10.0.0.1")?;
    ensure!(
        decision(&t) == "drop spoofed_ip",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    ensure!(stage_text(&t).contains(&format!("dl_src={mac2} (the port's locked MAC)")));
    lab.sh("c2", "ip addr add 10.0.0.99/24 dev eth0")?;
    let before = counter(&lab, "v2", "spoofed_ip")?;
    let o = lab.sh_out("c2", "ping -c 2 -i 0.3 -W 1 -I 10.0.0.99 10.0.0.1")?;
    ensure!(!o.status.success(), "a spoofed address got through");
    ensure!(
        counter(&lab, "v2", "spoofed_ip")? > before,
        "no spoofed_ip drop counted"
    );

    // A hex frame: the gateway's ARP request from c1, punted to the router and flooded.
    let t = trace(&lab, "br1", "v1", "arp,nw_src=10.0.0.5,nw_dst=10.0.0.1")?;
    ensure!(t["punt"] == "local" && t["verdict"] == "flood", "{t}");
    let hex = t["frame"].as_str().context("frame hex")?.to_string();
    let again = trace(&lab, "br1", "v1", &hex)?;
    ensure!(
        decision(&again) == decision(&t),
        "hex: {}",
        decision(&again)
    );

    // The human form ends in the decision.
    let out = lab.ctl_ok(&["trace", "br2", "v3", "icmp,nw_dst=10.0.0.5"])?;
    ensure!(out.trim_end().ends_with("Final: drop (isolated)"), "{out}");
    Ok(())
}

/// Two more drop reasons, traced and then done for real: a frame from another MAC
/// on a port locked to its guest's MAC (`spoofed_mac`), and a tagged frame on an
/// access port (`vlan_filtered`, sent by scripts/vlan_arp.py). The trace's verdict and the counter that moves agree.
fn trace_agrees_on_mac_and_vlan_drops() -> Result<()> {
    let lab = tools_lab()?;
    lab.assert_ping("c2", "10.0.0.1")?;
    let t = trace(
        &lab,
        "br1",
        "v2",
        "dl_src=02:00:00:00:00:99,icmp,nw_src=10.0.0.6,nw_dst=10.0.0.1",
    )?;
    ensure!(
        decision(&t) == "drop spoofed_mac",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    let mac2 = lab.mac("c2", "eth0")?;
    let before = counter(&lab, "v2", "spoofed_mac")?;
    lab.sh("c2", "ip link set eth0 address 02:00:00:00:00:99")?;
    let o = lab.sh_out("c2", "ping -c 2 -i 0.3 -W 1 10.0.0.1")?;
    ensure!(!o.status.success(), "a spoofed MAC got through");
    let after = counter(&lab, "v2", "spoofed_mac")?;
    ensure!(
        after > before,
        "no spoofed_mac drop counted ({before} -> {after})"
    );
    lab.sh("c2", &format!("ip link set eth0 address {mac2}"))?;
    lab.assert_ping("c2", "10.0.0.1")?;

    // c4 on an access port of VLAN 10 sends tagged VLAN 20 frames from eth0.20.
    let mut lab = lab;
    lab.container("sw", "c4", "v4", "10.0.0.7/24", None)?;
    lab.ctl_ok(&["add-port", "br1", "v4", "--tag", "10"])?;
    let t = trace(
        &lab,
        "br1",
        "v4",
        "dl_src=02:00:00:00:00:44,dl_vlan=20,arp,nw_src=10.20.0.4,nw_dst=10.20.0.1",
    )?;
    ensure!(
        decision(&t) == "drop vlan_filtered",
        "{}\n{}",
        decision(&t),
        stage_text(&t)
    );
    // This kernel may lack 8021q: the tagged sender is an AF_PACKET script (as in
    // l2.rs), which gets no answer.
    let before = counter(&lab, "v4", "vlan_filtered")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vlan_arp.py");
    let o = lab.sh_out(
        "c4",
        &format!("python3 {script} eth0 20 10.20.0.4 10.20.0.1"),
    )?;
    ensure!(!o.status.success(), "a tagged frame crossed an access port");
    let after = counter(&lab, "v4", "vlan_filtered")?;
    ensure!(
        after > before,
        "no vlan_filtered drop counted ({before} -> {after})"
    );
    Ok(())
}

/// An Ethernet + IPv4 (UDP to port 9, checksummed header, DF as given) frame of
/// `total` IP bytes, as hex.
fn ipv4_frame_hex(
    dst: &str,
    src: &str,
    ip_src: [u8; 4],
    ip_dst: [u8; 4],
    total: usize,
    df: bool,
) -> Result<String> {
    let mac = |m: &str| -> Result<Vec<u8>> {
        m.split(':')
            .map(|b| u8::from_str_radix(b, 16).context("MAC"))
            .collect()
    };
    let mut f = mac(dst)?;
    f.extend(mac(src)?);
    f.extend([0x08, 0x00]);
    let mut ip = vec![0u8; total];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ip_src);
    ip[16..20].copy_from_slice(&ip_dst);
    let mut sum: u32 = ip[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&9u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    f.extend(ip);
    Ok(f.iter().map(|b| format!("{b:02x}")).collect())
}

/// The frame-level drop reasons, each traced as a hex frame and then that very frame
/// sent from c1 (AF_PACKET, scripts/send_frame.py): the trace names the reason and
/// exactly that drop counter of v1 moves by the frames sent. `bad_source` (a multicast
/// source MAC), `same_segment` (to a MAC learned on the ingress port), `not_routable`
/// (to the router's MAC for a multicast address), `too_big` (routed to a bridge with a
/// smaller MTU, DF clear), `malformed` (to the router's MAC, an IPv4 header cut short
/// after 4 bytes).
fn trace_agrees_on_frame_drops() -> Result<()> {
    let lab = tools_lab()?;
    lab.ctl_ok(&[
        "add-br",
        "br3",
        "--subnet",
        "10.3.0.0/24",
        "--gateway",
        "10.3.0.1",
        "--mtu",
        "1280",
    ])?;
    let mac1 = lab.mac("c1", "eth0")?;
    let rmac = router_mac(&lab, "br1")?;
    lab.assert_ping("c1", "10.0.0.1")?;
    let c1 = [10, 0, 0, 5];
    let cases = [
        (
            "bad_source",
            ipv4_frame_hex(
                "02:00:00:00:00:43",
                "01:00:5e:00:00:01",
                c1,
                [10, 0, 0, 6],
                60,
                false,
            )?,
        ),
        (
            "same_segment",
            ipv4_frame_hex(&mac1, "02:00:00:00:00:42", c1, [10, 0, 0, 5], 60, false)?,
        ),
        (
            "not_routable",
            ipv4_frame_hex(&rmac, &mac1, c1, [224, 1, 2, 3], 60, false)?,
        ),
        (
            "too_big",
            ipv4_frame_hex(&rmac, &mac1, c1, [10, 3, 0, 9], 1400, false)?,
        ),
        (
            "malformed",
            format!(
                "{}{}080045000014",
                rmac.replace(':', ""),
                mac1.replace(':', "")
            ),
        ),
    ];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/send_frame.py");
    for (reason, hex) in cases {
        let t = trace(&lab, "br1", "v1", &hex)?;
        ensure!(
            decision(&t) == format!("drop {reason}"),
            "{reason}: trace says {}\n{}",
            decision(&t),
            stage_text(&t)
        );
        let before = counter(&lab, "v1", reason)?;
        lab.sh("c1", &format!("python3 {script} eth0 {hex} 5"))?;
        let moved = wait_until(Duration::from_secs(5), || {
            counter(&lab, "v1", reason).is_ok_and(|n| n >= before + 5)
        });
        ensure!(
            moved,
            "{reason}: the datapath did not drop the 5 frames as {reason} ({before} -> {})",
            counter(&lab, "v1", reason)?
        );
    }
    Ok(())
}

fn router_mac(lab: &Lab, br: &str) -> Result<String> {
    // The gateway's MAC as c1's ARP cache has it.
    let ns = if br == "br1" {
        "c1"
    } else {
        bail!("no container on {br}")
    };
    lab.sh(ns, "ping -c 1 -W 1 10.0.0.1 >/dev/null")?;
    let v: Value = serde_json::from_str(&lab.sh(ns, "ip -j neigh show 10.0.0.1")?)?;
    v[0]["lladdr"]
        .as_str()
        .map(str::to_string)
        .context("gateway not in the ARP cache")
}

fn trace_errors() -> Result<()> {
    let lab = tools_lab()?;
    for (args, want) in [
        (&["trace", "br9", "v1", "ip"][..], "no such bridge: br9"),
        (&["trace", "br1", "v9", "ip"], "no such port: v9"),
        (
            &["trace", "br1", "v1", "nw_dst=10.0.0"],
            "bad nw_dst \"10.0.0\"",
        ),
        (
            &["trace", "br1", "v1", "frob=1"],
            "unknown flow field \"frob\"",
        ),
        (
            &["trace", "br1", "v1", "in_port=v2,ip"],
            "in_port=v2 in the flow",
        ),
    ] {
        let o = lab.ctl(args)?;
        ensure!(o.code == 1, "{args:?}: exit {}", o.code);
        let lines: Vec<&str> = o.stderr.lines().collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(want),
            "{args:?}: {:?}",
            o.stderr
        );
    }
    let o = lab.ctl(&["trace", "br1"])?;
    ensure!(o.code == 2 && o.stderr.lines().count() == 1, "{o:?}");
    Ok(())
}

/// `sh` words, single-quoted.
fn quote(args: &[&str]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Start `vswitchctl capture ARGS | THEN` in the background (bounded by `timeout`),
/// and wait until vswitchd has the capture running (vswitchctl says so on stderr,
/// into `log`).
fn capture_bg(lab: &mut Lab, args: &[&str], then: &str, log: &str) -> Result<u32> {
    let ctl = vswitch_integration::bin("vswitchctl")?;
    let sock = lab.socket();
    let script = format!(
        "timeout -s INT 30 {} --socket {} capture {} 2>{}/{log}.err {then}",
        ctl.display(),
        sock.display(),
        quote(args),
        lab.dir().display()
    );
    let pid = lab.spawn("sw", "sh", &["-c", &script], log)?;
    let err = lab.dir().join(format!("{log}.err"));
    if !wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&err).is_ok_and(|t| t.contains("capturing on"))
    }) {
        bail!(
            "capture did not start: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    }
    Ok(pid)
}

/// Wait (bounded) for a background capture to end; its stderr.
fn capture_done(lab: &mut Lab, pid: u32, log: &str, secs: u64) -> Result<String> {
    let ended = wait_until(Duration::from_secs(secs), || !lab.is_running(pid));
    let err = std::fs::read_to_string(lab.dir().join(format!("{log}.err"))).unwrap_or_default();
    if !ended {
        lab.stop_spawned(pid);
        bail!("capture did not end within {secs} s: {err}");
    }
    lab.stop_spawned(pid);
    Ok(err)
}

/// Lines of `text` that contain every one of `words`.
fn count_lines(text: &str, words: &[&str]) -> usize {
    text.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

fn capture_pings_with_tcpdump() -> Result<()> {
    let mut lab = tools_lab()?;
    // Addresses learned and resolved first, so that the pings below are all there is.
    lab.assert_ping("c1", "10.0.0.6")?;
    lab.assert_ping("c1", "10.0.0.1")?;
    // With the kernel fast path, c1 <-> c2 is now carried in the kernel: a capture must
    // take the flow back to userspace to see it.
    let fp = lab.ctl_json(&["fastpath-show"])?;
    if fp["mode"] == "on" {
        let n = fp["entries"].as_array().map_or(0, Vec::len);
        ensure!(
            n > 0,
            "the fast path carries nothing before the capture: {fp}"
        );
    } else {
        eprintln!("note: kernel fast path off here; captures tested on the userspace path");
    }

    // A port, both directions, piped into tcpdump.
    let out = lab.dir().join("port.txt");
    let pid = capture_bg(
        &mut lab,
        &["v2", "--filter", "icmp", "-c", "6", "-w", "-"],
        &format!("| tcpdump -n -r - >{} 2>&1", out.display()),
        "cap-port",
    )?;
    lab.assert_pings("c1", "10.0.0.6", 3)?;
    let err = capture_done(&mut lab, pid, "cap-port", 20)?;
    let text = std::fs::read_to_string(&out)?;
    let req = count_lines(&text, &["10.0.0.5 > 10.0.0.6: ICMP echo request"]);
    let rep = count_lines(&text, &["10.0.0.6 > 10.0.0.5: ICMP echo reply"]);
    ensure!(
        req == 3 && rep == 3,
        "tcpdump read:\n{text}\nvswitchctl: {err}"
    );
    ensure!(err.contains("6 frames captured, 0 lost"), "{err}");

    // A bridge, filtered to one host: the pings to the gateway sent first are not
    // captured, nor ARP; each ping to c2 is seen four times (in at v1, out at v2, the
    // reply in at v2, out at v1). The file is read back by tshark with its port names.
    let file = lab.dir().join("br1.pcapng");
    let pid = capture_bg(
        &mut lab,
        &[
            "br1",
            "--filter",
            "icmp and host 10.0.0.6",
            "-c",
            "8",
            "-w",
            file.to_str().context("path")?,
        ],
        "",
        "cap-br",
    )?;
    lab.assert_pings("c1", "10.0.0.1", 3)?;
    lab.assert_pings("c1", "10.0.0.6", 2)?;
    capture_done(&mut lab, pid, "cap-br", 20)?;
    let text = lab.sh(
        "sw",
        &format!(
            "tshark -r {} -T fields -e frame.interface_name -e frame.comment -e ip.src -e ip.dst -e icmp.type 2>/dev/null",
            file.display()
        ),
    )?;
    ensure!(
        !text.contains("10.0.0.1\t") && text.lines().count() == 8,
        "filtered capture of br1:\n{text}"
    );
    for (port, stage, src, dst, ty) in [
        ("v1", "ingress", "10.0.0.5", "10.0.0.6", "8"),
        ("v2", "egress", "10.0.0.5", "10.0.0.6", "8"),
        ("v2", "ingress", "10.0.0.6", "10.0.0.5", "0"),
        ("v1", "egress", "10.0.0.6", "10.0.0.5", "0"),
    ] {
        let line = format!("{port}\t{stage}\t{src}\t{dst}\t{ty}");
        ensure!(
            count_lines(&text, &[&line]) == 2,
            "want 2 of {line:?} in:\n{text}"
        );
    }
    Ok(())
}

fn capture_drops_with_reason() -> Result<()> {
    let mut lab = tools_lab()?;
    lab.assert_ping("c3", "10.1.0.1")?;
    let then = format!(">{}/drops.txt", lab.dir().display());
    let pid = capture_bg(
        &mut lab,
        &["br2", "--stage", "drop", "--filter", "icmp", "-c", "2"],
        &then,
        "cap-drop",
    )?;
    lab.assert_no_ping("c3", "10.0.0.5")?;
    capture_done(&mut lab, pid, "cap-drop", 20)?;
    let text = std::fs::read_to_string(lab.dir().join("drops.txt"))?;
    ensure!(
        count_lines(
            &text,
            &[
                "v3 drop: isolated",
                "10.1.0.5 > 10.0.0.5: ICMP echo request"
            ]
        ) == 2,
        "drop capture:\n{text}"
    );
    Ok(())
}

fn capture_slow_reader_loses_frames() -> Result<()> {
    let mut lab = tools_lab()?;
    lab.assert_ping("c1", "10.0.0.6")?;
    lab.iperf_server("c2", "10.0.0.6")?;
    // The reader takes nothing for 8 s; vswitchctl is told to stop (SIGINT, to it and
    // its process group: twice) at 30 s.
    let pid = capture_bg(
        &mut lab,
        &["v2", "-w", "-"],
        "| (sleep 8; cat >/dev/null)",
        "cap-slow",
    )?;
    ensure!(lab.iperf_bytes("c1", "10.0.0.6")? > 0, "no iperf3 traffic");
    // The capture is stuck on its reader; the datapath is not.
    lab.assert_pings("c1", "10.0.0.6", 5)?;
    let err = capture_done(&mut lab, pid, "cap-slow", 40)?;
    let lost = err
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" frames captured, ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .with_context(|| format!("no capture summary in {err:?}"))?;
    ensure!(lost > 0, "a stalled reader lost nothing: {err}");
    Ok(())
}

fn capture_errors() -> Result<()> {
    let lab = tools_lab()?;
    for (args, code, want) in [
        (&["capture", "nope"][..], 1, "no such port or bridge: nope"),
        (
            &["capture", "v1", "--filter", "icmp and and"],
            2,
            "bad filter \"icmp and and\"",
        ),
        (&["capture", "v1", "--stage", "middle"], 2, "unknown stage"),
        (&["capture", "v1", "-c", "0"], 2, "-c must be at least 1"),
    ] {
        let o = lab.ctl(args)?;
        ensure!(o.code == code, "{args:?}: exit {} {:?}", o.code, o.stderr);
        let lines: Vec<&str> = o.stderr.lines().collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(want),
            "{args:?}: {:?}",
            o.stderr
        );
    }
    Ok(())
}

/// `ping -c N` from `from` to `dst`, 0.2 s apart: (received, min rtt in ms) as ping
/// reports them.
fn ping_stats(lab: &Lab, from: &str, dst: &str, n: usize) -> Result<(usize, Option<f64>)> {
    let o = lab.sh_out(from, &format!("ping -n -c {n} -i 0.2 -W 2 {dst}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let s = vswitch_integration::PingSummary::parse(&text)
        .with_context(|| format!("no ping summary in {text:?}"))?;
    // rtt min/avg/max/mdev = 50.262/50.370/50.520/0.093 ms
    let min = text
        .lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg")))
        .and_then(|(_, v)| v.split('/').next()?.parse::<f64>().ok());
    Ok((s.received, min))
}

fn port_json(lab: &Lab, port: &str) -> Result<Value> {
    let show = lab.ctl_json(&["show"])?;
    show["bridges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == port)
        .with_context(|| format!("{port} not in show"))
}

fn impair_delay_loss_corrupt_down() -> Result<()> {
    let mut lab = tools_lab()?;
    lab.assert_ping("c1", "10.0.0.6")?;
    let (_, base) = ping_stats(&lab, "c1", "10.0.0.6", 3)?;
    let base = base.context("no rtt")?;
    ensure!(
        base < 50.0,
        "the lab is too slow to test a delay: {base} ms"
    );

    // 50 ms on what leaves v2 (the requests to c2): every rtt is at least 50 ms.
    let line = lab.ctl_ok(&["set-port", "v2", "--delay", "50"])?;
    ensure!(line.contains("impair delay 50ms"), "{line}");
    let (got, min) = ping_stats(&lab, "c1", "10.0.0.6", 5)?;
    ensure!(got == 5, "{got} of 5 delayed pings answered");
    let min = min.context("no rtt")?;
    ensure!(min >= 50.0, "min rtt {min} ms with 50 ms of delay");
    // The router's own replies to c2 leave by v2 too, and are delayed alike.
    let (got, gw2) = ping_stats(&lab, "c2", "10.0.0.1", 5)?;
    eprintln!("c2 -> gateway with 50 ms on v2: min rtt {gw2:?}");
    ensure!(
        got == 5 && gw2.is_some_and(|g| g >= 50.0),
        "gateway rtt from c2 {gw2:?} ({got} of 5)"
    );
    // Other ports are not delayed: the gateway answers c1 through v1.
    let (got, gw) = ping_stats(&lab, "c1", "10.0.0.1", 3)?;
    ensure!(
        got == 3 && gw.is_some_and(|g| g < 50.0),
        "gateway rtt {gw:?} while v2 is delayed"
    );
    // Shown (also by trace), and persisted across a restart.
    ensure!(port_json(&lab, "v2")?["impair"]["delay_us"] == 50_000);
    let t = lab.ctl_ok(&["trace", "br1", "v1", "icmp,nw_dst=10.0.0.6"])?;
    ensure!(t.contains("link impairment on v2: delay 50ms"), "{t}");
    lab.restart_switch()?;
    ensure!(lab.ctl_ok(&["show"])?.contains("Port v2 (system, up) lock"));
    ensure!(
        port_json(&lab, "v2")?["impair"]["delay_us"] == 50_000,
        "not persisted"
    );
    lab.assert_ping("c1", "10.0.0.6")?;
    let (_, min) = ping_stats(&lab, "c1", "10.0.0.6", 3)?;
    ensure!(
        min.is_some_and(|m| m >= 50.0),
        "after a restart: min rtt {min:?}"
    );

    // Jitter: 50±20 ms, every rtt at least 30 ms.
    lab.ctl_ok(&["set-port", "v2", "--delay", "50±20"])?;
    let (got, min) = ping_stats(&lab, "c1", "10.0.0.6", 5)?;
    ensure!(got == 5 && min.is_some_and(|m| m >= 30.0), "{got}, {min:?}");

    // 100 % loss: nothing comes back, and the drops are counted as impaired.
    let before = counter(&lab, "v2", "impaired")?;
    let line = lab.ctl_ok(&[
        "set-port", "v2", "--delay", "0", "--jitter", "0", "--loss", "100",
    ])?;
    ensure!(
        line.contains("impair loss 100%") && !line.contains("delay"),
        "{line}"
    );
    let (got, _) = ping_stats(&lab, "c1", "10.0.0.6", 5)?;
    ensure!(got == 0, "{got} pings answered with 100 % loss");
    ensure!(
        counter(&lab, "v2", "impaired")? >= before + 5,
        "impaired drops not counted"
    );

    // clear-port restores the link.
    let line = lab.ctl_ok(&["clear-port", "v2"])?;
    ensure!(!line.contains("impair"), "{line}");
    lab.assert_pings("c1", "10.0.0.6", 5)?;
    ensure!(port_json(&lab, "v2")?.get("impair").is_none());

    // Every frame corrupted (one bit each): ping's checksums catch nearly all.
    lab.ctl_ok(&["set-port", "v2", "--corrupt", "100"])?;
    let (got, _) = ping_stats(&lab, "c1", "10.0.0.6", 20)?;
    ensure!(got <= 10, "{got} of 20 corrupted pings answered");
    lab.ctl_ok(&["clear-port", "v2"])?;
    lab.assert_pings("c1", "10.0.0.6", 3)?;

    // Down: dropped, and c2 sees its carrier off; up again restores it.
    let line = lab.ctl_ok(&["set-port", "v2", "--down"])?;
    ensure!(line.contains("impair down"), "{line}");
    let link = lab.sh("c2", "ip link show eth0")?;
    ensure!(
        link.contains("NO-CARRIER"),
        "c2 still has a carrier: {link}"
    );
    lab.assert_no_ping("c1", "10.0.0.6")?;
    lab.ctl_ok(&["set-port", "v2", "--up"])?;
    lab.assert_pings("c1", "10.0.0.6", 3)?;
    let link = lab.sh("c2", "ip link show eth0")?;
    ensure!(!link.contains("NO-CARRIER"), "{link}");
    Ok(())
}

fn impair_rate_limits_iperf3() -> Result<()> {
    let mut lab = tools_lab()?;
    lab.assert_ping("c1", "10.0.0.6")?;
    lab.ctl_ok(&["set-port", "v2", "--rate", "20"])?;
    lab.iperf_server("c2", "10.0.0.6")?;
    let out = lab.sh("c1", "timeout 30 iperf3 -c 10.0.0.6 -t 3 -J")?;
    let v: Value = serde_json::from_str(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no iperf3 result")?;
    let mbit = bps / 1e6;
    eprintln!("iperf3 through a 20 Mbit/s port: {mbit:.1} Mbit/s");
    ensure!(
        mbit > 0.0 && mbit < 40.0,
        "{mbit:.1} Mbit/s through a 20 Mbit/s limit"
    );
    // Without the limit it is faster (a limit that only looked right).
    lab.ctl_ok(&["clear-port", "v2"])?;
    lab.iperf_server("c2", "10.0.0.6")?;
    let out = lab.sh("c1", "timeout 30 iperf3 -c 10.0.0.6 -t 2 -J")?;
    let v: Value = serde_json::from_str(&out)?;
    let free = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6;
    eprintln!("iperf3 without the limit: {free:.1} Mbit/s");
    ensure!(free > 40.0, "unlimited: {free:.1} Mbit/s");
    Ok(())
}

/// The median of the `time=` of every reply of `ping -c N -i GAP` (ms), and how many
/// came back.
fn ping_median(lab: &Lab, from: &str, dst: &str, n: usize, gap: &str) -> Result<(f64, usize)> {
    let o = lab.sh_out(from, &format!("ping -n -c {n} -i {gap} -W 2 {dst}"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut t: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split(' ').next()?.parse().ok())
        .collect();
    ensure!(!t.is_empty(), "no replies: {text}");
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t.len()))
}

/// The issue's figures, measured: a 20 ms delay adds 20 ms ±2 to the RTT (median of
/// 50 pings against the same pings undelayed), 1 % loss loses 1 % ±0.3 of 10 000
/// pings (each counted as an `impaired` drop), a 100 Mbit/s rate gives iperf3 95–100
/// Mbit/s. Statistical tolerances from the issue, not timing: the loss is 3 standard
/// deviations wide (σ = 0.1 % over 10 000).
fn impair_figures_as_measured() -> Result<()> {
    let mut lab = tools_lab()?;
    lab.assert_ping("c1", "10.0.0.6")?;
    let (base, _) = ping_median(&lab, "c1", "10.0.0.6", 50, "0.02")?;
    lab.ctl_ok(&["set-port", "v2", "--delay", "20"])?;
    let (delayed, got) = ping_median(&lab, "c1", "10.0.0.6", 50, "0.02")?;
    let added = delayed - base;
    eprintln!("median rtt {base:.3} ms -> {delayed:.3} ms with 20 ms of delay: +{added:.2} ms ({got} of 50 answered)");
    ensure!(got == 50, "{got} of 50 delayed pings answered");
    ensure!(
        (18.0..=22.0).contains(&added),
        "a 20 ms delay added {added:.2} ms"
    );

    lab.ctl_ok(&["clear-port", "v2"])?;
    lab.ctl_ok(&["set-port", "v2", "--loss", "1"])?;
    let before = counter(&lab, "v2", "impaired")?;
    let o = lab.sh_out(
        "c1",
        "timeout 120 ping -q -n -c 10000 -i 0.002 -W 1 10.0.0.6",
    )?;
    let text = String::from_utf8_lossy(&o.stdout);
    let s = vswitch_integration::PingSummary::parse(&text)
        .with_context(|| format!("no ping summary in {text:?}"))?;
    ensure!(s.transmitted == 10_000, "ping stopped early: {text}");
    let lost = s.transmitted - s.received;
    let pct = lost as f64 / 100.0;
    let impaired = counter(&lab, "v2", "impaired")? - before;
    eprintln!("1 % loss: {lost} of 10000 pings lost ({pct:.2} %), {impaired} impaired drops");
    ensure!((0.7..=1.3).contains(&pct), "1 % loss lost {pct:.2} %");
    ensure!(
        impaired == lost as u64,
        "{lost} pings lost but {impaired} impaired drops"
    );

    lab.ctl_ok(&["clear-port", "v2"])?;
    lab.ctl_ok(&["set-port", "v2", "--rate", "100"])?;
    lab.iperf_server("c2", "10.0.0.6")?;
    let out = lab.sh("c1", "timeout 40 iperf3 -c 10.0.0.6 -t 5 -J")?;
    let v: Value = serde_json::from_str(&out)?;
    let mbit = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no iperf3 result")?
        / 1e6;
    eprintln!("iperf3 through a 100 Mbit/s port: {mbit:.1} Mbit/s");
    ensure!(
        (95.0..=100.0).contains(&mbit),
        "{mbit:.1} Mbit/s through a 100 Mbit/s rate"
    );
    Ok(())
}

fn impair_errors() -> Result<()> {
    let lab = tools_lab()?;
    for (args, code, want) in [
        (
            &["set-port", "v9", "--delay", "5"][..],
            1,
            "no such port: v9",
        ),
        (&["set-port", "v1"], 2, "nothing to set"),
        (&["set-port", "v1", "--loss", "120"], 2, "bad percentage"),
        (&["set-port", "v1", "--delay", "soon"], 2, "bad time"),
        (&["set-port", "v1", "--rate", "fast"], 2, "bad rate"),
        (&["clear-port", "v9"], 1, "no such port: v9"),
    ] {
        let o = lab.ctl(args)?;
        ensure!(o.code == code, "{args:?}: exit {} {:?}", o.code, o.stderr);
        let lines: Vec<&str> = o.stderr.lines().collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(want),
            "{args:?}: {:?}",
            o.stderr
        );
    }
    let o = lab.ctl(&["set-port", "v1", "--down", "--up"])?;
    ensure!(o.code == 2, "{o:?}");
    Ok(())
}

fn mirror_copies_to_the_output_port() -> Result<()> {
    let mut lab = tools_lab()?;
    // A monitor on br1, port vm, with no address of its own.
    lab.add_ns("mon")?;
    lab.veth("sw", "vm", "mon", "eth0")?;
    lab.sh("mon", "ip link set eth0 up")?;
    lab.ctl_ok(&["add-port", "br1", "vm"])?;
    lab.assert_ping("c1", "10.0.0.6")?;
    let line = lab.ctl_ok(&[
        "add-mirror",
        "br1",
        "--select-port",
        "v2",
        "--output-port",
        "vm",
    ])?;
    ensure!(line.trim() == "Mirror span-vm: v2 -> vm", "{line}");
    ensure!(lab.ctl_ok(&["show"])?.contains("Mirror span-vm: v2 -> vm"));

    // tcpdump on the monitor sees c1's pings to c2 (both ways, once each) and one
    // broadcast once: as a copy of what left v2, not flooded to vm as well.
    let pid = lab.spawn(
        "mon",
        "timeout",
        &["6", "tcpdump", "-n", "-l", "-i", "eth0", "icmp"],
        "mon.log",
    )?;
    if !wait_until(Duration::from_secs(5), || {
        lab.read_log("mon.log").contains("listening on")
    }) {
        bail!("tcpdump did not start: {}", lab.read_log("mon.log"));
    }
    let (got, _) = ping_stats(&lab, "c1", "10.0.0.6", 3)?;
    ensure!(got == 3, "{got} of 3 pings answered");
    lab.sh_out("c1", "ping -n -b -c 1 -W 1 10.0.0.255")?;
    let ended = wait_until(Duration::from_secs(15), || !lab.is_running(pid));
    lab.stop_spawned(pid);
    ensure!(ended, "tcpdump did not end");
    let text = lab.read_log("mon.log");
    let req = count_lines(&text, &["10.0.0.5 > 10.0.0.6: ICMP echo request"]);
    let rep = count_lines(&text, &["10.0.0.6 > 10.0.0.5: ICMP echo reply"]);
    let bcast = count_lines(&text, &["10.0.0.5 > 10.0.0.255: ICMP echo request"]);
    ensure!(
        req == 3 && rep == 3 && bcast == 1,
        "the monitor saw:\n{text}"
    );

    // What the output port sends is dropped, and counted.
    let before = counter(&lab, "vm", "mirror_output")?;
    lab.sh("mon", "ip addr add 10.0.0.9/24 dev eth0")?;
    lab.assert_no_ping("mon", "10.0.0.5")?;
    ensure!(
        counter(&lab, "vm", "mirror_output")? > before,
        "no mirror_output drop"
    );

    // Without the mirror, vm is an ordinary port again.
    lab.ctl_ok(&["del-mirror", "br1", "span-vm"])?;
    ensure!(!lab.ctl_ok(&["show"])?.contains("Mirror"));
    lab.assert_ping("mon", "10.0.0.5")?;
    Ok(())
}
