//! `top`: port rates (frames/s, bits/s, drops/s) from two `stats` samples an interval
//! apart, like `iftop` for the switch's ports. `--once` prints one view; otherwise the
//! view is redrawn every interval (ANSI clear + table) until Ctrl-C or `-n` views.

use super::Ctx;
use crate::error::Error;
use crate::output::table;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};
use vswitch_proto::{BridgeInfo, Command, PortStats};

/// Shortest and longest interval accepted, seconds.
const MIN_INTERVAL: f64 = 0.1;
const MAX_INTERVAL: f64 = 3600.0;

/// Port rates, refreshed every interval (frames/s, bits/s, drops/s; busiest first)
#[derive(clap::Args, Debug)]
pub struct Top {
    /// Only the ports of this bridge
    #[arg(value_name = "BR")]
    pub bridge: Option<String>,
    /// Print one view (rates over one interval) and exit
    #[arg(long)]
    pub once: bool,
    /// Seconds between the two samples of a rate (0.1..3600)
    #[arg(short = 'i', long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after COUNT views (default: until Ctrl-C; --once is -n 1)
    #[arg(short = 'n', long, value_name = "COUNT")]
    pub count: Option<u64>,
}

/// One port's rates over one interval (the `--json` shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub port: String,
    pub bridge: String,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub drops_ps: f64,
}

impl Top {
    fn check(&self) -> Result<(), Error> {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return Err(Error::Usage(format!(
                "bad interval {}: must be {MIN_INTERVAL}..{MAX_INTERVAL} seconds",
                self.interval
            )));
        }
        if self.count == Some(0) {
            return Err(Error::Usage("bad count 0: must be at least 1".into()));
        }
        Ok(())
    }

    fn sample(&self, ctx: &Ctx) -> Result<(Instant, Vec<PortStats>), Error> {
        let v = ctx.call(Command::Stats { port: None })?;
        let at = Instant::now();
        let mut s: Vec<PortStats> = serde_json::from_value(v)
            .map_err(|e| Error::Failed(format!("bad reply from vswitchd: {e}")))?;
        if let Some(b) = &self.bridge {
            s.retain(|p| &p.bridge == b);
        }
        Ok((at, s))
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        self.check()?;
        if let Some(b) = &self.bridge {
            let v = ctx.call(Command::ListBr)?;
            let brs: Vec<BridgeInfo> = serde_json::from_value(v)
                .map_err(|e| Error::Failed(format!("bad reply from vswitchd: {e}")))?;
            if !brs.iter().any(|x| &x.name == b) {
                return Err(Error::Failed(format!("no such bridge: {b}")));
            }
        }
        let interval = Duration::from_secs_f64(self.interval);
        let views = if self.once {
            1
        } else {
            self.count.unwrap_or(u64::MAX)
        };
        let mut prev = self.sample(ctx)?;
        let mut out = std::io::stdout();
        for n in 0..views {
            std::thread::sleep(interval);
            let cur = self.sample(ctx)?;
            let r = rates(&prev.1, &cur.1, cur.0.duration_since(prev.0));
            prev = cur;
            let text = if ctx.json() {
                let mut t = serde_json::to_string(&r)
                    .map_err(|e| Error::Failed(format!("cannot print JSON: {e}")))?;
                t.push('\n');
                t
            } else {
                render(&r, self.interval)
            };
            if self.once {
                return Ok(text);
            }
            // Redraw in place on a terminal (and between JSON lines, nothing).
            let clear = if ctx.json() { "" } else { "\x1b[H\x1b[2J" };
            let last = n + 1 == views;
            let w = write!(out, "{clear}{text}").and_then(|()| out.flush());
            match w {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(Error::Failed(format!("cannot write output: {e}"))),
            }
            if last {
                break;
            }
        }
        Ok(String::new())
    }
}

/// Rates from two samples `dt` apart, busiest first (total bits/s, then frames/s, then
/// bridge and port). A port absent from `before` (just added) counts from zero; a
/// counter that went back (port re-created) gives 0.
pub fn rates(before: &[PortStats], after: &[PortStats], dt: Duration) -> Vec<Rate> {
    let secs = dt.as_secs_f64().max(1e-3);
    let old: HashMap<(&str, &str), &PortStats> = before
        .iter()
        .map(|p| ((p.bridge.as_str(), p.port.as_str()), p))
        .collect();
    let zero = PortStats::default();
    let mut v: Vec<Rate> = after
        .iter()
        .map(|p| {
            let o = old
                .get(&(p.bridge.as_str(), p.port.as_str()))
                .copied()
                .unwrap_or(&zero);
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let drops = |s: &PortStats| s.drops.values().sum::<u64>();
            Rate {
                port: p.port.clone(),
                bridge: p.bridge.clone(),
                rx_pps: d(p.rx_packets, o.rx_packets),
                tx_pps: d(p.tx_packets, o.tx_packets),
                rx_bps: d(p.rx_bytes, o.rx_bytes) * 8.0,
                tx_bps: d(p.tx_bytes, o.tx_bytes) * 8.0,
                drops_ps: d(drops(p), drops(o)),
            }
        })
        .collect();
    v.sort_by(|a, b| {
        let key = |r: &Rate| (r.rx_bps + r.tx_bps, r.rx_pps + r.tx_pps);
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.total_cmp(&ka.1))
            .then_with(|| (&a.bridge, &a.port).cmp(&(&b.bridge, &b.port)))
    });
    v
}

