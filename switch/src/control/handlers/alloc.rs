//! `alloc-address`, `release-address`, `list-allocations`: the bridge's one address
//! allocator (`config::alloc`), shared by DHCP, pipework, vswitch-docker and vswitch-cni.

use super::{to_value, HandlerError, State};
use serde_json::Value;
use vswitch_proto::{AllocAddress, AllocEntry};

impl State {
    pub(super) fn alloc_address(&mut self, req: AllocAddress) -> Result<Value, HandlerError> {
        let now = crate::service::dhcp::unix_now();
        // The DHCP leases live in the lease store, not in the model.
        let leases = self
            .db
            .leases()
            .leases(&req.bridge, now)
            .unwrap_or_default();
        let a = self.mutate(|m| Ok(m.alloc_address(&req, &leases, now)?))?;
        to_value(AllocEntry {
            bridge: req.bridge,
            ip: a.ip.to_string(),
            owner: a.owner,
        })
    }

    pub(super) fn release_address(
        &mut self,
        bridge: &str,
        owner: &str,
        ip: Option<&str>,
    ) -> Result<Value, HandlerError> {
        let n = self.mutate(|m| Ok(m.release_address(bridge, owner, ip)?))?;
        to_value(n)
    }

    pub(super) fn list_allocations(&mut self, bridge: &str) -> Result<Value, HandlerError> {
        let b = self.model.bridge(bridge)?;
        let v: Vec<AllocEntry> = b
            .allocations
            .iter()
            .map(|a| AllocEntry {
                bridge: bridge.to_string(),
                ip: a.ip.to_string(),
                owner: a.owner.clone(),
            })
            .collect();
        to_value(v)
    }
}
