//! `vswitchd --metrics ADDR:PORT`: the counters of `stats`, `show` and `list-br` in the
//! Prometheus text exposition format (version 0.0.4), served on `GET /metrics` by a
//! thread of its own (tiny_http, blocking; no async runtime).
//!
//! Under the control mutex the thread only copies counters and clones the `Arc`s of the
//! tables ([`State::metrics_sample`]); the table scans (live conntrack and FDB entries)
//! and the formatting run after the mutex is released.

use super::State;
use crate::dp::clock;
use crate::tables::{Conntrack, Fdb};
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use vswitch_proto::PortStats;

/// Content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters of one bridge, copied under the mutex.
pub struct BridgeSample {
    pub name: String,
    pub fdb: Option<Arc<Fdb>>,
    pub dhcp: crate::tables::leases::PoolStats,
    pub dhcp6: crate::tables::leases6::Pool6Stats,
    pub dns: crate::service::dns::DnsCounts,
}

/// Everything one scrape reports; taken under the control mutex, cheap to take.
pub struct Sample {
    pub ports: Vec<PortStats>,
    pub bridges: Vec<BridgeSample>,
    pub conntrack: Arc<Conntrack>,
    pub fastpath: Option<crate::fastpath::Summary>,
}

impl State {
    /// Copy the counters a scrape reports (atomics and `Arc`s only; no table scan).
    pub fn metrics_sample(&self) -> Sample {
        let mut ports = Vec::new();
        let mut bridges = Vec::new();
        for b in &self.model.bridges {
            for p in &b.ports {
                ports.extend(self.port_stats(b, p));
            }
            bridges.push(BridgeSample {
                name: b.name.clone(),
                fdb: self.fdbs.get(&b.name).cloned(),
                dhcp: self.db.leases().stats(&b.name).unwrap_or_default(),
                dhcp6: self.db.leases().stats6(&b.name).unwrap_or_default(),
                dns: self.tools.dns.get(&b.name),
            });
        }
        Sample {
            ports,
            bridges,
            conntrack: self.conntrack.clone(),
            fastpath: self.fastpath.as_ref().map(|f| f.summary()),
        }
    }
}