/// `1234567.0` → `1.23M` (SI, three significant digits).
fn si(v: f64) -> String {
    let (x, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => return format!("{v:.0}"),
    };
    if x >= 100.0 {
        format!("{x:.0}{unit}")
    } else if x >= 10.0 {
        format!("{x:.1}{unit}")
    } else {
        format!("{x:.2}{unit}")
    }
}

/// The ports' table, then one total line per bridge.
pub fn render(r: &[Rate], interval: f64) -> String {
    let rows: Vec<Vec<String>> = r
        .iter()
        .map(|x| {
            vec![
                x.port.clone(),
                x.bridge.clone(),
                si(x.rx_pps),
                si(x.tx_pps),
                si(x.rx_bps),
                si(x.tx_bps),
                si(x.drops_ps),
            ]
        })
        .collect();
    let mut out = format!("vswitchctl top: rates over {interval} s (Ctrl-C quits)\n\n");
    out.push_str(&table(
        &[
            "PORT", "BRIDGE", "RX_PPS", "TX_PPS", "RX_BPS", "TX_BPS", "DROPS/S",
        ],
        &rows,
    ));
    let mut bridges: Vec<(&str, [f64; 5])> = Vec::new();
    for x in r {
        let i = match bridges.iter().position(|b| b.0 == x.bridge) {
            Some(i) => i,
            None => {
                bridges.push((&x.bridge, [0.0; 5]));
                bridges.len() - 1
            }
        };
        let t = &mut bridges[i].1;
        for (a, b) in t
            .iter_mut()
            .zip([x.rx_pps, x.tx_pps, x.rx_bps, x.tx_bps, x.drops_ps])
        {
            *a += b;
        }
    }
    bridges.sort_by(|a, b| a.0.cmp(b.0));
    let rows: Vec<Vec<String>> = bridges
        .iter()
        .map(|(b, t)| {
            std::iter::once(b.to_string())
                .chain(t.iter().map(|v| si(*v)))
                .collect()
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["BRIDGE", "RX_PPS", "TX_PPS", "RX_BPS", "TX_BPS", "DROPS/S"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, rx: u64, rx_bytes: u64, drops: u64) -> PortStats {
        let mut p = PortStats {
            port: name.into(),
            bridge: "br1".into(),
            rx_packets: rx,
            rx_bytes,
            ..Default::default()
        };
        if drops > 0 {
            p.drops.insert("impaired".into(), drops);
        }
        p
    }

    #[test]
    fn rates_over_the_interval_busiest_first() {
        let before = [port("v1", 100, 10_000, 0), port("v2", 0, 0, 0)];
        let after = [
            port("v1", 300, 20_000, 4),
            port("v2", 2000, 2_500_000, 0),
            port("v3", 10, 1000, 0),
        ];
        let r = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(
            r.iter().map(|x| x.port.as_str()).collect::<Vec<_>>(),
            ["v2", "v1", "v3"]
        );
        assert_eq!(r[0].rx_pps, 1000.0);
        assert_eq!(r[0].rx_bps, 10_000_000.0);
        assert_eq!(r[1].rx_pps, 100.0);
        assert_eq!(r[1].rx_bps, 40_000.0);
        assert_eq!(r[1].drops_ps, 2.0);
        // New port: from zero.
        assert_eq!(r[2].rx_pps, 5.0);
        // A counter that went back gives 0, not a huge number.
        let r = rates(&after, &before, Duration::from_secs(1));
        assert!(r.iter().all(|x| x.rx_pps == 0.0 && x.drops_ps == 0.0));
    }

    #[test]
    fn si_units() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(20_100_000.0), "20.1M");
        assert_eq!(si(3.2e9), "3.20G");
    }

    #[test]
    fn bad_arguments() {
        use crate::cli::{parse, Cmd};
        for args in [
            &["top", "-i", "0"][..],
            &["top", "-i", "5000"],
            &["top", "-n", "0"],
        ] {
            match parse(args).unwrap().command {
                Cmd::Top(t) => assert_eq!(t.check().unwrap_err().exit_code(), 2, "{args:?}"),
                c => panic!("{c:?}"),
            }
        }
        match parse(&["top", "--once", "--json", "-i", "0.5", "br1"])
            .unwrap()
            .command
        {
            Cmd::Top(t) => {
                assert!(t.once && t.interval == 0.5 && t.bridge.as_deref() == Some("br1"));
                assert!(t.check().is_ok());
            }
            c => panic!("{c:?}"),
        }
    }
}
