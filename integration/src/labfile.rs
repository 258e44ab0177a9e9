//! Lab files: a TOML description of hosts (each a network namespace running its own
//! vswitchd), bridges (present on every host, joined across hosts by a full mesh of
//! VXLAN tunnels when they have a `vni`), and containers (namespaces on a host's bridge).
//!
//! ```toml
//! name = "demo"                       # optional; default: the file name
//!
//! [[host]]
//! name = "h1"
//! underlay = "192.0.2.1/24"           # address on the shared underlay segment
//!
//! [[bridge]]
//! name = "br0"
//! subnet = "10.0.0.0/24"              # optional, as `vswitchctl add-br`
//! gateway = "10.0.0.254"              # optional
//! dhcp = false                        # optional
//! vni = 100                           # optional: VXLAN full mesh between the hosts
//!
//! [[container]]
//! name = "a1"
//! host = "h1"
//! bridge = "br0"
//! ip = "10.0.0.11/24"                 # or "dhcp"
//! gateway = "10.0.0.254"              # optional default route
//! run = "python3 -m http.server 80"   # optional, started in the background with
//!                                     # $VSWITCH_LAB_DIR and $VSWITCH_CONTAINER set
//! impair = { delay = "20ms", loss = 1 }  # optional: `vswitchctl set-port` on its port
//! networks = [                        # optional: more interfaces (eth1, eth2, ...)
//!   { bridge = "backend", ip = "10.2.0.11/24" },
//! ]
//!
//! [[masquerade]]                      # optional: as `vswitchctl masquerade BR --out OUT`
//! host = "h1"
//! bridge = "br0"
//! out = "wan"
//!
//! [[publish]]                         # optional: as `vswitchctl publish PROTO PORT TARGET`
//! host = "h1"
//! proto = "tcp"
//! port = "8080"                       # or "IP:PORT"
//! target = "10.0.0.11:80"
//!
//! [cluster]                           # optional: etcd + a vswitch-agent on every host
//! etcd = ["192.0.2.101/24", "192.0.2.102/24", "192.0.2.103/24"]  # members' underlay
//! ttl = 10                            # optional: the agents' --ttl
//! ```
//! With `[cluster]`, a bridge with `overlay = true` is declared once (`add-br
//! --overlay`, its `vni` if given) and the agents create it on every host, with
//! tunnels, addresses and names across hosts (docs/cluster.md); other bridges stay
//! per host.
//!
//! Containers are plumbed with `pipework` (eth0 on `bridge`, then eth1... on
//! `networks`), so each is registered in its bridges' DNS under its own name.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    pub name: Option<String>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<BridgeSpec>,
    #[serde(default, rename = "container")]
    pub containers: Vec<ContainerSpec>,
    #[serde(default)]
    pub masquerade: Vec<MasqueradeSpec>,
    #[serde(default)]
    pub publish: Vec<PublishSpec>,
    pub cluster: Option<ClusterSpec>,
}

/// `[cluster]`: etcd members on the underlay, an agent on every host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Underlay addresses (`A.B.C.D/N`) of the etcd members, one namespace each.
    pub etcd: Vec<String>,
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasqueradeSpec {
    pub host: String,
    pub bridge: String,
    pub out: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    pub host: String,
    pub proto: String,
    pub port: String,
    pub target: String,
}

/// One more interface of a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub bridge: String,
    pub ip: String,
    pub gateway: Option<String>,
    pub impair: Option<ImpairSpec>,
}

/// A number or a string in a lab file (`delay = 20` or `delay = "20ms"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumOrStr {
    Num(f64),
    Str(String),
}

impl std::fmt::Display for NumOrStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NumOrStr::Num(n) => write!(f, "{n}"),
            NumOrStr::Str(s) => f.write_str(s),
        }
    }
}

/// Link impairment of a container's interface, applied with `vswitchctl set-port` to
/// its port (what reaches the container): `impair = { delay = "20ms", loss = 1 }`.
/// Values as `set-port` takes them: delay/jitter in ms or with a unit, loss/corrupt in
/// percent, rate in Mbit/s or with a unit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairSpec {
    pub delay: Option<NumOrStr>,
    pub jitter: Option<NumOrStr>,
    pub loss: Option<NumOrStr>,
    pub corrupt: Option<NumOrStr>,
    pub rate: Option<NumOrStr>,
    #[serde(default)]
    pub down: bool,
}

