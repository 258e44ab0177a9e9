//! vswitch-cni driven exactly as a runtime drives it (the `CNI_*` environment and
//! the configuration on stdin) against a real vswitchd, in namespaces the test
//! made: every command, its error codes, delegation to Debian's `host-local`,
//! chaining with `tuning`, published ports reached from an outside namespace, and
//! Podman 4 (CNI backend) running containers on a vswitch bridge.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vswitch_integration::{bin, run, run_ok, terminate, wait_until, Lab};
use vswitch_proto::{AllocAddress, AllocEntry, Client, Command as Req};

fn main() -> std::process::ExitCode {
    vswitch_integration::runner::main(&[
        (
            "add_check_del_as_a_runtime_does",
            add_check_del_as_a_runtime_does,
        ),
        (
            "errors_as_the_spec_shapes_them",
            errors_as_the_spec_shapes_them,
        ),
        (
            "gc_removes_only_stale_attachments",
            gc_removes_only_stale_attachments,
        ),
        (
            "host_local_delegation_and_tuning_chain",
            host_local_delegation_and_tuning_chain,
        ),
        (
            "port_mappings_reach_the_container_from_outside",
            port_mappings_reach_the_container_from_outside,
        ),
        (
            "podman_containers_on_a_vswitch_bridge",
            podman_containers_on_a_vswitch_bridge,
        ),
        (
            "podman_docker_and_pipework_share_one_bridge",
            podman_docker_and_pipework_share_one_bridge,
        ),
    ])
}

/// Debian's containernetworking-plugins.
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// One plugin run: exit status and stdout (JSON, or `Null` when empty).
struct Ran {
    ok: bool,
    out: Value,
}

impl Ran {
    fn code(&self) -> Option<u64> {
        self.out["code"].as_u64()
    }
}

/// Run vswitch-cni with `CNI_COMMAND=cmd`, `env` and `stdin`, as a runtime does.
fn cni(cmd: &str, env: &[(&str, &str)], stdin: &str) -> Result<Ran> {
    let mut c = Command::new(bin("vswitch-cni")?);
    for (k, _) in std::env::vars() {
        if k.starts_with("CNI_") || k == "VSWITCH_SOCK" {
            c.env_remove(k);
        }
    }
    c.env("CNI_COMMAND", cmd)
        .env("CNI_PATH", CNI_PLUGINS)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("run vswitch-cni")?;
    if let Some(mut i) = child.stdin.take() {
        use std::io::Write;
        i.write_all(stdin.as_bytes())?;
    }
    let o = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let out = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{cmd}: stdout is not JSON: {text}"))?
    };
    if !o.stderr.is_empty() {
        eprintln!(
            "vswitch-cni {cmd} stderr: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(Ran {
        ok: o.status.success(),
        out,
    })
}

/// An attachment: container id, netns path, interface.
struct Att<'a> {
    id: &'a str,
    netns: String,
    ifname: &'a str,
    args: &'a str,
}

impl<'a> Att<'a> {
    fn new(lab: &Lab, ns: &str, id: &'a str) -> Att<'a> {
        Att {
            id,
            netns: format!("/run/netns/{}", lab.ns(ns)),
            ifname: "eth0",
            args: "",
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("CNI_CONTAINERID", self.id),
            ("CNI_NETNS", self.netns.as_str()),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
        ]
    }

    fn run(&self, cmd: &str, conf: &Value) -> Result<Ran> {
        cni(cmd, &self.env(), &conf.to_string())
    }

    /// ADD, which must succeed: the result.
    fn add(&self, conf: &Value) -> Result<Value> {
        let r = self.run("ADD", conf)?;
        ensure!(r.ok, "ADD {} failed: {}", self.id, r.out);
        Ok(r.out)
    }

    /// A command that must succeed without output (DEL, CHECK).
    fn quiet(&self, cmd: &str, conf: &Value) -> Result<()> {
        let r = self.run(cmd, conf)?;
        ensure!(r.ok && r.out.is_null(), "{cmd} {}: {}", self.id, r.out);
        Ok(())
    }
}

/// `conf` with `key` set to `v`.
fn with(conf: &Value, key: &str, v: Value) -> Value {
    let mut c = conf.clone();
    c[key] = v;
    c
}

fn net_conf(lab: &Lab, version: &str, name: &str, bridge: &str, subnet: &str, gw: &str) -> Value {
    json!({
        "cniVersion": version, "name": name, "type": "vswitch", "bridge": bridge,
        "subnet": subnet, "gateway": gw, "socket": lab.socket(),
    })
}

fn allocations(lab: &Lab, bridge: &str) -> Result<Vec<AllocEntry>> {
    let mut c = Client::connect(&lab.socket())?;
    Ok(c.call(Req::ListAllocations {
        bridge: bridge.to_string(),
    })?)
}

fn holds(lab: &Lab, bridge: &str, owner: &str) -> Result<Vec<String>> {
    Ok(allocations(lab, bridge)?
        .into_iter()
        .filter(|a| a.owner == owner)
        .map(|a| a.ip)
        .collect())
}

/// The ports of `bridge` as `(name, external_ids)`.
fn ports(lab: &Lab, bridge: &str) -> Result<Vec<(String, Value)>> {
    let v = lab.ctl_json(&["list-ports", bridge])?;
    Ok(v.as_array()
        .context("list-ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["external_ids"].clone(),
            )
        })
        .collect())
}

