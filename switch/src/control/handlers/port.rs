//! `add-port`, `del-port`, `list-ports`, `fdb-show`, `fdb-flush`, `stats`.

use super::super::ports::delete_netdev;
use super::{to_value, unless_missing, HandlerError, State};
use crate::config::ConfigError;
use crate::dp::clock;
use crate::tables::PortId;
use crate::wire::MacAddr;
use serde_json::Value;
use std::collections::HashMap;
use vswitch_proto::{AddPort, FdbEntry, FlushResult, PortInfo};

impl State {
    pub(super) fn add_port(&mut self, req: AddPort) -> Result<Value, HandlerError> {
        if req.may_exist {
            if let Some(p) = self.model.existing_port(&req)? {
                let b = self.model.bridge(&req.bridge)?;
                return to_value(self.port_info(b, p));
            }
        }
        let p = self.model.check_add_port(&req)?;
        let mtu = self.model.bridge(&req.bridge)?.mtu;
        self.attach(&p, mtu)?;
        if let Err(e) = self.mutate(|m| Ok(m.insert_port(&req.bridge, p.clone())?)) {
            self.unattach(&p);
            return Err(e);
        }
        self.start_polling(&p.name);
        tracing::info!(bridge = %req.bridge, port = %p.name, kind = %p.kind, "port added");
        crate::control::events::emit_port(
            crate::control::events::EventKind::PortAdded,
            &req.bridge,
            Some(&p.name),
        );
        let b = self.model.bridge(&req.bridge)?;
        to_value(self.port_info(b, &p))
    }

    pub(super) fn del_port(
        &mut self,
        bridge: &str,
        port: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let elsewhere = self.model.port_owner(port).filter(|b| b.name != bridge);
        if let (true, Some(other)) = (if_exists, elsewhere) {
            // Not missing: somewhere else, which `--if-exists` does not excuse.
            return Err(ConfigError::Conflict(format!(
                "port {port} is on bridge {}, not {bridge}",
                other.name
            ))
            .into());
        }
        // The guest's addresses as the bridge saw them: the hostnames of their DHCP
        // leases leave with the port.
        let macs = self.macs_of(bridge, port);
        let removed = match self.mutate(|m| {
            let p = m.remove_port(bridge, port)?;
            m.forget_port_names(bridge, &p, &macs)?;
            Ok(p)
        }) {
            Ok(p) => p,
            Err(e) => return unless_missing(Err(e), if_exists),
        };
        // Leases live in the lease store, not the model: the same rule there.
        let gone = (removed.external_ids.get("pipework").map(String::as_str) == Some("1"))
            .then(|| removed.external_ids.get("mac")?.parse::<MacAddr>().ok())
            .flatten();
        let now = crate::service::dhcp::unix_now();
        self.db
            .leases()
            .with_pool(bridge, |pool| pool.forget_port(gone, &macs, now));
        self.db
            .leases()
            .with_pool6(bridge, |pool| pool.forget_port(gone, &macs, now));
        self.detach(bridge, port);
        if removed.owned {
            delete_netdev(port);
        }
        tracing::info!(bridge = %bridge, port = %port, "port deleted");
        crate::control::events::emit_port(
            crate::control::events::EventKind::PortRemoved,
            bridge,
            Some(port),
        );
        Ok(Value::Null)
    }

    /// MAC addresses seen on port `port` of `bridge`: learned in its FDB, and its
    /// locked MAC.
    fn macs_of(&self, bridge: &str, port: &str) -> Vec<MacAddr> {
        let mut macs = Vec::new();
        let Ok(b) = self.model.bridge(bridge) else {
            return macs;
        };
        let Some(p) = b.ports.iter().find(|p| p.name == port) else {
            return macs;
        };
        if let Some(l) = &p.lock {
            macs.push(l.mac);
        }
        let ids: Vec<PortId> = super::super::ports::live_names(p)
            .iter()
            .filter_map(|n| self.live.get(n).map(|l| l.id))
            .collect();
        if let Some(f) = self.fdbs.get(bridge) {
            for r in f.entries(clock::now_secs()) {
                if ids.contains(&r.port) && !macs.contains(&r.mac) {
                    macs.push(r.mac);
                }
            }
        }
        macs
    }

    pub(super) fn list_ports(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        let b = self.model.bridge(bridge)?;
        let v: Vec<PortInfo> = b.ports.iter().map(|p| self.port_info(b, p)).collect();
        to_value(v)
    }

