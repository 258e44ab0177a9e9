//! Request handlers: validate, apply, persist, publish.
//!
//! Order for every mutation: validate against the model (nothing changed yet) → create
//! or open devices → write the new model to the db → commit the model → publish a new
//! snapshot → tell workers. A failure at any step before the commit undoes the steps
//! before it, so a refused request leaves configuration, devices and db as they were.

use crate::config::model::proto_name;
use crate::config::snapshot::{slot_of, PortLock};
use crate::config::{
    db, BridgeConf, BridgeRt, ConfigError, HostConf, Model, PortConf, PortEntry, Snapshot, VlanMode,
};
use crate::config::{router_mac, NameMap, NatRt, PublishRt, RouterIf};
use crate::dp::balance::{Balancer, PortLoad};
use crate::dp::{clock, PortCounters, WorkerPool};
use crate::port::afpacket::AfPacketPort;
use crate::port::tap::TapPort;
use crate::port::vxlan::{VxlanRemote, VxlanShared};
use crate::port::Port;
use crate::tables::conntrack::CtState;
use crate::tables::{Conntrack, Fdb, PortId, Route, RouteTable};
use arc_swap::ArcSwap;
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_proto::{
    BridgeInfo, Command, CtEntry as CtEntryInfo, FdbEntry, FlushResult, HostEntry, LeaseEntry,
    PortInfo, PortKind, PortStats, PublishedEntry, RouteEntry, ShowInfo, VersionInfo, VxlanInfo,
    PROTOCOL_VERSION,
};

/// Tunables of the tables.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fdb_cap: usize,
    pub fdb_aging: u32,
    /// Directional conntrack entries (two per connection).
    pub ct_cap: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fdb_cap: 8192,
            fdb_aging: 300,
            ct_cap: 65536,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no such device: {0}")]
    NoDevice(String),
    #[error("device already exists: {0}")]
    DeviceExists(String),
    #[error("cannot attach {name}: {source}")]
    Attach { name: String, source: io::Error },
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("no such port: {0}")]
    NoSuchPort(String),
    #[error("too many ports (65535)")]
    TooManyPorts,
    #[error("cannot encode result: {0}")]
    Encode(String),
}

struct Live {
    id: PortId,
    dev: Arc<dyn Port>,
    counters: Arc<PortCounters>,
    worker: Option<usize>,
    /// Received frames at the last balancing tick.
    rx_seen: u64,
}

/// What the balancer measured at its last tick.
struct Balancing {
    policy: Balancer,
    at: Instant,
    busy: Vec<Duration>,
}

/// The control plane's state. Owned behind one mutex by the control server.
pub struct State {
    model: Model,
    db_path: PathBuf,
    pub(super) snap: Arc<ArcSwap<Snapshot>>,
    pool: WorkerPool,
    limits: Limits,
    fdbs: HashMap<String, Arc<Fdb>>,
    live: HashMap<String, Live>,
    /// Configured ports that are not attached, with the reason.
    failed: HashMap<String, String>,
    /// Per bridge: DHCP requests answered with nothing because the pool was full.
    dhcp_exhausted: HashMap<String, u64>,
    /// Generation of each slot; bumped when a slot is freed.
    slot_gen: Vec<u16>,
    free_slots: Vec<u16>,
    generation: u64,
    conntrack: Arc<Conntrack>,
    /// Auto-balance of ports over workers; `None` when turned off.
    balancing: Option<Balancing>,
    /// The kernel fast path, when it runs (control/fastpath.rs).
    pub(super) fastpath: Option<Arc<crate::fastpath::FastPath>>,
}

fn open_dev(p: &PortConf, mtu: u32) -> Result<Arc<dyn Port>, HandlerError> {
    match p.kind {
        PortKind::System => match AfPacketPort::open(&p.name) {
            Ok(d) => Ok(Arc::new(d)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                Err(HandlerError::NoDevice(p.name.clone()))
            }
            Err(e) => Err(HandlerError::Attach {
                name: p.name.clone(),
                source: e,
            }),
        },
        PortKind::Tap | PortKind::Internal => {
            let m = (mtu != crate::config::model::DEFAULT_MTU).then_some(mtu);
            // A TAP just deleted may linger while another worker drops its last
            // reference: retry briefly before calling the name taken.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match TapPort::create(&p.name, m) {
                    Ok(d) => return Ok(Arc::new(d)),
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EBUSY))
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EBUSY)) =>
                    {
                        return Err(HandlerError::DeviceExists(p.name.clone()))
                    }
                    Err(e) => {
                        return Err(HandlerError::Attach {
                            name: p.name.clone(),
                            source: e,
                        })
                    }
                }
            }
        }
        PortKind::Vxlan => Err(ConfigError::UnsupportedKind(p.kind).into()),
    }
}