fn cni_ports(lab: &Lab, bridge: &str) -> Result<Vec<String>> {
    Ok(ports(lab, bridge)?
        .into_iter()
        .filter(|(_, ids)| ids["cni"] == "1")
        .map(|(_, ids)| {
            format!(
                "{}/{}",
                ids["cni_network"].as_str().unwrap_or(""),
                ids["cni_container"].as_str().unwrap_or("")
            )
        })
        .collect())
}

fn hosts(lab: &Lab, bridge: &str) -> Result<Vec<(String, String)>> {
    let v = lab.ctl_json(&["list-hosts", bridge])?;
    Ok(v.as_array()
        .context("list-hosts")?
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or("").to_string(),
                h["ip"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// `dig +short NAME @server` from namespace `ns`.
fn dig(lab: &Lab, ns: &str, name: &str, server: &str) -> Result<String> {
    let out = lab.sh_out(ns, &format!("dig +short +time=2 +tries=2 {name} @{server}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn addr_of(result: &Value) -> Result<(String, String)> {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .context("no ips[0].address in the result")?;
    let ip = cidr.split('/').next().unwrap_or_default().to_string();
    Ok((cidr.to_string(), ip))
}

fn add_check_del_as_a_runtime_does() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.add_ns("c1")?;
    lab.add_ns("c2")?;
    // The bridge does not exist: the first ADD makes it from the configuration.
    let conf = net_conf(&lab, "1.1.0", "net1", "cni0", "10.3.0.0/24", "10.3.0.1");
    let mut a1 = Att::new(&lab, "c1", "ctr1");
    a1.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
    let r1 = a1.add(&conf)?;
    ensure!(r1["cniVersion"] == "1.1.0", "{r1}");
    let (cidr1, ip1) = addr_of(&r1)?;
    ensure!(
        cidr1.starts_with("10.3.0.") && cidr1.ends_with("/24"),
        "{r1}"
    );
    ensure!(
        r1["ips"][0]["gateway"] == "10.3.0.1" && r1["ips"][0]["interface"] == 1,
        "{r1}"
    );
    let c = &r1["interfaces"][1];
    ensure!(
        c["name"] == "eth0" && c["sandbox"] == a1.netns.as_str() && c["mtu"] == 1500,
        "{r1}"
    );
    ensure!(c["mac"] == lab.mac("c1", "eth0")?.as_str(), "{r1}");
    ensure!(
        r1["interfaces"][0].get("sandbox").is_none(),
        "host end: {r1}"
    );
    ensure!(
        r1["routes"] == json!([{"dst": "0.0.0.0/0", "gw": "10.3.0.1"}]),
        "{r1}"
    );
    ensure!(r1["dns"]["nameservers"] == json!(["10.3.0.1"]), "{r1}");

    // Capabilities: a MAC, an address and aliases asked for by the runtime.
    let conf2 = with(
        &conf,
        "runtimeConfig",
        json!({"mac": "02:00:00:00:03:07", "ips": ["10.3.0.7/24"], "aliases": ["db", "DB-Alias"]}),
    );
    let a2 = Att::new(&lab, "c2", "ctr2");
    let r2 = a2.add(&conf2)?;
    ensure!(r2["ips"][0]["address"] == "10.3.0.7/24", "{r2}");
    ensure!(lab.mac("c2", "eth0")? == "02:00:00:00:03:07");
    lab.assert_ping("c1", "10.3.0.7")?;
    lab.assert_ping("c2", "10.3.0.1")?;
    // Names at the gateway: the pod name, the aliases.
    ensure!(dig(&lab, "c2", "web", "10.3.0.1")? == ip1, "web");
    ensure!(
        dig(&lab, "c1", "db-alias", "10.3.0.1")? == "10.3.0.7",
        "alias"
    );
    let owner1 = "cni:net1/ctr1/eth0";
    ensure!(
        holds(&lab, "cni0", owner1)? == [ip1.clone()],
        "address held"
    );
    ensure!(cni_ports(&lab, "cni0")?.len() == 2);

    // CHECK against prevResult; a second ADD is refused and changes nothing.
    let with_prev = with(&conf, "prevResult", r1.clone());
    a1.quiet("CHECK", &with_prev)?;
    let before = lab.config_snapshot()?;
    let again = a1.run("ADD", &conf)?;
    ensure!(!again.ok && again.code() == Some(101), "{}", again.out);
    ensure!(
        again.out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("already exists"),
        "{}",
        again.out
    );
    ensure!(
        lab.config_snapshot()? == before,
        "a refused ADD changed vswitchd"
    );
    // An address gone from the container: CHECK says so.
    run_ok(Command::new("ip").args(["-n", &lab.ns("c1"), "addr", "del", &cidr1, "dev", "eth0"]))?;
    let bad = a1.run("CHECK", &with_prev)?;
    ensure!(!bad.ok && bad.code() == Some(100), "{}", bad.out);
    ensure!(
        bad.out["msg"].as_str().unwrap_or("").contains(&cidr1),
        "{}",
        bad.out
    );

    // DEL removes port, veth, name and address; DEL again is still success.
    a1.quiet("DEL", &with_prev)?;
    ensure!(
        holds(&lab, "cni0", owner1)?.is_empty(),
        "address still held"
    );
    ensure!(
        !hosts(&lab, "cni0")?.iter().any(|(n, _)| n == "web"),
        "name left"
    );
    ensure!(cni_ports(&lab, "cni0")? == ["net1/ctr2"]);
    let gone = run(Command::new("ip").args(["-n", &lab.ns("c1"), "link", "show", "eth0"]))?;
    ensure!(!gone.status.success(), "eth0 still in c1");
    a1.quiet("DEL", &with_prev)?;
    // DEL after the runtime already removed the namespace.
    run_ok(Command::new("ip").args(["netns", "del", &lab.ns("c2")]))?;
    a2.quiet("DEL", &conf2)?;
    ensure!(cni_ports(&lab, "cni0")?.is_empty(), "port of c2 left");
    ensure!(allocations(&lab, "cni0")?.is_empty(), "addresses left");
    ensure!(hosts(&lab, "cni0")?.is_empty(), "names left");
    Ok(())
}

fn errors_as_the_spec_shapes_them() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.add_ns("c1")?;
    let conf = net_conf(&lab, "1.1.0", "net1", "cni0", "10.3.0.0/24", "10.3.0.1");
    let a = Att::new(&lab, "c1", "ctr1");
    // (what, expected code, result)
    let expect = |what: &str, want: u64, r: Ran| -> Result<()> {
        ensure!(!r.ok, "{what}: exited 0: {}", r.out);
        ensure!(
            r.code() == Some(want),
            "{what}: want code {want}, got {}",
            r.out
        );
        ensure!(
            r.out["cniVersion"].is_string() && r.out["msg"].is_string(),
            "{what}: {}",
            r.out
        );
        Ok(())
    };

    let v = cni("VERSION", &[], r#"{"cniVersion":"1.0.0"}"#)?;
    ensure!(v.ok && v.out["cniVersion"] == "1.0.0", "{}", v.out);
    let vs = v.out["supportedVersions"]
        .as_array()
        .context("supportedVersions")?;
    for want in ["1.1.0", "1.0.0", "0.4.0", "0.3.1"] {
        ensure!(
            vs.iter().any(|x| x == want),
            "VERSION lacks {want}: {}",
            v.out
        );
    }
    expect("not JSON", 6, cni("ADD", &a.env(), "{\"cniVersion\": ")?)?;
    expect(
        "vlan not a number",
        6,
        a.run("ADD", &with(&conf, "vlan", json!("ten")))?,
    )?;
    let mut nb = conf.clone();
    nb.as_object_mut().context("conf")?.remove("bridge");
    expect("no bridge", 7, a.run("ADD", &nb)?)?;
    expect(
        "bad subnet",
        7,
        a.run("ADD", &with(&conf, "subnet", json!("10.3.0.0/33")))?,
    )?;
    expect(
        "vlan 5000",
        7,
        a.run("ADD", &with(&conf, "vlan", json!(5000)))?,
    )?;
    expect(
        "unknown version",
        1,
        a.run("ADD", &with(&conf, "cniVersion", json!("2.0.0")))?,
    )?;
    expect(
        "CHECK in 0.3.1",
        1,
        a.run("CHECK", &with(&conf, "cniVersion", json!("0.3.1")))?,
    )?;
    expect(
        "GC in 1.0.0",
        1,
        cni(
            "GC",
            &[],
            &with(&conf, "cniVersion", json!("1.0.0")).to_string(),
        )?,
    )?;
    let no_ns: Vec<_> = a
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    let r = cni("ADD", &no_ns, &conf.to_string())?;
    ensure!(
        r.out["msg"].as_str().unwrap_or("").contains("CNI_NETNS"),
        "{}",
        r.out
    );
    expect("no CNI_NETNS", 4, r)?;
    let mut gone = Att::new(&lab, "c1", "ctr1");
    gone.netns = "/run/netns/vswitch-cni-test-no-such-ns".into();
    expect("netns missing", 3, gone.run("ADD", &conf)?)?;
    let mut long = Att::new(&lab, "c1", "ctr1");
    long.ifname = "a-very-long-ifname";
    expect("CNI_IFNAME too long", 4, long.run("ADD", &conf)?)?;
    expect("unknown command", 4, a.run("FROB", &conf)?)?;
    // A bridge that does not exist, and no subnet to make it with.
    let mut nosub = with(&conf, "bridge", json!("nobr"));
    let o = nosub.as_object_mut().context("conf")?;
    o.remove("subnet");
    o.remove("gateway");
    expect("missing bridge, no subnet", 7, a.run("ADD", &nosub)?)?;
    expect(
        "STATUS, bridge not makeable",
        50,
        cni("STATUS", &[], &nosub.to_string())?,
    )?;
    // None of that changed anything.
    ensure!(
        lab.ctl_json(&["list-br"])?
            .as_array()
            .is_some_and(|b| b.is_empty()),
        "bridges appeared"
    );

    // STATUS: ready (no output); an older version's result shape.
    let st = cni("STATUS", &[], &conf.to_string())?;
    ensure!(st.ok && st.out.is_null(), "{}", st.out);
    let old = with(&conf, "cniVersion", json!("0.4.0"));
    let r = a.add(&old)?;
    ensure!(
        r["cniVersion"] == "0.4.0" && r["ips"][0]["version"] == "4",
        "{r}"
    );
    // A VLAN port: the router serves untagged ports only, so no gateway, no names,
    // and no published ports.
    let mut vl = Att::new(&lab, "c1", "ctrv");
    vl.ifname = "eth5";
    let vconf = with(&conf, "vlan", json!(10));
    let pm = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}]});
    expect(
        "vlan + portMappings",
        7,
        vl.run("ADD", &with(&vconf, "runtimeConfig", pm))?,
    )?;
    let rv = vl.add(&vconf)?;
    ensure!(
        rv.get("routes").is_none() && rv.get("dns").is_none(),
        "{rv}"
    );
    ensure!(rv["ips"][0].get("gateway").is_none(), "{rv}");
    let tagged = lab.ctl_json(&["list-ports", "cni0"])?;
    ensure!(
        tagged
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["tag"] == 10)),
        "{tagged}"
    );
    vl.quiet("DEL", &vconf)?;
    // vswitchd gone: STATUS 50, ADD and DEL "try again later" (11).
    lab.stop_switch()?;
    expect(
        "STATUS, vswitchd down",
        50,
        cni("STATUS", &[], &conf.to_string())?,
    )?;
    let mut a2 = Att::new(&lab, "c1", "ctr2");
    a2.ifname = "eth1";
    expect("ADD, vswitchd down", 11, a2.run("ADD", &conf)?)?;
    expect("DEL, vswitchd down", 11, a.run("DEL", &old)?)?;
    lab.start_switch("sw")?;
    a.quiet("DEL", &old)?;
    ensure!(allocations(&lab, "cni0")?.is_empty());
    Ok(())
}

