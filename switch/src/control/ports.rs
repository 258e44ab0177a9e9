//! The live-port registry: open the device of a configured port, give it an id (slot +
//! generation), hand it to a worker, and take it back. Devices that cannot be a port
//! (loopback, non-Ethernet, kernel bridges, ports of another master) are refused here
//! with a one-line error naming the device.

use super::handlers::HandlerError;
use super::state::{Live, State};
use crate::config::{ConfigError, PortConf};
use crate::dp::{clock, slot_of, PortCounters};
use crate::port::afpacket::AfPacketPort;
use crate::port::sys::netdev;
use crate::port::tap::TapPort;
use crate::port::vxlan::VxlanRemote;
use crate::port::Port;
use crate::tables::PortId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_proto::PortKind;

/// Why an existing netdev cannot be a system port, if it cannot.
fn unfit_reason(name: &str) -> Option<String> {
    let info = match netdev::link_info(name) {
        Ok(i) => i,
        // Missing devices are reported by the open that follows.
        Err(_) => return None,
    };
    if info.loopback || info.hw_type == netdev::ARPHRD_LOOPBACK {
        return Some("it is the loopback device".into());
    }
    if info.hw_type != netdev::ARPHRD_ETHER {
        return Some(format!(
            "not an Ethernet device (link type {})",
            netdev::hw_type_name(info.hw_type)
        ));
    }
    if info.kind.as_deref() == Some("bridge") {
        return Some("it is a kernel bridge (add its member devices instead)".into());
    }
    if let Some(m) = info.master {
        return Some(format!(
            "it is already enslaved to {m} (a kernel bridge or bond; release it first with `ip link set {name} nomaster`)"
        ));
    }
    None
}

pub(super) fn open_dev(p: &PortConf, mtu: u32) -> Result<Arc<dyn Port>, HandlerError> {
    match p.kind {
        PortKind::System => {
            if let Some(why) = unfit_reason(&p.name) {
                return Err(HandlerError::NotAPort {
                    name: p.name.clone(),
                    why,
                });
            }
            match AfPacketPort::open(&p.name) {
                Ok(d) => Ok(Arc::new(d)),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                    Err(HandlerError::NoDevice(p.name.clone()))
                }
                Err(e) => Err(HandlerError::Attach {
                    name: p.name.clone(),
                    source: e,
                }),
            }
        }
        PortKind::Tap | PortKind::Internal => {
            let m = (mtu != crate::config::model::DEFAULT_MTU).then_some(mtu);
            // A TAP just deleted may linger while another worker drops its last
            // reference: retry briefly before calling the name taken.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match TapPort::create(&p.name, m, p.kind == PortKind::Internal) {
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
pub(super) fn live_names(p: &PortConf) -> Vec<String> {
    match &p.vxlan {
        Some(v) => v
            .remotes
            .iter()
            .map(|r| format!("{}@{r}", p.name))
            .collect(),
        None => vec![p.name.clone()],
    }
}

/// Delete a netdev vswitchd owns (a pipework veth pair). The port is already gone from
/// the configuration, so a failure is logged, not returned.
pub(super) fn delete_netdev(name: &str) {
    match netdev::ifindex(name).and_then(netdev::delete) {
        Ok(()) => tracing::debug!(device = name, "device deleted"),
        Err(e) => tracing::warn!(device = name, error = %e, "cannot delete device"),
    }
}

impl State {
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

    /// Open the device of `p` and record it as live (not yet in a snapshot or polled).
    pub(super) fn attach(&mut self, p: &PortConf, mtu: u32) -> Result<(), HandlerError> {
        if let Some(v) = &p.vxlan {
            let shared = self.open_vxlan(p, v)?;
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
                        impair: Arc::default(),
                    },
                );
                ids.push((name, id));
            }
            if let Err(e) = self.fastpath_attach_vxlan(&shared, &ids) {
                for (n, id) in ids {
                    self.live.remove(&n);
                    self.free_id(id);
                }
                return Err(e);
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
                impair: Arc::default(),
            },
        );
        self.failed.remove(&p.name);
        Ok(())
    }

    /// Forget the live port(s) of `name` that were attached but never installed or
    /// polled (a request refused after [`State::attach`]).
    pub(super) fn unattach(&mut self, p: &PortConf) {
        for n in live_names(p) {
            if let Some(l) = self.live.remove(&n) {
                self.free_id(l.id);
            }
        }
    }

    /// Hand the live port(s) of configured port `name` to workers (vxlan: the remote
    /// that owns the shared socket; the others are never polled).
    pub(super) fn start_polling(&mut self, name: &str) {
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
    pub(super) fn detach(&mut self, bridge: &str, name: &str) {
        self.failed.remove(name);
        let prefix = format!("{name}@");
        let keys: Vec<String> = self
            .live
            .keys()
            .filter(|k| *k == name || k.starts_with(&prefix))
            .cloned()
            .collect();
        let gone: Vec<_> = keys.iter().filter_map(|k| self.live.remove(k)).collect();
        if gone.is_empty() {
            return;
        }
        self.install_snapshot();
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
}
