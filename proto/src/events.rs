//! The event stream (`monitor`): after the `ok` reply to a `monitor` request, vswitchd
//! writes one [`Event`] per line on that connection, in the order the changes were
//! made, until the client closes it. A subscriber that falls too far behind gets a
//! final `overflow` event and is disconnected (vswitchd never waits for a reader).

use serde::{Deserialize, Serialize};

/// What happened. Serialised in kebab-case (`port-added`); a kind this build does not
/// know decodes as [`EventKind::Unknown`], so an older client keeps reading a newer
/// daemon's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    BridgeAdded,
    BridgeRemoved,
    PortAdded,
    PortRemoved,
    PortUp,
    PortDown,
    /// A MAC address appeared in a bridge's forwarding table.
    MacLearned,
    /// A learned MAC address is now behind another port (`old_port` says where it was).
    MacMoved,
    LeaseGranted,
    LeaseReleased,
    NameAdded,
    NameRemoved,
    /// MAC events were left out because more arrived at once than a subscriber is sent
    /// (`count` says how many): a MAC flood does not flood subscribers.
    MacsSuppressed,
    /// The subscriber fell behind and is disconnected after this event.
    Overflow,
    #[serde(other)]
    Unknown,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BridgeAdded => "bridge-added",
            EventKind::BridgeRemoved => "bridge-removed",
            EventKind::PortAdded => "port-added",
            EventKind::PortRemoved => "port-removed",
            EventKind::PortUp => "port-up",
            EventKind::PortDown => "port-down",
            EventKind::MacLearned => "mac-learned",
            EventKind::MacMoved => "mac-moved",
            EventKind::LeaseGranted => "lease-granted",
            EventKind::LeaseReleased => "lease-released",
            EventKind::NameAdded => "name-added",
            EventKind::NameRemoved => "name-removed",
            EventKind::MacsSuppressed => "macs-suppressed",
            EventKind::Overflow => "overflow",
            EventKind::Unknown => "unknown",
        }
    }
}

/// One event. Only the fields that apply to its kind are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, one higher for every event vswitchd emits (a gap means the
    /// subscriber missed events: only at `overflow`).
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// `mac-moved`: the port the address was behind before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// DNS name (`name-*`), or the client's host name (`lease-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `port-down`: why; `lease-released` of DHCPv6: `released`, `expired`,
    /// `declined` or `replaced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `macs-suppressed`: how many MAC events were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `lease-*`: the address family, 4 (DHCP) or 6 (DHCPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<u8>,
    /// `lease-*` of DHCPv6: the client's DUID (colon hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duid: Option<String>,
}

impl Event {
    /// An event of `kind` with no subject yet (seq and time are set by the emitter).
    pub fn new(kind: EventKind) -> Event {
        Event {
            seq: 0,
            time_ms: 0,
            event: kind,
            bridge: None,
            port: None,
            old_port: None,
            mac: None,
            vlan: None,
            ip: None,
            name: None,
            reason: None,
            count: None,
            family: None,
            duid: None,
        }
    }

    pub fn bridge(mut self, b: impl Into<String>) -> Event {
        self.bridge = Some(b.into());
        self
    }
    pub fn port(mut self, p: impl Into<String>) -> Event {
        self.port = Some(p.into());
        self
    }
    pub fn mac(mut self, m: impl Into<String>) -> Event {
        self.mac = Some(m.into());
        self
    }
    pub fn ip(mut self, ip: impl Into<String>) -> Event {
        self.ip = Some(ip.into());
        self
    }
    pub fn name(mut self, n: impl Into<String>) -> Event {
        self.name = Some(n.into());
        self
    }

    /// The readable one-line form `vswitchctl monitor` prints.
    pub fn human(&self) -> String {
        let mut s = format!("{:<15}", self.event.as_str());
        let mut field = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&v);
            }
        };
        field("bridge", self.bridge.clone());
        field("port", self.port.clone());
        field("from", self.old_port.clone());
        field("mac", self.mac.clone());
        field("vlan", self.vlan.filter(|v| *v != 0).map(|v| v.to_string()));
        field("ip", self.ip.clone());
        field("name", self.name.clone());
        field("reason", self.reason.clone());
        field("count", self.count.map(|c| c.to_string()));
        field("duid", self.duid.clone());
        s.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_and_unknown_kinds() {
        let e = Event::new(EventKind::PortAdded).bridge("br0").port("v1");
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"seq":0,"time_ms":0,"event":"port-added","bridge":"br0","port":"v1"}"#
        );
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
        let future: Event =
            serde_json::from_str(r#"{"seq":9,"time_ms":1,"event":"warp-drive","x":1}"#).unwrap();
        assert_eq!(future.event, EventKind::Unknown);
    }

    #[test]
    fn human_line() {
        let mut e = Event::new(EventKind::MacMoved)
            .bridge("br0")
            .port("v2")
            .mac("02:00:00:00:00:01");
        e.old_port = Some("v1".into());
        assert_eq!(
            e.human(),
            "mac-moved       bridge=br0 port=v2 from=v1 mac=02:00:00:00:00:01"
        );
    }
}
