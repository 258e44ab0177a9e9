//! `vswitchd --metrics` scraped with curl (the text format's rules checked here:
//! Debian's promtool comes with the whole Prometheus server), and `vswitchctl top`'s
//! rates against an iperf3 stream at a fixed rate.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use vswitch_integration::Lab;

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "metrics_parse_and_move_with_traffic",
            metrics_parse_and_move_with_traffic,
        ),
        ("metrics_bad_address", metrics_bad_address),
        ("dns_counters_move_with_dig", dns_counters_move_with_dig),
        ("top_rates_agree_with_iperf3", top_rates_agree_with_iperf3),
        ("top_errors", top_errors),
    ])
}

const METRICS: &str = "127.0.0.1:9464";

/// br1 10.0.0.0/24 (gw .1) with c1 10.0.0.5 (v1) and c2 10.0.0.6 (v2), vswitchd with
/// `extra` flags.
fn lab_with(extra: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_switch_with("sw", extra)?;
    lab.ctl_ok(&[
        "add-br",
        "br1",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", Some("10.0.0.1"))?;
    lab.container("sw", "c2", "v2", "10.0.0.6/24", Some("10.0.0.1"))?;
    lab.ctl_ok(&["add-port", "br1", "v1"])?;
    lab.ctl_ok(&["add-port", "br1", "v2"])?;
    Ok(lab)
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parse `{k="v",...}` (escapes `\\`, `\"`, `\n`); returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').context("label without =")?;
        let key = &rest[..eq];
        ensure!(is_name(key), "bad label name {key:?}");
        let mut chars = rest[eq + 1..].char_indices();
        ensure!(
            chars.next().map(|c| c.1) == Some('"'),
            "label value not quoted"
        );
        let mut val = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|c| c.1) {
                    Some('\\') => val.push('\\'),
                    Some('"') => val.push('"'),
                    Some('n') => val.push('\n'),
                    e => bail!("bad escape {e:?}"),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => bail!("raw newline in a label value"),
                c => val.push(c),
            }
        }
        let end = end.context("unterminated label value")?;
        ensure!(
            labels.insert(key.to_string(), val).is_none(),
            "label {key} twice"
        );
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Check the text exposition format 0.0.4's rules and return the samples: every line
/// a comment (`# HELP`/`# TYPE`) or `name{labels} value`; one TYPE per name, before
/// its samples; a family's samples together; counters named `_total`; no sample twice.
fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    ensure!(
        text.ends_with('\n'),
        "exposition does not end with a newline"
    );
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("TYPE"), Some(n), Some(t)) => {
                    ensure!(is_name(n), "bad name in {line:?}");
                    ensure!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type in {line:?}"
                    );
                    ensure!(
                        types.insert(n.to_string(), t.to_string()).is_none(),
                        "TYPE twice for {n}"
                    );
                    if t == "counter" {
                        ensure!(n.ends_with("_total"), "counter {n} not named _total");
                    }
                }
                (Some("HELP"), Some(n), Some(_)) => ensure!(is_name(n), "bad {line:?}"),
                _ => bail!("bad comment line {line:?}"),
            }
            continue;
        }
        ensure!(!line.is_empty(), "empty line");
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        ensure!(is_name(name), "bad metric name in {line:?}");
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(r) => parse_labels(r).with_context(|| format!("in {line:?}"))?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = rest
            .strip_prefix(' ')
            .with_context(|| format!("no space before the value in {line:?}"))?;
        let v: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        ensure!(types.contains_key(name), "{name} has no TYPE before it");
        if current != name {
            ensure!(!done.contains(name), "samples of {name} not together");
            done.insert(std::mem::replace(&mut current, name.to_string()));
        }
        ensure!(
            seen.insert(format!("{name}{labels:?}")),
            "sample twice: {line:?}"
        );
        out.push((name.to_string(), labels, v));
    }
    Ok(out)
}

fn scrape(lab: &Lab) -> Result<Vec<Sample>> {
    let body = lab.sh(
        "sw",
        &format!("curl -sf --max-time 10 http://{METRICS}/metrics"),
    )?;
    if std::env::var_os("SHOW_METRICS").is_some() {
        eprintln!("{body}");
    }
    parse_exposition(&body)
}

