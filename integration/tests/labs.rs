//! The example labs in docs/labs/, brought up and down with `vswitch-lab`.

use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use vswitch_integration::{bin, run, run_ok, wait_until};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        ("three_hosts_vxlan_mesh_lab", three_hosts_vxlan_mesh_lab),
        ("mynet_lab_names_dhcp_routing", mynet_lab_names_dhcp_routing),
        (
            "publish_lab_masquerade_published_port_hairpin",
            publish_lab_masquerade_published_port_hairpin,
        ),
        (
            "redis_cluster_lab_survives_a_master",
            redis_cluster_lab_survives_a_master,
        ),
        (
            "readme_demo_runs_and_cleans_up",
            readme_demo_runs_and_cleans_up,
        ),
        ("wan_lab_impairs_a_link", wan_lab_impairs_a_link),
        ("graph_svg_with_live_rates", graph_svg_with_live_rates),
        ("graph_errors", graph_errors),
    ])
}

fn lab_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/labs")
        .join(name)
}

/// Runs `vswitch-lab down FILE` when dropped, so a failed test leaves nothing behind.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Ok(b) = bin("vswitch-lab") {
            let _ = Command::new(b).arg("down").arg(&self.0).output();
        }
    }
}

fn lab(args: &[&str], file: &PathBuf) -> Result<std::process::Output> {
    run(Command::new(bin("vswitch-lab")?).args(args).arg(file))
}

fn ns_exec(ns: &str, cmd: &str) -> Result<String> {
    run_ok(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", cmd]))
}

fn namespaces(prefix: &str) -> Result<usize> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]))?;
    Ok(out.lines().filter(|l| l.starts_with(prefix)).count())
}

fn summary_has(up: &std::process::Output, row: &str) -> bool {
    String::from_utf8_lossy(&up.stdout)
        .lines()
        .any(|l| l.trim_end() == row)
}

fn three_hosts_vxlan_mesh_lab() -> Result<()> {
    let f = lab_file("three.toml");
    let guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let summary = String::from_utf8_lossy(&up.stdout);
    ensure!(
        summary.contains("a3         h3    overlay  10.0.0.13/24"),
        "{summary}"
    );
    for (from, to) in [
        ("vl-three-a1", "10.0.0.12"),
        ("vl-three-a1", "10.0.0.13"),
        ("vl-three-a2", "10.0.0.13"),
        ("vl-three-a3", "10.0.0.254"),
    ] {
        let ok = wait_until(std::time::Duration::from_secs(10), || {
            ns_exec(from, &format!("ping -c 1 -W 1 {to}")).is_ok()
        });
        ensure!(ok, "{from} cannot reach {to}");
    }
    let again = lab(&["up"], &f)?;
    ensure!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already up")
    );
    ensure!(lab(&["status"], &f)?.status.success());
    let down = lab(&["down"], &f)?;
    ensure!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    ensure!(namespaces("vl-three-")? == 0, "namespaces left behind");
    ensure!(!lab(&["status"], &f)?.status.success(), "status after down");
    drop(guard);
    Ok(())
}

