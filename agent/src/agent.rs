//! The agent's loop, on a current-thread tokio runtime: etcd on one side (lease,
//! keep-alive, watch), vswitchd on the other (event stream, calls, requests), and
//! [`Agent::reconcile`] in between, run shortly after anything changed.
//!
//! Failure rules (docs/cluster.md): etcd unreachable → vswitchd keeps what it was
//! last given (nothing is removed for want of etcd), calls that change the cluster fail
//! with one line naming etcd, and the agent retries every tick; when etcd answers
//! again the watch resumes from the last revision seen (or everything is listed again
//! after a compaction) and a lease that expired meanwhile is replaced (node, endpoints
//! and blocks are written again). Nothing is pushed to vswitchd before the first full
//! listing, so a restarted agent never wipes what vswitchd already has.

use crate::keys::{self, Block6Val, BlockVal, EpVal, IpVal, Keys, NetVal, NodeVal, VERSION};
use crate::local::{self, Ctl, Input};
use crate::state::{self, LocalBridge, View};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use vswitch_proto::cluster::{AgentCallKind, ClusterInfo, NetworkInfo, NodeInfo, OverlaySet};
use vswitch_proto::{AddBr, Command, Reply};

/// Every etcd call gives up after this long (so a dead etcd never stalls the agent or
/// a user's command for long).
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(3);
/// MTU of an overlay bridge unless given: a 1500-byte underlay minus the 50 bytes of
/// VXLAN over IPv4.
pub const OVERLAY_MTU: u32 = 1450;
/// The first UDP port given to an overlay network (IANA's VXLAN port).
pub const FIRST_UDP_PORT: u16 = 4789;

/// Client certificate files for etcd over TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The command line, resolved.
#[derive(Debug, Clone)]
pub struct Options {
    pub etcd: Vec<String>,
    pub socket: PathBuf,
    pub node: String,
    pub vtep: Ipv4Addr,
    pub prefix: String,
    pub ttl: i64,
    pub tls: Option<TlsFiles>,
}

/// Why registration stopped.
enum RegError {
    /// Another live agent holds the node name: give up.
    Duplicate(String),
    /// etcd failed: retry.
    Etcd(String),
}

struct Agent {
    opts: Options,
    keys: Keys,
    identity: String,
    etcd: Option<Client>,
    /// The endpoint to try first when (re)connecting: the agent talks to one member
    /// at a time and moves to the next when it fails.
    next_url: usize,
    /// Why etcd is not usable now (`None`: it answered last time).
    etcd_err: Option<String>,
    lease: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    watch: Option<WatchStream>,
    /// Every key/value under the prefix, as of `rev`.
    raw: BTreeMap<String, Vec<u8>>,
    rev: i64,
    /// A full listing has been read.
    synced: bool,
    view: View,
    warned: HashSet<String>,
    /// Nodes seen registered since this agent started and gone since.
    gone: BTreeMap<String, Ipv4Addr>,
    /// Nodes registered as of the last [`Agent::rebuild`].
    seen_nodes: BTreeMap<String, Ipv4Addr>,
    ctl: Ctl,
    local: BTreeMap<String, LocalBridge>,
    local_stale: bool,
    vswitchd_up: bool,
    /// What each local overlay bridge was last given.
    pushed: HashMap<String, OverlaySet>,
    conflicts: BTreeMap<String, String>,
    /// Reconcile at this instant.
    due: Option<Instant>,
}

fn etcd_error(urls: &[String], e: impl std::fmt::Display) -> String {
    let e = e.to_string();
    let e = e.lines().next().unwrap_or("").trim().to_string();
    format!("etcd unreachable ({}): {e}", urls.join(","))
}

/// The identity of this agent instance: its network namespace and the PID of the
/// vswitchd it serves. A restarted agent beside the same vswitchd has the same.
fn identity(vswitchd_pid: u32) -> String {
    let ns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{ns}/vswitchd:{vswitchd_pid}")
}

async fn with_timeout<T, E: std::fmt::Display>(
    urls: &[String],
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(ETCD_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(etcd_error(urls, e)),
        Err(_) => Err(etcd_error(
            urls,
            format!("no answer within {} s", ETCD_TIMEOUT.as_secs()),
        )),
    }
}