fn pipework(lab: &Lab, args: &[&str]) -> Result<String> {
    run_ok(
        Command::new(bin("pipework")?)
            .arg("--socket")
            .arg(lab.socket())
            .args(args),
    )
}

fn gc_removes_only_stale_attachments() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "br0",
        "--subnet",
        "10.4.0.0/24",
        "--gateway",
        "10.4.0.1",
    ])?;
    // A pipework guest on the same bridge: CNI never touches its port.
    let guest = lab.add_ns("pw")?;
    pipework(&lab, &["br0", &guest, "10.4.0.50/24@10.4.0.1"])?;
    for n in ["a1", "a2", "b1"] {
        lab.add_ns(n)?;
    }
    let neta = net_conf(&lab, "1.1.0", "neta", "br0", "10.4.0.0/24", "10.4.0.1");
    let netb = net_conf(&lab, "1.1.0", "netb", "br0", "10.4.0.0/24", "10.4.0.1");
    let mut a1 = Att::new(&lab, "a1", "a1");
    a1.args = "K8S_POD_NAME=a1";
    let mut a2 = Att::new(&lab, "a2", "a2");
    a2.args = "K8S_POD_NAME=a2";
    let b1 = Att::new(&lab, "b1", "b1");
    a1.add(&neta)?;
    let published = with(
        &neta,
        "runtimeConfig",
        json!({"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}]}),
    );
    let r2 = a2.add(&published)?;
    b1.add(&netb)?;
    lab.assert_ping("a1", "10.4.0.50")?;
    lab.assert_ping("pw", &addr_of(&r2)?.1)?;
    ensure!(lab.ctl_ok(&["list-published"])?.contains("9090"));
    // What an ADD that died half-way would leave: an address without a port.
    let mut c = Client::connect(&lab.socket())?;
    for owner in ["cni:neta/ghost/eth0", "cni:netb/ghost/eth0"] {
        c.call_value(Req::AllocAddress(AllocAddress {
            bridge: "br0".into(),
            owner: owner.into(),
            ..Default::default()
        }))?;
    }

    // Without the list of valid attachments, GC removes nothing.
    let before = lab.config_snapshot()?;
    let r = cni("GC", &[], &neta.to_string())?;
    ensure!(!r.ok && r.code() == Some(7), "{}", r.out);
    ensure!(lab.config_snapshot()? == before);
    let gc = with(
        &neta,
        "cni.dev/valid-attachments",
        json!([{"containerID": "a1", "ifname": "eth0"}]),
    );
    let r = cni("GC", &[], &gc.to_string())?;
    ensure!(r.ok && r.out.is_null(), "{}", r.out);
    let mut left = cni_ports(&lab, "br0")?;
    left.sort();
    ensure!(left == ["neta/a1", "netb/b1"], "{left:?}");
    ensure!(
        ports(&lab, "br0")?
            .iter()
            .any(|(_, ids)| ids["pipework"] == "1"),
        "the pipework port went"
    );
    let owners: Vec<String> = allocations(&lab, "br0")?
        .into_iter()
        .map(|a| a.owner)
        .collect();
    ensure!(
        owners.contains(&"cni:neta/a1/eth0".to_string())
            && owners.contains(&"cni:netb/b1/eth0".to_string())
            && owners.contains(&"cni:netb/ghost/eth0".to_string())
            && !owners
                .iter()
                .any(|o| o == "cni:neta/a2/eth0" || o == "cni:neta/ghost/eth0"),
        "{owners:?}"
    );
    let names: Vec<String> = hosts(&lab, "br0")?.into_iter().map(|h| h.0).collect();
    ensure!(
        names.contains(&"a1".into()) && !names.contains(&"a2".into()),
        "{names:?}"
    );
    ensure!(
        !lab.ctl_ok(&["list-published"])?.contains("9090"),
        "published port left"
    );
    lab.assert_ping("a1", "10.4.0.50")?;
    Ok(())
}

fn host_local_delegation_and_tuning_chain() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.add_ns("c1")?;
    let data = lab.dir().join("host-local");
    let mut conf = net_conf(&lab, "1.1.0", "hl", "cni1", "10.5.0.0/24", "10.5.0.1");
    conf["ipam"] = json!({
        "type": "host-local", "subnet": "10.5.0.0/24", "rangeStart": "10.5.0.100",
        "rangeEnd": "10.5.0.110", "gateway": "10.5.0.1",
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data,
    });
    let a = Att::new(&lab, "c1", "ctr1");
    // host-local 1.1.1 speaks up to 1.0.0: asked in 1.0.0, its result used in 1.1.0.
    let r = a.add(&conf)?;
    let (cidr, ip) = addr_of(&r)?;
    let last: u8 = ip.rsplit('.').next().unwrap_or("").parse()?;
    ensure!((100..=110).contains(&last) && cidr.ends_with("/24"), "{r}");
    ensure!(r["routes"] == json!([{"dst": "0.0.0.0/0"}]), "{r}");
    let file = data.join("hl").join(&ip);
    ensure!(file.exists(), "host-local has no record {}", file.display());
    ensure!(
        holds(&lab, "cni1", "cni:hl/ctr1/eth0")? == [ip.clone()],
        "not held in vswitchd"
    );
    lab.assert_ping("c1", "10.5.0.1")?;
    // CHECK runs host-local's CHECK too; STATUS is ready (host-local has no STATUS).
    a.quiet("CHECK", &with(&conf, "prevResult", r.clone()))?;
    let st = cni("STATUS", &[], &conf.to_string())?;
    ensure!(st.ok && st.out.is_null(), "{}", st.out);
    a.quiet("DEL", &with(&conf, "prevResult", r))?;
    ensure!(!file.exists(), "host-local still holds {ip}");
    ensure!(
        allocations(&lab, "cni1")?.is_empty(),
        "vswitchd still holds it"
    );

    // A chain in the version every plugin of it speaks (1.0.0): Debian's tuning after
    // us changes the MAC (the runtime's "mac") and a sysctl; our CHECK and DEL take
    // the chain's final result.
    let conf = with(&conf, "cniVersion", json!("1.0.0"));
    let r = a.add(&conf)?;
    let tuning = json!({
        "cniVersion": "1.0.0", "name": "hl", "type": "tuning",
        "sysctl": {"net.core.somaxconn": "777"},
        "runtimeConfig": {"mac": "02:00:00:00:05:05"},
        "prevResult": r,
    });
    let mut t = Command::new(Path::new(CNI_PLUGINS).join("tuning"));
    t.env("CNI_COMMAND", "ADD")
        .env("CNI_PATH", CNI_PLUGINS)
        .envs(a.env());
    let tuned = pipe(&mut t, &tuning.to_string())?;
    ensure!(
        lab.mac("c1", "eth0")? == "02:00:00:00:05:05",
        "tuning did not run"
    );
    ensure!(lab.sh("c1", "cat /proc/sys/net/core/somaxconn")?.trim() == "777");
    ensure!(
        tuned["interfaces"][1]["mac"] == "02:00:00:00:05:05",
        "{tuned}"
    );
    a.quiet("CHECK", &with(&conf, "prevResult", tuned.clone()))?;
    lab.assert_ping("c1", "10.5.0.1")?;
    a.quiet("DEL", &with(&conf, "prevResult", tuned))?;
    ensure!(
        allocations(&lab, "cni1")?.is_empty(),
        "vswitchd still holds an address"
    );
    Ok(())
}