fn mynet_lab_names_dhcp_routing() -> Result<()> {
    let f = lab_file("mynet.toml");
    let _guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let dig = ns_exec("vl-mynet-client", "dig +short +time=2 @10.1.0.1 web")?;
    ensure!(dig.trim() == "10.1.0.10", "{dig}");
    let code = wait_until(std::time::Duration::from_secs(10), || {
        ns_exec(
            "vl-mynet-client",
            "curl -s -m 2 -o /dev/null -w '%{http_code}' http://web/",
        )
        .is_ok_and(|c| c == "200")
    });
    ensure!(code, "the client could not fetch http://web/");
    ns_exec("vl-mynet-db", "ping -c 1 -W 2 10.1.0.10")?;
    // app is on both networks: named on both bridges, reaches db without the router.
    let dig = ns_exec("vl-mynet-db", "dig +short +time=2 @10.2.0.1 app")?;
    ensure!(dig.trim() == "10.2.0.20", "app on backend: {dig}");
    let dig = ns_exec("vl-mynet-client", "dig +short +time=2 @10.1.0.1 app")?;
    ensure!(dig.trim() == "10.1.0.20", "app on mynet: {dig}");
    ns_exec("vl-mynet-app", "ping -c 1 -W 2 10.2.0.10")?;
    let route = ns_exec("vl-mynet-app", "ip route get 10.2.0.10")?;
    ensure!(
        route.contains("dev eth1") && !route.contains("via"),
        "{route}"
    );
    ensure!(
        summary_has(&up, "app        h1    backend  10.2.0.20/24"),
        "{}",
        String::from_utf8_lossy(&up.stdout)
    );
    let dot = run_ok(Command::new(bin("vswitch-lab")?).arg("graph").arg(&f))?;
    ensure!(dot.starts_with("graph \"mynet\""), "{dot}");
    let server = run_ok(Command::new("ps").args(["-eo", "pid,args"]))?;
    let before = server
        .lines()
        .filter(|l| l.contains("http.server -b 10.1.0.10"))
        .count();
    ensure!(before >= 1, "the lab's web server is not running");
    ensure!(lab(&["down"], &f)?.status.success());
    ensure!(namespaces("vl-mynet-")? == 0);
    // `run` commands end with the lab (the whole process group).
    let gone = wait_until(std::time::Duration::from_secs(5), || {
        run_ok(Command::new("ps").args(["-eo", "pid,args"]))
            .map(|o| {
                o.lines()
                    .filter(|l| l.contains("http.server -b 10.1.0.10"))
                    .count()
                    == 0
            })
            .unwrap_or(false)
    });
    ensure!(gone, "the web server outlived `vswitch-lab down`");
    Ok(())
}

fn curl(ns: &str, url: &str) -> String {
    ns_exec(ns, &format!("curl -s -m 3 {url}")).unwrap_or_default()
}

fn publish_lab_masquerade_published_port_hairpin() -> Result<()> {
    let f = lab_file("publish.toml");
    let _guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // Masquerade: the outside server answers, and its log shows the router's address.
    let ok = wait_until(std::time::Duration::from_secs(10), || {
        curl("vl-pub-client", "http://198.51.100.10/").contains("Directory listing")
    });
    ensure!(ok, "client cannot fetch from the outside server");
    let log = std::fs::read_to_string("/run/vswitch-lab/pub/outside.run.log")?;
    ensure!(
        log.contains("198.51.100.2 - - ") && !log.contains("10.1.0.20"),
        "{log}"
    );
    // Published port, from outside and by hairpin from a container on the bridge.
    let ok = wait_until(std::time::Duration::from_secs(10), || {
        curl("vl-pub-outside", "http://198.51.100.2:8080/").trim() == "hello from web"
    });
    ensure!(
        ok,
        "the published port does not serve web's page to the outside"
    );
    let hp = curl("vl-pub-client", "http://198.51.100.2:8080/");
    ensure!(hp.trim() == "hello from web", "hairpin: {hp:?}");
    // Without NAT the outside cannot reach the containers at all.
    ensure!(
        curl("vl-pub-outside", "http://10.1.0.10/").is_empty(),
        "the outside reached a container directly"
    );
    ensure!(lab(&["down"], &f)?.status.success());
    ensure!(namespaces("vl-pub-")? == 0);
    Ok(())
}

