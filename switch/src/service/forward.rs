//! DNS forwarding: names a bridge does not own go to upstream resolvers, on a thread of
//! its own so that the slow path never waits for the network.
//!
//! The service thread hands a query over a bounded channel ([`Forwarder::forward`]
//! never blocks: a full queue is answered SERVFAIL at once) and gets the answer back on
//! another channel ([`Forwarder::answers`]). The forwarder thread (mio):
//! - answers from its cache while the answer's TTL lasts (TTLs counted down);
//! - joins a query to one already in flight for the same question;
//! - otherwise asks the upstreams in turn over UDP, from a fresh socket per try (a
//!   random source port and query ID, connected to that upstream, so only it can
//!   answer), each try bounded by [`TRY_TIMEOUT`]; an answer with TC set is asked
//!   again over TCP; SERVFAIL/REFUSED moves on to the next upstream;
//! - after the last try, answers SERVFAIL: a dead upstream costs a bounded wait
//!   ([`TRY_TIMEOUT`] × tries) and never delays names the bridge answers itself.
//!
//! At most [`MAX_INFLIGHT`] questions are in flight, [`MAX_TCP`] of them over TCP;
//! the cache holds at most [`CACHE_CAP`] answers.
//!
//! Read first: RFC 1035 §7 (resolver), RFC 5452 (spoofing resistance), RFC 2308
//! (negative caching), RFC 7766 (DNS over TCP).

use crate::dp::Upstream;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RData;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Questions in flight upstream at once; more are answered SERVFAIL.
pub const MAX_INFLIGHT: usize = 256;
/// Of those, over TCP (after a truncated UDP answer).
pub const MAX_TCP: usize = 32;
/// Clients waiting for one question in flight.
const MAX_WAITERS: usize = 32;
/// Queries waiting for the forwarder thread.
const QUEUE: usize = 256;
/// Answers waiting for the service thread.
const ANSWERS: usize = 1024;
/// How long one try waits for its upstream.
pub const TRY_TIMEOUT: Duration = Duration::from_millis(1500);
/// Tries per question: one per upstream, at least two (the only upstream twice), at
/// most three.
const MIN_TRIES: usize = 2;
const MAX_TRIES: usize = 3;
/// Cached answers.
pub const CACHE_CAP: usize = 4096;
/// Longest a cached answer is kept, whatever its TTL.
const MAX_CACHE_TTL: u32 = 3600;
/// Largest DNS message (over TCP).
const MAX_MSG: usize = 65_535;
/// How often /etc/resolv.conf is looked at again (its mtime) while forwarding.
const RESOLV_CHECK: Duration = Duration::from_secs(1);
/// Name servers read from resolv.conf (glibc's MAXNS).
const MAXNS: usize = 3;

const WAKER: Token = Token(0);

/// A query to forward, and where its answer goes (opaque here).
pub struct Request<T> {
    pub upstream: Upstream,
    /// The client's query, as it came.
    pub query: Vec<u8>,
    pub reply: T,
    /// Addresses never to forward to (vswitchd's own gateway addresses: asking
    /// ourselves would loop).
    pub avoid: Vec<Ipv4Addr>,
}

/// An answer for the service thread to send.
pub struct Answer<T> {
    pub reply: T,
    pub message: Vec<u8>,
}

/// The service thread's handle. The thread starts with the first forwarded query.
pub struct Forwarder<T> {
    tx: Option<(Sender<Request<T>>, Arc<Waker>)>,
    answers_tx: Sender<Answer<T>>,
    answers_rx: Receiver<Answer<T>>,
    resolv_conf: PathBuf,
}

impl<T: Send + 'static> Default for Forwarder<T> {
    fn default() -> Self {
        Forwarder::new(PathBuf::from("/etc/resolv.conf"))
    }
}