fn value(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    s.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|x| x.2)
        .with_context(|| format!("no sample {name}{labels:?}"))
}

fn metrics_parse_and_move_with_traffic() -> Result<()> {
    // Userspace only: the fast path's own counters are added in, but its cache would
    // not change what this test sees, and it may be unavailable here.
    let lab = lab_with(&["--metrics", METRICS, "--fastpath", "off"])?;
    // Header of the format.
    let head = lab.sh(
        "sw",
        &format!(
            "curl -sf --max-time 10 -o /dev/null -w '%{{content_type}}' http://{METRICS}/metrics"
        ),
    )?;
    ensure!(head.starts_with("text/plain; version=0.0.4"), "{head:?}");
    let before = scrape(&lab)?;
    let port = |p| [("bridge", "br1"), ("port", p)];
    let rx0 = value(&before, "vswitch_port_rx_packets_total", &port("v1"))?;
    let txb0 = value(&before, "vswitch_port_tx_bytes_total", &port("v2"))?;
    lab.assert_pings("c1", "10.0.0.6", 5)?;
    let after = scrape(&lab)?;
    let rx1 = value(&after, "vswitch_port_rx_packets_total", &port("v1"))?;
    let txb1 = value(&after, "vswitch_port_tx_bytes_total", &port("v2"))?;
    eprintln!("v1 rx packets {rx0} -> {rx1}; v2 tx bytes {txb0} -> {txb1}");
    ensure!(
        rx1 >= rx0 + 5.0,
        "v1 rx packets {rx0} -> {rx1} after 5 pings"
    );
    // 5 echo requests of 98 bytes out of v2 at least.
    ensure!(txb1 >= txb0 + 490.0, "v2 tx bytes {txb0} -> {txb1}");
    for name in [
        "vswitch_port_rx_bytes_total",
        "vswitch_port_tx_packets_total",
        "vswitch_fdb_entries",
        "vswitch_dhcp_leases",
        "vswitch_dhcp_exhausted_total",
    ] {
        value(&after, name, &[("bridge", "br1")])?;
    }
    ensure!(value(&after, "vswitch_conntrack_capacity", &[])? > 0.0);
    value(&after, "vswitch_conntrack_entries", &[])?;
    ensure!(value(&after, "vswitch_fdb_entries", &[("bridge", "br1")])? >= 2.0);
    // Drops by reason: 100 % loss on v2 drops what leaves it as "impaired".
    lab.ctl_ok(&["set-port", "v2", "--loss", "100"])?;
    lab.assert_no_ping("c1", "10.0.0.6")?;
    let d = scrape(&lab)?;
    let dropped = value(
        &d,
        "vswitch_port_drops_total",
        &[("bridge", "br1"), ("port", "v2"), ("reason", "impaired")],
    )?;
    eprintln!("v2 impaired drops: {dropped}");
    ensure!(dropped >= 1.0, "no impaired drop counted");
    lab.ctl_ok(&["clear-port", "v2"])?;
    // Unknown path and method.
    let code = |args: &str| -> Result<String> {
        lab.sh(
            "sw",
            &format!("curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' {args}"),
        )
    };
    ensure!(code(&format!("http://{METRICS}/nope"))? == "404");
    ensure!(code(&format!("http://{METRICS}/"))? == "404");
    ensure!(code(&format!("-X POST http://{METRICS}/metrics"))? == "405");
    // The control socket still answers while scrapes run.
    lab.ctl_ok(&["show"])?;
    Ok(())
}