/// Names of the live ports of configured port `p`: itself, or one per remote VTEP.
fn live_names(p: &PortConf) -> Vec<String> {
    match &p.vxlan {
        Some(v) => v
            .remotes
            .iter()
            .map(|r| format!("{}@{r}", p.name))
            .collect(),
        None => vec![p.name.clone()],
    }
}

fn published_entry(p: &crate::config::PublishConf) -> PublishedEntry {
    PublishedEntry {
        proto: proto_name(p.proto).to_string(),
        ip: p.ip.map(|i| i.to_string()),
        port: p.port,
        target_ip: p.target_ip.to_string(),
        target_port: p.target_port,
    }
}

fn host_entry(h: &HostConf) -> HostEntry {
    HostEntry {
        name: h.name.clone(),
        ip: h.ip.to_string(),
        source: h.source.clone(),
    }
}

/// Delete a netdev vswitchd owns (a pipework veth pair). The port is already gone from
/// the configuration, so a failure is logged, not returned.
fn delete_netdev(name: &str) {
    use crate::port::sys::netdev;
    match netdev::ifindex(name).and_then(netdev::delete) {
        Ok(()) => tracing::info!(device = name, "device deleted"),
        Err(e) => tracing::warn!(device = name, error = %e, "cannot delete device"),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, HandlerError> {
    serde_json::to_value(v).map_err(|e| HandlerError::Encode(e.to_string()))
}

impl State {
    /// Take over `model` (restored from `db_path`): create each bridge's tables and
    /// attach every port it can; the others are reported in `show` and retried by
    /// [`State::tick`].
    pub fn new(
        model: Model,
        db_path: PathBuf,
        snap: Arc<ArcSwap<Snapshot>>,
        pool: WorkerPool,
        limits: Limits,
        fastpath: Option<Arc<crate::fastpath::FastPath>>,
    ) -> State {
        let mut s = State {
            model,
            db_path,
            snap,
            pool,
            limits,
            fdbs: HashMap::new(),
            live: HashMap::new(),
            failed: HashMap::new(),
            dhcp_exhausted: HashMap::new(),
            slot_gen: Vec::new(),
            free_slots: Vec::new(),
            generation: 0,
            conntrack: Arc::new(Conntrack::new(limits.ct_cap)),
            balancing: None,
            fastpath,
        };
        for b in &s.model.bridges {
            s.fdbs.insert(
                b.name.clone(),
                Arc::new(Fdb::new(limits.fdb_cap, limits.fdb_aging)),
            );
        }
        let ports: Vec<(PortConf, u32)> = s
            .model
            .bridges
            .iter()
            .flat_map(|b| b.ports.iter().map(move |p| (p.clone(), b.mtu)))
            .collect();
        let mut attached = Vec::new();
        for (p, mtu) in ports {
            match s.attach(&p, mtu) {
                Ok(()) => attached.push(p.name.clone()),
                Err(e) => {
                    tracing::warn!(port = %p.name, error = %e, "cannot restore port");
                    s.failed.insert(p.name.clone(), format!("error: {e}"));
                }
            }
        }
        s.publish();
        for name in attached {
            s.start_polling(&name);
        }
        s
    }

    pub fn workers(&self) -> usize {
        self.pool.len()
    }

    fn alloc_id(&mut self) -> Result<PortId, HandlerError> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                if self.slot_gen.len() >= usize::from(u16::MAX) {
                    return Err(HandlerError::TooManyPorts);
                }
                self.slot_gen.push(0);
                (self.slot_gen.len() - 1) as u16
            }
        };
        let gen = self.slot_gen[usize::from(slot)];
        Ok((u32::from(gen) << 16) | u32::from(slot))
    }

    fn free_id(&mut self, id: PortId) {
        let slot = slot_of(id);
        if let Some(g) = self.slot_gen.get_mut(slot) {
            *g = g.wrapping_add(1);
            self.free_slots.push(slot as u16);
        }
    }

    /// Open the device of `p` and record it as live (not yet published or polled).
    fn attach(&mut self, p: &PortConf, mtu: u32) -> Result<(), HandlerError> {
        if let Some(v) = &p.vxlan {
            let shared =
                VxlanShared::open(v.remotes.clone(), v.vni, v.local, v.dst_port).map_err(|e| {
                    HandlerError::Attach {
                        name: p.name.clone(),
                        source: e,
                    }
                })?;
            let mut ids = Vec::new();
            for (i, name) in live_names(p).into_iter().enumerate() {
                let id = match self.alloc_id() {
                    Ok(id) => id,
                    Err(e) => {
                        for (n, id) in ids {
                            self.live.remove(&n);
                            self.free_id(id);
                        }
                        return Err(e);
                    }
                };
                shared.set_id(i, id);
                let dev: Arc<dyn Port> =
                    Arc::new(VxlanRemote::new(name.clone(), shared.clone(), i));
                self.live.insert(
                    name.clone(),
                    Live {
                        id,
                        dev,
                        counters: Arc::new(PortCounters::new(self.pool.len())),
                        worker: None,
                        rx_seen: 0,
                    },
                );
                ids.push((name, id));
            }
            self.failed.remove(&p.name);
            return Ok(());
        }
        let dev = open_dev(p, mtu)?;
        let id = self.alloc_id()?;
        self.fastpath_attach(id, dev.as_ref());
        self.live.insert(
            p.name.clone(),
            Live {
                id,
                dev,
                counters: Arc::new(PortCounters::new(self.pool.len())),
                worker: None,
                rx_seen: 0,
            },
        );
        self.failed.remove(&p.name);
        Ok(())
    }

    /// Hand the live port(s) of configured port `name` to workers (vxlan: the remote
    /// that owns the shared socket; the others are never polled).
    fn start_polling(&mut self, name: &str) {
        let prefix = format!("{name}@");
        let keys: Vec<String> = self
            .live
            .keys()
            .filter(|k| *k == name || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in keys {
            if let Some(l) = self.live.get_mut(&k) {
                if l.worker.is_none() && l.dev.fd().is_some() {
                    // With auto-balance and light traffic, new ports join the others
                    // (the balancer would gather them anyway); else the emptiest worker.
                    l.worker = Some(match &self.balancing {
                        Some(b) if b.policy.gathering() => {
                            self.pool
                                .add_port_to(self.pool.fullest(), l.id, l.dev.clone())
                        }
                        _ => self.pool.add_port(l.id, l.dev.clone()),
                    });
                }
            }
        }
    }

    /// Stop polling and forget a live port; its FDB entries go with it.
    fn detach(&mut self, bridge: &str, name: &str) {
        self.failed.remove(name);
        let prefix = format!("{name}@");
        let keys: Vec<String> = self
            .live
            .keys()
            .filter(|k| *k == name || k.starts_with(&prefix))
            .cloned()
            .collect();
        let gone: Vec<Live> = keys.iter().filter_map(|k| self.live.remove(k)).collect();
        if gone.is_empty() {
            return;
        }
        self.publish();
        for l in gone {
            if let Some(w) = l.worker {
                self.pool.remove_port(w, l.id);
            }
            self.fastpath_detach(l.id);
            if let Some(f) = self.fdbs.get(bridge) {
                f.flush_port(l.id, clock::now_secs());
            }
            self.free_id(l.id);
        }
    }

    /// Build and publish a snapshot of the current model and live ports.
    fn publish(&mut self) {
        self.generation += 1;
        let mut ports: Vec<Option<PortEntry>> = Vec::new();
        let mut bridges = Vec::new();
        for (bi, b) in self.model.bridges.iter().enumerate() {
            let mut slots = Vec::new();
            for p in &b.ports {
                let mut group = 0;
                for name in live_names(p) {
                    let Some(l) = self.live.get(&name) else {
                        continue;
                    };
                    if p.vxlan.is_some() && group == 0 {
                        // The remotes of one vxlan port: a split-horizon group.
                        group = l.id.wrapping_add(1).max(1);
                    }
                    let s = slot_of(l.id);
                    if ports.len() <= s {
                        ports.resize_with(s + 1, || None);
                    }
                    ports[s] = Some(PortEntry {
                        id: l.id,
                        name,
                        bridge: bi,
                        vlan: VlanMode::from_conf(p.tag, &p.trunks),
                        dev: l.dev.clone(),
                        counters: l.counters.clone(),
                        group,
                        lock: p.lock.as_ref().map(|c| {
                            Arc::new(PortLock {
                                mac: c.mac,
                                ips: c.ips.clone(),
                            })
                        }),
                    });
                    slots.push(s as u16);
                }
            }
            let fdb = self
                .fdbs
                .entry(b.name.clone())
                .or_insert_with(|| Arc::new(Fdb::new(self.limits.fdb_cap, self.limits.fdb_aging)))
                .clone();
            let router = match (b.gateway, b.subnet) {
                (Some(ip), Some(net)) => Some(RouterIf {
                    ip,
                    net,
                    mac: router_mac(&b.name),
                }),
                _ => None,
            };
            let mut names: NameMap = b
                .hosts
                .iter()
                .map(|h| (h.name.clone(), (h.ip, 0)))
                .collect();
            for r in &b.reservations {
                if let Some(n) = &r.name {
                    names.entry(n.clone()).or_insert((r.ip, 0));
                }
            }
            for l in &b.leases {
                if let Some(h) = &l.hostname {
                    names.entry(h.clone()).or_insert((l.ip, l.expires));
                }
            }
            bridges.push(BridgeRt {
                name: b.name.clone(),
                fdb,
                ports: slots,
                router,
                isolated: b.isolated,
                mtu: b.mtu,
                dhcp: b.dhcp,
                names: Arc::new(names),
            });
        }
        let mut routes = RouteTable::default();
        let mut router_ips = HashMap::new();
        for (bi, b) in bridges.iter().enumerate() {
            if let Some(r) = b.router {
                routes.insert(
                    r.net,
                    Route {
                        bridge: bi,
                        via: None,
                    },
                );
                router_ips.insert(r.ip, bi);
            }
        }
        for r in &self.model.routes {
            // The next hop's bridge: the connected subnet that holds it.
            if let Some(c) = routes.lookup(r.via).filter(|c| c.via.is_none()) {
                routes.insert(
                    r.cidr,
                    Route {
                        bridge: c.bridge,
                        via: Some(r.via),
                    },
                );
            }
        }
        let mut nat = NatRt {
            masq: vec![None; bridges.len()],
            ..Default::default()
        };
        let index = |name: &str| bridges.iter().position(|b| b.name == name);
        for m in &self.model.masquerade {
            if let (Some(i), Some(o)) = (index(&m.bridge), index(&m.out)) {
                nat.masq[i] = Some(o);
                if let Some(r) = bridges[o].router {
                    if !nat.outside_ips.contains(&r.ip) {
                        nat.outside_ips.push(r.ip);
                    }
                }
            }
        }
        for p in &self.model.published {
            nat.publish
                .entry((p.proto, p.port))
                .or_default()
                .push(PublishRt {
                    ip: p.ip,
                    target_ip: p.target_ip,
                    target_port: p.target_port,
                });
        }
        self.snap.store(Arc::new(Snapshot {
            generation: self.generation,
            ports,
            bridges,
            routes,
            router_ips,
            nat,
            conntrack: self.conntrack.clone(),
            fastpath: self.fastpath.clone(),
        }));
        // After the store: no cached decision outlives the snapshot it was made under.
        if let Some(fp) = &self.fastpath {
            fp.bump();
        }
    }

    /// Write `next` to the db and make it the model.
    fn commit(&mut self, next: Model) -> Result<(), HandlerError> {
        db::save(&self.db_path, &next)?;
        self.model = next;
        Ok(())
    }

    /// Turn auto-balance of ports over workers on or off (`dp::balance`).
    pub fn set_auto_balance(&mut self, on: bool) {
        self.balancing = on.then(|| Balancing {
            policy: Balancer::default(),
            at: Instant::now(),
            busy: self.pool.busy(),
        });
    }

    /// One balancing tick (every `dp::balance::TICK`): measure the workers' busy time and
    /// the ports' received frames since the last tick, and move ports as the policy says.
    pub fn balance(&mut self) {
        let Some(b) = self.balancing.as_mut() else {
            return;
        };
        let now = Instant::now();
        let busy = self.pool.busy();
        let secs = now.duration_since(b.at).as_secs_f64().max(1e-3);
        let frac: Vec<f64> = busy
            .iter()
            .zip(b.busy.iter().chain(std::iter::repeat(&Duration::ZERO)))
            .map(|(n, o)| n.saturating_sub(*o).as_secs_f64() / secs)
            .collect();
        b.at = now;
        b.busy = busy;
        // A vxlan port's remotes share one polled socket: their frames count for it.
        let mut frames: HashMap<String, u64> = HashMap::new();
        for (name, l) in self.live.iter_mut() {
            let rx = l.counters.rx_packets();
            let base = name.split('@').next().unwrap_or(name);
            *frames.entry(base.to_string()).or_default() += rx.saturating_sub(l.rx_seen);
            l.rx_seen = rx;
        }
        let mut names = Vec::new();
        let mut loads = Vec::new();
        for (name, l) in &self.live {
            let Some(worker) = l.worker else { continue };
            let base = name.split('@').next().unwrap_or(name);
            loads.push(PortLoad {
                worker,
                frames: frames.get(base).copied().unwrap_or(0),
            });
            names.push(name.clone());
        }
        for m in b.policy.decide(&frac, &loads) {
            let Some(l) = names.get(m.port).and_then(|n| self.live.get_mut(n)) else {
                continue;
            };
            let Some(from) = l.worker else { continue };
            l.worker = Some(self.pool.move_port(from, m.to, l.id));
            tracing::debug!(port = %names[m.port], from, to = m.to, "port moved to another worker");
        }
    }

    /// Periodic work: retry configured ports that are not attached (a veth that
    /// appeared after a restart, a TAP whose name was busy).
    pub fn tick(&mut self) {
        if self.failed.is_empty() {
            return;
        }
        let todo: Vec<(PortConf, u32)> = self
            .model
            .bridges
            .iter()
            .flat_map(|b| b.ports.iter().map(move |p| (p.clone(), b.mtu)))
            .filter(|(p, _)| self.failed.contains_key(&p.name))
            .collect();
        let mut changed = Vec::new();
        for (p, mtu) in todo {
            match self.attach(&p, mtu) {
                Ok(()) => {
                    tracing::info!(port = %p.name, "port attached");
                    changed.push(p.name.clone());
                }
                Err(e) => {
                    self.failed.insert(p.name.clone(), format!("error: {e}"));
                }
            }
        }
        if !changed.is_empty() {
            self.publish();
            for n in changed {
                self.start_polling(&n);
            }
        }
    }

    /// Answer a DHCP message for `bridge` (service thread), persisting lease changes.
    pub fn dhcp(&mut self, bridge: &str, data: &[u8]) -> Option<crate::service::dhcp::Outcome> {
        use crate::service::dhcp;
        let now = dhcp::unix_now();
        let mut next = self.model.clone();
        let b = next.bridges.iter_mut().find(|b| b.name == bridge)?;
        let served = dhcp::serve(b, data, now);
        if served.exhausted {
            let n = self.dhcp_exhausted.entry(bridge.to_string()).or_insert(0);
            *n += 1;
            // Logged once per 100 so a starvation attack does not flood the log.
            if *n % 100 == 1 {
                tracing::warn!(bridge, times = *n, "DHCP pool exhausted: no offer");
            }
        }
        if served.changed {
            let names_changed = self.model.bridge(bridge).ok().map(|b| &b.leases)
                != next.bridge(bridge).ok().map(|b| &b.leases);
            if let Err(e) = db::save(&self.db_path, &next) {
                tracing::error!(error = %e, "cannot persist DHCP lease; not answering");
                return None;
            }
            self.model = next;
            if names_changed {
                self.publish();
            }
        }
        served.outcome
    }

    /// Release every device (shutdown). The db is left as it is.
    pub fn shutdown(&mut self) {
        let names: Vec<(String, String)> = self
            .model
            .bridges
            .iter()
            .flat_map(|b| {
                b.ports
                    .iter()
                    .map(move |p| (b.name.clone(), p.name.clone()))
            })
            .collect();
        for (b, p) in names {
            self.detach(&b, &p);
        }
        self.pool.stop();
    }

    /// Name of the bridge whose subnet holds `ip` ("" if none).
    fn bridge_of(&self, ip: std::net::Ipv4Addr) -> String {
        self.model
            .bridges
            .iter()
            .find(|b| b.subnet.is_some_and(|s| s.contains(&ip)))
            .map(|b| b.name.clone())
            .unwrap_or_default()
    }

    fn port_info(&self, b: &BridgeConf, p: &PortConf) -> PortInfo {
        let l = live_names(p).first().and_then(|n| self.live.get(n));
        PortInfo {
            name: p.name.clone(),
            bridge: b.name.clone(),
            kind: p.kind,
            tag: p.tag,
            trunks: p.trunks.clone(),
            state: match (l, self.failed.get(&p.name)) {
                (Some(_), _) => "up".to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "down".to_string(),
            },
            ifindex: l.and_then(|l| l.dev.ifindex()),
            worker: l.and_then(|l| l.worker),
            owned: p.owned,
            external_ids: p.external_ids.clone(),
            vxlan: p.vxlan.as_ref().map(|v| VxlanInfo {
                remote_ip: v.remotes.iter().map(ToString::to_string).collect(),
                vni: v.vni,
                local_ip: v.local.map(|l| l.to_string()),
                dst_port: v.dst_port,
            }),
            lock_mac: p.lock.as_ref().map(|l| l.mac.to_string()),
            lock_ip: p
                .lock
                .as_ref()
                .map(|l| l.ips.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }

    fn bridge_info(&self, b: &BridgeConf) -> BridgeInfo {
        BridgeInfo {
            name: b.name.clone(),
            subnet: b.subnet.map(|s| s.to_string()),
            gateway: b.gateway.map(|g| g.to_string()),
            dhcp: b.dhcp.map(|d| d.to_string()),
            isolated: b.isolated,
            mtu: b.mtu,
            ports: b.ports.iter().map(|p| self.port_info(b, p)).collect(),
            fdb_entries: self
                .fdbs
                .get(&b.name)
                .map_or(0, |f| f.entries(clock::now_secs()).len() as u64),
            fdb_capacity: self.fdbs.get(&b.name).map_or(0, |f| f.capacity() as u64),
            fdb_evictions: self.fdbs.get(&b.name).map_or(0, |f| f.evictions()),
            dhcp_exhausted: self.dhcp_exhausted.get(&b.name).copied().unwrap_or(0),
        }
    }

    /// Counters of port `p`: one entry, or one per remote VTEP for vxlan.
    fn port_stats(&self, b: &BridgeConf, p: &PortConf) -> Vec<PortStats> {
        live_names(p)
            .into_iter()
            .map(|n| self.live_stats(&b.name, &n))
            .collect()
    }

    fn live_stats(&self, bridge: &str, name: &str) -> PortStats {
        let mut s = PortStats {
            port: name.to_string(),
            bridge: bridge.to_string(),
            ..Default::default()
        };
        if let Some(l) = self.live.get(name) {
            let t = l.counters.totals();
            s.rx_packets = t.rx_packets;
            s.rx_bytes = t.rx_bytes;
            s.tx_packets = t.tx_packets;
            s.tx_bytes = t.tx_bytes;
            s.drops = t
                .drops
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            self.fastpath_stats(l.id, &mut s);
            let k = l.dev.kernel_rx_drops();
            if k > 0 {
                s.drops.insert("rx_kernel_queue_full".to_string(), k);
            }
        }
        s
    }

    /// Execute one command.
    pub fn handle(&mut self, cmd: Command) -> Result<Value, HandlerError> {
        match cmd {
            Command::Version => to_value(VersionInfo {
                protocol: PROTOCOL_VERSION,
                daemon: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                workers: self.pool.len(),
            }),
            Command::AddBr(req) => {
                let b = self.model.check_add_bridge(&req)?;
                let mut next = self.model.clone();
                next.insert_bridge(b.clone());
                self.commit(next)?;
                self.fdbs.insert(
                    b.name.clone(),
                    Arc::new(Fdb::new(self.limits.fdb_cap, self.limits.fdb_aging)),
                );
                self.publish();
                tracing::info!(bridge = %b.name, "bridge added");
                to_value(self.bridge_info(&b))
            }
            Command::DelBr { name } => {
                let b = self.model.bridge(&name)?.clone();
                let mut next = self.model.clone();
                next.remove_bridge(&name)?;
                db::save(&self.db_path, &next)?;
                for p in &b.ports {
                    self.detach(&b.name, &p.name);
                    if p.owned {
                        delete_netdev(&p.name);
                    }
                }
                self.model = next;
                self.fdbs.remove(&name);
                self.publish();
                tracing::info!(bridge = %name, "bridge deleted");
                Ok(Value::Null)
            }
            Command::ListBr => {
                let v: Vec<BridgeInfo> = self
                    .model
                    .bridges
                    .iter()
                    .map(|b| self.bridge_info(b))
                    .collect();
                to_value(v)
            }
            Command::Show => to_value(ShowInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                workers: self.pool.len(),
                db: self.db_path.display().to_string(),
                bridges: self
                    .model
                    .bridges
                    .iter()
                    .map(|b| self.bridge_info(b))
                    .collect(),
                ct_entries: self.conntrack.entries(clock::now_secs()).len() as u64,
                ct_capacity: self.conntrack.capacity() as u64,
                ct_evictions: self.conntrack.evictions(),
                fastpath: self.fastpath_mode(),
            }),
            Command::AddPort(req) => {
                let p = self.model.check_add_port(&req)?;
                let mtu = self.model.bridge(&req.bridge)?.mtu;
                let mut next = self.model.clone();
                next.insert_port(&req.bridge, p.clone())?;
                self.attach(&p, mtu)?;
                if let Err(e) = db::save(&self.db_path, &next) {
                    if let Some(l) = self.live.remove(&p.name) {
                        self.free_id(l.id);
                    }
                    return Err(e.into());
                }
                self.model = next;
                self.publish();
                self.start_polling(&p.name);
                tracing::info!(bridge = %req.bridge, port = %p.name, kind = %p.kind, "port added");
                let b = self.model.bridge(&req.bridge)?;
                to_value(self.port_info(b, &p))
            }
            Command::DelPort { bridge, port } => {
                let mut next = self.model.clone();
                let removed = next.remove_port(&bridge, &port)?;
                db::save(&self.db_path, &next)?;
                // Detach while the port is still in the model, then drop it.
                self.detach(&bridge, &port);
                if removed.owned {
                    delete_netdev(&port);
                }
                self.model = next;
                self.publish();
                tracing::info!(bridge = %bridge, port = %port, "port deleted");
                Ok(Value::Null)
            }
            Command::ListPorts { bridge } => {
                let b = self.model.bridge(&bridge)?;
                let v: Vec<PortInfo> = b.ports.iter().map(|p| self.port_info(b, p)).collect();
                to_value(v)
            }
            Command::FdbShow { bridge } => {
                self.model.bridge(&bridge)?;
                let now = clock::now_secs();
                let names: HashMap<PortId, &str> =
                    self.live.iter().map(|(n, l)| (l.id, n.as_str())).collect();
                let mut v: Vec<FdbEntry> = match self.fdbs.get(&bridge) {
                    Some(f) => f
                        .entries(now)
                        .into_iter()
                        .filter_map(|r| {
                            Some(FdbEntry {
                                port: names.get(&r.port)?.to_string(),
                                vlan: r.vlan,
                                mac: r.mac.to_string(),
                                age: u64::from(now.saturating_sub(r.last_seen)),
                            })
                        })
                        .collect(),
                    None => Vec::new(),
                };
                v.sort_by(|a, b| (&a.port, a.vlan, &a.mac).cmp(&(&b.port, b.vlan, &b.mac)));
                to_value(v)
            }
            Command::FdbFlush { bridge } => {
                self.model.bridge(&bridge)?;
                let flushed = self
                    .fdbs
                    .get(&bridge)
                    .map_or(0, |f| f.flush(clock::now_secs()));
                if let Some(fp) = &self.fastpath {
                    fp.bump();
                }
                to_value(FlushResult { flushed })
            }
            Command::Stats { port } => {
                let mut v = Vec::new();
                for b in &self.model.bridges {
                    for p in &b.ports {
                        for st in self.port_stats(b, p) {
                            // A vxlan port's name selects all its remotes.
                            if port.as_deref().is_none_or(|n| n == p.name || n == st.port) {
                                v.push(st);
                            }
                        }
                    }
                }
                if let Some(n) = port {
                    if v.is_empty() {
                        return Err(HandlerError::NoSuchPort(n));
                    }
                }
                to_value(v)
            }
            Command::AddHost(req) => {
                let h = self.model.check_add_host(&req)?;
                let mut next = self.model.clone();
                next.insert_host(&req.bridge, h.clone())?;
                self.commit(next)?;
                self.publish();
                to_value(host_entry(&h))
            }
            Command::DelHost { bridge, name } => {
                let mut next = self.model.clone();
                next.remove_host(&bridge, &name)?;
                self.commit(next)?;
                self.publish();
                Ok(Value::Null)
            }
            Command::AddRoute { cidr, via } => {
                let r = self.model.check_add_route(&cidr, &via)?;
                let mut next = self.model.clone();
                next.routes.push(r.clone());
                self.commit(next)?;
                self.publish();
                to_value(RouteEntry {
                    cidr: r.cidr.to_string(),
                    via: Some(r.via.to_string()),
                    bridge: self.bridge_of(r.via),
                    kind: "static".into(),
                })
            }
            Command::DelRoute { cidr } => {
                let mut next = self.model.clone();
                next.remove_route(&cidr)?;
                self.commit(next)?;
                self.publish();
                Ok(Value::Null)
            }
            Command::ListRoutes => {
                let mut v: Vec<RouteEntry> = self
                    .model
                    .bridges
                    .iter()
                    .filter(|b| b.gateway.is_some())
                    .filter_map(|b| {
                        Some(RouteEntry {
                            cidr: b.subnet?.to_string(),
                            via: None,
                            bridge: b.name.clone(),
                            kind: "connected".into(),
                        })
                    })
                    .collect();
                for r in &self.model.routes {
                    v.push(RouteEntry {
                        cidr: r.cidr.to_string(),
                        via: Some(r.via.to_string()),
                        bridge: self.bridge_of(r.via),
                        kind: "static".into(),
                    });
                }
                to_value(v)
            }
            Command::DhcpLeases { bridge } => {
                let b = self.model.bridge(&bridge)?;
                let now = crate::service::dhcp::unix_now();
                let mut v: Vec<LeaseEntry> = b
                    .leases
                    .iter()
                    .map(|l| LeaseEntry {
                        mac: l.mac.to_string(),
                        ip: l.ip.to_string(),
                        hostname: l.hostname.clone(),
                        expires: l.expires,
                        remaining: l.expires.saturating_sub(now),
                        reserved: b.reservations.iter().any(|r| r.mac == l.mac),
                    })
                    .collect();
                v.sort_by_key(|l| l.ip.parse::<std::net::Ipv4Addr>().ok());
                to_value(v)
            }
            Command::Masquerade { bridge, out } => {
                let m = self.model.check_masquerade(&bridge, &out)?;
                let mut next = self.model.clone();
                next.masquerade.push(m);
                self.commit(next)?;
                self.publish();
                Ok(Value::Null)
            }
            Command::DelMasquerade { bridge } => {
                self.model.bridge(&bridge)?;
                let mut next = self.model.clone();
                let before = next.masquerade.len();
                next.masquerade.retain(|m| m.bridge != bridge);
                if next.masquerade.len() == before {
                    return Err(ConfigError::NoSuchMasq(bridge).into());
                }
                self.commit(next)?;
                self.conntrack.flush();
                self.publish();
                Ok(Value::Null)
            }
            Command::Publish(req) => {
                let p = self
                    .model
                    .check_publish(&req.proto, &req.listen, &req.target)?;
                let mut next = self.model.clone();
                next.published.push(p.clone());
                self.commit(next)?;
                self.publish();
                to_value(published_entry(&p))
            }
            Command::Unpublish { proto, listen } => {
                let mut next = self.model.clone();
                next.remove_published(&proto, &listen)?;
                self.commit(next)?;
                // Established connections to the port end with it, as `docker stop` would.
                self.conntrack.flush();
                self.publish();
                Ok(Value::Null)
            }
            Command::ListPublished => {
                let v: Vec<PublishedEntry> =
                    self.model.published.iter().map(published_entry).collect();
                to_value(v)
            }
            Command::CtShow => {
                let now = clock::now_secs();
                let mut v: Vec<CtEntryInfo> = self
                    .conntrack
                    .entries(now)
                    .into_iter()
                    .filter(|(_, e)| e.original)
                    .map(|(t, e)| {
                        let ep = |ip: std::net::Ipv4Addr, p: u16| format!("{ip}:{p}");
                        let (sp, dp, xsp, xdp) = if t.proto == 1 {
                            (t.sport, t.sport, e.xlate.sport, e.xlate.sport)
                        } else {
                            (t.sport, t.dport, e.xlate.sport, e.xlate.dport)
                        };
                        let timeout = crate::tables::conntrack::timeout(t.proto, e.state);
                        CtEntryInfo {
                            proto: proto_name(t.proto).to_string(),
                            src: ep(t.src, sp),
                            dst: ep(t.dst, dp),
                            nat_src: ep(e.xlate.src, xsp),
                            nat_dst: ep(e.xlate.dst, xdp),
                            state: match (t.proto, e.state) {
                                (_, CtState::New) => "new",
                                (6, CtState::Established) => "established",
                                (_, CtState::Established) => "active",
                                (_, CtState::Closing) => "closing",
                            }
                            .to_string(),
                            expires_in: u64::from(
                                timeout.saturating_sub(now.wrapping_sub(e.last_seen)),
                            ),
                        }
                    })
                    .collect();
                v.sort_by(|a, b| (&a.proto, &a.src, &a.dst).cmp(&(&b.proto, &b.src, &b.dst)));
                to_value(v)
            }
            Command::DhcpReserve {
                bridge,
                mac,
                ip,
                name,
            } => {
                let mut next = self.model.clone();
                next.reserve(&bridge, &mac, &ip, name.as_deref())?;
                self.commit(next)?;
                self.publish();
                Ok(Value::Null)
            }
            Command::DhcpUnreserve { bridge, mac } => {
                let mut next = self.model.clone();
                next.unreserve(&bridge, &mac)?;
                self.commit(next)?;
                self.publish();
                Ok(Value::Null)
            }
            Command::FastpathShow { bridge } => self.fastpath_show(bridge.as_deref()),
            Command::ListHosts { bridge } => {
                let b = self.model.bridge(&bridge)?;
                let mut v: Vec<HostEntry> = b.hosts.iter().map(host_entry).collect();
                // Every name the bridge answers, whatever registered it.
                for r in &b.reservations {
                    if let Some(n) = &r.name {
                        v.push(HostEntry {
                            name: n.clone(),
                            ip: r.ip.to_string(),
                            source: "dhcp-reserve".into(),
                        });
                    }
                }
                let now = crate::service::dhcp::unix_now();
                for l in b.leases.iter().filter(|l| l.expires > now) {
                    if let Some(h) = &l.hostname {
                        if !v.iter().any(|e| &e.name == h) {
                            v.push(HostEntry {
                                name: h.clone(),
                                ip: l.ip.to_string(),
                                source: "dhcp".into(),
                            });
                        }
                    }
                }
                v.sort_by(|a, b| a.name.cmp(&b.name));
                to_value(v)
            }
        }
    }
}