impl ImpairSpec {
    /// The `vswitchctl set-port PORT` options.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, val) in [
            ("--delay", &self.delay),
            ("--jitter", &self.jitter),
            ("--loss", &self.loss),
            ("--corrupt", &self.corrupt),
            ("--rate", &self.rate),
        ] {
            if let Some(x) = val {
                v.push(flag.to_string());
                v.push(x.to_string());
            }
        }
        if self.down {
            v.push("--down".into());
        }
        v
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub underlay: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dhcp: bool,
    pub vni: Option<u32>,
    pub mtu: Option<u32>,
    /// A cluster-wide network (needs `[cluster]`).
    #[serde(default)]
    pub overlay: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    pub host: String,
    pub bridge: String,
    pub ip: String,
    pub gateway: Option<String>,
    pub run: Option<String>,
    #[serde(default)]
    pub networks: Vec<NetSpec>,
    /// Impairment of eth0's link (each of `networks` may have its own).
    pub impair: Option<ImpairSpec>,
}

impl ContainerSpec {
    /// The impairment declared for interface `ifname` (`eth0`, `eth1`, ...).
    pub fn impair_of(&self, ifname: &str) -> Option<&ImpairSpec> {
        match ifname.strip_prefix("eth")?.parse::<usize>().ok()? {
            0 => self.impair.as_ref(),
            n => self.networks.get(n - 1)?.impair.as_ref(),
        }
    }

    /// (interface, bridge, ip, gateway) of every interface: eth0 first.
    pub fn interfaces(&self) -> Vec<(String, &str, &str, Option<&str>)> {
        let mut v = vec![(
            "eth0".to_string(),
            self.bridge.as_str(),
            self.ip.as_str(),
            self.gateway.as_deref(),
        )];
        for (i, n) in self.networks.iter().enumerate() {
            v.push((
                format!("eth{}", i + 1),
                n.bridge.as_str(),
                n.ip.as_str(),
                n.gateway.as_deref(),
            ));
        }
        v
    }
}

fn short_name(n: &str, what: &str, max: usize) -> Result<()> {
    if n.is_empty()
        || n.len() > max
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("bad {what} name {n:?}: 1-{max} characters from A-Z a-z 0-9 - _");
    }
    Ok(())
}