/// `dig` against the bridge's gateway: local names (NOERROR), plain unknown names
/// (NXDOMAIN, never forwarded, so nothing leaves the test's namespaces), a TCP query;
/// the counters in `list-br --json`, `show` and `/metrics` move by exactly as much.
fn dns_counters_move_with_dig() -> Result<()> {
    let lab = lab_with(&["--metrics", METRICS, "--fastpath", "off"])?;
    lab.ctl_ok(&["add-host", "br1", "web", "10.0.0.9"])?;
    let br1 = |lab: &Lab| -> Result<Value> {
        let j = lab.ctl_json(&["list-br"])?;
        j.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == "br1").cloned())
            .context("br1 in list-br --json")
    };
    let b0 = br1(&lab)?;
    ensure!(b0["dns_queries"] == 0, "{b0}");
    ensure!(
        !lab.ctl_ok(&["show"])?.contains("DNS "),
        "a DNS line before any query"
    );
    let dig = |args: &str| lab.sh("c1", &format!("dig +time=2 +tries=1 @10.0.0.1 {args}"));
    for _ in 0..3 {
        let out = dig("+short web")?;
        ensure!(out.trim() == "10.0.0.9", "dig web: {out}");
    }
    let out = dig("+tcp +short web")?;
    ensure!(out.trim() == "10.0.0.9", "dig +tcp web: {out}");
    for name in ["nosuchname", "other"] {
        let out = dig(name)?;
        ensure!(out.contains("status: NXDOMAIN"), "dig {name}: {out}");
    }
    let b = br1(&lab)?;
    eprintln!(
        "br1 DNS: queries {} noerror {} nxdomain {} forwarded {}",
        b["dns_queries"], b["dns_noerror"], b["dns_nxdomain"], b["dns_forwarded"]
    );
    ensure!(
        b["dns_queries"] == 6
            && b["dns_noerror"] == 4
            && b["dns_nxdomain"] == 2
            && b["dns_forwarded"] == 0
            && b["dns_servfail"] == 0,
        "{b}"
    );
    let show = lab.ctl_ok(&["show"])?;
    ensure!(
        show.contains("        DNS 6 queries: noerror 4, nxdomain 2\n"),
        "{show}"
    );
    let m = scrape(&lab)?;
    let br = [("bridge", "br1")];
    ensure!(value(&m, "vswitch_dns_queries_total", &br)? == 6.0);
    ensure!(value(&m, "vswitch_dns_forwarded_total", &br)? == 0.0);
    for (rcode, n) in [("noerror", 4.0), ("nxdomain", 2.0), ("servfail", 0.0)] {
        let got = value(
            &m,
            "vswitch_dns_responses_total",
            &[("bridge", "br1"), ("rcode", rcode)],
        )?;
        ensure!(got == n, "{rcode}: {got}, want {n}");
    }
    Ok(())
}

fn metrics_bad_address() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_ns("sw")?;
    let dir = lab.dir().to_path_buf();
    let vswitchd = vswitch_integration::bin("vswitchd")?;
    for (addr, code, want) in [
        ("nowhere", 2, "invalid value 'nowhere' for '--metrics"),
        ("127.0.0.1:99999", 2, "invalid value"),
        // An address of no interface of this (the test's) host: cannot bind.
        (
            "192.0.2.77:9464",
            1,
            "cannot listen for --metrics on 192.0.2.77:9464",
        ),
    ] {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("sw")])
            .arg(&vswitchd)
            .arg("--socket")
            .arg(dir.join("m.sock"))
            .arg("--db")
            .arg(dir.join("m.db"))
            .args(["--metrics", addr])
            .output();
        let o = match o {
            Ok(o) => o,
            Err(e) => bail!("cannot run vswitchd: {e}"),
        };
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().collect();
        ensure!(
            o.status.code() == Some(code),
            "{addr}: exit {:?}: {err}",
            o.status.code()
        );
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(want),
            "{addr}: {err:?}"
        );
        ensure!(
            !dir.join("m.sock").exists(),
            "{addr}: control socket left behind"
        );
    }
    Ok(())
}