/// A label value escaped as the text format asks: `\`, `"` and newline.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// One metric family: HELP, TYPE, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The text exposition of `s` (scans the tables; call without the control mutex).
pub fn render(s: &Sample) -> String {
    let mut out = String::new();
    let port_counter = |out: &mut String, name, help, f: fn(&PortStats) -> u64| {
        let mut fam = Family::new(out, name, "counter", help);
        for p in &s.ports {
            fam.sample(&[("bridge", &p.bridge), ("port", &p.port)], f(p));
        }
    };
    port_counter(
        &mut out,
        "vswitch_port_rx_packets_total",
        "Frames received on the port (from its guest), fast path included.",
        |p| p.rx_packets,
    );
    port_counter(
        &mut out,
        "vswitch_port_rx_bytes_total",
        "Bytes received on the port, fast path included.",
        |p| p.rx_bytes,
    );
    port_counter(
        &mut out,
        "vswitch_port_tx_packets_total",
        "Frames sent out of the port (to its guest), fast path included.",
        |p| p.tx_packets,
    );
    port_counter(
        &mut out,
        "vswitch_port_tx_bytes_total",
        "Bytes sent out of the port, fast path included.",
        |p| p.tx_bytes,
    );
    let mut fam = Family::new(
        &mut out,
        "vswitch_port_drops_total",
        "counter",
        "Frames dropped at the port, by reason (as in vswitchctl stats).",
    );
    for p in &s.ports {
        for (reason, n) in &p.drops {
            fam.sample(
                &[("bridge", &p.bridge), ("port", &p.port), ("reason", reason)],
                *n,
            );
        }
    }
    if s.fastpath.is_some() {
        port_counter(
            &mut out,
            "vswitch_port_fastpath_rx_packets_total",
            "Part of rx_packets the kernel fast path forwarded.",
            |p| p.fastpath_rx_packets,
        );
        port_counter(
            &mut out,
            "vswitch_port_fastpath_rx_bytes_total",
            "Part of rx_bytes the kernel fast path forwarded.",
            |p| p.fastpath_rx_bytes,
        );
        port_counter(
            &mut out,
            "vswitch_port_fastpath_tx_packets_total",
            "Part of tx_packets the kernel fast path forwarded.",
            |p| p.fastpath_tx_packets,
        );
        port_counter(
            &mut out,
            "vswitch_port_fastpath_tx_bytes_total",
            "Part of tx_bytes the kernel fast path forwarded.",
            |p| p.fastpath_tx_bytes,
        );
    }

    let now = clock::now_secs();
    let gauge = |out: &mut String, name, help, v: u64| {
        Family::new(out, name, "gauge", help).sample(&[], v);
    };
    gauge(
        &mut out,
        "vswitch_conntrack_entries",
        "Live NAT connection-tracking entries (two per connection).",
        s.conntrack.entries(now).len() as u64,
    );
    gauge(
        &mut out,
        "vswitch_conntrack_capacity",
        "Connection-tracking entries at most (--ct-max, two per connection).",
        s.conntrack.capacity() as u64,
    );
    Family::new(
        &mut out,
        "vswitch_conntrack_evictions_total",
        "counter",
        "Connection-tracking entries evicted to make room.",
    )
    .sample(&[], s.conntrack.evictions());

    type BridgeFn = fn(&BridgeSample, u32) -> u64;
    let bridge_families: [(&'static str, &str, &str, BridgeFn); 9] = [
        (
            "vswitch_fdb_entries",
            "gauge",
            "Learned MAC addresses now.",
            |b, now| b.fdb.as_ref().map_or(0, |f| f.entries(now).len() as u64),
        ),
        (
            "vswitch_fdb_capacity",
            "gauge",
            "Learned MAC addresses at most (--fdb-max).",
            |b, _| b.fdb.as_ref().map_or(0, |f| f.capacity() as u64),
        ),
        (
            "vswitch_fdb_evictions_total",
            "counter",
            "Learned MAC addresses evicted to make room.",
            |b, _| b.fdb.as_ref().map_or(0, |f| f.evictions()),
        ),
        (
            "vswitch_dhcp_leases",
            "gauge",
            "DHCPv4 leases now.",
            |b, _| b.dhcp.leases,
        ),
        (
            "vswitch_dhcp_lease_capacity",
            "gauge",
            "DHCPv4 leases at most.",
            |b, _| b.dhcp.lease_cap,
        ),
        (
            "vswitch_dhcp_exhausted_total",
            "counter",
            "DHCPDISCOVERs that found no free address.",
            |b, _| b.dhcp.exhausted,
        ),
        (
            "vswitch_dhcp6_leases",
            "gauge",
            "DHCPv6 leases now.",
            |b, _| b.dhcp6.leases,
        ),
        (
            "vswitch_dhcp6_lease_capacity",
            "gauge",
            "DHCPv6 leases at most.",
            |b, _| b.dhcp6.lease_cap,
        ),
        (
            "vswitch_dhcp6_exhausted_total",
            "counter",
            "DHCPv6 Solicits that found no free address.",
            |b, _| b.dhcp6.exhausted,
        ),
    ];
    for (name, kind, help, f) in bridge_families {
        let mut fam = Family::new(&mut out, name, kind, help);
        for b in &s.bridges {
            fam.sample(&[("bridge", &b.name)], f(b, now));
        }
    }
    let mut fam = Family::new(
        &mut out,
        "vswitch_dns_queries_total",
        "counter",
        "DNS queries to the bridge's gateway (UDP and TCP, IPv4 and IPv6).",
    );
    for b in &s.bridges {
        fam.sample(&[("bridge", &b.name)], b.dns.queries);
    }
    let mut fam = Family::new(
        &mut out,
        "vswitch_dns_forwarded_total",
        "counter",
        "DNS queries forwarded upstream (names the bridge does not own).",
    );
    for b in &s.bridges {
        fam.sample(&[("bridge", &b.name)], b.dns.forwarded);
    }
    let mut fam = Family::new(
        &mut out,
        "vswitch_dns_responses_total",
        "counter",
        "DNS answers sent, by response code (local and forwarded).",
    );
    for b in &s.bridges {
        let d = &b.dns;
        for (rcode, n) in [
            ("noerror", d.noerror),
            ("nxdomain", d.nxdomain),
            ("servfail", d.servfail),
            ("refused", d.refused),
            ("other", d.other),
        ] {
            fam.sample(&[("bridge", &b.name), ("rcode", rcode)], n);
        }
    }

    if let Some(fp) = &s.fastpath {
        let c = |out: &mut String, name, help, v: u64| {
            Family::new(out, name, "counter", help).sample(&[], v);
        };
        c(
            &mut out,
            "vswitch_fastpath_installs_total",
            "Flows installed in the kernel fast path.",
            fp.installs,
        );
        c(
            &mut out,
            "vswitch_fastpath_rejected_total",
            "Flows the fast path refused to cache.",
            fp.rejected,
        );
        c(
            &mut out,
            "vswitch_fastpath_queue_full_total",
            "Install requests lost to a full queue.",
            fp.queue_full,
        );
        c(
            &mut out,
            "vswitch_fastpath_invalidations_total",
            "Times the fast path cache was invalidated.",
            fp.bumps,
        );
        c(
            &mut out,
            "vswitch_fastpath_removed_total",
            "Fast path cache entries removed.",
            fp.removed,
        );
    }
    out
}

/// Bind the metrics listener (at start-up, so a bad address stops vswitchd).
pub fn bind(addr: SocketAddr) -> anyhow::Result<tiny_http::Server> {
    tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for --metrics on {addr}: {e}"))
}

/// Serve `GET /metrics` (404 for other paths, 405 for other methods) on a thread of
/// its own, one request at a time.
pub fn spawn(server: tiny_http::Server, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vswitch-metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let resp = if path != "/metrics" {
                    tiny_http::Response::from_string("not found\n").with_status_code(404)
                } else if !matches!(
                    req.method(),
                    tiny_http::Method::Get | tiny_http::Method::Head
                ) {
                    tiny_http::Response::from_string("only GET\n").with_status_code(405)
                } else {
                    // The mutex only for the copy; scans and formatting without it.
                    let sample = state.lock().metrics_sample();
                    let body = render(&sample);
                    let mut r = tiny_http::Response::from_string(body);
                    if let Ok(h) =
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE.as_bytes())
                    {
                        r.add_header(h);
                    }
                    r
                };
                if let Err(e) = req.respond(resp) {
                    tracing::debug!(error = %e, "metrics: cannot answer a scrape");
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn renders_families_with_type_and_escaped_labels() {
        let mut p = PortStats {
            port: "v\"1".into(),
            bridge: "br0".into(),
            rx_packets: 3,
            ..Default::default()
        };
        p.drops.insert("no_route".into(), 2);
        let s = Sample {
            ports: vec![p],
            bridges: vec![BridgeSample {
                name: "br0".into(),
                fdb: None,
                dhcp: Default::default(),
                dhcp6: Default::default(),
                dns: crate::service::dns::DnsCounts {
                    queries: 4,
                    nxdomain: 1,
                    ..Default::default()
                },
            }],
            conntrack: Arc::new(Conntrack::new(64)),
            fastpath: None,
        };
        let t = render(&s);
        assert!(t.contains("# TYPE vswitch_port_rx_packets_total counter\n"));
        assert!(t.contains("vswitch_port_rx_packets_total{bridge=\"br0\",port=\"v\\\"1\"} 3\n"));
        assert!(t.contains(
            "vswitch_port_drops_total{bridge=\"br0\",port=\"v\\\"1\",reason=\"no_route\"} 2\n"
        ));
        assert!(t.contains("vswitch_conntrack_capacity "));
        assert!(t.contains("vswitch_dhcp_leases{bridge=\"br0\"} 0\n"));
        assert!(t.contains("vswitch_dns_queries_total{bridge=\"br0\"} 4\n"));
        assert!(t.contains("vswitch_dns_responses_total{bridge=\"br0\",rcode=\"nxdomain\"} 1\n"));
        assert!(!t.contains("fastpath"));
    }
}
