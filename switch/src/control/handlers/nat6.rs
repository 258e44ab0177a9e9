//! `masquerade6`, `del-masquerade6`, and the IPv6 side of `publish`, `unpublish`,
//! `list-published` and `ct-show`: a request whose addresses are IPv6 (`[IP]:PORT`)
//! goes to the IPv6 rules and [`crate::tables::Conntrack6`]; every other one to the
//! IPv4 handlers (handlers/nat.rs), unchanged.

use super::{to_value, unless_missing, HandlerError, State};
use crate::config::model::proto_name;
use crate::config::nat6::{family, Family, Publish6Conf};
use crate::config::Model;
use crate::dp::clock;
use crate::tables::conntrack::CtState;
use serde_json::Value;
use vswitch_proto::{CtEntry as CtEntryInfo, Publish, PublishedEntry};

fn published6_entry(p: &Publish6Conf) -> PublishedEntry {
    PublishedEntry {
        proto: proto_name(p.proto).to_string(),
        ip: Some(p.ip.to_string()),
        port: p.port,
        target_ip: p.target_ip.to_string(),
        target_port: p.target_port,
        port_end: p.port_end,
        target_port_end: p.port_end.map(|_| p.target_port.saturating_add(p.extra())),
    }
}

impl State {
    pub(super) fn masquerade6(&mut self, bridge: &str, out: &str) -> Result<Value, HandlerError> {
        let masq = self.model.check_masquerade6(bridge, out)?;
        self.mutate(|m| {
            m.masquerade6.push(masq);
            Ok(())
        })?;
        Ok(Value::Null)
    }

    pub(super) fn del_masquerade6(
        &mut self,
        bridge: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        if if_exists
            && self.model.bridge(bridge).is_ok()
            && !self.model.masquerade6.iter().any(|m| m.bridge == bridge)
        {
            return Ok(Value::Null);
        }
        let r = self.mutate(|m| Ok(m.remove_masquerade6(bridge)?));
        if r.is_ok() {
            self.conntrack6.flush();
        }
        unless_missing(r.map(|_| Value::Null), if_exists)
    }

    /// `publish`: IPv6 endpoints to the IPv6 rules, others to IPv4's.
    pub(super) fn publish_any(&mut self, req: Publish) -> Result<Value, HandlerError> {
        if !Model::publish_is_v6(&req.listen, &req.target)? {
            return self.publish(req);
        }
        if req.may_exist {
            if let Some(p) = self
                .model
                .existing_publish6(&req.proto, &req.listen, &req.target)?
            {
                return to_value(published6_entry(p));
            }
        }
        let p = self
            .model
            .check_publish6(&req.proto, &req.listen, &req.target)?;
        self.mutate(|m| {
            m.published6.push(p.clone());
            Ok(())
        })?;
        to_value(published6_entry(&p))
    }

    pub(super) fn unpublish_any(
        &mut self,
        proto: &str,
        listen: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        if family(listen)? != Family::V6 {
            return self.unpublish(proto, listen, if_exists);
        }
        let r = self.mutate(|m| Ok(m.remove_published6(proto, listen)?));
        if r.is_ok() {
            // Connections to the port end with it, as for IPv4.
            self.conntrack6.flush();
        }
        unless_missing(r.map(|_| Value::Null), if_exists)
    }

    /// Every published port, IPv4's first.
    pub(super) fn list_published_any(&mut self) -> Result<Value, HandlerError> {
        let mut v = self.list_published()?;
        if let Value::Array(a) = &mut v {
            for p in &self.model.published6 {
                a.push(to_value(published6_entry(p))?);
            }
        }
        Ok(v)
    }

    /// Every tracked connection, IPv4's first, then IPv6's (`[IP]:PORT`).
    pub(super) fn ct_show_any(&mut self) -> Result<Value, HandlerError> {
        let mut v = self.ct_show()?;
        let now = clock::now_secs();
        let mut v6: Vec<CtEntryInfo> = self
            .conntrack6
            .entries(now)
            .into_iter()
            .filter(|(_, e)| e.original)
            .map(|(t, e)| {
                let ep = |ip: std::net::Ipv6Addr, p: u16| format!("[{ip}]:{p}");
                let (sp, dp, xsp, xdp) = if t.proto == 58 {
                    (t.sport, t.sport, e.xlate.sport, e.xlate.sport)
                } else {
                    (t.sport, t.dport, e.xlate.sport, e.xlate.dport)
                };
                let timeout = crate::tables::conntrack::timeout(t.proto, e.state);
                CtEntryInfo {
                    proto: match t.proto {
                        58 => "icmpv6",
                        p => proto_name(p),
                    }
                    .to_string(),
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
                    expires_in: u64::from(timeout.saturating_sub(now.wrapping_sub(e.last_seen))),
                }
            })
            .collect();
        v6.sort_by(|a, b| (&a.proto, &a.src, &a.dst).cmp(&(&b.proto, &b.src, &b.dst)));
        if let Value::Array(a) = &mut v {
            for e in v6 {
                a.push(to_value(e)?);
            }
        }
        Ok(v)
    }
}
