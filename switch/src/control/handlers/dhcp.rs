//! `dhcp-leases`, `dhcp-reserve`, `dhcp-unreserve`.

use super::{to_value, HandlerError, State};
use serde_json::Value;
use vswitch_proto::LeaseEntry;

impl State {
    pub(super) fn dhcp_leases(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        let b = self.model.bridge(bridge)?;
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

    pub(super) fn dhcp_reserve(
        &mut self,
        bridge: &str,
        mac: &str,
        ip: &str,
        name: Option<String>,
    ) -> Result<Value, HandlerError> {
        self.mutate(|m| Ok(m.reserve(bridge, mac, ip, name.as_deref())?))?;
        Ok(Value::Null)
    }

    pub(super) fn dhcp_unreserve(
        &mut self,
        bridge: &str,
        mac: &str,
    ) -> Result<Value, HandlerError> {
        self.mutate(|m| Ok(m.unreserve(bridge, mac)?))?;
        Ok(Value::Null)
    }
}
