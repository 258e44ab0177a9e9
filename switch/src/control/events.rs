//! The event bus behind `vswitchctl monitor` (and the cluster agent, and the Docker
//! driver): every configuration change emits one [`Event`]; each subscriber gets them
//! as JSON lines on its control connection.
//!
//! # Ordering and back-pressure
//! [`emit`] numbers events and hands them to every subscriber under one mutex, so all
//! subscribers see one order; changes made under the control-plane mutex are emitted
//! in the order they were made. A subscriber has a bounded queue ([`QUEUE`] events);
//! an emitter never waits: a subscriber whose queue is full is dropped from the bus
//! and its connection ends with a final `overflow` event. MAC events come from a
//! watcher thread that compares each bridge's Fdb with what it saw before, a few times
//! a second and only while someone subscribes, at most [`MACS_PER_SCAN`] per scan (the
//! rest are counted in one `macs-suppressed` event): a MAC flood costs subscribers a
//! bounded number of lines, and the data path nothing.

use crate::dp::clock;
use crate::dp::Snapshot;
use crate::tables::PortId;
use crate::wire::MacAddr;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
pub use vswitch_proto::events::{Event, EventKind};

/// Events queued per subscriber before it counts as too slow and is dropped.
pub const QUEUE: usize = 4096;
/// MAC events emitted per Fdb scan at most.
pub const MACS_PER_SCAN: usize = 64;
/// Interval between two Fdb scans while someone subscribes.
const SCAN_EVERY: Duration = Duration::from_millis(200);

struct Sub {
    tx: Sender<Arc<str>>,
    overflow: Arc<AtomicBool>,
}

#[derive(Default)]
struct Bus {
    seq: u64,
    subs: Vec<Sub>,
}

static BUS: LazyLock<Mutex<Bus>> = LazyLock::new(|| Mutex::new(Bus::default()));
/// The snapshot the MAC watcher reads (set when it starts).
static WATCHED: std::sync::OnceLock<Arc<ArcSwap<Snapshot>>> = std::sync::OnceLock::new();
/// What the MAC watcher saw last; `None` while nobody subscribes.
static SEEN: LazyLock<Mutex<Option<Seen>>> = LazyLock::new(|| Mutex::new(None));
/// Subscribers now, readable without the bus mutex (the MAC watcher sleeps at zero).
static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Emit one event to every subscriber (never blocks; drops subscribers that are full).
pub fn emit(mut e: Event) {
    // Relaxed: a hint; an event emitted while the first subscriber registers may be
    // missed by it, as if it had subscribed a moment later.
    if SUBSCRIBERS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut bus = BUS.lock();
    bus.seq += 1;
    e.seq = bus.seq;
    e.time_ms = unix_ms();
    let Ok(line) = serde_json::to_string(&e) else {
        return;
    };
    let line: Arc<str> = Arc::from(line);
    bus.subs.retain(|s| match s.tx.try_send(line.clone()) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            // Relaxed: the flag is read by the subscriber's thread after it sees the
            // channel disconnected, which happens-after this store (the sender is
            // dropped right after, and the channel synchronises).
            s.overflow.store(true, Ordering::Relaxed);
            false
        }
        Err(TrySendError::Disconnected(_)) => false,
    });
    // Relaxed: only a hint for the fast return above.
    SUBSCRIBERS.store(bus.subs.len(), Ordering::Relaxed);
}

/// Shorthand: emit an event of `kind` about `bridge` (and `port`).
pub fn emit_port(kind: EventKind, bridge: &str, port: Option<&str>) {
    let mut e = Event::new(kind).bridge(bridge);
    e.port = port.map(str::to_string);
    emit(e);
}

/// Emit lease and name events for the change from `old` to `new` leases of `bridge`.
pub fn emit_leases(bridge: &str, old: &[crate::config::Lease], new: &[crate::config::Lease]) {
    if SUBSCRIBERS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let key = |l: &crate::config::Lease| (l.mac, l.ip, l.hostname.clone());
    for l in old.iter().filter(|l| !new.iter().any(|n| key(n) == key(l))) {
        let mut e = Event::new(EventKind::LeaseReleased)
            .bridge(bridge)
            .mac(l.mac.to_string())
            .ip(l.ip.to_string());
        e.name = l.hostname.clone();
        e.family = Some(4);
        emit(e);
        if let Some(h) = &l.hostname {
            emit(
                Event::new(EventKind::NameRemoved)
                    .bridge(bridge)
                    .name(h)
                    .ip(l.ip.to_string()),
            );
        }
    }
    for l in new.iter().filter(|l| !old.iter().any(|o| key(o) == key(l))) {
        let mut e = Event::new(EventKind::LeaseGranted)
            .bridge(bridge)
            .mac(l.mac.to_string())
            .ip(l.ip.to_string());
        e.name = l.hostname.clone();
        e.family = Some(4);
        emit(e);
        if let Some(h) = &l.hostname {
            emit(
                Event::new(EventKind::NameAdded)
                    .bridge(bridge)
                    .name(h)
                    .ip(l.ip.to_string()),
            );
        }
    }
}

