//! `masquerade`, `del-masquerade`, `publish`, `unpublish`, `list-published`, `ct-show`.

use super::super::views::published_entry;
use super::{to_value, unless_missing, HandlerError, State};
use crate::config::model::proto_name;
use crate::config::ConfigError;
use crate::dp::clock;
use crate::tables::conntrack::CtState;
use serde_json::Value;
use vswitch_proto::{CtEntry as CtEntryInfo, Publish, PublishedEntry};

impl State {
    pub(super) fn masquerade(&mut self, bridge: &str, out: &str) -> Result<Value, HandlerError> {
        let masq = self.model.check_masquerade(bridge, out)?;
        self.mutate(|m| {
            m.masquerade.push(masq);
            Ok(())
        })?;
        Ok(Value::Null)
    }

    pub(super) fn del_masquerade(
        &mut self,
        bridge: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let r = self.mutate(|m| {
            m.bridge(bridge)?;
            let before = m.masquerade.len();
            m.masquerade.retain(|x| x.bridge != bridge);
            if m.masquerade.len() == before {
                return Err(ConfigError::NoSuchMasq(bridge.to_string()).into());
            }
            Ok(())
        });
        if r.is_ok() {
            self.conntrack.flush();
        }
        unless_missing(r.map(|_| Value::Null), if_exists)
    }

    pub(super) fn publish(&mut self, req: Publish) -> Result<Value, HandlerError> {
        if req.may_exist {
            if let Some(p) = self
                .model
                .existing_publish(&req.proto, &req.listen, &req.target)?
            {
                return to_value(published_entry(p));
            }
        }
        let p = self
            .model
            .check_publish(&req.proto, &req.listen, &req.target)?;
        self.mutate(|m| {
            m.published.push(p.clone());
            Ok(())
        })?;
        to_value(published_entry(&p))
    }

    pub(super) fn unpublish(
        &mut self,
        proto: &str,
        listen: &str,
        if_exists: bool,
    ) -> Result<Value, HandlerError> {
        let r = self.mutate(|m| Ok(m.remove_published(proto, listen)?));
        if r.is_ok() {
            // Established connections to the port end with it, as `docker stop` would.
            self.conntrack.flush();
        }
        unless_missing(r.map(|_| Value::Null), if_exists)
    }

    pub(super) fn list_published(&mut self) -> Result<Value, HandlerError> {
        let v: Vec<PublishedEntry> = self.model.published.iter().map(published_entry).collect();
        to_value(v)
    }

    pub(super) fn ct_show(&mut self) -> Result<Value, HandlerError> {
        let now = clock::now_secs();
        let mut v: Vec<CtEntryInfo> = self
            .conntrack
            .entries(now)
            .into_iter()
            .filter(|(_, e)| e.original)
            .map(|(t, e)| {
                let ep = |ip: std::net::Ipv4Addr, p: u16| format!("{ip}:{p}");
                let (sp, dp, xsp, xdp) = if t.proto == 1 {
                    (t.sport, t.sport, e.xlate.sport, e.xlate.sport)
                } else {
                    (t.sport, t.dport, e.xlate.sport, e.xlate.dport)
                };
                let timeout = crate::tables::conntrack::timeout(t.proto, e.state);
                CtEntryInfo {
                    proto: proto_name(t.proto).to_string(),
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
        v.sort_by(|a, b| (&a.proto, &a.src, &a.dst).cmp(&(&b.proto, &b.src, &b.dst)));
        to_value(v)
    }
}
