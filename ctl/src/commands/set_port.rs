//! `set-port` and `clear-port`: link impairment of what leaves a port towards its guest
//! (delay, jitter, loss, corruption, rate limit, link down), as netem/tbf do on an
//! interface, applied by vswitchd's datapath.

use super::Ctx;
use crate::error::Error;
use vswitch_proto::{Command, ImpairSet, PortInfo};

/// Impair what leaves a port towards its guest: delay, jitter, loss, corruption, rate
///
/// Only the settings given change; `clear-port` removes them all. Applied in the
/// datapath (no kernel netem needed), persisted in the db, shown by `show`; frames it
/// drops are counted by `stats` as `impaired`. Prints the port as `show` does.
#[derive(clap::Args, Debug)]
pub struct SetPort {
    /// The port
    #[arg(value_name = "PORT")]
    pub port: String,
    /// Added latency, with optional jitter: 50, 50ms, 1.5ms, 2s, 50±5, 50ms+-5ms
    /// (milliseconds unless a unit is given; 0 removes it)
    #[arg(long, value_name = "MS[±JITTER]")]
    pub delay: Option<String>,
    /// Jitter alone (the latency varies uniformly by up to this much either way)
    #[arg(long, value_name = "MS")]
    pub jitter: Option<String>,
    /// Frames lost at random, percent: 1, 0.5%, 100
    #[arg(long, value_name = "PCT")]
    pub loss: Option<String>,
    /// Frames with one random bit flipped, percent
    #[arg(long, value_name = "PCT")]
    pub corrupt: Option<String>,
    /// Rate limit, Mbit/s unless a unit is given: 100, 1.5, 500kbit, 1gbit (0: none)
    #[arg(long, value_name = "MBIT")]
    pub rate: Option<String>,
    /// Link down: every frame dropped, and a veth guest sees its carrier off
    #[arg(long, conflicts_with = "up")]
    pub down: bool,
    /// Link up again (undoes --down)
    #[arg(long)]
    pub up: bool,
}

/// Remove every impairment of a port (see set-port)
#[derive(clap::Args, Debug)]
pub struct ClearPort {
    /// The port
    #[arg(value_name = "PORT")]
    pub port: String,
}

fn number(s: &str, what: &str) -> Result<f64, Error> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(Error::Usage(format!("bad {what} {s:?}"))),
    }
}

/// A duration in microseconds: `50` (ms), `50ms`, `1.5ms`, `500us`, `2s`.
pub fn parse_time(s: &str) -> Result<u64, Error> {
    let t = s.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (t.as_str(), 1000.0)
    };
    let v = number(num, "time")? * scale;
    if v > 60_000_000.0 {
        return Err(Error::Usage(format!("{s:?}: at most 60 s")));
    }
    Ok(v.round() as u64)
}

/// `MS[±JITTER]` (also `+-`, `~`): (delay, jitter) in microseconds.
pub fn parse_delay(s: &str) -> Result<(u64, Option<u64>), Error> {
    for sep in ["±", "+-", "~"] {
        if let Some((d, j)) = s.split_once(sep) {
            return Ok((parse_time(d)?, Some(parse_time(j)?)));
        }
    }
    Ok((parse_time(s)?, None))
}

/// A percentage as parts per million.
pub fn parse_pct(s: &str) -> Result<u64, Error> {
    let v = number(s.trim().trim_end_matches('%'), "percentage")?;
    if v > 100.0 {
        return Err(Error::Usage(format!("bad percentage {s:?}: 0..100")));
    }
    Ok((v * 10_000.0).round() as u64)
}

/// A rate in kbit/s: `100` (Mbit/s), `100mbit`, `500kbit`, `1gbit`.
pub fn parse_rate(s: &str) -> Result<u64, Error> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("/s").trim_end_matches("ps");
    let (num, scale) = if let Some(n) = t.strip_suffix("kbit") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix("gbit") {
        (n, 1_000_000.0)
    } else {
        (t, 1000.0)
    };
    let v = number(num, "rate")? * scale;
    if v > 400_000_000.0 {
        return Err(Error::Usage(format!("bad rate {s:?}: at most 400gbit")));
    }
    if v < 1.0 && v != 0.0 {
        return Err(Error::Usage(format!("bad rate {s:?}: at least 1kbit")));
    }
    Ok(v.round() as u64)
}

impl SetPort {
    pub fn request(&self) -> Result<Command, Error> {
        let mut set = ImpairSet::default();
        if let Some(d) = &self.delay {
            let (delay, jitter) = parse_delay(d)?;
            set.delay_us = Some(delay);
            set.jitter_us = jitter;
        }
        if let Some(j) = &self.jitter {
            if set.jitter_us.is_some() {
                return Err(Error::Usage(
                    "jitter given twice (--delay MS±JITTER and --jitter)".into(),
                ));
            }
            set.jitter_us = Some(parse_time(j)?);
        }
        set.loss_ppm = self.loss.as_deref().map(parse_pct).transpose()?;
        set.corrupt_ppm = self.corrupt.as_deref().map(parse_pct).transpose()?;
        set.rate_kbit = self.rate.as_deref().map(parse_rate).transpose()?;
        if self.down {
            set.down = Some(true);
        } else if self.up {
            set.down = Some(false);
        }
        if set.is_empty() {
            return Err(Error::Usage(
                "nothing to set: give --delay, --jitter, --loss, --corrupt, --rate, --down or --up"
                    .into(),
            ));
        }
        Ok(Command::SetPort {
            port: self.port.clone(),
            set,
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |p: PortInfo| {
            format!("{}\n", super::show::port_line(&p))
        })
    }
}

impl ClearPort {
    pub fn request(&self) -> Result<Command, Error> {
        Ok(Command::ClearPort {
            port: self.port.clone(),
        })
    }

    pub fn run(&self, ctx: &Ctx) -> Result<String, Error> {
        ctx.query(self.request()?, |p: PortInfo| {
            format!("{}\n", super::show::port_line(&p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_time("50").unwrap(), 50_000);
        assert_eq!(parse_time("1.5ms").unwrap(), 1500);
        assert_eq!(parse_time("2s").unwrap(), 2_000_000);
        assert_eq!(parse_time("250us").unwrap(), 250);
        assert_eq!(parse_delay("50±5").unwrap(), (50_000, Some(5000)));
        assert_eq!(parse_delay("20ms+-2ms").unwrap(), (20_000, Some(2000)));
        assert_eq!(parse_delay("20").unwrap(), (20_000, None));
        assert_eq!(parse_pct("1").unwrap(), 10_000);
        assert_eq!(parse_pct("0.5%").unwrap(), 5000);
        assert_eq!(parse_pct("100").unwrap(), 1_000_000);
        assert_eq!(parse_rate("100").unwrap(), 100_000);
        assert_eq!(parse_rate("500kbit").unwrap(), 500);
        assert_eq!(parse_rate("1gbit").unwrap(), 1_000_000);
        assert_eq!(parse_rate("0").unwrap(), 0);
        for bad in ["-1", "x", "nan", "inf", "61s", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for bad in ["101", "-1", "one"] {
            assert!(parse_pct(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("0.0001kbit").is_err());
    }
}