/// Six redis-server nodes (cluster mode) on two hosts joined by VXLAN: create the
/// cluster with one replica per master, set a key, stop the master that holds it, and
/// read the key from the promoted replica.
fn redis_cluster_lab_survives_a_master() -> Result<()> {
    let f = lab_file("redis.toml");
    let _guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let ips: Vec<String> = (11..=16).map(|n| format!("10.38.0.{n}")).collect();
    let cli = |from: usize, args: &str| {
        ns_exec(
            &format!("vl-redis-r{}", from + 1),
            &format!("timeout 20 redis-cli {args}"),
        )
    };
    for (i, ip) in ips.iter().enumerate() {
        let ok = wait_until(std::time::Duration::from_secs(15), || {
            cli(i, &format!("-h {ip} ping")).is_ok_and(|o| o.trim() == "PONG")
        });
        ensure!(ok, "redis on {ip} does not answer");
    }
    let nodes: Vec<String> = ips.iter().map(|ip| format!("{ip}:6379")).collect();
    cli(
        0,
        &format!(
            "--cluster create {} --cluster-replicas 1 --cluster-yes",
            nodes.join(" ")
        ),
    )?;
    let ok = wait_until(std::time::Duration::from_secs(30), || {
        ips.iter().enumerate().all(|(i, ip)| {
            cli(i, &format!("-h {ip} cluster info")).is_ok_and(|o| o.contains("cluster_state:ok"))
        })
    });
    ensure!(ok, "the cluster did not reach cluster_state:ok");
    // Replicas sync from their masters after a delay (diskless sync waits 5 s for more
    // replicas): wait (bounded) until every replica's link is up before writing.
    let mut repl = String::new();
    let synced = wait_until(std::time::Duration::from_secs(40), || {
        ips.iter().enumerate().all(|(i, ip)| {
            repl = cli(i, &format!("-h {ip} info replication")).unwrap_or_default();
            repl.contains("role:master") || repl.contains("master_link_status:up")
        })
    });
    ensure!(synced, "a replica never finished its sync:\n{repl}");
    let set = cli(5, "-c -h 10.38.0.16 set lab-key lab-value")?;
    ensure!(set.trim() == "OK", "set: {set}");
    // The master of the key's slot, from CLUSTER NODES (id ip:port@bus flags ...).
    let slot: u32 = cli(0, "-h 10.38.0.11 cluster keyslot lab-key")?
        .trim()
        .parse()?;
    // The roles reach every node by gossip: wait until this node sees all three
    // replicas before reading who serves what.
    let mut table = String::new();
    let settled = wait_until(std::time::Duration::from_secs(30), || {
        table = cli(0, "-h 10.38.0.11 cluster nodes").unwrap_or_default();
        table.lines().filter(|l| l.contains("slave")).count() == 3
    });
    ensure!(settled, "replicas not all known to 10.38.0.11:\n{table}");
    let master_line = table.lines().find(|l| {
        l.contains("master") && l.split_whitespace().skip(8).any(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
        })
    });
    let field = |l: &str, i: usize| l.split_whitespace().nth(i).map(str::to_string);
    let (Some(master_id), Some(master)) = (
        master_line.and_then(|l| field(l, 0)),
        master_line
            .and_then(|l| field(l, 1))
            .and_then(|a| a.split(':').next().map(str::to_string)),
    ) else {
        anyhow::bail!("no master for slot {slot} in:\n{table}");
    };
    // Replication is asynchronous: wait (bounded) until the master's replica has the
    // key, as a careful operator would before taking the master down.
    let replica = table
        .lines()
        .find(|l| field(l, 3).as_deref() == Some(master_id.as_str()))
        .and_then(|l| field(l, 1))
        .and_then(|a| a.split(':').next().map(str::to_string))
        .with_context(|| format!("no replica of {master} in:\n{table}"))?;
    let ri = ips.iter().position(|ip| *ip == replica).unwrap_or(0);
    let replicated = wait_until(std::time::Duration::from_secs(15), || {
        ns_exec(
            &format!("vl-redis-r{}", ri + 1),
            &format!("printf 'READONLY\\nGET lab-key\\n' | timeout 5 redis-cli -h {replica}"),
        )
        .is_ok_and(|o| o.contains("lab-value"))
    });
    if !replicated {
        let info = ns_exec(
            &format!("vl-redis-r{}", ri + 1),
            &format!("timeout 5 redis-cli -h {replica} info replication"),
        )
        .unwrap_or_default();
        anyhow::bail!("the replica {replica} never got lab-key; its replication:\n{info}");
    }
    let mi = ips.iter().position(|ip| *ip == master).unwrap_or(0);
    let other = (mi + 3) % 6;
    let _ = cli(mi, &format!("-h {master} shutdown nosave"));
    let ok = wait_until(std::time::Duration::from_secs(30), || {
        cli(other, &format!("-c -h {} get lab-key", ips[other]))
            .is_ok_and(|o| o.trim() == "lab-value")
    });
    ensure!(
        ok,
        "lab-key is gone after its master {master} stopped:\n{}",
        cli(other, &format!("-h {} cluster nodes", ips[other])).unwrap_or_default()
    );
    ensure!(lab(&["down"], &f)?.status.success());
    ensure!(namespaces("vl-redis-")? == 0);
    Ok(())
}

/// The README's run command: both parts of the demo ping for real and leave nothing.
fn readme_demo_runs_and_cleans_up() -> Result<()> {
    let o = run(Command::new(bin("vswitch-lab")?).arg("demo"))?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success(),
        "demo failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Part one: 4 pings; part two: across the tunnel and across routed subnets.
    ensure!(
        out.matches("3 received, 0% packet loss").count() == 6,
        "{out}"
    );
    ensure!(
        out.contains("[client]$ dig +short @10.0.0.1 web\n  10.0.0.11"),
        "{out}"
    );
    ensure!(out.contains("vx-overlay@192.0.2.2"), "{out}");
    ensure!(out.contains("lab demo is down"), "{out}");
    ensure!(namespaces("vl-demo-")? == 0, "demo namespaces left behind");
    Ok(())
}

