//! `dhcp-leases`, `dhcp-reserve`, `dhcp-unreserve`.

use super::{to_value, unless_missing, HandlerError, State};
use serde_json::Value;
use vswitch_proto::LeaseEntry;

impl State {
    pub(super) fn dhcp_leases(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        let b = self.model.bridge(bridge)?;
        let now = crate::service::dhcp::unix_now();
        let leases = self.db.leases().leases(bridge, now).unwrap_or_default();
        let mut v: Vec<LeaseEntry> = leases
            .iter()
            .map(|l| LeaseEntry {
                mac: l.mac.to_string(),
                ip: l.ip.to_string(),
                hostname: l.hostname.clone(),
                expires: l.expires,
                remaining: l.expires.saturating_sub(now),
                reserved: b.reservations.iter().any(|r| r.mac == l.mac),
                duid: None,
                iaid: None,
            })
            .collect();
        v.sort_by_key(|l| l.ip.parse::<std::net::Ipv4Addr>().ok());
        // DHCPv6 leases after the IPv4 ones, by address; the MAC is the Ethernet
        // source of the client's messages, else the one inside its DUID (DUID-LLT/LL).
        let leases6 = self.db.leases().leases6(bridge, now).unwrap_or_default();
        v.extend(leases6.iter().map(|l| {
            LeaseEntry {
                mac: l
                    .mac
                    .or_else(|| l.duid.mac())
                    .map_or_else(|| "-".into(), |m| m.to_string()),
                ip: l.ip.to_string(),
                hostname: l.hostname.clone(),
                expires: l.expires,
                remaining: l.expires.saturating_sub(now),
                reserved: b
                    .reservations6
                    .iter()
                    .any(|r| Some(r.mac) == l.mac && r.ip == l.ip),
                duid: Some(l.duid.to_string()),
                iaid: Some(l.iaid),
            }
        }));
        to_value(v)
    }

    pub(super) fn dhcp_reserve(
        &mut self,
        bridge: &str,
        mac: &str,
        ip: &str,
        name: Option<String>,
        may_exist: bool,
    ) -> Result<Value, HandlerError> {
        if may_exist
            && self
                .model
                .existing_reservation(bridge, mac, ip, name.as_deref())?
        {
            return Ok(Value::Null);
        }
        self.mutate(|m| Ok(m.reserve(bridge, mac, ip, name.as_deref())?))?;
        Ok(Value::Null)
    }

    pub(super) fn dhcp_unreserve(
        &mut self,
        bridge: &str,
        mac: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let r = self
            .mutate(|m| Ok(m.unreserve(bridge, mac)?))
            .map(|_| Value::Null);
        unless_missing(r, if_exists)
    }
}