/// Emit the lease and name events of a DHCPv6 lease of `bridge` that began
/// (`ended` = `None`) or ended (and why).
pub fn emit_lease6(
    bridge: &str,
    l: &crate::tables::leases6::Lease6,
    ended: Option<crate::tables::leases6::End6>,
) {
    if SUBSCRIBERS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let (kind, name_kind) = match ended {
        None => (EventKind::LeaseGranted, EventKind::NameAdded),
        Some(_) => (EventKind::LeaseReleased, EventKind::NameRemoved),
    };
    let mac = l.mac.or_else(|| l.duid.mac());
    let mut e = Event::new(kind).bridge(bridge).ip(l.ip.to_string());
    e.mac = mac.map(|m| m.to_string());
    e.name = l.hostname.clone();
    e.family = Some(6);
    e.duid = Some(l.duid.to_string());
    e.reason = ended.map(|w| w.as_str().to_string());
    emit(e);
    if let Some(h) = &l.hostname {
        emit(
            Event::new(name_kind)
                .bridge(bridge)
                .name(h)
                .ip(l.ip.to_string()),
        );
    }
}

/// A subscription: events as JSON lines, and whether it was dropped for being slow.
pub struct Subscription {
    rx: Receiver<Arc<str>>,
    overflow: Arc<AtomicBool>,
}

/// Subscribe to every event emitted from now on.
pub fn subscribe() -> Subscription {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    {
        let mut bus = BUS.lock();
        bus.subs.push(Sub {
            tx,
            overflow: overflow.clone(),
        });
        // Relaxed: see `emit`.
        SUBSCRIBERS.store(bus.subs.len(), Ordering::Relaxed);
    }
    // The first subscriber: remember the Fdbs as they are now, so that what is learned
    // from now on is reported and what was there before is not.
    if let Some(snap) = WATCHED.get() {
        let mut seen = SEEN.lock();
        if seen.is_none() {
            let mut fresh = Seen::new();
            scan(&snap.load(), &mut fresh, true);
            *seen = Some(fresh);
        }
    }
    Subscription { rx, overflow }
}

/// Whether the peer of `s` closed its end (a read would return end of file).
fn peer_closed(s: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut b = [0u8; 1];
    matches!(
        recv(
            s.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(0) | Err(nix::errno::Errno::ECONNRESET)
    )
}

/// Serve a `monitor` connection after its `ok` reply: write every event until the
/// client goes away, or write `overflow` and end if it fell behind.
pub fn stream(w: &mut UnixStream) -> io::Result<()> {
    let sub = subscribe();
    stream_from(sub, w)
}

fn stream_from(sub: Subscription, w: &mut UnixStream) -> io::Result<()> {
    loop {
        match sub.rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                // Whatever else is queued goes out in the same write.
                while let Ok(more) = sub.rx.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    buf.push(b'\n');
                    if buf.len() > 1 << 16 {
                        break;
                    }
                }
                w.write_all(&buf)?;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if peer_closed(w) {
                    return Ok(());
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                // Relaxed: see `emit`.
                if sub.overflow.load(Ordering::Relaxed) {
                    let mut e = Event::new(EventKind::Overflow);
                    e.time_ms = unix_ms();
                    e.reason = Some(format!(
                        "more than {QUEUE} events queued for this subscriber: disconnected"
                    ));
                    let mut line = serde_json::to_string(&e).unwrap_or_default();
                    line.push('\n');
                    w.write_all(line.as_bytes())?;
                }
                return Ok(());
            }
        }
    }
}

/// What the MAC watcher saw last, per bridge: (vlan, MAC) → port.
type Seen = HashMap<String, HashMap<(u16, MacAddr), PortId>>;

/// Start the MAC watcher: while anyone subscribes, compare every bridge's Fdb with
/// the last scan and emit `mac-learned` / `mac-moved`.
pub fn spawn_mac_watch(snap: Arc<ArcSwap<Snapshot>>) -> io::Result<()> {
    let _ = WATCHED.set(snap.clone());
    std::thread::Builder::new()
        .name("vswitch-macwatch".into())
        .spawn(move || {
            let mut links: HashMap<String, bool> = HashMap::new();
            let mut round = 0u32;
            loop {
                std::thread::sleep(SCAN_EVERY);
                let mut seen = SEEN.lock();
                // Relaxed: a hint; one scan late at worst.
                if SUBSCRIBERS.load(Ordering::Relaxed) == 0 {
                    *seen = None;
                    links.clear();
                    continue;
                }
                let s = snap.load_full();
                round = round.wrapping_add(1);
                if round % LINK_EVERY == 1 || links.is_empty() {
                    watch_links(&s, &mut links);
                }
                // Not primed by `subscribe` (no watcher then): only remember.
                let quiet = seen.is_none();
                let prev = seen.get_or_insert_with(HashMap::new);
                scan(&s, prev, quiet);
            }
        })?;
    Ok(())
}