fn wan_lab_impairs_a_link() -> Result<()> {
    let f = lab_file("wan.toml");
    let _guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // 20 ms ± 2 ms towards far: ping's min rtt is at least 18 ms (with 1 % loss, 20
    // pings usually all come back; the min is over those that do).
    let out = ns_exec(
        "vl-wan-near",
        "ping -n -c 20 -i 0.05 -W 2 10.7.0.20 | tail -1",
    )?;
    let min: f64 = out
        .split_once(" = ")
        .and_then(|(_, v)| v.split('/').next()?.parse().ok())
        .with_context(|| format!("no rtt in {out:?}"))?;
    ensure!(min >= 18.0, "min rtt {min} ms behind a 20 ms link");
    // far still reaches its gateway (the replies come back through its impaired link).
    let out = ns_exec("vl-wan-far", "ping -n -c 3 -i 0.2 -W 2 10.7.0.1 | tail -1")?;
    ensure!(out.contains("rtt"), "far cannot reach its gateway: {out}");
    Ok(())
}

/// The text elements of an SVG, parsed as XML by Python's ElementTree (a real XML
/// parser: a malformed file fails here).
fn svg_texts(file: &std::path::Path) -> Result<Vec<String>> {
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, xml.etree.ElementTree as E\n\
         t = E.parse(sys.argv[1])\n\
         assert t.getroot().tag == '{http://www.w3.org/2000/svg}svg', t.getroot().tag\n\
         for x in t.iter('{http://www.w3.org/2000/svg}text'): print(x.text)\n",
            )
            .arg(file),
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

/// `12.3 Mbit/s` as Mbit/s.
fn mbit(label: &str) -> Option<f64> {
    let (num, unit) = label.trim().split_once(' ')?;
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "Gbit/s" => v * 1e3,
        "Mbit/s" => v,
        "kbit/s" => v / 1e3,
        "bit/s" => v / 1e6,
        _ => return None,
    })
}

