//! The event stream (`vswitchctl monitor`) and the cluster: vswitch-agent beside each
//! host's vswitchd, a real etcd (members in namespaces of their own), overlay
//! networks across hosts (docs/cluster.md).

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use vswitch_integration::{bin, wait_until, Lab};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[(
        "monitor_streams_every_kind_in_order",
        monitor_streams_every_kind_in_order,
    )])
}

/// The events in a `monitor --json` log, parsed (every line must parse).
fn events(lab: &Lab, log: &str) -> Result<Vec<serde_json::Value>> {
    lab.read_log(log)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?} is not JSON")))
        .collect()
}

/// Wait until an event of `kind` matching `f` is in the log, after its first `skip`
/// events.
fn wait_event(
    lab: &Lab,
    log: &str,
    skip: usize,
    kind: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Result<()> {
    let ok = wait_until(Duration::from_secs(10), || {
        events(lab, log)
            .map(|v| v.iter().skip(skip).any(|e| e["event"] == kind && f(e)))
            .unwrap_or(false)
    });
    ensure!(ok, "no {kind} event; monitor log:\n{}", lab.read_log(log));
    Ok(())
}

fn monitor_streams_every_kind_in_order() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    let ctl = bin("vswitchctl")?.display().to_string();
    let sock = lab.socket().display().to_string();
    lab.spawn(
        "sw",
        &ctl,
        &["--socket", &sock, "--json", "monitor"],
        "mon.json",
    )?;
    lab.spawn("sw", &ctl, &["--socket", &sock, "monitor"], "mon.txt")?;
    // Both subscribed once a probe bridge shows in both.
    let ready = wait_until(Duration::from_secs(10), || {
        let _ = lab.ctl(&["add-br", "probe"]);
        let _ = lab.ctl(&["del-br", "probe"]);
        lab.read_log("mon.json").contains("probe") && lab.read_log("mon.txt").contains("probe")
    });
    ensure!(
        ready,
        "monitors did not subscribe: {}",
        lab.read_log("mon.txt")
    );

    let by = |k: &'static str, v: &'static str| move |e: &serde_json::Value| e[k] == v;
    let n = |lab: &Lab| lab.read_log("mon.json").lines().count();
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.0.0.0/24",
        "--gateway",
        "10.0.0.1",
        "--dhcp",
        "10.0.0.100-10.0.0.120",
    ])?;
    lab.container("sw", "c1", "v1", "10.0.0.5/24", None)?;
    lab.ctl_ok(&["add-port", "br0", "v1"])?;
    let mac1 = lab.mac("c1", "eth0")?;
    lab.assert_ping("c1", "10.0.0.1")?;
    wait_event(&lab, "mon.json", 0, "mac-learned", |e| {
        e["mac"] == mac1.as_str()
    })?;
    lab.ctl_ok(&["add-host", "br0", "web", "10.0.0.5"])?;
    lab.ctl_ok(&["del-host", "br0", "web"])?;
    // A DHCP client that releases its lease when it quits (-R).
    lab.add_ns("c2")?;
    lab.veth("sw", "v2", "c2", "eth0")?;
    lab.sh("sw", "ip link set v2 up")?;
    lab.sh("c2", "ip link set eth0 up")?;
    lab.ctl_ok(&["add-port", "br0", "v2"])?;
    let script = lab.dir().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add $ip/$mask dev $interface;; \
         deconfig) ip addr flush dev $interface;; esac\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let skip = n(&lab);
    // Bound, then released (SIGUSR2) once the gateway's MAC is known, so the
    // RELEASE leaves at once.
    let pid = lab.dir().join("udhcpc.pid");
    lab.sh(
        "c2",
        &format!(
            "busybox udhcpc -i eth0 -f -t 5 -T 1 -x hostname:alpha -s {s} -p {p} >/dev/null 2>&1 &
             for i in $(seq 100); do ip -4 addr show dev eth0 | grep -q inet && break; sleep 0.1; done
             ping -c 1 -W 1 10.0.0.1 >/dev/null; kill -USR2 $(cat {p})
             for i in $(seq 100); do ip -4 addr show dev eth0 | grep -q inet || break; sleep 0.1; done
             kill $(cat {p})",
            s = script.display(),
            p = pid.display()
        ),
    )?;
    wait_event(
        &lab,
        "mon.json",
        skip,
        "lease-released",
        by("bridge", "br0"),
    )?;
    // c1's MAC now speaks from v2: the address moved.
    lab.sh(
        "c2",
        &format!("ip link set eth0 address {mac1} && ip addr add 10.0.0.6/24 dev eth0"),
    )?;
    let skip = n(&lab);
    let _ = lab.ping_once("c2", "10.0.0.1");
    wait_event(&lab, "mon.json", skip, "mac-moved", by("port", "v2"))?;
    // The guest takes its end down and up again: the port's carrier follows.
    let skip = n(&lab);
    lab.sh("c1", "ip link set eth0 down")?;
    wait_event(&lab, "mon.json", skip, "port-down", by("port", "v1"))?;
    let skip = n(&lab);
    lab.sh("c1", "ip link set eth0 up")?;
    wait_event(&lab, "mon.json", skip, "port-up", by("port", "v1"))?;
    lab.ctl_ok(&["del-port", "br0", "v2"])?;
    lab.ctl_ok(&["del-br", "br0"])?;
    wait_event(&lab, "mon.json", 0, "bridge-removed", by("bridge", "br0"))?;

    // Every kind, in the order the changes were made, each naming its subject.
    let want: &[(&str, &str, &str)] = &[
        ("bridge-added", "bridge", "br0"),
        ("port-added", "port", "v1"),
        ("mac-learned", "mac", &mac1),
        ("name-added", "name", "web"),
        ("name-removed", "name", "web"),
        ("port-added", "port", "v2"),
        ("lease-granted", "name", "alpha"),
        ("name-added", "name", "alpha"),
        ("lease-released", "name", "alpha"),
        ("mac-moved", "port", "v2"),
        ("port-down", "port", "v1"),
        ("port-up", "port", "v1"),
        ("port-removed", "port", "v2"),
        ("bridge-removed", "bridge", "br0"),
    ];
    let got = events(&lab, "mon.json")?;
    let mut it = got.iter();
    for (kind, k, v) in want {
        if !it.any(|e| e["event"] == *kind && e[*k] == *v) {
            bail!(
                "no {kind} {k}={v} after the events before it; monitor log:\n{}",
                lab.read_log("mon.json")
            );
        }
    }
    let seqs: Vec<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure!(
        seqs.len() == got.len() && seqs.windows(2).all(|w| w[1] > w[0]),
        "sequence numbers not increasing: {seqs:?}"
    );
    let moved = got
        .iter()
        .find(|e| e["event"] == "mac-moved")
        .context("mac-moved")?;
    ensure!(moved["old_port"] == "v1", "{moved}");
    // People get one readable line per event.
    let txt = lab.read_log("mon.txt");
    ensure!(
        txt.lines()
            .any(|l| l.starts_with("bridge-added") && l.contains("bridge=br0"))
            && txt
                .lines()
                .any(|l| l.starts_with("lease-granted") && l.contains("name=alpha")),
        "human monitor output:\n{txt}"
    );
    Ok(())
}