/// `top --once --json -i 1` during an iperf3 UDP stream at 20 Mbit/s from c1 to c2:
/// v2 (towards the receiver) sends about 20 Mbit/s, v1 receives about as much: within
/// -10 %..+20 % of what iperf3 reports (frames carry 2.9 % of headers more than
/// iperf3's payload), in bits/s and frames/s. A measured figure, not a timing assert.
fn top_rates_agree_with_iperf3() -> Result<()> {
    let mut lab = lab_with(&[])?;
    lab.assert_ping("c1", "10.0.0.6")?;
    lab.iperf_server("c2", "10.0.0.6")?;
    let client = lab.spawn(
        "c1",
        "timeout",
        &[
            "30", "iperf3", "-u", "-c", "10.0.0.6", "-b", "20M", "-t", "6", "-J",
        ],
        "iperf-client.log",
    )?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let v = lab.ctl_json(&["top", "--once", "-i", "1"])?;
    let rows = v.as_array().context("top --json is not an array")?;
    eprintln!("top --once --json: {v}");
    let row = |p: &str| -> Result<&Value> {
        rows.iter()
            .find(|r| r["port"] == p && r["bridge"] == "br1")
            .with_context(|| format!("no row for {p}"))
    };
    let f = |r: &Value, k: &str| r[k].as_f64().with_context(|| format!("no {k} in {r}"));
    let v2_tx = f(row("v2")?, "tx_bps")? / 1e6;
    let v1_rx = f(row("v1")?, "rx_bps")? / 1e6;
    ensure!(
        (10.0..=40.0).contains(&v2_tx),
        "v2 tx {v2_tx:.1} Mbit/s during a 20 Mbit/s stream"
    );
    ensure!(
        (10.0..=40.0).contains(&v1_rx),
        "v1 rx {v1_rx:.1} Mbit/s during a 20 Mbit/s stream"
    );
    ensure!(f(row("v2")?, "tx_pps")? > 500.0, "v2 tx_pps too low");
    // The human view of the same stream (shown, for the docs).
    let human = lab.ctl_ok(&["top", "--once", "-i", "1"])?;
    eprintln!("{human}");
    ensure!(human.contains("RX_BPS") && human.contains("M"), "{human}");
    // Busiest first; every row has the fields scripts read.
    ensure!(rows[0]["port"] == "v1" || rows[0]["port"] == "v2", "{v}");
    for r in rows {
        for k in ["rx_pps", "tx_pps", "rx_bps", "tx_bps", "drops_ps"] {
            f(r, k)?;
        }
    }
    // What iperf3 itself measured agrees too.
    let code = wait_exit(&mut lab, client);
    let log = lab.read_log("iperf-client.log");
    let j: Value = serde_json::from_str(&log).with_context(|| format!("iperf3: {log}"))?;
    let sent = j["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
    eprintln!(
        "iperf3 exit {code:?}: {sent:.1} Mbit/s; top: v2 tx {v2_tx:.1}, v1 rx {v1_rx:.1} Mbit/s"
    );
    // top counts whole frames: a 1470-byte datagram is a 1512-byte frame (+2.9 %).
    // Within -10 %..+20 % of iperf3's own rate, both ports, and in frames/s too.
    let pps = j["end"]["sum"]["packets"].as_f64().unwrap_or(0.0)
        / j["end"]["sum"]["seconds"].as_f64().unwrap_or(1.0).max(0.1);
    let v2_pps = f(row("v2")?, "tx_pps")?;
    eprintln!("iperf3 {pps:.0} datagrams/s; top: v2 tx {v2_pps:.0} frames/s");
    for (what, top, iperf) in [
        ("v2 tx Mbit/s", v2_tx, sent),
        ("v1 rx Mbit/s", v1_rx, sent),
        ("v2 tx frames/s", v2_pps, pps),
    ] {
        ensure!(
            top > iperf * 0.9 && top < iperf * 1.2,
            "{what}: top {top:.1} vs iperf3 {iperf:.1}"
        );
    }
    // The refreshing view: one ANSI clear + table per interval, then exit (-n).
    let o = lab.ctl(&["top", "-i", "0.2", "-n", "2", "br1"])?;
    ensure!(o.code == 0, "{o:?}");
    ensure!(
        o.stdout.matches("\x1b[H\x1b[2J").count() == 2,
        "{:?}",
        o.stdout
    );
    ensure!(
        o.stdout.contains("PORT") && o.stdout.contains("v2"),
        "{:?}",
        o.stdout
    );
    Ok(())
}

/// Wait (bounded, 30 s) for a spawned process to end by itself; its exit code.
fn wait_exit(lab: &mut Lab, pid: u32) -> Option<i32> {
    vswitch_integration::wait_until(std::time::Duration::from_secs(30), || !lab.is_running(pid));
    lab.stop_spawned(pid)
}

fn top_errors() -> Result<()> {
    let lab = lab_with(&[])?;
    for (args, code, want) in [
        (&["top", "--once", "br9"][..], 1, "no such bridge: br9"),
        (&["top", "-i", "0"], 2, "bad interval"),
        (&["top", "-i", "soon"], 2, "invalid value"),
        (&["top", "-n", "0"], 2, "bad count"),
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
