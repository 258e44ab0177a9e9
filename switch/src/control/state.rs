//! The control plane's state ([`State`]): the Model, the live-port registry, the tables
//! the snapshot points to, and the worker pool. Every mutation goes through
//! [`State::mutate`]: validate → change a copy of the model → save the db → commit →
//! install a new snapshot. A refused request changes nothing.

use super::handlers::HandlerError;
use super::snapshot::{self, Tables};
use crate::config::{db, Model, PortConf};
use crate::dp::balance::{Balancer, PortLoad};
use crate::dp::{PortCounters, Snapshot, WorkerPool};
use crate::port::Port;
use crate::tables::{Conntrack, Fdb, PortId};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// One attached (live) port: the registry entry of a device vswitchd opened.
pub struct Live {
    pub id: PortId,
    pub dev: Arc<dyn Port>,
    pub counters: Arc<PortCounters>,
    pub worker: Option<usize>,
    /// Received frames at the last balancing tick.
    pub rx_seen: u64,
    /// Frames held back by the port's impairment (kept across snapshots).
    pub impair: Arc<crate::dp::impair::Queue>,
}

/// What the balancer measured at its last tick.
pub(super) struct Balancing {
    pub(super) policy: Balancer,
    pub(super) at: Instant,
    pub(super) busy: Vec<Duration>,
}

/// The control plane's state. Owned behind one mutex by the control server.
pub struct State {
    pub(super) model: Model,
    /// The db file, and the DHCP lease store it persists (shared with the service
    /// thread, which answers DHCP from it without this state's mutex).
    pub(super) db: Arc<db::Db>,
    pub(super) snap: Arc<ArcSwap<Snapshot>>,
    pub(super) pool: WorkerPool,
    pub(super) limits: Limits,
    pub(super) fdbs: HashMap<String, Arc<Fdb>>,
    /// The live-port registry: attached devices by live name (a vxlan port has one per
    /// remote VTEP, `NAME@IP`).
    pub(super) live: HashMap<String, Live>,
    /// Configured ports that are not attached, with the reason.
    pub(super) failed: HashMap<String, String>,
    /// Generation of each slot; bumped when a slot is freed.
    pub(super) slot_gen: Vec<u16>,
    pub(super) free_slots: Vec<u16>,
    pub(super) generation: u64,
    pub(super) conntrack: Arc<Conntrack>,
    /// IPv6 NAT connections (`masquerade6`, IPv6 `publish`), same cap as `conntrack`.
    pub(super) conntrack6: Arc<crate::tables::Conntrack6>,
    /// Auto-balance of ports over workers; `None` when turned off.
    pub(super) balancing: Option<Balancing>,
    /// Handles the lab tools use (`control::tools`).
    pub(super) tools: super::tools::Tools,
    /// The kernel fast path, when it runs (control/fastpath.rs).
    pub(super) fastpath: Option<Arc<crate::fastpath::FastPath>>,
}

impl State {
    /// Take over `model` (restored from `db`): create each bridge's tables and
    /// attach every port it can; the others are reported in `show` and retried by
    /// [`State::tick`].
    pub fn new(
        model: Model,
        db: Arc<db::Db>,
        snap: Arc<ArcSwap<Snapshot>>,
        pool: WorkerPool,
        limits: Limits,
        fastpath: Option<Arc<crate::fastpath::FastPath>>,
    ) -> State {
        let mut s = State {
            model,
            db,
            snap,
            pool,
            limits,
            fdbs: HashMap::new(),
            live: HashMap::new(),
            failed: HashMap::new(),
            slot_gen: Vec::new(),
            free_slots: Vec::new(),
            generation: 0,
            conntrack: Arc::new(Conntrack::new(limits.ct_cap)),
            conntrack6: Arc::new(crate::tables::Conntrack6::new(limits.ct_cap)),
            balancing: None,
            tools: Default::default(),
            fastpath,
        };
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
        s.install_snapshot();
        for name in attached {
            s.start_polling(&name);
        }
        // Links taken down by `set-port --down` stay down across restarts.
        let down: Vec<PortConf> = s
            .model
            .bridges
            .iter()
            .flat_map(|b| b.ports.iter())
            .filter(|p| p.impair.as_ref().is_some_and(|i| i.down))
            .cloned()
            .collect();
        for p in down {
            s.set_carrier(&p, false);
        }
        s
    }

    pub fn workers(&self) -> usize {
        self.pool.len()
    }

    /// The configuration as it stands.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Build a snapshot of the current model and live ports and install it for the
    /// workers (one atomic pointer swap). Each bridge's FDB is created with the bridge
    /// and dropped with it.
    pub(super) fn install_snapshot(&mut self) {
        // DHCP pools follow the model (ranges, reservations, addresses in use).
        self.db
            .leases()
            .sync(self.model.dhcp_pools(), crate::service::dhcp::unix_now());
        self.db
            .leases()
            .sync6(self.model.dhcp6_pools(), crate::service::dhcp::unix_now());
        let limits = self.limits;
        self.fdbs
            .retain(|name, _| self.model.bridges.iter().any(|b| &b.name == name));
        for b in &self.model.bridges {
            self.fdbs
                .entry(b.name.clone())
                .or_insert_with(|| Arc::new(Fdb::new(limits.fdb_cap, limits.fdb_aging)));
        }
        self.generation += 1;
        let tables = Tables {
            fdbs: &self.fdbs,
            conntrack: &self.conntrack,
            fastpath: &self.fastpath,
        };
        let mut snap = snapshot::build(&self.model, &self.live, &tables, self.generation);
        snap.taps = self.tools.taps.clone();
        snap.conntrack6 = self.conntrack6.clone();
        self.snap.store(Arc::new(snap));
        // After the store: no cached decision outlives the snapshot it was made under.
        if let Some(fp) = &self.fastpath {
            fp.bump();
        }
    }

    /// The one way configuration changes: `change` edits a copy of the model (and
    /// refuses by returning an error, leaving everything as it was); the copy is saved
    /// to the db, becomes the model, and a new snapshot is installed.
    pub(super) fn mutate<T>(
        &mut self,
        change: impl FnOnce(&mut Model) -> Result<T, HandlerError>,
    ) -> Result<T, HandlerError> {
        let mut next = self.model.clone();
        let out = change(&mut next)?;
        if next != self.model {
            self.db.save(&next)?;
            self.model = next;
            self.install_snapshot();
        }
        Ok(out)
    }

    /// Give the lab tools the daemon's handles (`control::tools`).
    pub fn set_tools(&mut self, tools: super::tools::Tools) {
        self.tools = tools;
        // The workers' snapshot points to the taps.
        self.install_snapshot();
    }

    /// Cluster hooks (`control::cluster`): a validated change of the model (persisted
    /// and installed, as every mutation), and a new snapshot after the cluster's own
    /// tables (remote endpoints, names) changed.
    pub(crate) fn apply(
        &mut self,
        f: impl FnOnce(&mut Model) -> Result<(), HandlerError>,
    ) -> Result<(), HandlerError> {
        self.mutate(f)
    }

    pub(crate) fn republish(&mut self) {
        self.install_snapshot();
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
                    crate::control::events::emit(
                        crate::control::events::Event::new(
                            crate::control::events::EventKind::PortUp,
                        )
                        .port(&p.name),
                    );
                    changed.push(p.name.clone());
                }
                Err(e) => {
                    self.failed.insert(p.name.clone(), format!("error: {e}"));
                }
            }
        }
        if !changed.is_empty() {
            self.install_snapshot();
            for n in changed {
                self.start_polling(&n);
            }
        }
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
}