/// Run the agent until SIGTERM or SIGINT. Errors: duplicate node name, bad TLS files.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut ctl = Ctl::new(opts.socket.clone());
    // vswitchd first: the agent serves one.
    let mut n = 0u32;
    let pid = loop {
        match ctl.get::<vswitch_proto::VersionInfo>(Command::Version) {
            Ok(v) => break v.pid,
            Err(e) => {
                if n.is_multiple_of(10) {
                    tracing::warn!(error = %e, "waiting for vswitchd");
                }
                n += 1;
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    let mut a = Agent {
        keys: Keys::new(&opts.prefix),
        identity: identity(pid),
        etcd: None,
        next_url: 0,
        etcd_err: Some("not connected yet".into()),
        lease: 0,
        keeper: None,
        watch: None,
        raw: BTreeMap::new(),
        rev: 0,
        synced: false,
        view: View::default(),
        warned: HashSet::new(),
        gone: BTreeMap::new(),
        seen_nodes: BTreeMap::new(),
        ctl,
        local: BTreeMap::new(),
        local_stale: true,
        vswitchd_up: true,
        pushed: HashMap::new(),
        conflicts: BTreeMap::new(),
        due: None,
        opts,
    };
    // etcd: connect and register, retrying with backoff; SIGTERM ends the wait.
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = async {
            a.connect().await?;
            a.register().await
        };
        let res = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            r = attempt => r,
        };
        match res {
            Ok(()) => break,
            Err(RegError::Duplicate(msg)) => anyhow::bail!(msg),
            Err(RegError::Etcd(msg)) => {
                tracing::error!("{msg}; retrying in {} ms", backoff.as_millis());
                a.etcd = None;
                tokio::select! {
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!(
        node = %a.opts.node,
        vtep = %a.opts.vtep,
        lease = a.lease,
        ttl = a.opts.ttl,
        "node registered"
    );
    if let Err(e) = a.relist().await {
        tracing::warn!("{e}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    local::spawn_monitor(a.opts.socket.clone(), tx.clone())?;
    local::spawn_link(a.opts.socket.clone(), a.opts.node.clone(), tx)?;
    let tick = Duration::from_millis((a.opts.ttl.max(1) as u64 * 1000 / 3).clamp(500, 5000));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    a.mark();
    // What a branch does may wait for etcd (each call bounded by ETCD_TIMEOUT): a stop
    // signal ends that wait too, so SIGTERM is served within a few seconds whatever
    // etcd does.
    macro_rules! or_stop {
        ($work:expr) => {
            tokio::select! {
                _ = $work => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        };
    }
    loop {
        let due = a.due;
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            m = next_watch(&mut a.watch) => or_stop!(a.on_watch(m)),
            _ = ticker.tick() => or_stop!(a.tick()),
            Some(input) = rx.recv() => or_stop!(a.on_input(input)),
            _ = sleep_until(due) => {
                a.due = None;
                or_stop!(a.reconcile());
            }
        }
    }
    a.shutdown().await;
    Ok(())
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_watch(
    w: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match w {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

impl Agent {
    fn urls(&self) -> &[String] {
        &self.opts.etcd
    }

    /// Reconcile soon (changes arriving together are handled once).
    fn mark(&mut self) {
        if self.due.is_none() {
            self.due = Some(Instant::now() + Duration::from_millis(20));
        }
    }

    fn client(&self) -> Result<Client, String> {
        match (&self.etcd, &self.etcd_err) {
            (Some(c), None) => Ok(c.clone()),
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Err(etcd_error(self.urls(), "not connected")),
        }
    }

    fn failed(&mut self, e: &str) {
        if self.etcd_err.is_none() {
            tracing::warn!("{e}");
        }
        self.etcd_err = Some(e.to_string());
        self.keeper = None;
        self.watch = None;
        // Next time, start with the next member.
        self.next_url = (self.next_url + 1) % self.opts.etcd.len().max(1);
    }

    async fn connect(&mut self) -> Result<(), RegError> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(ETCD_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), ETCD_TIMEOUT);
        if let Some(t) = &self.opts.tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| RegError::Duplicate(format!("{}: {e}", p.display())))
            };
            let tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&t.cacert)?))
                .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
            o = o.with_tls(tls);
        }
        // One member at a time, the first that answers (a dead member in a balanced
        // channel would fail a share of the requests).
        let n = self.opts.etcd.len().max(1);
        let mut last = String::new();
        for i in 0..n {
            let at = (self.next_url + i) % n;
            let url = self.opts.etcd[at].clone();
            let urls = [url.clone()];
            let tried = async {
                let mut c =
                    with_timeout(&urls, Client::connect([url.as_str()], Some(o.clone()))).await?;
                with_timeout(&urls, c.status()).await?;
                Ok::<Client, String>(c)
            };
            match tried.await {
                Ok(c) => {
                    self.next_url = at;
                    self.etcd = Some(c);
                    self.etcd_err = None;
                    self.keeper = None;
                    self.watch = None;
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(RegError::Etcd(if n > 1 {
            etcd_error(self.urls(), last)
        } else {
            last
        }))
    }

    fn node_val(&self, lease: i64) -> NodeVal {
        NodeVal {
            v: VERSION,
            name: self.opts.node.clone(),
            vtep: self.opts.vtep,
            agent: env!("CARGO_PKG_VERSION").to_string(),
            identity: self.identity.clone(),
            lease,
            ttl: self.opts.ttl,
        }
    }

    /// Register the node under a lease of its own (or take over the lease of this same
    /// agent instance after a restart). Another live agent with the same name: refused.
    async fn register(&mut self) -> Result<(), RegError> {
        let urls = self.opts.etcd.clone();
        let mut c = self
            .etcd
            .clone()
            .ok_or(RegError::Etcd(etcd_error(&urls, "not connected")))?;
        let key = self.keys.node(&self.opts.node);
        let mut deadline: Option<Instant> = None;
        loop {
            let got = with_timeout(&urls, c.get(key.as_str(), None))
                .await
                .map_err(RegError::Etcd)?;
            let existing = got.kvs().first().map(|kv| {
                (
                    kv.mod_revision(),
                    serde_json::from_slice::<NodeVal>(kv.value()).ok(),
                )
            });
            let mut reuse = None;
            if let Some((_, Some(n))) = &existing {
                if n.identity == self.identity {
                    let ttl = with_timeout(&urls, c.lease_time_to_live(n.lease, None))
                        .await
                        .map(|r| r.ttl())
                        .unwrap_or(-1);
                    if ttl > 0 {
                        reuse = Some(n.lease);
                    }
                } else {
                    // Someone else's: wait for its lease to run out, then refuse.
                    let wait = Duration::from_secs(n.ttl.clamp(1, 3600) as u64 + 2);
                    let d = *deadline.get_or_insert_with(|| {
                        tracing::warn!(
                            node = %n.name,
                            vtep = %n.vtep,
                            "node name is registered: waiting up to {} s for that registration to expire",
                            wait.as_secs()
                        );
                        Instant::now() + wait
                    });
                    if Instant::now() >= d {
                        return Err(RegError::Duplicate(format!(
                            "node name {} is already registered by another live vswitch-agent \
                             (VTEP {}): two agents cannot share a node name; start this one \
                             with another --node",
                            n.name, n.vtep
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            let lease = match reuse {
                Some(l) => l,
                None => with_timeout(&urls, c.lease_grant(self.opts.ttl, None))
                    .await
                    .map_err(RegError::Etcd)?
                    .id(),
            };
            let cmp = match &existing {
                None => Compare::version(key.as_str(), CompareOp::Equal, 0),
                Some((rev, _)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev),
            };
            let put = TxnOp::put(
                key.as_str(),
                keys::encode(&self.node_val(lease)),
                Some(PutOptions::new().with_lease(lease)),
            );
            let r = with_timeout(&urls, c.txn(Txn::new().when([cmp]).and_then([put])))
                .await
                .map_err(RegError::Etcd)?;
            if r.succeeded() {
                if reuse.is_some() {
                    tracing::info!("took over this node's registration after a restart");
                }
                self.lease = lease;
                self.keeper = None;
                return Ok(());
            }
            // Changed under us: look again.
        }
    }

    /// Read everything under the prefix and (re)start the watch after it.
    async fn relist(&mut self) -> Result<(), String> {
        let mut c = self.client()?;
        let r = with_timeout(
            self.urls(),
            c.get(self.keys.all(), Some(GetOptions::new().with_prefix())),
        )
        .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        self.raw = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        self.view = View::build(&self.keys, &self.raw, &mut self.warned);
        self.rev = r.header().map_or(0, |h| h.revision());
        self.synced = true;
        self.rebuild();
        self.start_watch().await
    }

    async fn start_watch(&mut self) -> Result<(), String> {
        let mut c = self.client()?;
        let o = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.rev + 1);
        match with_timeout(self.urls(), c.watch(self.keys.all(), Some(o))).await {
            Ok(w) => {
                self.watch = Some(w);
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Create `key` holding `value` unless it exists: a block claim (of two nodes racing
    /// for a block, one gets it; the other picks again on the next round). Whether it
    /// was created.
    async fn claim(
        &mut self,
        c: &mut Client,
        key: String,
        value: Vec<u8>,
        lease: &Option<PutOptions>,
    ) -> Result<bool, String> {
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value.clone(), lease.clone())]);
        let r = with_timeout(self.urls(), c.txn(txn)).await?;
        if r.succeeded() {
            self.set(key, Some(value));
        }
        Ok(r.succeeded())
    }

    /// Key `key` now holds `value` (`None`: deleted): the raw copy and the view follow.
    fn set(&mut self, key: String, value: Option<Vec<u8>>) {
        self.view
            .apply(&self.keys, &key, value.as_deref(), &mut self.warned);
        match value {
            Some(v) => {
                self.raw.insert(key, v);
            }
            None => {
                self.raw.remove(&key);
            }
        }
    }

    /// After changes: note nodes that came or went, and reconcile soon.
    fn rebuild(&mut self) {
        let was = std::mem::take(&mut self.seen_nodes);
        for (name, vtep) in &was {
            if !self.view.nodes.contains_key(name) {
                tracing::info!(node = %name, "node gone");
                self.gone.insert(name.clone(), *vtep);
            }
        }
        for (name, n) in &self.view.nodes {
            if self.gone.remove(name).is_some() || !was.contains_key(name) {
                tracing::info!(node = %name, "node alive");
            }
            self.seen_nodes.insert(name.clone(), n.vtep);
        }
        self.mark();
    }

    async fn on_watch(
        &mut self,
        m: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) {
        let resp = match m {
            Ok(Some(r)) => r,
            Ok(None) => {
                let e = etcd_error(self.urls(), "watch closed");
                self.failed(&e);
                return;
            }
            Err(e) => {
                let e = etcd_error(self.urls(), e);
                self.failed(&e);
                return;
            }
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            tracing::warn!(
                compact_revision = resp.compact_revision(),
                "watch cancelled (history compacted?): listing everything again"
            );
            self.watch = None;
            let _ = self.relist().await;
            return;
        }
        let mut changed = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match ev.event_type() {
                EventType::Put => self.set(key, Some(kv.value().to_vec())),
                EventType::Delete => self.set(key, None),
            }
            changed = true;
        }
        if let Some(h) = resp.header() {
            self.rev = self.rev.max(h.revision());
        }
        if changed {
            self.rebuild();
        }
    }

    /// Periodic work: keep the lease alive, reconnect and resume the watch after an
    /// outage, re-register after the lease expired.
    async fn tick(&mut self) {
        if self.etcd.is_none() || self.etcd_err.is_some() {
            if let Err(RegError::Etcd(e)) | Err(RegError::Duplicate(e)) = self.connect().await {
                self.failed(&e);
                return;
            }
        }
        match self.keep_alive().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the node's etcd lease expired (etcd was unreachable for longer than the TTL): registering again");
                match self.register().await {
                    Ok(()) => {
                        // The old lease's keys are gone or going: write ours again.
                        self.mark();
                    }
                    Err(RegError::Etcd(e)) => {
                        self.failed(&e);
                        return;
                    }
                    Err(RegError::Duplicate(e)) => {
                        tracing::error!("{e}");
                        return;
                    }
                }
            }
            Err(e) => {
                self.failed(&e);
                return;
            }
        }
        if self.etcd_err.is_some() {
            tracing::info!("etcd reachable again");
            self.etcd_err = None;
        }
        if self.watch.is_none() {
            let res = if self.synced {
                self.start_watch().await
            } else {
                self.relist().await
            };
            if res.is_ok() {
                self.mark();
            }
        }
    }

    /// One keep-alive round trip: `Ok(false)` if the lease no longer exists.
    async fn keep_alive(&mut self) -> Result<bool, String> {
        if self.keeper.is_none() {
            let mut c = self
                .etcd
                .clone()
                .ok_or_else(|| etcd_error(self.urls(), "not connected"))?;
            let lease = self.lease;
            self.keeper = Some(with_timeout(self.urls(), c.lease_keep_alive(lease)).await?);
        }
        let urls = self.opts.etcd.clone();
        let Some((keeper, stream)) = self.keeper.as_mut() else {
            return Err(etcd_error(&urls, "no keep-alive stream"));
        };
        with_timeout(&urls, keeper.keep_alive()).await?;
        match with_timeout(&urls, stream.message()).await? {
            Some(r) if r.ttl() > 0 => Ok(true),
            Some(_) => Ok(false),
            None => Err(etcd_error(&urls, "keep-alive stream closed")),
        }
    }

    async fn on_input(&mut self, input: Input) {
        match input {
            Input::Up => {
                if !self.vswitchd_up {
                    tracing::info!("vswitchd is back: programming it again");
                }
                self.vswitchd_up = true;
                self.pushed.clear();
                self.local_stale = true;
                self.mark();
            }
            Input::Down(why) => {
                tracing::warn!(reason = %why, "lost vswitchd");
                self.vswitchd_up = false;
            }
            Input::Event(_) => {
                self.local_stale = true;
                self.mark();
            }
            Input::Call(call, reply) => {
                let r = self.call(call).await;
                let _ = reply.send(r);
            }
        }
    }

    /// Bring vswitchd and etcd in line with each other.
    async fn reconcile(&mut self) {
        if !self.synced {
            return;
        }
        if self.local_stale {
            match self.ctl.read_local() {
                Ok(l) => {
                    self.local = l;
                    self.local_stale = false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read vswitchd's state");
                    return;
                }
            }
        }
        self.program_vswitchd();
        if self.etcd_err.is_none() {
            if let Err(e) = self.publish().await {
                self.failed(&e);
            }
        }
    }

    /// Push each network's desired state to vswitchd; remove networks that are gone.
    fn program_vswitchd(&mut self) {
        let me = self.opts.node.clone();
        let mut conflicts = BTreeMap::new();
        let nets: Vec<NetVal> = self.view.nets.values().cloned().collect();
        for n in &nets {
            if self.local.get(&n.name).is_some_and(|b| !b.overlay) {
                conflicts.insert(
                    n.name.clone(),
                    format!(
                        "overlay network {} (VNI {}) is not created on this host: a local bridge has that name",
                        n.name, n.vni
                    ),
                );
                continue;
            }
            let want = state::overlay_set(&self.view, n, &me, self.opts.vtep);
            let fresh = self.local.contains_key(&n.name);
            if fresh && self.pushed.get(&n.name) == Some(&want) {
                continue;
            }
            let t0 = Instant::now();
            let endpoints = want.endpoints.len();
            match self.ctl.call(Command::OverlaySet(want.clone())) {
                Ok(_) => {
                    tracing::debug!(
                        network = %n.name,
                        rev = self.rev,
                        endpoints,
                        us = t0.elapsed().as_micros() as u64,
                        "overlay-set pushed"
                    );
                    if !fresh {
                        self.local_stale = true;
                        self.mark();
                    }
                    self.pushed.insert(n.name.clone(), want);
                }
                Err(e) => {
                    conflicts.insert(n.name.clone(), format!("overlay network {}: {e}", n.name));
                }
            }
        }
        let stale: Vec<String> = self
            .local
            .values()
            .filter(|b| b.overlay && !self.view.nets.contains_key(&b.name))
            .map(|b| b.name.clone())
            .collect();
        for name in stale {
            match self.ctl.call(Command::OverlayRemove { name: name.clone() }) {
                Ok(_) => {
                    tracing::info!(bridge = %name, "overlay network removed from the cluster: bridge deleted");
                    self.local.remove(&name);
                    self.pushed.remove(&name);
                }
                Err(e) => {
                    conflicts.insert(name.clone(), format!("cannot remove {name}: {e}"));
                }
            }
        }
        for (k, v) in &conflicts {
            if self.conflicts.get(k) != Some(v) {
                tracing::warn!("{v}");
            }
        }
        self.conflicts = conflicts;
    }

    /// Write this node's endpoints, blocks and static claims to etcd as they are on
    /// this host.
    async fn publish(&mut self) -> Result<(), String> {
        let me = self.opts.node.clone();
        let mut c = self.client()?;
        let lease = Some(PutOptions::new().with_lease(self.lease));
        let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dels: Vec<String> = Vec::new();
        let mut wanted_eps: HashSet<String> = HashSet::new();
        let mut claims: Vec<(String, BlockVal)> = Vec::new();
        let mut claims6: Vec<(String, Block6Val)> = Vec::new();
        for n in self.view.nets.values() {
            let Some(b) = self.local.get(&n.name).filter(|b| b.overlay) else {
                continue;
            };
            let eps = state::local_endpoints(b);
            for e in &eps {
                let key = self.keys.endpoint(&n.name, &me, &e.mac);
                let val = EpVal {
                    v: VERSION,
                    node: me.clone(),
                    vtep: self.opts.vtep,
                    mac: e.mac.clone(),
                    ip: e.ip,
                    ip6: e.ip6,
                    name: e.name.clone(),
                    port: e.port.clone(),
                };
                let bytes = keys::encode(&val);
                if self.raw.get(&key) != Some(&bytes) {
                    puts.push((key.clone(), bytes));
                }
                wanted_eps.insert(key);
            }
            // Static claims of ports that are gone.
            for ((net, ip), v) in &self.view.ips {
                if net == &n.name
                    && v.node == me
                    && !eps.iter().any(|e| {
                        e.port == v.port
                            && (e.ip.map(IpAddr::V4) == Some(*ip)
                                || e.ip6.map(IpAddr::V6) == Some(*ip))
                    })
                {
                    dels.push(self.keys.ip(net, *ip));
                }
            }
            let range = state::my_range(&self.view, &n.name, &me);
            let leased = leased_in(b.leases.iter().map(|x| &x.ip), range);
            if let Some((first, last)) = state::block_to_claim(&self.view, n, &me, leased) {
                claims.push((
                    self.keys.block(&n.name, first),
                    BlockVal {
                        v: VERSION,
                        node: me.clone(),
                        first,
                        last,
                    },
                ));
            }
            // DHCPv6 leases (those with a DUID) in this node's IPv6 range.
            let range6 = state::my_range6(&self.view, &n.name, &me);
            let dhcp6 = b.leases.iter().filter(|x| x.duid.is_some());
            let leased6 = leased_in(dhcp6.map(|x| &x.ip), range6);
            if let Some((first, last)) = state::block6_to_claim(&self.view, n, &me, leased6) {
                claims6.push((
                    self.keys.block6(&n.name, first),
                    Block6Val {
                        v: VERSION,
                        node: me.clone(),
                        first,
                        last,
                    },
                ));
            }
        }
        for (net, node, mac) in self.view.eps.keys() {
            if node == &me {
                let key = self.keys.endpoint(net, node, mac);
                if !wanted_eps.contains(&key) {
                    dels.push(key);
                }
            }
        }
        if puts.is_empty() && dels.is_empty() && claims.is_empty() && claims6.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), lease.clone()))
            .collect();
        ops.extend(dels.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        if !ops.is_empty() {
            let r = with_timeout(self.urls(), c.txn(Txn::new().and_then(ops))).await?;
            // benches/cluster reads this line (and "overlay-set pushed") to tell where
            // the time from pipework to an endpoint installed everywhere goes.
            tracing::debug!(
                rev = r.header().map_or(0, |h| h.revision()),
                puts = puts.len(),
                dels = dels.len(),
                "endpoints published"
            );
            for (k, v) in puts {
                self.set(k, Some(v));
            }
            for k in dels {
                self.set(k, None);
            }
        }
        for (key, val) in claims {
            if self.claim(&mut c, key, keys::encode(&val), &lease).await? {
                tracing::info!(block = %format!("{}-{}", val.first, val.last), "DHCP address block claimed");
            }
        }
        for (key, val) in claims6 {
            if self.claim(&mut c, key, keys::encode(&val), &lease).await? {
                tracing::info!(block = %format!("{}-{}", val.first, val.last), "DHCPv6 address block claimed");
            }
        }
        self.rebuild();
        Ok(())
    }

    async fn call(&mut self, call: AgentCallKind) -> Reply {
        let mut r = self.call_once(call.clone()).await;
        // etcd failed (a member down, a leader election under way): again on the next
        // member that answers, a few times over about the length of an election.
        for attempt in 1..=3u32 {
            let Err(e) = r.as_ref().map_err(Clone::clone) else {
                break;
            };
            if !e.starts_with("etcd unreachable") {
                break;
            }
            self.failed(&e);
            tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            if self.connect().await.is_ok() {
                r = self.call_once(call.clone()).await;
            }
        }
        match r {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(e),
        }
    }

    async fn call_once(&mut self, call: AgentCallKind) -> Result<Value, String> {
        match call {
            AgentCallKind::AddOverlay(req) => self.add_overlay(req).await,
            AgentCallKind::DelOverlay { name } => self.del_overlay(&name).await,
            AgentCallKind::Show => serde_json::to_value(self.show()).map_err(|e| e.to_string()),
            AgentCallKind::ClaimIp {
                bridge,
                ip,
                mac,
                port,
            } => self.claim_ip(&bridge, &ip, mac, &port).await,
        }
    }

    /// `add-br --overlay`: validate, allocate a VNI and UDP port, write the network in
    /// one transaction that fails if its name, VNI, subnet or UDP port was taken
    /// meanwhile, then create it here at once (the other hosts follow their watch).
    async fn add_overlay(&mut self, req: AddBr) -> Result<Value, String> {
        let net = validate_overlay(&req)?;
        if self.local.get(&req.name).is_some_and(|b| !b.overlay) {
            return Err(format!(
                "bridge already exists: {} (a local bridge on this host)",
                req.name
            ));
        }
        let mut c = self.client()?;
        // The networks as etcd has them now (not as last watched).
        let r = with_timeout(
            self.urls(),
            c.get(
                format!("{}/networks/", self.keys.prefix()),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let nets: Vec<NetVal> = r
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        if let Some(o) = nets.iter().find(|o| o.name == req.name) {
            return Err(format!(
                "overlay network {} already exists (VNI {})",
                o.name, o.vni
            ));
        }
        let vni = match req.vni {
            Some(v) => {
                if let Some(o) = nets.iter().find(|o| o.vni == v) {
                    return Err(format!(
                        "VNI {v} is already used by overlay network {}",
                        o.name
                    ));
                }
                v
            }
            None => (1..=0xff_ffff)
                .find(|v| !nets.iter().any(|o| o.vni == *v))
                .ok_or("no free VNI")?,
        };
        if let Some(s) = net
            .subnet
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Net>().ok())
        {
            for o in &nets {
                if let Some(os) = o.subnet.as_deref().and_then(|x| x.parse::<Ipv4Net>().ok()) {
                    if os.contains(&s.network()) || s.contains(&os.network()) {
                        return Err(format!(
                            "subnet {s} overlaps {os} of overlay network {}",
                            o.name
                        ));
                    }
                }
            }
        }
        if let Some(s) = net
            .subnet6
            .as_deref()
            .and_then(|s| s.parse::<Ipv6Net>().ok())
        {
            for o in &nets {
                if let Some(os) = o.subnet6.as_deref().and_then(|x| x.parse::<Ipv6Net>().ok()) {
                    if os.contains(&s.network()) || s.contains(&os.network()) {
                        return Err(format!(
                            "subnet {s} overlaps {os} of overlay network {}",
                            o.name
                        ));
                    }
                }
            }
        }
        let udp_port = (FIRST_UDP_PORT..=u16::MAX)
            .find(|p| !nets.iter().any(|o| o.udp_port == *p))
            .ok_or("no free UDP port")?;
        let val = NetVal {
            vni,
            udp_port,
            ..net
        };
        let k = &self.keys;
        let mut when = vec![
            Compare::version(k.network(&val.name), CompareOp::Equal, 0),
            Compare::version(k.vni(vni), CompareOp::Equal, 0),
            Compare::version(k.udp(udp_port), CompareOp::Equal, 0),
        ];
        let mut ops = vec![
            TxnOp::put(k.network(&val.name), keys::encode(&val), None),
            TxnOp::put(k.vni(vni), val.name.clone(), None),
            TxnOp::put(k.udp(udp_port), val.name.clone(), None),
        ];
        for s in [&val.subnet, &val.subnet6].into_iter().flatten() {
            when.push(Compare::version(k.subnet(s), CompareOp::Equal, 0));
            ops.push(TxnOp::put(k.subnet(s), val.name.clone(), None));
        }
        let r = with_timeout(self.urls(), c.txn(Txn::new().when(when).and_then(ops))).await?;
        if !r.succeeded() {
            return Err(format!(
                "overlay network {}: another host took its name, VNI, subnet or UDP port at the same moment; try again",
                val.name
            ));
        }
        tracing::info!(network = %val.name, vni, udp_port, "overlay network declared");
        let key = k.network(&val.name);
        self.set(key, Some(keys::encode(&val)));
        self.rebuild();
        let want = state::overlay_set(&self.view, &val, &self.opts.node, self.opts.vtep);
        let info = self
            .ctl
            .call(Command::OverlaySet(want.clone()))
            .map_err(|e| {
                format!(
                    "overlay network {} declared, but not created here: {e}",
                    val.name
                )
            })?;
        self.pushed.insert(val.name.clone(), want);
        self.local_stale = true;
        if val.dhcp.is_some() || val.dhcp6.is_some() {
            // This host's first address block now, so that DHCP works here as soon as
            // the command returns (publish claims it, the next round gives vswitchd
            // its range).
            self.reconcile().await;
            self.reconcile().await;
        }
        Ok(info)
    }

    /// `del-br` of an overlay bridge: remove the network and everything of it from
    /// etcd, and the bridge here at once.
    async fn del_overlay(&mut self, name: &str) -> Result<Value, String> {
        let mut c = self.client()?;
        let r = with_timeout(self.urls(), c.get(self.keys.network(name), None)).await?;
        let Some(n) = r
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<NetVal>(kv.value()).ok())
        else {
            // Not in etcd (any more): only here.
            self.ctl
                .call(Command::OverlayRemove {
                    name: name.to_string(),
                })
                .map_err(|e| e.to_string())?;
            return Ok(Value::Null);
        };
        let k = &self.keys;
        let mut ops = vec![
            TxnOp::delete(k.network(name), None),
            TxnOp::delete(k.vni(n.vni), None),
            TxnOp::delete(k.udp(n.udp_port), None),
        ];
        for s in [&n.subnet, &n.subnet6].into_iter().flatten() {
            ops.push(TxnOp::delete(k.subnet(s), None));
        }
        for kind in ["endpoints", "blocks", "blocks6", "ips"] {
            ops.push(TxnOp::delete(
                k.of_network(kind, name),
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        with_timeout(self.urls(), c.txn(Txn::new().and_then(ops))).await?;
        tracing::info!(network = %name, "overlay network deleted");
        let pre = [
            k.network(name),
            k.of_network("endpoints", name),
            k.of_network("blocks", name),
            k.of_network("blocks6", name),
            k.of_network("ips", name),
        ];
        let gone: Vec<String> = self
            .raw
            .keys()
            .filter(|key| {
                pre.iter()
                    .any(|p| *key == p || key.starts_with(p.as_str()) && p.ends_with('/'))
            })
            .cloned()
            .collect();
        for key in gone {
            self.set(key, None);
        }
        self.rebuild();
        self.ctl
            .call(Command::OverlayRemove {
                name: name.to_string(),
            })
            .map_err(|e| e.to_string())?;
        self.pushed.remove(name);
        self.local.remove(name);
        Ok(Value::Null)
    }

    /// A static address (IPv4 or IPv6) for a port of overlay bridge `bridge`: claim it
    /// cluster-wide unless another node uses it (a claim, an endpoint, or its DHCP
    /// block).
    async fn claim_ip(
        &mut self,
        bridge: &str,
        ip: &str,
        mac: Option<String>,
        port: &str,
    ) -> Result<Value, String> {
        let me = self.opts.node.clone();
        let any: IpAddr = ip.parse().map_err(|_| format!("bad IP address {ip:?}"))?;
        let Some(n) = self.view.nets.get(bridge).cloned() else {
            return Err(format!("no such overlay network: {bridge}"));
        };
        let (v4, v6) = match any {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => {
                check_ip6(&n, a)?;
                (None, Some(a))
            }
        };
        if n.gateway.as_deref() == Some(ip)
            || n.gateway6.as_deref().and_then(|g| g.parse().ok()) == Some(any)
        {
            return Err(format!(
                "address {ip} is the gateway of overlay network {bridge}"
            ));
        }
        // The DHCP block of the address's family holding it: (node, block, family).
        let held = v4
            .and_then(|a| state::block_owner(&self.view, bridge, a))
            .map(|b| (&b.node, format!("{}-{}", b.first, b.last), "DHCP"))
            .or_else(|| {
                v6.and_then(|a| state::block6_owner(&self.view, bridge, a))
                    .map(|b| (&b.node, format!("{}-{}", b.first, b.last), "DHCPv6"))
            });
        if let Some((node, block, what)) = held.filter(|(node, _, _)| **node != me) {
            return Err(format!(
                "address {ip} is in node {node}'s {what} block {block} of {bridge}: pick an address outside the {what} range"
            ));
        }
        if let Some(v) = self.view.ips.get(&(bridge.to_string(), any)) {
            if v.node != me || v.port != port {
                return Err(format!(
                    "address {ip} is already in use on node {} (port {})",
                    v.node, v.port
                ));
            }
        }
        if let Some(e) = self.view.endpoints_of(bridge).find(|e| {
            (e.ip.map(IpAddr::V4) == Some(any) || e.ip6.map(IpAddr::V6) == Some(any))
                && (e.node != me || e.port != port)
        }) {
            return Err(format!(
                "address {ip} is already in use on node {} (port {})",
                e.node, e.port
            ));
        }
        let mut c = self.client()?;
        let key = self.keys.ip(bridge, any);
        let val = IpVal {
            v: VERSION,
            node: me,
            mac,
            port: port.to_string(),
        };
        let bytes = keys::encode(&val);
        let mut when = vec![Compare::version(key.as_str(), CompareOp::Equal, 0)];
        // An address in a block nobody holds yet: fail if a node takes the block at the
        // same moment (its DHCP server could hand the address out).
        let block = v4.and_then(|addr| {
            state::blocks_of(&n)
                .into_iter()
                .find(|(f, l)| addr >= *f && addr <= *l)
        });
        if let (Some((first, _)), Some(addr)) = (block, v4) {
            if state::block_owner(&self.view, bridge, addr).is_none() {
                when.push(Compare::version(
                    self.keys.block(bridge, first),
                    CompareOp::Equal,
                    0,
                ));
            }
        }
        if let Some(addr) = v6 {
            if let Some((first, _)) = state::block6_of(&n, addr)
                .filter(|_| state::block6_owner(&self.view, bridge, addr).is_none())
            {
                when.push(Compare::version(
                    self.keys.block6(bridge, first),
                    CompareOp::Equal,
                    0,
                ));
            }
        }
        let txn = Txn::new().when(when).and_then([TxnOp::put(
            key.as_str(),
            bytes.clone(),
            Some(PutOptions::new().with_lease(self.lease)),
        )]);
        let r = with_timeout(self.urls(), c.txn(txn)).await?;
        if !r.succeeded() && self.raw.get(&key) != Some(&bytes) {
            return Err(format!("address {ip} was just claimed by another node"));
        }
        self.set(key, Some(bytes));
        self.rebuild();
        Ok(Value::Null)
    }

    fn show(&self) -> ClusterInfo {
        let me = &self.opts.node;
        let count = |node: &str| self.view.eps.keys().filter(|(_, n, _)| n == node).count() as u64;
        let mut nodes: Vec<NodeInfo> = self
            .view
            .nodes
            .values()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                vtep: n.vtep.to_string(),
                state: "alive".into(),
                agent: n.agent.clone(),
                endpoints: count(&n.name),
                local: &n.name == me,
            })
            .collect();
        nodes.extend(self.gone.iter().map(|(name, vtep)| NodeInfo {
            name: name.clone(),
            vtep: vtep.to_string(),
            state: "gone".into(),
            agent: String::new(),
            endpoints: 0,
            local: false,
        }));
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let networks = self
            .view
            .nets
            .values()
            .map(|n| {
                let mut per: BTreeMap<String, u64> = BTreeMap::new();
                for e in self.view.endpoints_of(&n.name) {
                    *per.entry(e.node.clone()).or_default() += 1;
                }
                NetworkInfo {
                    name: n.name.clone(),
                    vni: n.vni,
                    udp_port: n.udp_port,
                    subnet: n.subnet.clone(),
                    gateway: n.gateway.clone(),
                    subnet6: n.subnet6.clone(),
                    gateway6: n.gateway6.clone(),
                    dhcp: n.dhcp.clone(),
                    dhcp6: n.dhcp6.clone(),
                    isolated: n.isolated,
                    mtu: n.mtu,
                    endpoints: per.values().sum(),
                    nodes: per,
                    blocks: self
                        .view
                        .blocks
                        .iter()
                        .filter(|((net, _), b)| net == &n.name && &b.node == me)
                        .map(|(_, b)| format!("{}-{}", b.first, b.last))
                        .chain(
                            self.view
                                .blocks6
                                .iter()
                                .filter(|((net, _), b)| net == &n.name && &b.node == me)
                                .map(|(_, b)| format!("{}-{}", b.first, b.last)),
                        )
                        .collect(),
                }
            })
            .collect();
        ClusterInfo {
            node: me.clone(),
            prefix: self.keys.prefix().to_string(),
            etcd: match &self.etcd_err {
                None => "connected".into(),
                Some(e) => e.strip_prefix("etcd ").unwrap_or(e).to_string(),
            },
            nodes,
            networks,
            conflicts: self.conflicts.values().cloned().collect(),
        }
    }

    /// SIGTERM: revoke the lease (the node's endpoints leave the cluster at once), but
    /// never wait for an unreachable etcd for long.
    async fn shutdown(&mut self) {
        if let Some(mut c) = self.etcd.clone() {
            match with_timeout(self.urls(), c.lease_revoke(self.lease)).await {
                Ok(_) => tracing::info!("lease revoked: node left the cluster"),
                Err(e) => tracing::warn!(
                    "cannot revoke the lease ({e}); the node leaves when its TTL expires"
                ),
            }
        }
    }
}

/// An IPv6 static address on overlay network `n`: it needs the network's IPv6 subnet
/// (an address of the wrong family, or outside it, is refused in one line).
fn check_ip6(n: &NetVal, a: Ipv6Addr) -> Result<(), String> {
    let Some(net) = n.subnet6.as_deref().and_then(|s| s.parse::<Ipv6Net>().ok()) else {
        return Err(format!(
            "address {a} is IPv6 but overlay network {} has no IPv6 subnet (add-br --overlay --subnet IPV6/N)",
            n.name
        ));
    };
    if !net.contains(&a) || a == net.network() {
        return Err(format!(
            "address {a} is not a host address of {net}, the IPv6 subnet of overlay network {}",
            n.name
        ));
    }
    Ok(())
}

/// Check an `add-br --overlay` request and turn it into a network (VNI and UDP port
/// still to allocate).
fn validate_overlay(req: &AddBr) -> Result<NetVal, String> {
    let name = &req.name;
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "bad bridge name {name:?}: use 1-32 characters from A-Z a-z 0-9 . _ -"
        ));
    }
    if let Some(v) = req.vni {
        if !(1..=0xff_ffff).contains(&v) {
            return Err(format!("bad VNI {v}: must be 1..16777215"));
        }
    }
    let req = &split_families(req)?;
    let subnet6 = match &req.subnet6 {
        None => None,
        Some(s) => {
            let n: Ipv6Net = s.trim().parse().map_err(|_| {
                format!("bad CIDR {s:?}: expected an IPv6 network such as fd00:10::/64")
            })?;
            if n.trunc() != n {
                return Err(format!(
                    "bad subnet {s}: host bits set, did you mean {}?",
                    n.trunc()
                ));
            }
            if n.prefix_len() > 127 {
                return Err(format!(
                    "bad subnet {n}: an IPv6 subnet must be /127 or shorter"
                ));
            }
            Some(n)
        }
    };
    let gateway6 = match (&req.gateway6, subnet6) {
        (None, _) => None,
        (Some(g), None) => {
            return Err(format!(
                "IPv6 gateway {g} needs an IPv6 subnet (--subnet IPV6/N)"
            ))
        }
        (Some(g), Some(n)) => {
            let ip: Ipv6Addr = g
                .trim()
                .parse()
                .map_err(|_| format!("bad IPv6 address {g:?}"))?;
            if !n.contains(&ip) || ip == n.network() {
                return Err(format!("gateway {ip} is not a host address of subnet {n}"));
            }
            Some(ip)
        }
    };
    let subnet = match &req.subnet {
        None => None,
        Some(s) => {
            let n: Ipv4Net = s.trim().parse().map_err(|_| {
                format!("bad CIDR {s:?}: expected an IPv4 network such as 10.0.0.0/24")
            })?;
            if n.trunc() != n {
                return Err(format!(
                    "bad subnet {s}: host bits set, did you mean {}?",
                    n.trunc()
                ));
            }
            Some(n)
        }
    };
    let gateway = match (&req.gateway, subnet) {
        (None, _) => None,
        (Some(_), None) => return Err("--gateway needs --subnet".into()),
        (Some(g), Some(n)) => {
            let ip: Ipv4Addr = g
                .trim()
                .parse()
                .map_err(|_| format!("bad IP address {g:?}"))?;
            if !n.contains(&ip) || ip == n.network() || ip == n.broadcast() {
                return Err(format!("gateway {ip} is not a host address of subnet {n}"));
            }
            Some(ip)
        }
    };
    // A bare `--dhcp` ("") asks for every family the network's router serves (as on a
    // local bridge): DHCPv6 where it has an IPv6 gateway; a range asks for its own
    // family only.
    let bare = req.dhcp.as_deref().is_some_and(|r| r.trim().is_empty());
    let dhcp6 = match (&req.dhcp6, subnet6) {
        (None, Some(n)) if bare && gateway6.is_some() => Some(format!(
            "{}-{}",
            Ipv6Addr::from(u128::from(n.network()).saturating_add(1)),
            n.broadcast()
        )),
        (None, _) => None,
        (Some(r), None) => {
            return Err(format!(
                "DHCPv6 range {r:?} needs an IPv6 subnet (--subnet IPV6/N)"
            ))
        }
        (Some(_), Some(_)) if gateway6.is_none() => {
            return Err("DHCPv6 needs an IPv6 gateway \
                        (--gateway IPV6: the DHCPv6 server answers from it)"
                .into())
        }
        (Some(r), Some(n)) if r.trim().is_empty() => Some(format!(
            "{}-{}",
            Ipv6Addr::from(u128::from(n.network()).saturating_add(1)),
            n.broadcast()
        )),
        (Some(r), Some(n)) => Some(dhcp_range::<Ipv6Addr>(
            "DHCPv6",
            r,
            &format!("the IPv6 subnet {n}"),
            |a| n.contains(a),
        )?),
    };
    let dhcp = match (&req.dhcp, subnet) {
        (None, _) => None,
        // A bare `--dhcp` on an IPv6-only network: DHCPv6 only.
        (Some(_), None) if bare && dhcp6.is_some() => None,
        (Some(_), None) => return Err("--dhcp needs --subnet".into()),
        (Some(_), Some(_)) if gateway.is_none() => {
            return Err(
                "--dhcp needs --gateway (the DHCP server answers from the gateway address)".into(),
            )
        }
        (Some(r), Some(n)) if r.trim().is_empty() => {
            Some(format!("{}-{}", n.network(), n.broadcast()))
        }
        (Some(r), Some(n)) => Some(dhcp_range::<Ipv4Addr>("DHCP", r, "the subnet", |a| {
            n.contains(a)
        })?),
    };
    let mtu = req.mtu.unwrap_or(OVERLAY_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(format!("bad MTU {mtu}: must be 68..65535"));
    }
    Ok(NetVal {
        v: VERSION,
        name: name.clone(),
        vni: 0,
        udp_port: 0,
        subnet: subnet.map(|s| s.to_string()),
        gateway: gateway.map(|g| g.to_string()),
        subnet6: subnet6.map(|s| s.to_string()),
        gateway6: gateway6.map(|g| g.to_string()),
        dhcp,
        dhcp6,
        isolated: req.isolated,
        mtu,
    })
}

/// How many of the leased addresses `ips` (as vswitchd lists them) are in `range`
/// (0 without a range); addresses of the other family do not parse and do not count.
fn leased_in<'a, A>(ips: impl Iterator<Item = &'a String>, range: Option<(A, A)>) -> usize
where
    A: std::str::FromStr + PartialOrd,
{
    range.map_or(0, |(f, l)| {
        ips.filter_map(|ip| ip.parse::<A>().ok())
            .filter(|ip| *ip >= f && *ip <= l)
            .count()
    })
}

/// The `what` (DHCP, DHCPv6) range `r`, `FIRST-LAST` with both `inside` `subnet` and
/// FIRST <= LAST, written back as `FIRST-LAST`; anything else is one line naming it.
fn dhcp_range<A>(
    what: &str,
    r: &str,
    subnet: &str,
    inside: impl Fn(&A) -> bool,
) -> Result<String, String>
where
    A: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let bad =
        || format!("bad {what} range {r:?}: expected FIRST-LAST inside {subnet}, FIRST <= LAST");
    let (a, b) = r.split_once('-').ok_or_else(bad)?;
    let f: A = a.trim().parse().map_err(|_| bad())?;
    let l: A = b.trim().parse().map_err(|_| bad())?;
    if !inside(&f) || !inside(&l) || f > l {
        return Err(bad());
    }
    Ok(format!("{f}-{l}"))
}

/// Docker's way: `--subnet` and `--gateway` once per family. An IPv6 CIDR in `subnet`
/// (an IPv6 address in `gateway`, an IPv6 range in `dhcp`) is the IPv6 one; two of one
/// family are refused.
fn split_families(req: &AddBr) -> Result<AddBr, String> {
    let mut r = req.clone();
    let is6 = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains(':'));
    if is6(&r.subnet) {
        if r.subnet6.is_some() {
            return Err("two IPv6 subnets: give --subnet once per family".into());
        }
        r.subnet6 = r.subnet.take();
    }
    if is6(&r.gateway) {
        if r.gateway6.is_some() {
            return Err("two IPv6 gateways: give --gateway once per family".into());
        }
        r.gateway6 = r.gateway.take();
    }
    if is6(&r.dhcp) {
        r.dhcp6 = r.dhcp.take();
    }
    if r.subnet6.as_deref().is_some_and(|s| !s.contains(':')) {
        return Err(format!(
            "bad CIDR {:?}: expected an IPv6 network such as fd00:10::/64",
            r.subnet6.as_deref().unwrap_or_default()
        ));
    }
    if r.gateway6.as_deref().is_some_and(|s| !s.contains(':')) {
        return Err(format!(
            "bad IPv6 address {:?}: the IPv6 gateway must be an IPv6 address",
            r.gateway6.as_deref().unwrap_or_default()
        ));
    }
    if r.gateway.is_some() && r.subnet.is_none() && r.subnet6.is_some() {
        return Err(format!(
            "gateway {} is IPv4 but the only subnet is IPv6",
            r.gateway.as_deref().unwrap_or_default()
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both families' DHCP ranges are checked by one function; the messages are the
    /// ones docs/cli.md and docs/cluster.md show, and a good range is written back.
    #[test]
    fn dhcp_ranges_of_both_families() {
        let req = |subnet: &str, gw: &str, dhcp: &str| AddBr {
            name: "ov".into(),
            subnet: Some(subnet.into()),
            gateway: Some(gw.into()),
            dhcp: Some(dhcp.into()),
            overlay: true,
            ..Default::default()
        };
        assert_eq!(
            validate_overlay(&req("10.3.0.0/24", "10.3.0.1", "10.3.0.200-10.3.0.100")),
            Err(
                "bad DHCP range \"10.3.0.200-10.3.0.100\": expected FIRST-LAST inside the \
                 subnet, FIRST <= LAST"
                    .to_string()
            )
        );
        assert_eq!(
            validate_overlay(&req(
                "fd00:20::/64",
                "fd00:20::1",
                "fd00:21::10-fd00:21::20"
            )),
            Err(
                "bad DHCPv6 range \"fd00:21::10-fd00:21::20\": expected FIRST-LAST inside \
                 the IPv6 subnet fd00:20::/64, FIRST <= LAST"
                    .to_string()
            )
        );
        let n =
            validate_overlay(&req("10.3.0.0/24", "10.3.0.1", " 10.3.0.10 - 10.3.0.20")).unwrap();
        assert_eq!(n.dhcp.as_deref(), Some("10.3.0.10-10.3.0.20"));
        let n = validate_overlay(&req(
            "fd00:20::/64",
            "fd00:20::1",
            "fd00:20::10-fd00:20::20",
        ))
        .unwrap();
        assert_eq!(n.dhcp6.as_deref(), Some("fd00:20::10-fd00:20::20"));
    }

    /// Leases count towards a range of their own family only, and only inside it.
    #[test]
    fn leases_counted_per_family_and_range() {
        let ips: Vec<String> = ["10.1.0.5", "10.1.0.20", "fd00:10::105", "junk"]
            .map(String::from)
            .into();
        let v4: Ipv4Addr = "10.1.0.1".parse().unwrap();
        let v4z: Ipv4Addr = "10.1.0.15".parse().unwrap();
        assert_eq!(leased_in(ips.iter(), Some((v4, v4z))), 1);
        let v6: Ipv6Addr = "fd00:10::100".parse().unwrap();
        let v6z: Ipv6Addr = "fd00:10::1ff".parse().unwrap();
        assert_eq!(leased_in(ips.iter(), Some((v6, v6z))), 1);
        assert_eq!(leased_in::<Ipv6Addr>(ips.iter(), None), 0);
    }

    #[test]
    fn overlay_requests_are_checked() {
        let req = |subnet: Option<&str>, gw: Option<&str>, dhcp: Option<&str>| AddBr {
            name: "ov".into(),
            subnet: subnet.map(Into::into),
            gateway: gw.map(Into::into),
            dhcp: dhcp.map(Into::into),
            overlay: true,
            ..Default::default()
        };
        let n = validate_overlay(&req(Some("10.1.0.0/24"), Some("10.1.0.1"), Some(""))).unwrap();
        assert_eq!(n.dhcp.as_deref(), Some("10.1.0.0-10.1.0.255"));
        assert_eq!(n.mtu, OVERLAY_MTU);
        for (r, want) in [
            (req(Some("10.1.0.1/24"), None, None), "host bits set"),
            (
                req(None, Some("10.1.0.1"), None),
                "--gateway needs --subnet",
            ),
            (
                req(Some("10.1.0.0/24"), None, Some("")),
                "--dhcp needs --gateway",
            ),
            (
                req(
                    Some("10.1.0.0/24"),
                    Some("10.1.0.1"),
                    Some("10.2.0.1-10.2.0.9"),
                ),
                "bad DHCP range",
            ),
            (
                req(Some("10.1.0.0/24"), Some("10.1.0.0"), None),
                "not a host address",
            ),
        ] {
            let e = validate_overlay(&r).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        // Dual stack: an IPv6 subnet and gateway beside the IPv4 ones, either in the
        // `*6` fields or in `subnet`/`gateway` themselves.
        let mut r = req(Some("10.1.0.0/24"), Some("10.1.0.1"), None);
        r.subnet6 = Some("fd00:10::/64".into());
        r.gateway6 = Some("fd00:10::1".into());
        let n = validate_overlay(&r).unwrap();
        assert_eq!(n.subnet6.as_deref(), Some("fd00:10::/64"));
        assert_eq!(n.gateway6.as_deref(), Some("fd00:10::1"));
        let n = validate_overlay(&req(Some("fd00:10::/64"), Some("fd00:10::1"), None)).unwrap();
        assert_eq!(
            (n.subnet, n.subnet6.as_deref()),
            (None, Some("fd00:10::/64"))
        );
        for (r, want) in [
            (req(Some("fd00:10::1/64"), None, None), "host bits set"),
            (
                req(Some("fd00:10::/64"), Some("fd00:11::1"), None),
                "not a host address",
            ),
            (
                req(Some("fd00:10::/64"), Some("fd00:10::"), None),
                "not a host address",
            ),
            (req(None, Some("fd00:10::1"), None), "needs an IPv6 subnet"),
            (
                req(Some("fd00:10::/64"), Some("10.1.0.1"), None),
                "only subnet is IPv6",
            ),
            (
                req(
                    Some("fd00:10::/64"),
                    Some("fd00:10::1"),
                    Some("fd00:11::5-fd00:11::9"),
                ),
                "bad DHCPv6 range",
            ),
            (
                req(
                    Some("fd00:10::/64"),
                    Some("fd00:10::1"),
                    Some("fd00:10::9-fd00:10::5"),
                ),
                "bad DHCPv6 range",
            ),
            (
                req(Some("fd00:10::/64"), None, Some("fd00:10::5-fd00:10::9")),
                "needs an IPv6 gateway",
            ),
            (
                req(
                    Some("10.1.0.0/24"),
                    Some("10.1.0.1"),
                    Some("fd00:10::5-fd00:10::9"),
                ),
                "needs an IPv6 subnet",
            ),
        ] {
            let e = validate_overlay(&r).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert_eq!(e.lines().count(), 1);
        }
        // DHCPv6 on an overlay: a range in the IPv6 subnet; a bare --dhcp on a
        // dual-stack network serves both families (IPv6: the whole subnet but its
        // first address).
        let n = validate_overlay(&req(
            Some("fd00:10::/64"),
            Some("fd00:10::1"),
            Some("fd00:10::100-fd00:10::1ff"),
        ))
        .unwrap();
        assert_eq!(
            (n.dhcp.as_deref(), n.dhcp6.as_deref()),
            (None, Some("fd00:10::100-fd00:10::1ff"))
        );
        let mut r = req(Some("10.1.0.0/24"), Some("10.1.0.1"), Some(""));
        r.subnet6 = Some("fd00:10::/64".into());
        r.gateway6 = Some("fd00:10::1".into());
        let n = validate_overlay(&r).unwrap();
        assert_eq!(n.dhcp.as_deref(), Some("10.1.0.0-10.1.0.255"));
        assert_eq!(
            n.dhcp6.as_deref(),
            Some("fd00:10::1-fd00:10::ffff:ffff:ffff:ffff")
        );
        let n = validate_overlay(&req(Some("fd00:10::/64"), Some("fd00:10::1"), Some(""))).unwrap();
        assert_eq!(n.dhcp, None);
        assert!(n.dhcp6.is_some());
        let n = net_with6();
        assert!(check_ip6(&n, "fd00:10::5".parse().unwrap()).is_ok());
        assert!(check_ip6(&n, "fd00:11::5".parse().unwrap())
            .unwrap_err()
            .contains("not a host address"));
        let mut v4only = n.clone();
        v4only.subnet6 = None;
        assert!(check_ip6(&v4only, "fd00:10::5".parse().unwrap())
            .unwrap_err()
            .contains("no IPv6 subnet"));
        let mut bad = req(None, None, None);
        bad.vni = Some(0);
        assert!(validate_overlay(&bad).unwrap_err().contains("bad VNI"));
    }

    fn net_with6() -> NetVal {
        NetVal {
            v: 1,
            name: "ov".into(),
            vni: 1,
            udp_port: 4789,
            subnet: None,
            gateway: None,
            subnet6: Some("fd00:10::/64".into()),
            gateway6: Some("fd00:10::1".into()),
            dhcp: None,
            dhcp6: None,
            isolated: false,
            mtu: 1450,
        }
    }

    #[test]
    fn etcd_errors_are_one_line_naming_etcd() {
        let e = etcd_error(&["http://192.0.2.1:2379".into()], "transport error\nmore");
        assert_eq!(
            e,
            "etcd unreachable (http://192.0.2.1:2379): transport error"
        );
    }
}