impl<T: Send + 'static> Forwarder<T> {
    /// A forwarder reading the system's resolvers from `resolv_conf`.
    pub fn new(resolv_conf: PathBuf) -> Forwarder<T> {
        let (answers_tx, answers_rx) = bounded(ANSWERS);
        Forwarder {
            tx: None,
            answers_tx,
            answers_rx,
            resolv_conf,
        }
    }

    /// Answers ready to send (forwarded, cached, or SERVFAIL).
    pub fn answers(&self) -> &Receiver<Answer<T>> {
        &self.answers_rx
    }

    /// Hand `req` to the forwarder thread without waiting. `Err(req)` when it cannot
    /// take it (queue full, thread not running): answer it with [`servfail`].
    pub fn forward(&mut self, req: Request<T>) -> Result<(), Request<T>> {
        if self.tx.is_none() {
            match self.start() {
                Ok(tx) => self.tx = Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the DNS forwarder");
                    return Err(req);
                }
            }
        }
        let Some((tx, waker)) = &self.tx else {
            return Err(req);
        };
        match tx.try_send(req) {
            Ok(()) => {
                if let Err(e) = waker.wake() {
                    tracing::warn!(error = %e, "cannot wake the DNS forwarder");
                }
                Ok(())
            }
            Err(TrySendError::Full(r)) => Err(r),
            Err(TrySendError::Disconnected(r)) => {
                self.tx = None;
                Err(r)
            }
        }
    }

    fn start(&self) -> io::Result<(Sender<Request<T>>, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = bounded(QUEUE);
        let mut engine = Engine::new(poll, rx, self.answers_tx.clone(), &self.resolv_conf);
        std::thread::Builder::new()
            .name("vswitch-dns".into())
            .spawn(move || engine.run())?;
        Ok((tx, waker))
    }
}

/// A SERVFAIL answer to `query` (`None` if it is not a query).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.iter().cloned());
    r.to_vec().ok()
}

/// The name servers of a resolv.conf text, at most [`MAXNS`].
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAXNS)
        .collect()
}

/// The resolvers of vswitchd's own resolv.conf (empty if it cannot be read), for
/// `show`.
pub fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default()
}

/// The resolv.conf servers, read again when the file changes.
struct ResolvConf {
    path: PathBuf,
    checked: Option<Instant>,
    mtime: Option<SystemTime>,
    servers: Vec<SocketAddr>,
}

impl ResolvConf {
    fn servers(&mut self, now: Instant) -> &[SocketAddr] {
        if self
            .checked
            .is_none_or(|c| now.duration_since(c) >= RESOLV_CHECK)
        {
            self.checked = Some(now);
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime != self.mtime || mtime.is_none() {
                self.mtime = mtime;
                self.servers = std::fs::read_to_string(&self.path)
                    .map(|t| parse_resolv_conf(&t))
                    .unwrap_or_default();
            }
        }
        &self.servers
    }
}

/// A question: lower-case name, type, class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    qtype: u16,
    qclass: u16,
}

fn key_of(m: &Message) -> Option<Key> {
    let q = m.queries.first()?;
    Some(Key {
        name: q.name().to_ascii().to_ascii_lowercase(),
        qtype: u16::from(q.query_type()),
        qclass: u16::from(q.query_class()),
    })
}

/// Seconds an answer may be cached: the smallest TTL of its records; for a negative
/// answer the SOA's minimum (RFC 2308); 0 when it must not be cached.
fn cache_ttl(m: &Message) -> u32 {
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m
            .answers
            .iter()
            .chain(&m.authorities)
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0),
        ResponseCode::NoError | ResponseCode::NXDomain => m
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(0),
        _ => 0,
    }
    .min(MAX_CACHE_TTL)
}