/// Run a command with `stdin`; it must succeed; its stdout as JSON.
fn pipe(c: &mut Command, stdin: &str) -> Result<Value> {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("run {c:?}"))?;
    if let Some(mut i) = child.stdin.take() {
        use std::io::Write;
        i.write_all(stdin.as_bytes())?;
    }
    let o = child.wait_with_output()?;
    ensure!(
        o.status.success(),
        "{c:?}: {} {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

fn curl_code(lab: &Lab, ns: &str, url: &str) -> Result<String> {
    let o = lab.sh_out(
        ns,
        &format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {url}"),
    )?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn port_mappings_reach_the_container_from_outside() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    lab.ctl_ok(&[
        "add-br",
        "cni0",
        "--subnet",
        "10.6.0.0/24",
        "--gateway",
        "10.6.0.1",
        "--isolated",
    ])?;
    lab.wan("sw")?;
    lab.ctl_ok(&["masquerade", "cni0", "--out", "wan"])?;
    lab.add_ns("c1")?;
    lab.add_ns("c2")?;
    let conf = with(
        &net_conf(&lab, "1.0.0", "pub", "cni0", "10.6.0.0/24", "10.6.0.1"),
        "runtimeConfig",
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    let a = Att::new(&lab, "c1", "web");
    let r = a.add(&conf)?;
    let ip = addr_of(&r)?.1;
    lab.spawn(
        "c1",
        "python3",
        &["-m", "http.server", "-b", &ip, "80"],
        "web.log",
    )?;
    ensure!(
        wait_until(Duration::from_secs(10), || lab
            .sh_out("c1", "ss -ltn | grep -q ':80 '")
            .is_ok_and(|o| o.status.success())),
        "http.server did not start"
    );
    ensure!(curl_code(&lab, "out", "http://198.51.100.2:8080/")? == "200");
    ensure!(
        lab.read_log("web.log").contains("198.51.100.1"),
        "client address not seen"
    );
    // The same host port for another container: refused, rolled back.
    let b = Att::new(&lab, "c2", "other");
    let before = allocations(&lab, "cni0")?;
    let r2 = b.run("ADD", &conf)?;
    ensure!(!r2.ok && r2.code() == Some(101), "{}", r2.out);
    ensure!(
        allocations(&lab, "cni0")? == before,
        "rollback left an address"
    );
    ensure!(
        cni_ports(&lab, "cni0")? == ["pub/web"],
        "rollback left a port"
    );
    b.quiet("DEL", &conf)?;
    ensure!(
        curl_code(&lab, "out", "http://198.51.100.2:8080/")? == "200",
        "the other DEL unpublished ours"
    );
    a.quiet("DEL", &with(&conf, "prevResult", r))?;
    ensure!(
        lab.ctl_json(&["list-published"])?
            .as_array()
            .is_some_and(|p| p.is_empty()),
        "still published"
    );
    ensure!(curl_code(&lab, "out", "http://198.51.100.2:8080/")? != "200");
    Ok(())
}

/// Podman 4 with its CNI backend, everything of its own under `dir`: storage, run
/// root, tmp dir, configuration, and a mount namespace of its own (a process that
/// holds it, with tmpfs over /run and /var/lib there) so its network namespaces and
/// CNI cache never reach the machine's.
struct Podman {
    dir: PathBuf,
    holder: Option<Child>,
    conf: PathBuf,
}

impl Podman {
    fn start(dir: &Path, cni_bin: &Path) -> Result<Podman> {
        if run(Command::new("podman").arg("--version")).is_err() {
            bail!("podman not found (apt-get install podman containernetworking-plugins)");
        }
        let dir = dir.join("podman");
        std::fs::create_dir_all(dir.join("net.d"))?;
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\n# No CAP_SYS_RESOURCE here: limits no higher than ours.\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{CNI_PLUGINS}\"]\nnetwork_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
                cni_bin.display(),
                dir.join("net.d").display()
            ),
        )?;
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib && mkdir -p /run/netns && touch /run/ready && exec sleep 900")
            .stdin(Stdio::null())
            .spawn()
            .context("start the mount namespace holder")?;
        let p = Podman {
            dir,
            holder: Some(holder),
            conf,
        };
        let ready = wait_until(Duration::from_secs(10), || {
            p.nsenter("test")
                .arg("-e")
                .arg("/run/ready")
                .status()
                .is_ok_and(|s| s.success())
        });
        ensure!(ready, "mount namespace for podman not ready");
        Ok(p)
    }

    fn nsenter(&self, program: &str) -> Command {
        let pid = self.holder.as_ref().map_or(0, Child::id);
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null())
            .env("CONTAINERS_CONF", &self.conf);
        c
    }

    fn cmd(&self) -> Command {
        let mut c = self.nsenter("timeout");
        c.arg("120").arg("podman");
        for (flag, sub) in [
            ("--root", "root"),
            ("--runroot", "runroot"),
            ("--tmpdir", "tmp"),
        ] {
            c.arg(flag).arg(self.dir.join(sub));
        }
        c.args(["--storage-driver", "vfs"]);
        c
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        run_ok(self.cmd().args(args))
    }

    /// `podman exec NAME args...`: (success, stdout + stderr).
    fn exec(&self, name: &str, args: &[&str]) -> Result<(bool, String)> {
        let o = run(self.cmd().arg("exec").arg(name).args(args))?;
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        Ok((o.status.success(), s))
    }

    fn import_busybox(&self) -> Result<&'static str> {
        let root = self.dir.join("rootfs");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("busybox not found (apt-get install busybox-static)")?;
        std::fs::copy(bb, root.join("bin/busybox"))?;
        for a in ["sh", "sleep", "ip", "ping", "nslookup", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
        }
        let tar = self.dir.join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        let image = "localhost/vswitch-busybox:test";
        self.ok(&["import", &tar.display().to_string(), image])?;
        Ok(image)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-f", "-a", "-t", "0"]).output();
        if let Some(mut h) = self.holder.take() {
            terminate(&mut h, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping_from(p: &Podman, c: &str, ip: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        p.exec(c, &["ping", "-c", "1", "-W", "1", ip])
            .is_ok_and(|(ok, _)| ok)
    })
}

