//! `add-route`, `del-route`, `list-routes`.

use super::{to_value, HandlerError, State};
use serde_json::Value;
use vswitch_proto::RouteEntry;

impl State {
    pub(super) fn add_route(&mut self, cidr: &str, via: &str) -> Result<Value, HandlerError> {
        let r = self.model.check_add_route(cidr, via)?;
        self.mutate(|m| {
            m.routes.push(r.clone());
            Ok(())
        })?;
        to_value(RouteEntry {
            cidr: r.cidr.to_string(),
            via: Some(r.via.to_string()),
            bridge: self.bridge_of(r.via),
            kind: "static".into(),
        })
    }

    pub(super) fn del_route(&mut self, cidr: &str) -> Result<Value, HandlerError> {
        self.mutate(|m| Ok(m.remove_route(cidr)?))?;
        Ok(Value::Null)
    }

    pub(super) fn list_routes(&mut self) -> Result<Value, HandlerError> {
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
}
