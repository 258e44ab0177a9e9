//! The cluster benchmark (benches/cluster/run.sh): N hosts (vswitchd + vswitch-agent
//! each, in namespaces) and a 3-member etcd on one underlay, E endpoints per host on
//! one overlay network. Measures, as a Markdown table on stdout:
//! - time from `pipework` on one host until every other host can ping the new
//!   endpoint (p50/p99 over the samples),
//! - convergence after a node failure (kill -9 of its vswitchd and agent) until every
//!   other host has dropped its tunnel, against the TTL,
//! - etcd writes per endpoint (revisions spent while the endpoints were added),
//! - vswitchd and agent memory (RSS) per node.
//!
//! Runs only inside a private network namespace (it re-executes itself under
//! `unshare --net`, like the test runner).

use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};
use vswitch_integration::cluster::{node_state, Cluster};
use vswitch_integration::{run, runner, wait_until, Lab};

struct Args {
    hosts: u8,
    per_host: u8,
    samples: usize,
    ttl: u32,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        hosts: 4,
        per_host: 4,
        samples: 20,
        ttl: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut v = || it.next().context("missing value");
        match f.as_str() {
            "--hosts" => a.hosts = v()?.parse()?,
            "--per-host" => a.per_host = v()?.parse()?,
            "--samples" => a.samples = v()?.parse()?,
            "--ttl" => a.ttl = v()?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    ensure!((2..=32).contains(&a.hosts), "--hosts must be 2..32");
    ensure!((1..=64).contains(&a.per_host), "--per-host must be 1..64");
    ensure!(
        a.samples >= 1 && a.samples <= 200,
        "--samples must be 1..200"
    );
    Ok(a)
}

fn rss_kb(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn etcd_revision(cl: &Cluster, lab: &Lab) -> Result<i64> {
    let out = cl.etcdctl(lab, &["endpoint", "status", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v.as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(|m| m["Status"]["header"]["revision"].as_i64())
                .max()
        })
        .context("no revision in endpoint status")
}

/// Seconds since midnight UTC, now.
fn now_tod() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86400.0)
}