fn podman_containers_on_a_vswitch_bridge() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_switch("sw")?;
    // The plugin as a runtime finds it: an executable named by "type" on its path.
    let cni_bin = lab.dir().join("cni-bin");
    std::fs::create_dir_all(&cni_bin)?;
    std::os::unix::fs::symlink(bin("vswitch-cni")?, cni_bin.join("vswitch"))?;
    let p = Podman::start(lab.dir(), &cni_bin)?;
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "vsnet",
        "plugins": [
            {"type": "vswitch", "bridge": "pm0", "subnet": "10.7.0.0/24", "gateway": "10.7.0.1",
             "socket": lab.socket(),
             "capabilities": {"portMappings": true, "mac": true, "ips": true, "aliases": true}},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "600"}}
        ]
    });
    std::fs::write(p.dir.join("net.d/vsnet.conflist"), format!("{conflist:#}"))?;
    let image = p.import_busybox()?;
    for (name, extra) in [("web", vec![]), ("db", vec!["--ip", "10.7.0.20"])] {
        let mut args = vec!["run", "-d", "--name", name, "--network", "vsnet"];
        args.extend(extra);
        args.extend([image, "sleep", "600"]);
        p.ok(&args)?;
    }
    // A pipework guest on the same bridge.
    let guest = lab.add_ns("pw")?;
    pipework(&lab, &["pm0", &guest, "10.7.0.50/24@10.7.0.1"])?;

    let (_, addr) = p.exec("web", &["ip", "-4", "-o", "addr", "show", "eth0"])?;
    let web_ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .context(format!("no address on web's eth0: {addr}"))?
        .to_string();
    ensure!(web_ip.starts_with("10.7.0."), "{addr}");
    ensure!(ping_from(&p, "web", "10.7.0.20"), "web cannot ping db");
    ensure!(
        ping_from(&p, "db", "10.7.0.50"),
        "db cannot ping the pipework guest"
    );
    lab.assert_ping("pw", &web_ip)?;
    // Podman's container name (K8S_POD_NAME) is in the bridge's DNS, and the
    // result's DNS (the gateway) is the container's resolver.
    let (_, ns) = p.exec("db", &["nslookup", "web", "10.7.0.1"])?;
    ensure!(ns.contains(&web_ip), "db resolved web as: {ns}");
    let (_, conf) = p.exec("db", &["cat", "/etc/resolv.conf"])?;
    ensure!(conf.lines().next() == Some("nameserver 10.7.0.1"), "{conf}");
    ensure!(ping_from(&p, "db", "web"), "db cannot ping web by name");
    // tuning ran after us in the chain.
    let (_, s) = p.exec("web", &["cat", "/proc/sys/net/core/somaxconn"])?;
    ensure!(s.trim() == "600", "somaxconn {s}");
    let mut left = cni_ports(&lab, "pm0")?;
    ensure!(left.len() == 2, "{left:?}");
    // podman rm: DEL takes port, address and name away.
    p.ok(&["rm", "-f", "-t", "0", "web"])?;
    left = cni_ports(&lab, "pm0")?;
    ensure!(left.len() == 1, "{left:?}");
    ensure!(
        !hosts(&lab, "pm0")?.iter().any(|(n, _)| n == "web"),
        "web's name left"
    );
    ensure!(
        !allocations(&lab, "pm0")?.iter().any(|a| a.ip == web_ip),
        "web's address still held"
    );
    Ok(())
}

