//! `version`, `add-br`, `del-br`, `list-br`, `show`.

use super::super::ports::delete_netdev;
use super::{to_value, unless_missing, HandlerError, State};
use crate::dp::clock;
use serde_json::Value;
use vswitch_proto::{AddBr, BridgeInfo, ShowInfo, VersionInfo, PROTOCOL_VERSION};

impl State {
    pub(super) fn version(&mut self) -> Result<Value, HandlerError> {
        to_value(VersionInfo {
            protocol: PROTOCOL_VERSION,
            daemon: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            workers: self.pool.len(),
        })
    }

    pub(super) fn add_br(&mut self, req: AddBr) -> Result<Value, HandlerError> {
        if req.may_exist {
            if let Some(b) = self.model.existing_bridge(&req)? {
                return to_value(self.bridge_info(b));
            }
        }
        let b = self.model.check_add_bridge(&req)?;
        self.mutate(|m| {
            m.insert_bridge(b.clone());
            Ok(())
        })?;
        tracing::info!(bridge = %b.name, "bridge added");
        crate::control::events::emit_port(
            crate::control::events::EventKind::BridgeAdded,
            &b.name,
            None,
        );
        to_value(self.bridge_info(&b))
    }

    pub(super) fn del_br(&mut self, name: &str, if_exists: bool) -> Result<Value, HandlerError> {
        let b = match self.mutate(|m| Ok(m.remove_bridge(name)?)) {
            Ok(b) => b,
            Err(e) => return unless_missing(Err(e), if_exists),
        };
        for p in &b.ports {
            self.detach(&b.name, &p.name);
            if p.owned {
                delete_netdev(&p.name);
            }
        }
        tracing::info!(bridge = %name, "bridge deleted");
        crate::control::events::emit_port(
            crate::control::events::EventKind::BridgeRemoved,
            name,
            None,
        );
        Ok(Value::Null)
    }

    pub(super) fn list_br(&mut self) -> Result<Value, HandlerError> {
        let v: Vec<BridgeInfo> = self
            .model
            .bridges
            .iter()
            .map(|b| self.bridge_info(b))
            .collect();
        to_value(v)
    }

    pub(super) fn show(&mut self) -> Result<Value, HandlerError> {
        to_value(ShowInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: self.pool.len(),
            db: self.db.path().display().to_string(),
            bridges: self
                .model
                .bridges
                .iter()
                .map(|b| self.bridge_info(b))
                .collect(),
            ct_entries: self.conntrack.entries(clock::now_secs()).len() as u64,
            ct_capacity: self.conntrack.capacity() as u64,
            ct_evictions: self.conntrack.evictions(),
            ct6_entries: self.conntrack6.entries(clock::now_secs()).len() as u64,
            ct6_capacity: self.conntrack6.capacity() as u64,
            ct6_evictions: self.conntrack6.evictions(),
            fastpath: self.fastpath_mode(),
        })
    }
}
