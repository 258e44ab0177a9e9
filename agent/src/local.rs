//! The agent's side of its vswitchd, through `vswitch-proto` only: requests
//! ([`Ctl`]), the event stream (a thread), and the `cluster-agent` link that brings
//! user commands needing the cluster (a thread). Both threads hand what they read to
//! the agent's loop over a channel and reconnect (with backoff) when vswitchd goes
//! away, so the agent outlives a vswitchd restart.

use crate::state::LocalBridge;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use vswitch_proto::cluster::{AgentCall, AgentCallKind};
use vswitch_proto::events::Event;
use vswitch_proto::{
    BridgeInfo, Client, ClientError, Command, FdbEntry, HostEntry, LeaseEntry, Reply, ShowInfo,
};

/// What the vswitchd threads tell the agent's loop.
pub enum Input {
    /// The event stream is (again) connected: local state must be read afresh.
    Up,
    /// vswitchd went away (the reason).
    Down(String),
    Event(Event),
    /// A call from vswitchd, to be answered on `reply`.
    Call(AgentCallKind, oneshot::Sender<Reply>),
}

/// Blocking requests to vswitchd on one connection, reopened after a failure.
pub struct Ctl {
    socket: PathBuf,
    client: Option<Client>,
}

impl Ctl {
    pub fn new(socket: PathBuf) -> Ctl {
        Ctl {
            socket,
            client: None,
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// One request; a broken connection is reopened once.
    pub fn call(&mut self, cmd: Command) -> Result<Value, ClientError> {
        for attempt in 0..2 {
            if self.client.is_none() {
                let mut c = Client::connect(&self.socket)?;
                c.set_read_timeout(Some(Duration::from_secs(20)))?;
                self.client = Some(c);
            }
            let Some(c) = self.client.as_mut() else {
                continue;
            };
            match c.call_value(cmd.clone()) {
                Ok(v) => return Ok(v),
                Err(e @ ClientError::Daemon(_)) | Err(e @ ClientError::BadReply(_)) => {
                    return Err(e)
                }
                Err(e) => {
                    self.client = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        Err(ClientError::Closed)
    }

    pub fn get<T: serde::de::DeserializeOwned>(&mut self, cmd: Command) -> Result<T, ClientError> {
        let v = self.call(cmd)?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply(e.to_string()))
    }

    /// Every local bridge, with leases, names and learned MACs for overlay bridges.
    pub fn read_local(&mut self) -> Result<BTreeMap<String, LocalBridge>, ClientError> {
        let show: ShowInfo = self.get(Command::Show)?;
        let mut out = BTreeMap::new();
        for b in show.bridges {
            let overlay = is_overlay(&b);
            let mut lb = LocalBridge {
                name: b.name.clone(),
                overlay,
                ports: b.ports.clone(),
                ..Default::default()
            };
            if overlay {
                // DHCP and DHCPv6 leases (those with a DUID) in one list.
                if b.dhcp.is_some() || b.dhcp6.is_some() {
                    lb.leases = self.get::<Vec<LeaseEntry>>(Command::DhcpLeases {
                        bridge: b.name.clone(),
                    })?;
                }
                lb.hosts = self.get::<Vec<HostEntry>>(Command::ListHosts {
                    bridge: b.name.clone(),
                })?;
                // Ports without a recorded MAC: what was learned on them.
                let need: Vec<&str> = b
                    .ports
                    .iter()
                    .filter(|p| {
                        p.kind != vswitch_proto::PortKind::Vxlan
                            && !p.external_ids.contains_key("mac")
                    })
                    .map(|p| p.name.as_str())
                    .collect();
                if !need.is_empty() {
                    let fdb: Vec<FdbEntry> = self.get(Command::FdbShow {
                        bridge: b.name.clone(),
                    })?;
                    for e in fdb.into_iter().filter(|e| e.vlan == 0) {
                        if need.contains(&e.port.as_str()) {
                            let v = lb.learned.entry(e.port).or_default();
                            if v.len() < 4 {
                                v.push(e.mac);
                            }
                        }
                    }
                }
            }
            out.insert(b.name.clone(), lb);
        }
        Ok(out)
    }
}

/// Whether a bridge is an overlay bridge.
fn is_overlay(b: &BridgeInfo) -> bool {
    b.overlay_vni.is_some()
}

/// Backoff between reconnection attempts: 200 ms doubling to 2 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis((200u64 << n.min(4)).min(2000))
}

/// Follow vswitchd's event stream for ever (reconnecting), feeding `tx`.
pub fn spawn_monitor(socket: PathBuf, tx: mpsc::UnboundedSender<Input>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agent-monitor".into())
        .spawn(move || {
            let mut fails = 0u32;
            loop {
                let res = (|| -> Result<String, ClientError> {
                    let mut c = Client::connect(&socket)?;
                    c.monitor()?;
                    fails = 0;
                    if tx.send(Input::Up).is_err() {
                        return Ok(String::new());
                    }
                    while let Some(e) = c.next_event()? {
                        if tx.send(Input::Event(e)).is_err() {
                            return Ok(String::new());
                        }
                    }
                    Ok("vswitchd closed the event stream".into())
                })();
                let why = match res {
                    Ok(w) if w.is_empty() => return,
                    Ok(w) => w,
                    Err(e) => e.to_string(),
                };
                if fails == 0 && tx.send(Input::Down(why)).is_err() {
                    return;
                }
                std::thread::sleep(backoff(fails));
                fails += 1;
            }
        })?;
    Ok(())
}

/// Keep the `cluster-agent` link open for ever (reconnecting), answering each call
/// through the agent's loop.
pub fn spawn_link(
    socket: PathBuf,
    node: String,
    tx: mpsc::UnboundedSender<Input>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agent-link".into())
        .spawn(move || {
            let mut fails = 0u32;
            loop {
                let res = (|| -> Result<bool, ClientError> {
                    let mut c = Client::connect(&socket)?;
                    c.call_value(Command::ClusterAgent { node: node.clone() })?;
                    c.set_read_timeout(None)?;
                    fails = 0;
                    tracing::debug!("cluster-agent link to vswitchd open");
                    while let Some(line) = c.next_line()? {
                        let reply = match serde_json::from_str::<AgentCall>(&line) {
                            Ok(call) => {
                                let (rtx, rrx) = oneshot::channel();
                                if tx.send(Input::Call(call.call, rtx)).is_err() {
                                    return Ok(false);
                                }
                                rrx.blocking_recv()
                                    .unwrap_or_else(|_| Reply::err("vswitch-agent is stopping"))
                            }
                            Err(e) => Reply::err(format!("vswitch-agent: bad call: {e}")),
                        };
                        let line = serde_json::to_string(&reply).unwrap_or_default();
                        c.send_line(&line)?;
                    }
                    Ok(true)
                })();
                match res {
                    Ok(false) => return,
                    Ok(true) => {}
                    Err(e) => {
                        if fails == 3 {
                            tracing::warn!(error = %e, "cannot open the cluster-agent link to vswitchd; retrying");
                        }
                    }
                }
                std::thread::sleep(backoff(fails));
                fails += 1;
            }
        })?;
    Ok(())
}