/// A scratch directory of this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch> {
        let p = std::env::temp_dir().join(format!("vswitch-labs-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vswitch-lab graph -o FILE.svg` on the three-host lab while iperf3 sends a1 -> a2
/// at 40 Mbit/s (UDP) across the tunnel: the SVG parses as XML and carries the rates
/// on a1's and a2's links and on the h1-h2 tunnel; once the lab is down, the plain
/// topology (no rates).
fn graph_svg_with_live_rates() -> Result<()> {
    let f = lab_file("three.toml");
    let guard = Down(f.clone());
    let up = lab(&["up"], &f)?;
    ensure!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let dir = Scratch::new("graph")?;
    let svg = dir.path().join("three.svg");
    ns_exec("vl-three-a2", "timeout 60 iperf3 -s -1 -D")?;
    ensure!(
        wait_until(std::time::Duration::from_secs(10), || {
            ns_exec("vl-three-a2", "ss -ltn | grep -q ':5201 '").is_ok()
        }),
        "iperf3 server did not start"
    );
    let log = dir.path().join("iperf3.json");
    let mut client = Command::new("ip")
        .args(["netns", "exec", "vl-three-a1", "sh", "-c"])
        .arg(format!(
            "timeout 60 iperf3 -c 10.0.0.12 -u -b 40M -t 8 -J >{}",
            log.display()
        ))
        .spawn()?;
    // Rates over 2 s from the middle of the stream.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let g = run(Command::new(bin("vswitch-lab")?)
        .args(["graph", "-i", "2", "-o"])
        .arg(&svg)
        .arg(&f))?;
    let waited = client.wait()?;
    ensure!(
        g.status.success(),
        "graph failed: {}",
        String::from_utf8_lossy(&g.stderr)
    );
    ensure!(waited.success(), "iperf3 failed");
    let sent = std::fs::read_to_string(&log)?;
    let v: serde_json::Value = serde_json::from_str(&sent)?;
    let iperf = v["end"]["sum"]["bits_per_second"]
        .as_f64()
        .context("no iperf3 result")?
        / 1e6;
    let texts = svg_texts(&svg)?;
    eprintln!("iperf3 {iperf:.1} Mbit/s; graph labels: {texts:?}");
    ensure!(
        texts
            .iter()
            .any(|t| t.starts_with("lab three: rates over 2 s at ")),
        "no title with the interval"
    );
    // Each container's link: eth0, then rx, then tx (as the container sees them).
    let link = |ctr: &str| -> Result<(f64, f64)> {
        let i = texts
            .iter()
            .position(|t| t == ctr)
            .with_context(|| format!("{ctr} not in the graph"))?;
        let j = i + texts[i..]
            .iter()
            .position(|t| t == "eth0")
            .context("eth0")?;
        let rx = texts
            .get(j + 1)
            .and_then(|t| t.strip_prefix("rx "))
            .and_then(mbit);
        let tx = texts
            .get(j + 2)
            .and_then(|t| t.strip_prefix("tx "))
            .and_then(mbit);
        Ok((rx.context("rx label")?, tx.context("tx label")?))
    };
    let (a1_rx, a1_tx) = link("a1")?;
    let (a2_rx, a2_tx) = link("a2")?;
    let tunnel = texts
        .iter()
        .find_map(|t| t.strip_prefix("h1 → h2 "))
        .and_then(mbit)
        .context("no h1 → h2 tunnel rate")?;
    // 40 Mbit/s of UDP payload are ~41 Mbit/s of frames.
    let near = |x: f64| (30.0..=55.0).contains(&x);
    ensure!(
        near(a1_tx) && near(a2_rx) && near(tunnel),
        "a1 tx {a1_tx}, a2 rx {a2_rx}, tunnel {tunnel} Mbit/s while iperf3 sent {iperf:.1}"
    );
    ensure!(
        a1_rx < 1.0 && a2_tx < 1.0,
        "reverse rates a1 rx {a1_rx}, a2 tx {a2_tx}"
    );
    let down = lab(&["down"], &f)?;
    ensure!(down.status.success(), "down failed");
    drop(guard);
    let g = run(Command::new(bin("vswitch-lab")?)
        .args(["graph", "--format", "svg", "-o"])
        .arg(&svg)
        .arg(&f))?;
    ensure!(g.status.success(), "graph of a lab that is down failed");
    let texts = svg_texts(&svg)?;
    ensure!(
        texts.iter().any(|t| t == "vxlan 100")
            && !texts
                .iter()
                .any(|t| t.contains("bit/s") || t.starts_with("lab three")),
        "down lab: {texts:?}"
    );
    Ok(())
}

/// Missing Graphviz, an unwritable output, a bad lab file: one line, exit 1.
fn graph_errors() -> Result<()> {
    let dir = Scratch::new("graph-errors")?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[[host]]\nname = 5\n")?;
    let f = lab_file("three.toml");
    let cases: [(Vec<String>, Option<&str>, &str); 4] = [
        (
            vec!["--format".into(), "svg".into(), f.display().to_string()],
            Some("/nonexistent"),
            "Graphviz's dot is not installed",
        ),
        (
            vec![
                "-o".into(),
                "/nonexistent/dir/g.svg".into(),
                f.display().to_string(),
            ],
            None,
            "cannot write /nonexistent/dir/g.svg",
        ),
        (vec![bad.display().to_string()], None, "line 3"),
        (
            vec![
                "-o".into(),
                dir.path().join("x.png").display().to_string(),
                "/nonexistent.toml".into(),
            ],
            None,
            "/nonexistent.toml",
        ),
    ];
    for (args, path, want) in cases {
        let mut c = Command::new(bin("vswitch-lab")?);
        c.arg("graph").args(&args);
        if let Some(p) = path {
            c.env("PATH", p);
        }
        let o = run(&mut c)?;
        let err = String::from_utf8_lossy(&o.stderr);
        ensure!(
            o.status.code() == Some(1)
                && err.lines().count() == 1
                && err.starts_with("error: ")
                && err.contains(want),
            "graph {args:?}: exit {:?}, {err:?}",
            o.status.code()
        );
    }
    // A PNG when Graphviz is there.
    let png = dir.path().join("g.png");
    let o = run(Command::new(bin("vswitch-lab")?)
        .args(["graph", "--no-rates", "-o"])
        .arg(&png)
        .arg(&f))?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let head = std::fs::read(&png)?;
    ensure!(head.starts_with(b"\x89PNG\r\n"), "not a PNG");
    Ok(())
}