/// One vswitchd bridge holding a Docker container (through vswitch-docker), a Podman
/// container (through vswitch-cni) and a pipework guest, one allocator for all three:
/// each pings the others.
fn podman_docker_and_pipework_share_one_bridge() -> Result<()> {
    let mut d = vswitch_integration::docker_driver::DriverLab::start(None, |_| Ok(()))?;
    d.network(
        "shared",
        &[
            "--subnet",
            "10.8.0.0/24",
            "--gateway",
            "10.8.0.1",
            "-o",
            "vswitch.bridge=sh0",
        ],
    )?;
    ensure!(d.wait_bridge("shared")? == "sh0");
    d.sleeper("dk", &["--network", "shared", "--ip", "10.8.0.30"])?;
    let cni_bin = d.lab.dir().join("cni-bin");
    std::fs::create_dir_all(&cni_bin)?;
    std::os::unix::fs::symlink(bin("vswitch-cni")?, cni_bin.join("vswitch"))?;
    let p = Podman::start(d.lab.dir(), &cni_bin)?;
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "vsshared",
        "plugins": [
            {"type": "vswitch", "bridge": "sh0", "subnet": "10.8.0.0/24", "gateway": "10.8.0.1",
             "socket": d.lab.socket()}
        ]
    });
    std::fs::write(
        p.dir.join("net.d/vsshared.conflist"),
        format!("{conflist:#}"),
    )?;
    let image = p.import_busybox()?;
    p.ok(&[
        "run",
        "-d",
        "--name",
        "pm",
        "--network",
        "vsshared",
        "--ip",
        "10.8.0.40",
        image,
        "sleep",
        "600",
    ])?;
    let guest = d.lab.add_ns("pw")?;
    pipework(&d.lab, &["sh0", &guest, "10.8.0.50/24@10.8.0.1"])?;
    // The Docker container's address is held: pipework may not take it.
    let guest2 = d.lab.add_ns("pw2")?;
    let e = pipework(&d.lab, &["sh0", &guest2, "10.8.0.30/24"]);
    ensure!(e.is_err(), "pipework took the Docker container's address");
    ensure!(
        ping_from(&p, "pm", "10.8.0.30"),
        "podman cannot ping docker"
    );
    ensure!(
        ping_from(&p, "pm", "10.8.0.50"),
        "podman cannot ping pipework"
    );
    ensure!(d.ping("dk", "10.8.0.40")?, "docker cannot ping podman");
    ensure!(d.ping("dk", "10.8.0.50")?, "docker cannot ping pipework");
    d.lab.assert_ping("pw", "10.8.0.40")?;
    d.lab.assert_ping("pw", "10.8.0.30")?;
    Ok(())
}