struct Cached {
    message: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

/// `message` for the client whose query had `id`, its TTLs lowered by `age` seconds.
fn for_client(message: &[u8], id: u16, age: u32) -> Vec<u8> {
    if age > 0 {
        if let Ok(mut m) = Message::from_vec(message) {
            m.metadata.id = id;
            for r in m
                .answers
                .iter_mut()
                .chain(m.authorities.iter_mut())
                .chain(m.additionals.iter_mut())
            {
                r.ttl = r.ttl.saturating_sub(age);
            }
            if let Ok(v) = m.to_vec() {
                return v;
            }
        }
    }
    let mut v = message.to_vec();
    if v.len() >= 2 {
        v[..2].copy_from_slice(&id.to_be_bytes());
    }
    v
}

enum Io {
    /// Between tries.
    Idle,
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        out: Vec<u8>,
        written: usize,
        input: Vec<u8>,
    },
}

struct Pending<T> {
    key: Key,
    /// The first client's query; sent upstream with `id`.
    query: Vec<u8>,
    id: u16,
    waiters: Vec<(u16, T)>,
    servers: Vec<SocketAddr>,
    /// Tries made and allowed.
    tried: usize,
    tries: usize,
    deadline: Instant,
    io: Io,
}

struct Engine<T> {
    poll: Poll,
    rx: Receiver<Request<T>>,
    answers: Sender<Answer<T>>,
    resolv: ResolvConf,
    /// In-flight questions; slot i has token i + 1.
    slots: Vec<Option<Pending<T>>>,
    by_key: HashMap<Key, usize>,
    cache: HashMap<Key, Cached>,
    tcp: usize,
    ids: std::collections::hash_map::RandomState,
    counter: u64,
}

