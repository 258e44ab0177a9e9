//! `add-route`, `del-route`, `list-routes`.

use super::{to_value, unless_missing, HandlerError, State};
use serde_json::Value;
use vswitch_proto::RouteEntry;

impl State {
    pub(super) fn add_route(
        &mut self,
        cidr: &str,
        via: &str,
        may_exist: bool,
    ) -> Result<Value, HandlerError> {
        let existing = match may_exist {
            true => self.model.existing_route(cidr, via)?,
            false => None,
        };
        let r = match existing {
            Some(r) => r,
            None => {
                let r = self.model.check_add_route(cidr, via)?;
                self.mutate(|m| {
                    m.insert_route(r.clone());
                    Ok(())
                })?;
                r
            }
        };
        to_value(RouteEntry {
            cidr: r.cidr(),
            via: Some(r.via().to_string()),
            bridge: self.bridge_of_any(r.via()),
            kind: "static".into(),
        })
    }

    pub(super) fn del_route(&mut self, cidr: &str, if_exists: bool) -> Result<Value, HandlerError> {
        let r = self
            .mutate(|m| Ok(m.remove_route(cidr)?))
            .map(|_| Value::Null);
        unless_missing(r, if_exists)
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
        v.extend(
            self.model
                .bridges
                .iter()
                .filter(|b| b.gateway6.is_some())
                .filter_map(|b| {
                    Some(RouteEntry {
                        cidr: b.subnet6?.to_string(),
                        via: None,
                        bridge: b.name.clone(),
                        kind: "connected".into(),
                    })
                }),
        );
        for r in &self.model.routes6 {
            v.push(RouteEntry {
                cidr: r.cidr.to_string(),
                via: Some(r.via.to_string()),
                bridge: self.bridge_of_any(r.via.into()),
                kind: "static".into(),
            });
        }
        to_value(v)
    }
}