/// Fdb scans per link-state check.
const LINK_EVERY: u32 = 5;

/// Emit `port-down` / `port-up` when the carrier of a port's netdev changes (a guest
/// took its end down, or the veth went away), as far as the last check saw.
fn watch_links(s: &Snapshot, links: &mut HashMap<String, bool>) {
    let mut now = HashMap::new();
    for p in s.ports.iter().flatten() {
        if p.dev.ifindex().is_none() {
            continue; // vxlan remotes: no netdev of their own
        }
        let (up, reason) = match crate::port::sys::netdev::running(&p.name) {
            Ok(true) => (true, None),
            Ok(false) => (false, Some("no carrier")),
            Err(_) => (false, Some("device gone")),
        };
        if let Some(was) = links.get(&p.name) {
            if *was != up {
                let kind = if up {
                    EventKind::PortUp
                } else {
                    EventKind::PortDown
                };
                let mut e = Event::new(kind).port(&p.name);
                e.bridge = s.bridges.get(p.bridge).map(|b| b.name.clone());
                e.reason = reason.map(str::to_string);
                emit(e);
            }
        }
        now.insert(p.name.clone(), up);
    }
    *links = now;
}

/// One scan of every bridge's Fdb against `prev` (updated); emits at most
/// [`MACS_PER_SCAN`] MAC events unless `quiet`.
fn scan(s: &Snapshot, prev: &mut Seen, quiet: bool) {
    let now = clock::now_secs();
    let mut budget = MACS_PER_SCAN;
    let mut suppressed = 0u64;
    let name_of = |id: PortId| s.port(id).map(|p| p.name.clone());
    prev.retain(|b, _| s.bridges.iter().any(|x| &x.name == b));
    for b in &s.bridges {
        let old = prev.entry(b.name.clone()).or_default();
        let mut cur = HashMap::with_capacity(old.len());
        for r in b.fdb.entries(now) {
            cur.insert((r.vlan, r.mac), r.port);
            let kind = match old.get(&(r.vlan, r.mac)) {
                None => EventKind::MacLearned,
                Some(p) if *p != r.port => EventKind::MacMoved,
                Some(_) => continue,
            };
            if quiet {
                continue;
            }
            if budget == 0 {
                suppressed += 1;
                continue;
            }
            budget -= 1;
            let mut e = Event::new(kind).bridge(&b.name).mac(r.mac.to_string());
            e.port = name_of(r.port);
            e.vlan = Some(r.vlan);
            if kind == EventKind::MacMoved {
                e.old_port = old.get(&(r.vlan, r.mac)).and_then(|p| name_of(*p));
            }
            emit(e);
        }
        *old = cur;
    }
    if suppressed > 0 {
        let mut e = Event::new(EventKind::MacsSuppressed);
        e.count = Some(suppressed);
        emit(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The bus is process-wide: one test drives it, so others cannot interleave.
    #[test]
    fn order_overflow_and_leases() {
        let sub = subscribe();
        for i in 0..3 {
            emit_port(EventKind::PortAdded, "tb", Some(&format!("p{i}")));
        }
        let got: Vec<Event> = (0..3)
            .map(|_| serde_json::from_str(&sub.rx.recv().unwrap()).unwrap())
            .filter(|e: &Event| e.bridge.as_deref() == Some("tb"))
            .collect();
        let ports: Vec<_> = got.iter().map(|e| e.port.clone().unwrap()).collect();
        assert_eq!(ports, ["p0", "p1", "p2"]);
        assert!(got.windows(2).all(|w| w[1].seq > w[0].seq));

        let mac: MacAddr = "02:00:00:00:00:07".parse().unwrap();
        let lease = |host: Option<&str>| crate::config::Lease {
            mac,
            ip: "10.0.0.7".parse().unwrap(),
            hostname: host.map(str::to_string),
            expires: 1,
        };
        emit_leases("tb", &[], &[lease(Some("web"))]);
        emit_leases("tb", &[lease(Some("web"))], &[]);
        let kinds: Vec<EventKind> = (0..4)
            .map(|_| serde_json::from_str::<Event>(&sub.rx.recv().unwrap()).unwrap())
            .map(|e| e.event)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::LeaseGranted,
                EventKind::NameAdded,
                EventKind::LeaseReleased,
                EventKind::NameRemoved
            ]
        );

        // A subscriber that never reads is dropped once its queue is full, and
        // learns so; the emitter never waits.
        let slow = subscribe();
        for _ in 0..QUEUE + 10 {
            emit_port(EventKind::PortUp, "tb", Some("x"));
        }
        assert!(slow.overflow.load(Ordering::Relaxed));
        assert_eq!(slow.rx.len(), QUEUE);
        drop(sub);
    }
}