    pub(super) fn fdb_show(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        self.model.bridge(bridge)?;
        let now = clock::now_secs();
        let names: HashMap<PortId, &str> =
            self.live.iter().map(|(n, l)| (l.id, n.as_str())).collect();
        let mut v: Vec<FdbEntry> = match self.fdbs.get(bridge) {
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

    pub(super) fn fdb_flush(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        self.model.bridge(bridge)?;
        let flushed = self
            .fdbs
            .get(bridge)
            .map_or(0, |f| f.flush(clock::now_secs()));
        if let Some(fp) = &self.fastpath {
            fp.bump();
        }
        to_value(FlushResult { flushed })
    }

    pub(super) fn stats(&mut self, port: Option<String>) -> Result<Value, HandlerError> {
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
}

/// Longest delay or jitter accepted (netem's practical range).
const MAX_DELAY_US: u64 = 60_000_000;
/// Fastest rate limit accepted, kbit/s (400 Gbit/s).
const MAX_RATE_KBIT: u64 = 400_000_000;

fn check_impair(i: &vswitch_proto::Impairment) -> Result<(), HandlerError> {
    let bad = |m: &str| Err(HandlerError::Invalid(m.to_string()));
    if i.delay_us > MAX_DELAY_US || i.jitter_us > MAX_DELAY_US {
        return bad("delay and jitter must be at most 60 s");
    }
    if i.loss_ppm > 1_000_000 || i.corrupt_ppm > 1_000_000 {
        return bad("loss and corruption must be 0..100 %");
    }
    if i.rate_kbit > MAX_RATE_KBIT {
        return bad("rate must be at most 400000 Mbit/s");
    }
    Ok(())
}

impl State {
    /// `set-port`: change a port's link impairment (the fields given).
    pub(super) fn set_port(
        &mut self,
        port: &str,
        set: &vswitch_proto::ImpairSet,
    ) -> Result<Value, HandlerError> {
        if set.is_empty() {
            return Err(HandlerError::Invalid(
                "nothing to set: give --delay, --jitter, --loss, --corrupt, --rate, --down or --up"
                    .into(),
            ));
        }
        self.change_impair(port, |old| set.apply(old))
    }

    /// `clear-port`: remove every impairment of a port.
    pub(super) fn clear_port(&mut self, port: &str) -> Result<Value, HandlerError> {
        self.change_impair(port, |_| vswitch_proto::Impairment::default())
    }

    fn change_impair(
        &mut self,
        port: &str,
        f: impl FnOnce(&vswitch_proto::Impairment) -> vswitch_proto::Impairment,
    ) -> Result<Value, HandlerError> {
        let Some(b) = self.model.port_owner(port) else {
            return Err(HandlerError::NoSuchPort(port.to_string()));
        };
        let bridge = b.name.clone();
        let old = b
            .ports
            .iter()
            .find(|p| p.name == port)
            .and_then(|p| p.impair.clone())
            .unwrap_or_default();
        let new = f(&old);
        check_impair(&new)?;
        self.mutate(|m| {
            let p = m
                .bridges
                .iter_mut()
                .filter(|b| b.name == bridge)
                .flat_map(|b| b.ports.iter_mut())
                .find(|p| p.name == port)
                .ok_or_else(|| HandlerError::NoSuchPort(port.to_string()))?;
            p.impair = (!new.is_none()).then(|| new.clone());
            Ok(())
        })?;
        let b = self.model.bridge(&bridge)?;
        let Some(p) = b.ports.iter().find(|p| p.name == port).cloned() else {
            return Err(HandlerError::NoSuchPort(port.to_string()));
        };
        // Frames held by a delay or rate that is gone now are dropped with it.
        if new.delay_us == 0 && new.jitter_us == 0 && new.rate_kbit == 0 && new.corrupt_ppm == 0 {
            for n in super::super::ports::live_names(&p) {
                if let Some(l) = self.live.get(&n) {
                    l.impair.clear();
                }
            }
        }
        if old.down != new.down {
            self.set_carrier(&p, !new.down);
        }
        tracing::info!(port, impair = %new.describe(), "impairment set");
        let b = self.model.bridge(&bridge)?;
        to_value(self.port_info(b, &p))
    }

    /// Carrier of a port's guest: a system port (a veth end in vswitchd's namespace)
    /// is taken administratively down, which its peer sees as carrier off; other port
    /// types only drop frames.
    pub(in crate::control) fn set_carrier(&self, p: &crate::config::PortConf, up: bool) {
        if p.kind != vswitch_proto::PortKind::System || !self.live.contains_key(&p.name) {
            return;
        }
        let r = if up {
            crate::port::sys::netdev::set_up(&p.name)
        } else {
            crate::port::sys::netdev::set_down(&p.name)
        };
        if let Err(e) = r {
            tracing::warn!(port = %p.name, up, error = %e, "cannot change the link state");
        }
    }
}

impl State {
    /// `add-mirror`: copies of what the selected ports receive and send leave by the
    /// output port.
    pub(super) fn add_mirror(
        &mut self,
        req: vswitch_proto::AddMirror,
    ) -> Result<Value, HandlerError> {
        let m = self.mutate(|m| Ok(m.add_mirror(&req)?))?;
        tracing::info!(bridge = %req.bridge, mirror = %m.name, output = %m.output, "mirror added");
        to_value(vswitch_proto::MirrorInfo {
            name: m.name,
            select: m.select,
            output: m.output,
        })
    }

    /// `del-mirror`.
    pub(super) fn del_mirror(
        &mut self,
        bridge: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let r = self.mutate(|m| Ok(m.del_mirror(bridge, name)?));
        match unless_missing(r.map(Value::Bool), if_exists)? {
            Value::Bool(false) if !if_exists => Err(HandlerError::Invalid(format!(
                "no such mirror: {name} on bridge {bridge}"
            ))),
            _ => Ok(Value::Null),
        }
    }
}
