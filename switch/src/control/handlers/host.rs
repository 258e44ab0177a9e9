//! `add-host`, `del-host`, `list-hosts`: the DNS names of a bridge.

use super::super::views::host_entry;
use super::{to_value, unless_missing, HandlerError, State};
use crate::control::events::{self, Event, EventKind};
use serde_json::Value;
use vswitch_proto::{AddHost, HostEntry};

impl State {
    pub(super) fn add_host(&mut self, req: AddHost) -> Result<Value, HandlerError> {
        if req.may_exist {
            if let Some(h) = self.model.existing_host(&req)? {
                return to_value(host_entry(h));
            }
        }
        let h = self.model.check_add_host(&req)?;
        self.mutate(|m| Ok(m.insert_host(&req.bridge, h.clone())?))?;
        events::emit(
            Event::new(EventKind::NameAdded)
                .bridge(&req.bridge)
                .name(&h.name)
                .ip(h.ip.to_string()),
        );
        to_value(host_entry(&h))
    }

    pub(super) fn del_host(
        &mut self,
        bridge: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let r = self.mutate(|m| Ok(m.remove_host(bridge, name)?)).map(|h| {
            events::emit(
                Event::new(EventKind::NameRemoved)
                    .bridge(bridge)
                    .name(&h.name)
                    .ip(h.ip.to_string()),
            );
            Value::Null
        });
        unless_missing(r, if_exists)
    }

    pub(super) fn list_hosts(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        let b = self.model.bridge(bridge)?;
        let mut v: Vec<HostEntry> = b.hosts.iter().map(host_entry).collect();
        // Every name the bridge answers, whatever registered it.
        for r in &b.reservations {
            if let Some(n) = &r.name {
                v.push(HostEntry {
                    name: n.clone(),
                    ip: r.ip.to_string(),
                    source: "dhcp-reserve".into(),
                    port: None,
                });
            }
        }
        for r in &b.reservations6 {
            if let Some(n) = &r.name {
                v.push(HostEntry {
                    name: n.clone(),
                    ip: r.ip.to_string(),
                    source: "dhcp-reserve".into(),
                    port: None,
                });
            }
        }
        let now = crate::service::dhcp::unix_now();
        let leases = self.db.leases().leases(bridge, now).unwrap_or_default();
        for l in &leases {
            if let Some(h) = &l.hostname {
                if !v.iter().any(|e| &e.name == h) {
                    v.push(HostEntry {
                        name: h.clone(),
                        ip: l.ip.to_string(),
                        source: "dhcp".into(),
                        port: None,
                    });
                }
            }
        }
        // DHCPv6 lease names (AAAA), unless the name has an IPv6 address already.
        let leases6 = self.db.leases().leases6(bridge, now).unwrap_or_default();
        for l in &leases6 {
            if let Some(h) = &l.hostname {
                let has6 = |e: &HostEntry| &e.name == h && e.ip.contains(':');
                if !v.iter().any(has6) {
                    v.push(HostEntry {
                        name: h.clone(),
                        ip: l.ip.to_string(),
                        source: "dhcp".into(),
                        port: None,
                    });
                }
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        to_value(v)
    }
}