/// Seconds since midnight UTC of a log line (`2026-12-05T12:58:04.119417Z ...`).
fn line_tod(line: &str) -> Option<f64> {
    let t = line.get(11..line.find('Z')?)?;
    let mut it = t.split(':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The integer value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<i64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let v: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    v.parse().ok()
}

/// From the agents' debug logs: when the owner's agent published the new endpoint
/// (seconds after `start`), when the last other host's agent had pushed a view that
/// includes it to its vswitchd, and which host that was. Waits up to 5 s.
fn control_path(
    cl: &Cluster,
    hosts: &[String],
    owner: usize,
    start: f64,
) -> Option<(f64, f64, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = |h: &str| cl.log_tail(&format!("{h}-agent.log"), usize::MAX);
        let first = |h: &str, what: &str, rev: i64| {
            log(h)
                .lines()
                .filter(|l| l.contains(what))
                .filter_map(|l| Some((line_tod(l)?, field(l, "rev")?, l.to_string())))
                .find(|(t, r, l)| *t >= start && *r >= rev && field(l, "puts") != Some(0))
                .map(|(t, r, l)| (t, r, field(&l, "us").unwrap_or(0)))
        };
        let res = first(&hosts[owner], "endpoints published", 0).and_then(|(tp, rev, _)| {
            let mut last = (tp, hosts[owner].clone());
            let mut us = Vec::new();
            for (j, h) in hosts.iter().enumerate() {
                if j != owner {
                    let (t, _, u) = first(h, "overlay-set pushed", rev)?;
                    us.push(u);
                    if t > last.0 {
                        last = (t, h.clone());
                    }
                }
            }
            us.sort_unstable();
            let slow = format!(
                "{}; overlay-set call median {} us, max {} us",
                last.1,
                us.get(us.len() / 2).copied().unwrap_or(0),
                us.last().copied().unwrap_or(0)
            );
            Some((tp - start, last.0 - start, slow))
        });
        if res.is_some() || Instant::now() >= deadline {
            return res;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a failed sample: what the hosts involved know, and their logs.
fn diagnose(cl: &Cluster, lab: &Lab, hosts: &[String], owner: &str, failed: &[&String], ip: &str) {
    let show = |h: &str| {
        cl.show(h).map_or("no cluster-show".to_string(), |v| {
            let nodes: Vec<String> = v["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|n| n["state"] != "alive")
                        .map(|n| format!("{}={}", n["name"], n["state"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "endpoints {} not-alive {nodes:?}",
                v["networks"][0]["endpoints"]
            )
        })
    };
    for p in failed {
        let Some(n) = p.strip_prefix('p').and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let Some(h) = hosts.get(n.wrapping_sub(1)) else {
            continue;
        };
        let neigh = lab
            .sh_out(p, &format!("ip neigh show {ip}"))
            .map_or(String::new(), |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            });
        eprintln!("--- {p} on {h}: neigh [{neigh}], {}", show(h));
        eprintln!("{h} agent:\n{}", cl.log_tail(&format!("{h}-agent.log"), 15));
        eprintln!(
            "{h} vswitchd:\n{}",
            cl.log_tail(&format!("{h}-vswitchd.log"), 15)
        );
    }
    // Is the owner host reachable at all (its probe over the overlay, its VTEP over
    // the underlay)?
    let on = owner.trim_start_matches('h');
    if let Some(p) = failed.first() {
        let h = format!("h{}", p.trim_start_matches('p'));
        for (ns, dst) in [
            (p.as_str(), format!("10.1.{on}.2")),
            (h.as_str(), format!("192.0.2.{on}")),
        ] {
            let ok = run(lab.cmd(ns, "ping").args(["-c", "2", "-W", "1", &dst]))
                .is_ok_and(|o| o.status.success());
            eprintln!(
                "--- ping {ns} -> {dst}: {}",
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    eprintln!("--- owner {owner}: {}", show(owner));
    eprintln!(
        "{owner} agent:\n{}",
        cl.log_tail(&format!("{owner}-agent.log"), 15)
    );
    eprintln!(
        "{owner} vswitchd:\n{}",
        cl.log_tail(&format!("{owner}-vswitchd.log"), 15)
    );
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(a: &Args) -> Result<String> {
    let mut lab = Lab::new()?;
    let mut cl = Cluster::new(&mut lab, 3)?;
    cl.ttl = a.ttl;
    let hosts: Vec<String> = (1..=a.hosts)
        .map(|n| cl.add_host(&mut lab, n))
        .collect::<Result<_>>()?;
    cl.ctl_ok(
        "h1",
        &[
            "add-br",
            "ov",
            "--overlay",
            "--subnet",
            "10.1.0.0/16",
            "--gateway",
            "10.1.0.1",
        ],
    )?;
    for h in &hosts {
        let ok = wait_until(Duration::from_secs(30), || {
            cl.ctl(h, &["list-br"])
                .is_ok_and(|o| o.stdout.lines().any(|l| l.trim() == "ov"))
        });
        ensure!(ok, "ov did not reach {h}");
    }
    // A probe container on every host (the pinger), then the endpoints.
    let rev0 = etcd_revision(&cl, &lab)?;
    let t_fill = Instant::now();
    for (i, h) in hosts.iter().enumerate() {
        let n = i + 1;
        cl.pipework_ok(
            &mut lab,
            h,
            "ov",
            &format!("p{n}"),
            &format!("10.1.{n}.2/16"),
        )?;
        for k in 0..a.per_host {
            cl.pipework_ok(
                &mut lab,
                h,
                "ov",
                &format!("e{n}x{k}"),
                &format!("10.1.{n}.{}/16", 10 + k),
            )?;
        }
    }
    let total_eps = hosts.len() * (usize::from(a.per_host) + 1);
    let ok = wait_until(Duration::from_secs(120), || {
        cl.show("h1")
            .is_some_and(|v| v["networks"][0]["endpoints"] == total_eps as u64)
    });
    ensure!(ok, "not every endpoint was published");
    let fill_s = t_fill.elapsed().as_secs_f64();
    let rev1 = etcd_revision(&cl, &lab)?;
    let writes_per_ep = (rev1 - rev0) as f64 / total_eps as f64;

    // Time to reachability: a new endpoint on host i, pinged from every other host's
    // probe until all answer.
    let mut times = Vec::new();
    let (mut published, mut installed) = (Vec::new(), Vec::new());
    for s in 0..a.samples {
        let i = s % hosts.len();
        let n = i + 1;
        let name = format!("n{s}");
        let ip = format!("10.1.{}.{}", 200 + s / 50, 10 + s % 50);
        lab.add_ns(&name)?;
        lab.sh(&name, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1")?;
        let start_tod = now_tod();
        let start = Instant::now();
        cl.pipework_ok(&mut lab, &hosts[i], "ov", &name, &format!("{ip}/16"))?;
        let plumbed = start.elapsed().as_secs_f64();
        let probes: Vec<String> = (1..=hosts.len())
            .filter(|m| *m != n)
            .map(|m| format!("p{m}"))
            .collect();
        let done: Vec<bool> = std::thread::scope(|sc| {
            let hs: Vec<_> = probes
                .iter()
                .map(|p| {
                    let lab = &lab;
                    let ip = ip.clone();
                    sc.spawn(move || {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < deadline {
                            // 0.2 s per try: the measurement's granularity.
                            let ok = run(lab.cmd(p, "ping").args(["-c", "1", "-W", "0.2", &ip]))
                                .is_ok_and(|o| o.status.success());
                            if ok {
                                return true;
                            }
                        }
                        false
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(false)).collect()
        });
        if !done.iter().all(|d| *d) {
            let failed: Vec<&String> = probes
                .iter()
                .zip(&done)
                .filter(|(_, d)| !**d)
                .map(|(p, _)| p)
                .collect();
            eprintln!(
                "sample {s}: {ip} (on {}) not reachable from {failed:?}",
                hosts[i]
            );
            diagnose(&cl, &lab, &hosts, &hosts[i], &failed, &ip);
            bail!("sample {s}: {ip} not reachable from every host");
        }
        let t = start.elapsed().as_secs_f64();
        // The kernel's ARP table is one for all namespaces (gc_thresh3, 1024 entries
        // on this machine's defaults): on real hosts each has its own. Without this,
        // every sample leaves an entry in each probe and one per probe in the new
        // endpoint, and at 32 hosts the shared table overflows after about 15 samples
        // ("neighbor table overflow": a probe cannot resolve the next endpoint at all).
        let flush: Vec<String> = probes
            .iter()
            .chain(std::iter::once(&name))
            .map(|p| format!("ip -n {} neigh flush all", lab.ns(p)))
            .collect();
        run(std::process::Command::new("sh").args(["-c", &flush.join("; ")]))
            .context("flushing the probes' ARP entries")?;
        let path = control_path(&cl, &hosts, i, start_tod);
        let path_s = match path {
            Some((p, inst, slow)) => {
                published.push(p);
                installed.push(inst);
                format!("; published {p:.3} s, installed everywhere {inst:.3} s (last {slow})")
            }
            None => "; not installed everywhere within 5 s".to_string(),
        };
        eprintln!(
            "sample {s}: host {n}, pipework {plumbed:.3} s, reachable everywhere {t:.3} s{path_s}"
        );
        times.push(t);
    }
    times.sort_by(|x, y| x.total_cmp(y));
    published.sort_by(|x: &f64, y| x.total_cmp(y));
    installed.sort_by(|x: &f64, y| x.total_cmp(y));
    eprintln!(
        "{} hosts: pipework -> published in etcd p50 {:.3} s p99 {:.3} s; -> installed on every other host (overlay-set done) p50 {:.3} s p99 {:.3} s ({} of {} samples)",
        hosts.len(),
        pct(&published, 50.0),
        pct(&published, 99.0),
        pct(&installed, 50.0),
        pct(&installed, 99.0),
        installed.len(),
        a.samples
    );

    // Memory per node.
    let (mut vs, mut ag) = (Vec::new(), Vec::new());
    for h in &hosts {
        let (v, g) = cl.pids(h);
        vs.push(rss_kb(v));
        ag.push(rss_kb(g));
    }
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;

    // Convergence after a node failure: the last host dies; every other host drops
    // its tunnel to it.
    let dead = hosts.last().context("hosts")?.clone();
    let dead_ip = format!("192.0.2.{}", hosts.len());
    let start = Instant::now();
    cl.kill_host(&dead)?;
    let ok = wait_until(Duration::from_secs(60), || {
        hosts.iter().filter(|h| **h != dead).all(|h| {
            let gone = cl
                .show(h)
                .is_some_and(|v| node_state(&v, &dead).as_deref() == Some("gone"));
            let tunnels = cl
                .ctl_json(h, &["list-ports", "ov"])
                .map(|v| !v.to_string().contains(&format!("\"{dead_ip}\"")))
                .unwrap_or(false);
            gone && tunnels
        })
    });
    ensure!(ok, "the cluster did not converge after {dead} died");
    let converge = start.elapsed().as_secs_f64();

    let rev = run(std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(format!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.1} (TTL {} + 2 = {}) | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        hosts.len(),
        a.per_host,
        times.len(),
        pct(&times, 50.0),
        pct(&times, 99.0),
        converge,
        a.ttl,
        a.ttl + 2,
        writes_per_ep,
        avg(&vs),
        avg(&ag),
        fill_s,
        rev
    ))
}

fn main() -> std::process::ExitCode {
    if std::env::var_os(runner::INNER_ENV).is_none() {
        let Ok(exe) = std::env::current_exe() else {
            eprintln!("error: cannot find this program");
            return std::process::ExitCode::FAILURE;
        };
        let st = std::process::Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(runner::INNER_ENV, "1")
            .status();
        return match st {
            Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
            _ => std::process::ExitCode::FAILURE,
        };
    }
    let res = parse().and_then(|a| bench(&a));
    match res {
        Ok(row) => {
            println!("{row}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