impl LabFile {
    /// Read and validate a lab file. Syntax errors carry the line and column.
    pub fn load(path: &Path) -> Result<LabFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        LabFile::parse(&text, &path.display().to_string(), stem)
    }

    /// Parse and validate lab-file text; `origin` names it in errors, `default_name`
    /// is the lab's name when the text gives none.
    pub fn parse(text: &str, origin: &str, default_name: Option<String>) -> Result<LabFile> {
        let mut lab: LabFile = toml::from_str(text).map_err(|e| {
            let msg = e.to_string().replace('\n', " ");
            anyhow::anyhow!(
                "{origin}: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })?;
        if lab.name.is_none() {
            lab.name = default_name;
        }
        lab.validate().with_context(|| origin.to_string())?;
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("lab")
    }

    fn validate(&self) -> Result<()> {
        short_name(self.name(), "lab", 6)?;
        if self.hosts.is_empty() {
            bail!("no [[host]]");
        }
        let mut seen = HashSet::new();
        for h in &self.hosts {
            short_name(&h.name, "host", 6)?;
            if !seen.insert(h.name.clone()) {
                bail!("host {} defined twice", h.name);
            }
            if self.hosts.len() > 1 && h.underlay.is_none() {
                bail!(
                    "host {} needs an underlay address (several hosts share the underlay)",
                    h.name
                );
            }
        }
        let mut bridges = HashSet::new();
        for b in &self.bridges {
            short_name(&b.name, "bridge", 12)?;
            if !bridges.insert(b.name.clone()) {
                bail!("bridge {} defined twice", b.name);
            }
            if b.overlay && self.cluster.is_none() {
                bail!(
                    "bridge {}: overlay = true needs a [cluster] section",
                    b.name
                );
            }
        }
        if let Some(c) = &self.cluster {
            if c.etcd.is_empty() || c.etcd.len() > 9 {
                bail!("[cluster]: etcd must list 1-9 member addresses");
            }
            for e in &c.etcd {
                let ok = e.split_once('/').is_some_and(|(a, p)| {
                    a.parse::<std::net::Ipv4Addr>().is_ok()
                        && p.parse::<u8>().is_ok_and(|p| p <= 32)
                });
                if !ok {
                    bail!("[cluster]: etcd member address must be ADDRESS/PREFIX, not {e:?}");
                }
            }
            if let Some(h) = self.hosts.iter().find(|h| h.underlay.is_none()) {
                bail!(
                    "host {} needs an underlay address (the cluster's hosts and etcd share it)",
                    h.name
                );
            }
            if c.ttl.is_some_and(|t| !(1..=3600).contains(&t)) {
                bail!("[cluster]: ttl must be 1..3600");
            }
        }
        let mut ctrs = HashSet::new();
        for c in &self.containers {
            short_name(&c.name, "container", 8)?;
            if !ctrs.insert(c.name.clone()) {
                bail!("container {} defined twice", c.name);
            }
            if !seen.contains(&c.host) {
                bail!("container {}: no such host {}", c.name, c.host);
            }
            let ifs = c.interfaces();
            if ifs.len() > 8 {
                bail!("container {}: at most 7 extra networks", c.name);
            }
            let mut on = HashSet::new();
            for (_, bridge, ip, _) in ifs {
                if !bridges.contains(bridge) {
                    bail!("container {}: no such bridge {bridge}", c.name);
                }
                if !on.insert(bridge) {
                    bail!("container {}: bridge {bridge} given twice", c.name);
                }
                if ip != "dhcp" && !ip.contains('/') {
                    bail!(
                        "container {}: ip must be ADDRESS/PREFIX or \"dhcp\", not {ip:?}",
                        c.name
                    );
                }
            }
        }
        for m in &self.masquerade {
            if !seen.contains(&m.host) {
                bail!("masquerade: no such host {}", m.host);
            }
            for b in [&m.bridge, &m.out] {
                if !bridges.contains(b) {
                    bail!("masquerade: no such bridge {b}");
                }
            }
        }
        for p in &self.publish {
            if !seen.contains(&p.host) {
                bail!("publish: no such host {}", p.host);
            }
            if p.proto != "tcp" && p.proto != "udp" {
                bail!("publish: proto must be tcp or udp, not {:?}", p.proto);
            }
        }
        Ok(())
    }

    /// The topology as Graphviz DOT.
    pub fn dot(&self) -> String {
        self.dot_with(None)
    }

    /// The topology as Graphviz DOT; with `live`, each link and tunnel is labelled with
    /// its rates (and drawn thicker the busier it is), and the graph with when and over
    /// how long they were measured.
    pub fn dot_with(&self, live: Option<&LiveRates>) -> String {
        let mut s = format!("graph \"{}\" {{\n  node [shape=box];\n", self.name());
        if let Some(l) = live {
            s.push_str(&format!(
                "  labelloc=t;\n  label=\"lab {}: rates over {} s at {}\";\n",
                self.name(),
                l.interval,
                l.at
            ));
        }
        for h in &self.hosts {
            s.push_str(&format!(
                "  subgraph \"cluster_{0}\" {{\n    label=\"host {0}{1}\";\n",
                h.name,
                h.underlay
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default()
            ));
            for b in &self.bridges {
                s.push_str(&format!(
                    "    \"{}/{}\" [label=\"{}\", shape=ellipse];\n",
                    h.name, b.name, b.name
                ));
            }
            for c in self.containers.iter().filter(|c| c.host == h.name) {
                let ifs = c.interfaces();
                let addrs: Vec<&str> = ifs.iter().map(|i| i.2).collect();
                s.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n{}\"];\n",
                    c.name,
                    c.name,
                    addrs.join("\\n")
                ));
                for (ifname, bridge, _, _) in &ifs {
                    let rate = live.and_then(|l| l.links.get(&(c.name.clone(), ifname.clone())));
                    s.push_str(&format!(
                        "    \"{}\" -- \"{}/{bridge}\" [label=\"{}\"{}];\n",
                        c.name,
                        h.name,
                        match rate {
                            // The port's tx is what the container receives.
                            Some(r) =>
                                format!("{ifname}\\nrx {}\\ntx {}", bits(r.tx_bps), bits(r.rx_bps)),
                            None => ifname.clone(),
                        },
                        rate.map(|r| pen(r.rx_bps + r.tx_bps)).unwrap_or_default()
                    ));
                }
            }
            s.push_str("  }\n");
        }
        for b in self.bridges.iter().filter(|b| b.vni.is_some()) {
            for (i, a) in self.hosts.iter().enumerate() {
                for z in &self.hosts[i + 1..] {
                    let vni = b.vni.unwrap_or_default();
                    // a's counters towards z: tx is a -> z, rx is z -> a.
                    let rate = live.and_then(|l| {
                        l.tunnels
                            .get(&(a.name.clone(), b.name.clone(), z.name.clone()))
                    });
                    let (label, width) = match rate {
                        Some(r) => (
                            format!(
                                "vxlan {vni}\\n{} → {} {}\\n{} → {} {}",
                                a.name,
                                z.name,
                                bits(r.tx_bps),
                                z.name,
                                a.name,
                                bits(r.rx_bps)
                            ),
                            pen(r.rx_bps + r.tx_bps),
                        ),
                        None => (format!("vxlan {vni}"), String::new()),
                    };
                    s.push_str(&format!(
                        "  \"{}/{}\" -- \"{}/{}\" [style=dashed, label=\"{label}\"{width}];\n",
                        a.name, b.name, z.name, b.name,
                    ));
                }
            }
        }
        s.push_str("}\n");
        s
    }
}