impl<T: Send + 'static> Engine<T> {
    fn new(
        poll: Poll,
        rx: Receiver<Request<T>>,
        answers: Sender<Answer<T>>,
        resolv_conf: &std::path::Path,
    ) -> Engine<T> {
        Engine {
            poll,
            rx,
            answers,
            resolv: ResolvConf {
                path: resolv_conf.to_path_buf(),
                checked: None,
                mtime: None,
                servers: Vec::new(),
            },
            slots: Vec::new(),
            by_key: HashMap::new(),
            cache: HashMap::new(),
            tcp: 0,
            ids: std::collections::hash_map::RandomState::new(),
            counter: 0,
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let next = self
                .slots
                .iter()
                .flatten()
                .map(|p| p.deadline)
                .min()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1));
            if let Err(e) = self.poll.poll(&mut events, Some(next)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "DNS forwarder: poll failed; stopping");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(t) => self.ready(t - 1),
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(req) => self.request(req),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    // The service thread is gone: so are the answers' readers.
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                }
            }
            self.expire(Instant::now());
        }
    }

    fn send(&self, reply: T, message: Vec<u8>) {
        if self.answers.try_send(Answer { reply, message }).is_err() {
            tracing::debug!("DNS forwarder: answer queue full, answer dropped");
        }
    }

    fn fail(&self, query: &[u8], reply: T) {
        if let Some(m) = servfail(query) {
            self.send(reply, m);
        }
    }

    fn random_id(&mut self) -> u16 {
        self.counter += 1;
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter);
        h.finish() as u16
    }

    fn request(&mut self, req: Request<T>) {
        let Ok(q) = Message::from_vec(&req.query) else {
            return;
        };
        let (Some(key), MessageType::Query, OpCode::Query) =
            (key_of(&q), q.metadata.message_type, q.metadata.op_code)
        else {
            return self.fail(&req.query, req.reply);
        };
        let client_id = q.metadata.id;
        let now = Instant::now();
        if let Some(c) = self.cache.get(&key) {
            let age = now.duration_since(c.stored).as_secs();
            if age < u64::from(c.ttl) {
                let m = for_client(&c.message, client_id, age as u32);
                return self.send(req.reply, m);
            }
            self.cache.remove(&key);
        }
        if let Some(&slot) = self.by_key.get(&key) {
            if let Some(p) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                if p.waiters.len() < MAX_WAITERS {
                    p.waiters.push((client_id, req.reply));
                    return;
                }
            }
            return self.fail(&req.query, req.reply);
        }
        let servers: Vec<SocketAddr> = match &req.upstream {
            Upstream::Off => Vec::new(),
            Upstream::System => self.resolv.servers(now).to_vec(),
            Upstream::Servers(s) => s.to_vec(),
        }
        .into_iter()
        .filter(|s| !matches!(s.ip(), IpAddr::V4(ip) if req.avoid.contains(&ip)))
        .collect();
        if servers.is_empty() {
            tracing::debug!(name = %key.name, "DNS: no upstream to forward to");
            return self.fail(&req.query, req.reply);
        }
        if self.by_key.len() >= MAX_INFLIGHT {
            tracing::debug!(name = %key.name, "DNS: too many queries in flight");
            return self.fail(&req.query, req.reply);
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let id = self.random_id();
        let mut query = req.query;
        query[..2].copy_from_slice(&id.to_be_bytes());
        let tries = servers.len().clamp(MIN_TRIES, MAX_TRIES);
        let mut p = Pending {
            key: key.clone(),
            query,
            id,
            waiters: vec![(client_id, req.reply)],
            servers,
            tried: 0,
            tries,
            deadline: now,
            io: Io::Idle,
        };
        if self.try_next(slot, &mut p) {
            self.by_key.insert(key, slot);
            self.slots[slot] = Some(p);
        } else {
            self.finish_fail(p);
        }
    }

    /// Send `p`'s query to its next upstream over UDP. False when no try is left.
    fn try_next(&mut self, slot: usize, p: &mut Pending<T>) -> bool {
        self.close(p);
        while p.tried < p.tries {
            let server = p.servers[p.tried % p.servers.len()];
            p.tried += 1;
            p.id = self.random_id();
            p.query[..2].copy_from_slice(&p.id.to_be_bytes());
            let local: SocketAddr = match server {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
            };
            let sent = UdpSocket::bind(local).and_then(|mut s| {
                s.connect(server)?;
                s.send(&p.query)?;
                self.poll
                    .registry()
                    .register(&mut s, Token(slot + 1), Interest::READABLE)?;
                Ok(s)
            });
            match sent {
                Ok(s) => {
                    p.io = Io::Udp(s);
                    p.deadline = Instant::now() + TRY_TIMEOUT;
                    return true;
                }
                Err(e) => tracing::debug!(%server, error = %e, "DNS: cannot ask upstream"),
            }
        }
        false
    }

    /// Ask the upstream that truncated its answer again over TCP. False if it cannot.
    fn retry_over_tcp(&mut self, slot: usize, p: &mut Pending<T>, server: SocketAddr) -> bool {
        if self.tcp >= MAX_TCP {
            return false;
        }
        self.close(p);
        let Ok(len) = u16::try_from(p.query.len()) else {
            return false;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&p.query);
        let opened = TcpStream::connect(server).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(slot + 1),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match opened {
            Ok(stream) => {
                self.tcp += 1;
                p.io = Io::Tcp {
                    stream,
                    out,
                    written: 0,
                    input: Vec::new(),
                };
                p.deadline = Instant::now() + TRY_TIMEOUT;
                true
            }
            Err(e) => {
                tracing::debug!(%server, error = %e, "DNS: cannot connect over TCP");
                false
            }
        }
    }

    /// Deregister and close `p`'s socket.
    fn close(&mut self, p: &mut Pending<T>) {
        match std::mem::replace(&mut p.io, Io::Idle) {
            Io::Idle => {}
            Io::Udp(mut s) => {
                let _ = self.poll.registry().deregister(&mut s);
            }
            Io::Tcp { mut stream, .. } => {
                let _ = self.poll.registry().deregister(&mut stream);
                self.tcp = self.tcp.saturating_sub(1);
            }
        }
    }

    /// Events on slot `slot`'s socket.
    fn ready(&mut self, slot: usize) {
        let Some(mut p) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        match self.progress(slot, &mut p) {
            Progress::Wait => self.slots[slot] = Some(p),
            Progress::Answer(m) => self.finish(p, m),
            Progress::Next => {
                if self.try_next(slot, &mut p) {
                    self.slots[slot] = Some(p);
                } else {
                    self.finish_fail(p);
                }
            }
        }
    }

    fn progress(&mut self, slot: usize, p: &mut Pending<T>) -> Progress {
        let mut buf = vec![0u8; MAX_MSG];
        match &mut p.io {
            Io::Idle => Progress::Wait,
            Io::Udp(s) => loop {
                let server = s.peer_addr().ok();
                match s.recv(&mut buf) {
                    Ok(n) => match check(&buf[..n], p.id, &p.key) {
                        Verdict::Bogus => continue,
                        Verdict::Truncated => {
                            let Some(server) = server else {
                                return Progress::Next;
                            };
                            return if self.retry_over_tcp(slot, p, server) {
                                Progress::Wait
                            } else {
                                // No TCP: the client gets the truncated answer and
                                // asks again over TCP.
                                Progress::Answer(buf[..n].to_vec())
                            };
                        }
                        Verdict::Failed => return Progress::Next,
                        Verdict::Good => return Progress::Answer(buf[..n].to_vec()),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                    // ICMP port unreachable and the like: this upstream is not there.
                    Err(_) => return Progress::Next,
                }
            },
            Io::Tcp {
                stream,
                out,
                written,
                input,
            } => {
                while *written < out.len() {
                    match stream.write(&out[*written..]) {
                        Ok(0) => return Progress::Next,
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return Progress::Wait,
                        Err(_) => return Progress::Next,
                    }
                }
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => return Progress::Next,
                        Ok(n) => {
                            input.extend_from_slice(&buf[..n]);
                            if input.len() >= 2 {
                                let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
                                if input.len() >= 2 + len {
                                    let m = input[2..2 + len].to_vec();
                                    return match check(&m, p.id, &p.key) {
                                        Verdict::Good | Verdict::Truncated => Progress::Answer(m),
                                        Verdict::Failed | Verdict::Bogus => Progress::Next,
                                    };
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                        Err(_) => return Progress::Next,
                    }
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let due = self.slots[slot].as_ref().is_some_and(|p| p.deadline <= now);
            if !due {
                continue;
            }
            let Some(mut p) = self.slots[slot].take() else {
                continue;
            };
            tracing::debug!(name = %p.key.name, "DNS: upstream did not answer in time");
            if self.try_next(slot, &mut p) {
                self.slots[slot] = Some(p);
            } else {
                self.finish_fail(p);
            }
        }
    }

    fn finish(&mut self, mut p: Pending<T>, message: Vec<u8>) {
        self.close(&mut p);
        self.by_key.remove(&p.key);
        if let Ok(m) = Message::from_vec(&message) {
            let ttl = cache_ttl(&m);
            if ttl > 0 && !m.metadata.truncation {
                self.store(p.key.clone(), &message, ttl);
            }
        }
        for (id, reply) in p.waiters {
            self.send(reply, for_client(&message, id, 0));
        }
    }

    fn finish_fail(&mut self, mut p: Pending<T>) {
        self.close(&mut p);
        self.by_key.remove(&p.key);
        for (id, reply) in p.waiters {
            let mut q = p.query.clone();
            q[..2].copy_from_slice(&id.to_be_bytes());
            self.fail(&q, reply);
        }
    }

    fn store(&mut self, key: Key, message: &[u8], ttl: u32) {
        let now = Instant::now();
        if self.cache.len() >= CACHE_CAP {
            self.cache
                .retain(|_, c| now.duration_since(c.stored).as_secs() < u64::from(c.ttl));
        }
        if self.cache.len() >= CACHE_CAP {
            // Still full of live answers: drop the one that expires first.
            let soonest = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.stored + Duration::from_secs(u64::from(c.ttl)))
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.cache.remove(&k);
            }
        }
        self.cache.insert(
            key,
            Cached {
                message: message.to_vec(),
                stored: now,
                ttl,
            },
        );
    }
}

enum Progress {
    Wait,
    Answer(Vec<u8>),
    Next,
}

enum Verdict {
    /// Not the answer to our question (spoofed, stale): ignore it.
    Bogus,
    /// The answer, truncated: ask again over TCP.
    Truncated,
    /// The upstream could not answer (SERVFAIL, REFUSED, ...): ask the next one.
    Failed,
    Good,
}

/// Judge a message from upstream against the question `key` asked with `id`.
fn check(msg: &[u8], id: u16, key: &Key) -> Verdict {
    let Ok(m) = Message::from_vec(msg) else {
        return Verdict::Bogus;
    };
    if m.metadata.id != id
        || m.metadata.message_type != MessageType::Response
        || key_of(&m).as_ref() != Some(key)
    {
        return Verdict::Bogus;
    }
    if m.metadata.truncation {
        return Verdict::Truncated;
    }
    match m.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Verdict::Good,
        _ => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::RecordType;
    use hickory_proto::rr::{Name, Record};

    fn query(id: u16, name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn response(q: &[u8], rcode: ResponseCode, ttl: u32) -> Message {
        let q = Message::from_vec(q).unwrap();
        let mut r = Message::response(q.metadata.id, OpCode::Query);
        r.add_query(q.queries[0].clone());
        r.metadata.response_code = rcode;
        if rcode == ResponseCode::NoError {
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                ttl,
                RData::A(A(Ipv4Addr::new(203, 0, 113, 7))),
            ));
        }
        r
    }

    #[test]
    fn resolv_conf_servers() {
        let t = "# comment\nsearch lab\nnameserver 203.0.113.53\nnameserver  ::1\n\
                 nameserver bogus\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "203.0.113.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn answers_are_checked_against_the_question() {
        let q = query(77, "www.example.test.", RecordType::A);
        let key = key_of(&Message::from_vec(&q).unwrap()).unwrap();
        let good = response(&q, ResponseCode::NoError, 60).to_vec().unwrap();
        assert!(matches!(check(&good, 77, &key), Verdict::Good));
        assert!(matches!(check(&good, 78, &key), Verdict::Bogus), "wrong id");
        let other = response(
            &query(77, "evil.test.", RecordType::A),
            ResponseCode::NoError,
            60,
        );
        assert!(matches!(
            check(&other.to_vec().unwrap(), 77, &key),
            Verdict::Bogus
        ));
        assert!(matches!(check(&q, 77, &key), Verdict::Bogus), "a query");
        let mut tc = response(&q, ResponseCode::NoError, 60);
        tc.metadata.truncation = true;
        assert!(matches!(
            check(&tc.to_vec().unwrap(), 77, &key),
            Verdict::Truncated
        ));
        let sf = response(&q, ResponseCode::ServFail, 0).to_vec().unwrap();
        assert!(matches!(check(&sf, 77, &key), Verdict::Failed));
        let nx = response(&q, ResponseCode::NXDomain, 0).to_vec().unwrap();
        assert!(matches!(check(&nx, 77, &key), Verdict::Good));
    }

    #[test]
    fn cache_ttls() {
        let q = query(1, "www.example.test.", RecordType::A);
        assert_eq!(cache_ttl(&response(&q, ResponseCode::NoError, 30)), 30);
        assert_eq!(
            cache_ttl(&response(&q, ResponseCode::NoError, 999_999)),
            MAX_CACHE_TTL
        );
        assert_eq!(cache_ttl(&response(&q, ResponseCode::ServFail, 30)), 0);
        let mut nx = response(&q, ResponseCode::NXDomain, 0);
        assert_eq!(cache_ttl(&nx), 0, "negative without SOA: not cached");
        let soa = SOA::new(
            Name::from_ascii("example.test.").unwrap(),
            Name::from_ascii("admin.example.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            120,
        );
        nx.add_authority(Record::from_rdata(
            Name::from_ascii("example.test.").unwrap(),
            300,
            RData::SOA(soa),
        ));
        assert_eq!(cache_ttl(&nx), 120, "SOA minimum");
    }

    #[test]
    fn cached_answers_count_their_ttl_down() {
        let q = query(5, "www.example.test.", RecordType::A);
        let r = response(&q, ResponseCode::NoError, 60).to_vec().unwrap();
        let m = Message::from_vec(&for_client(&r, 9, 25)).unwrap();
        assert_eq!((m.metadata.id, m.answers[0].ttl), (9, 35));
        let m = Message::from_vec(&for_client(&r, 10, 0)).unwrap();
        assert_eq!((m.metadata.id, m.answers[0].ttl), (10, 60));
    }

    #[test]
    fn servfail_keeps_id_and_question() {
        let q = query(42, "www.example.test.", RecordType::AAAA);
        let m = Message::from_vec(&servfail(&q).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 42);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1);
        assert!(servfail(b"junk").is_none());
    }

    /// A real round trip on loopback: an upstream that answers, one that never does
    /// (SERVFAIL after the tries, others unaffected), the cache, and the bound on
    /// questions in flight.
    #[test]
    fn forwarder_round_trips() {
        let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let up_addr = up.local_addr().unwrap();
        let dead_addr = dead.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = up.recv_from(&mut buf) {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = response(&buf[..n], ResponseCode::NoError, 300);
                let _ = up.send_to(&r.to_vec().unwrap(), from);
            }
        });
        let mut f: Forwarder<u32> = Forwarder::new(PathBuf::from("/nonexistent"));
        let req = |up: SocketAddr, id: u16, name: &str, tag: u32| Request {
            upstream: Upstream::Servers(vec![up].into()),
            query: query(id, name, RecordType::A),
            reply: tag,
            avoid: vec![],
        };
        let wait = |f: &Forwarder<u32>| {
            f.answers()
                .recv_timeout(Duration::from_secs(10))
                .expect("an answer within 10 s")
        };
        assert!(f
            .forward(req(dead_addr, 1, "slow.example.test.", 1))
            .is_ok());
        assert!(f.forward(req(up_addr, 2, "www.example.test.", 2)).is_ok());
        let a = wait(&f);
        assert_eq!(
            a.reply, 2,
            "the live upstream answers while the dead one waits"
        );
        let m = Message::from_vec(&a.message).unwrap();
        assert_eq!((m.metadata.id, m.answers.len()), (2, 1));
        let a = wait(&f);
        assert_eq!(a.reply, 1);
        let m = Message::from_vec(&a.message).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (1, ResponseCode::ServFail)
        );
        // Cached: answered without asking again.
        let before = served.load(std::sync::atomic::Ordering::Relaxed);
        assert!(f.forward(req(up_addr, 3, "WWW.example.test.", 3)).is_ok());
        let a = wait(&f);
        assert_eq!(Message::from_vec(&a.message).unwrap().metadata.id, 3);
        assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), before);
        // Bounded: more distinct questions than may be in flight to the dead upstream;
        // the rest are SERVFAIL at once (or refused by the full queue).
        let mut refused = 0;
        for i in 0..(MAX_INFLIGHT + QUEUE + 10) {
            let name = format!("n{i}.example.test.");
            if f.forward(req(dead_addr, 100, &name, 1000 + i as u32))
                .is_err()
            {
                refused += 1;
            }
        }
        let mut servfails = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(a) = f.answers().recv_deadline(deadline) {
            let m = Message::from_vec(&a.message).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            servfails += 1;
        }
        assert!(
            refused + servfails >= QUEUE,
            "refused {refused}, failed at once {servfails}"
        );
    }
}