/// Rates of one link over the sampling interval, as the switch's port counts them
/// (rx: from the container or the remote host; tx: towards it), whole frames.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkRate {
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub rx_pps: f64,
    pub tx_pps: f64,
}

/// Live rates of a lab that is up, for [`LabFile::dot_with`].
#[derive(Debug, Clone, Default)]
pub struct LiveRates {
    /// By (container, interface).
    pub links: std::collections::HashMap<(String, String), LinkRate>,
    /// By (host, bridge, remote host): that host's tunnel port towards the remote one.
    pub tunnels: std::collections::HashMap<(String, String, String), LinkRate>,
    /// Seconds the rates were measured over, and when (shown in the graph's title).
    pub interval: f64,
    pub at: String,
}

/// `94.1 Mbit/s`: bits per second with an SI prefix, three significant digits.
pub fn bits(bps: f64) -> String {
    let (v, unit) = if bps >= 1e9 {
        (bps / 1e9, "Gbit/s")
    } else if bps >= 1e6 {
        (bps / 1e6, "Mbit/s")
    } else if bps >= 1e3 {
        (bps / 1e3, "kbit/s")
    } else {
        return format!("{} bit/s", bps.max(0.0).round());
    };
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// An edge's pen width for `bps` in total: 1 when idle, one more per decade from
/// 100 kbit/s, at most 6.
fn pen(bps: f64) -> String {
    let w = if bps < 1e5 {
        1.0
    } else {
        (1.0 + (bps / 1e5).log10()).min(6.0)
    };
    format!(", penwidth={w:.1}")
}

/// Fuzz entry point: any bytes as a lab file. Never panics; a file that loads has a
/// graph.
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lab) = LabFile::parse(text, "fuzz.toml", Some("fuzz".into())) {
        let _ = lab.dot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<LabFile> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("labfile-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let f = dir.join("t.toml");
        std::fs::write(&f, t)?;
        let r = LabFile::load(&f);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn errors_name_the_line_or_the_thing() {
        let e = parse("name = \"x\"\n[[host]]\nname = \"h1\"\nunderlay = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4"), "{e}");
        let e = parse("[[host]]\nname=\"h1\"\n[[container]]\nname=\"c\"\nhost=\"h9\"\nbridge=\"b\"\nip=\"dhcp\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("no such host h9"), "{e:#}");
        let e = parse("[[host]]\nname=\"h1\"\nbogus=1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn impairments_become_set_port_options() {
        let l = parse("[[host]]\nname=\"h1\"\n[[bridge]]\nname=\"b\"\n[[container]]\nname=\"c\"\nhost=\"h1\"\nbridge=\"b\"\nip=\"dhcp\"\nimpair = { delay = \"20ms\", loss = 0.5, rate = 100, down = true }\nnetworks = [{ bridge = \"b2\", ip = \"dhcp\", impair = { jitter = 3 } }]\n[[bridge]]\nname=\"b2\"\n").unwrap();
        let c = &l.containers[0];
        assert_eq!(
            c.impair_of("eth0").unwrap().args(),
            ["--delay", "20ms", "--loss", "0.5", "--rate", "100", "--down"]
        );
        assert_eq!(c.impair_of("eth1").unwrap().args(), ["--jitter", "3"]);
        assert!(c.impair_of("eth2").is_none() && c.impair_of("lo").is_none());
        let e = parse("[[host]]\nname=\"h1\"\n[[bridge]]\nname=\"b\"\n[[container]]\nname=\"c\"\nhost=\"h1\"\nbridge=\"b\"\nip=\"dhcp\"\nimpair = { lag = 5 }\n").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field"), "{e:#}");
    }

    #[test]
    fn live_rates_on_links_and_tunnels() {
        let l = parse("name=\"t\"\n[[host]]\nname=\"h1\"\nunderlay=\"192.0.2.1/24\"\n[[host]]\nname=\"h2\"\nunderlay=\"192.0.2.2/24\"\n[[bridge]]\nname=\"br0\"\nvni=7\n[[container]]\nname=\"c\"\nhost=\"h1\"\nbridge=\"br0\"\nip=\"dhcp\"\n").unwrap();
        let mut live = LiveRates {
            interval: 1.0,
            at: "now".into(),
            ..Default::default()
        };
        let r = LinkRate {
            rx_bps: 1500.0,
            tx_bps: 41.2e6,
            ..Default::default()
        };
        live.links.insert(("c".into(), "eth0".into()), r);
        live.tunnels
            .insert(("h1".into(), "br0".into(), "h2".into()), r);
        let d = l.dot_with(Some(&live));
        // The port's tx is what the container receives.
        assert!(
            d.contains("label=\"eth0\\nrx 41.2 Mbit/s\\ntx 1.50 kbit/s\""),
            "{d}"
        );
        assert!(
            d.contains("h1 → h2 41.2 Mbit/s\\nh2 → h1 1.50 kbit/s"),
            "{d}"
        );
        assert!(d.contains("rates over 1 s at now"), "{d}");
        assert!(!l.dot().contains("bit/s"));
        assert_eq!(bits(0.0), "0 bit/s");
        assert_eq!(bits(999.4), "999 bit/s");
        assert_eq!(bits(9.87e9), "9.87 Gbit/s");
        assert_eq!(bits(123.4e6), "123 Mbit/s");
    }

    #[test]
    fn dot_has_hosts_and_tunnels() {
        let l = parse("name=\"t\"\n[[host]]\nname=\"h1\"\nunderlay=\"192.0.2.1/24\"\n[[host]]\nname=\"h2\"\nunderlay=\"192.0.2.2/24\"\n[[bridge]]\nname=\"br0\"\nvni=7\n").unwrap();
        let d = l.dot();
        assert!(d.contains("cluster_h1") && d.contains("vxlan 7"), "{d}");
    }
}

#[cfg(test)]
mod corpus {
    /// The lab-file fuzz corpus (fuzz/corpus/labfile) replayed: never a panic.
    #[test]
    fn labfile_corpus_replays() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/labfile");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("corpus directory") {
            let data = std::fs::read(e.expect("entry").path()).expect("corpus file");
            super::fuzz(&data);
            n += 1;
        }
        assert!(n > 0);
    }
}
