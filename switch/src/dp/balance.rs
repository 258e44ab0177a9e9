//! Port placement across workers, adjusted to the load (auto-balance).
//!
//! Two regimes pull opposite ways. Under load, one core is not enough: a TCP stream's
//! data and its ACKs should be forwarded by different workers, each on its own core.
//! At low rates, latency is what counts, and spreading costs it: a ping forwarded by
//! worker 0 comes back on a port of worker 1, which sleeps on the other CPU and must
//! be woken (an inter-processor interrupt, and on a virtual machine a halted vCPU to
//! resume) — on the 2-CPU benchmark machine that is ~40 µs of a ~190 µs round trip.
//! With every port on one worker, the reply is already queued when the worker's send
//! returns and is forwarded without sleeping.
//!
//! So: every [`TICK`] the control thread measures each worker's busy time (the share of
//! the interval spent forwarding, not waiting in epoll) and each port's received
//! frames, and [`Balancer::decide`] answers with moves:
//! - **gather**: when all workers together were busy less than [`GATHER_BELOW`] of one
//!   core for [`CALM_TICKS`] ticks in a row, every port goes to one worker;
//! - **spread**: when the busiest worker is busy more than [`SPREAD_ABOVE`], one of its
//!   ports goes to the least busy worker: the one that, taking a port's share of the
//!   hot worker's frames as its share of the work, leaves the busier of the two least
//!   busy — if that gains at least [`SPREAD_GAIN`]. A port with nearly all the frames
//!   stays (moving it would only move the heat), which also keeps ports from hopping.
//!
//! After a move the balancer waits [`COOLDOWN_TICKS`] before the next, so one burst
//! cannot make ports hop back and forth. The policy is a pure function of its inputs
//! (tested below); the control thread applies it (`State::balance`).

use std::time::Duration;

/// How often the control thread measures and decides.
pub const TICK: Duration = Duration::from_millis(250);
/// All workers together busier than this (fraction of one core) is not calm.
pub const GATHER_BELOW: f64 = 0.10;
/// Calm ticks in a row before ports are gathered on one worker.
pub const CALM_TICKS: u32 = 4;
/// A worker busier than this is hot.
pub const SPREAD_ABOVE: f64 = 0.50;
/// A port moves only if the busier of the two workers gets at least this much less busy.
pub const SPREAD_GAIN: f64 = 0.15;
/// Ticks to wait after a move.
pub const COOLDOWN_TICKS: u32 = 4;

/// One polled port as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLoad {
    /// Worker that polls it now.
    pub worker: usize,
    /// Frames received in the last interval.
    pub frames: u64,
}

/// Move port number `port` (index into the slice given to `decide`) to worker `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub port: usize,
    pub to: usize,
}

/// The balancer's memory between ticks.
#[derive(Debug, Default, Clone)]
pub struct Balancer {
    calm: u32,
    cooldown: u32,
    /// The last tick was not calm (all workers together above [`GATHER_BELOW`]).
    loaded: bool,
}

impl Balancer {
    /// Where a new port should go while traffic is light: with the others (true), or
    /// to the worker with the fewest ports (false, under load).
    pub fn gathering(&self) -> bool {
        !self.loaded
    }

    /// Moves for this tick. `busy[w]` is worker w's busy fraction over the interval
    /// (0.0–1.0); `ports` every polled port with its worker and recent frames.
    pub fn decide(&mut self, busy: &[f64], ports: &[PortLoad]) -> Vec<Move> {
        let n = busy.len();
        if n < 2 || ports.is_empty() {
            return Vec::new();
        }
        let total: f64 = busy.iter().sum();
        self.loaded = total >= GATHER_BELOW;
        self.calm = if total < GATHER_BELOW {
            self.calm.saturating_add(1)
        } else {
            0
        };
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return Vec::new();
        }
        let mut count = vec![0usize; n];
        for p in ports {
            if let Some(c) = count.get_mut(p.worker) {
                *c += 1;
            }
        }
        let used = count.iter().filter(|&&c| c > 0).count();
        if self.calm >= CALM_TICKS {
            if used <= 1 {
                return Vec::new();
            }
            // The worker that already has the most ports keeps them (lowest index on a tie).
            let to = (0..n).max_by_key(|&w| (count[w], n - w)).unwrap_or(0);
            self.cooldown = COOLDOWN_TICKS;
            return ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.worker != to)
                .map(|(port, _)| Move { port, to })
                .collect();
        }
        let by_busy = |a: &usize, b: &usize| busy[*a].total_cmp(&busy[*b]);
        let (Some(hot), Some(cool)) = ((0..n).max_by(by_busy), (0..n).min_by(by_busy)) else {
            return Vec::new();
        };
        if busy[hot] <= SPREAD_ABOVE {
            return Vec::new();
        }
        let on_hot: u64 = ports
            .iter()
            .filter(|p| p.worker == hot)
            .map(|p| p.frames)
            .sum();
        if on_hot == 0 {
            return Vec::new();
        }
        // Assume a port costs its share of the hot worker's frames; the move that leaves
        // the busier of the two workers least busy wins, if it gains enough.
        let after = |p: &PortLoad| {
            let share = busy[hot] * p.frames as f64 / on_hot as f64;
            (busy[hot] - share).max(busy[cool] + share)
        };
        let best = ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.worker == hot)
            .map(|(i, p)| (after(p), i))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((peak, port)) if peak <= busy[hot] - SPREAD_GAIN => {
                self.cooldown = COOLDOWN_TICKS;
                vec![Move { port, to: cool }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(worker: usize, frames: u64) -> PortLoad {
        PortLoad { worker, frames }
    }

    #[test]
    fn one_worker_never_moves() {
        let mut b = Balancer::default();
        for _ in 0..10 {
            assert!(b.decide(&[0.0], &[p(0, 0), p(0, 0)]).is_empty());
        }
    }

    #[test]
    fn calm_ports_gather_after_calm_ticks() {
        let mut b = Balancer::default();
        let ports = [p(0, 10), p(1, 10), p(1, 0)];
        for _ in 1..CALM_TICKS {
            assert!(b.decide(&[0.01, 0.01], &ports).is_empty());
        }
        // Worker 1 has more ports: it keeps them, port 0 joins it.
        assert_eq!(
            b.decide(&[0.01, 0.01], &ports),
            vec![Move { port: 0, to: 1 }]
        );
    }

    #[test]
    fn a_busy_tick_resets_calm() {
        let mut b = Balancer::default();
        let ports = [p(0, 10), p(1, 10)];
        for _ in 1..CALM_TICKS {
            assert!(b.decide(&[0.0, 0.0], &ports).is_empty());
        }
        assert!(b.decide(&[0.2, 0.2], &ports).is_empty());
        for _ in 1..CALM_TICKS {
            assert!(b.decide(&[0.0, 0.0], &ports).is_empty());
        }
        assert_eq!(b.decide(&[0.0, 0.0], &ports).len(), 1);
    }

    #[test]
    fn new_ports_join_the_others_unless_loaded() {
        let mut b = Balancer::default();
        assert!(b.gathering());
        let _ = b.decide(&[0.3, 0.0], &[p(0, 10)]);
        assert!(!b.gathering());
        let _ = b.decide(&[0.01, 0.0], &[p(0, 10)]);
        assert!(b.gathering());
    }

    #[test]
    fn gathered_ports_stay() {
        let mut b = Balancer::default();
        for _ in 0..20 {
            assert!(b.decide(&[0.0, 0.0], &[p(1, 0), p(1, 3)]).is_empty());
        }
    }

    #[test]
    fn tcp_like_load_spreads_once() {
        // Data one way, ACKs the other: both ports busy, one worker saturated.
        let mut b = Balancer::default();
        let ports = [p(0, 20_000), p(0, 12_000), p(1, 0)];
        assert_eq!(b.decide(&[1.0, 0.0], &ports), vec![Move { port: 0, to: 1 }]);
        // Then it waits before moving again, however hot.
        for _ in 0..COOLDOWN_TICKS {
            assert!(b.decide(&[1.0, 0.0], &ports).is_empty());
        }
        assert_eq!(b.decide(&[1.0, 0.0], &ports).len(), 1);
    }

    #[test]
    fn picks_the_move_that_evens_the_load() {
        // Worker 0 busy 0.9 with 1000/600/400 frames: moving the 1000-frame port leaves
        // 0.45 | 0.55 (peak 0.55), the 600-frame one 0.63 | 0.37 (peak 0.63).
        let mut b = Balancer::default();
        let ports = [p(0, 1000), p(0, 600), p(0, 400), p(1, 5)];
        assert_eq!(b.decide(&[0.9, 0.1], &ports), vec![Move { port: 0, to: 1 }]);
        let mut b = Balancer::default();
        // Here the 2000-frame port would overload worker 1 (0.3 + 0.6); the 600-frame
        // one leaves 0.72 | 0.48.
        let ports = [p(0, 400), p(0, 2000), p(0, 600), p(1, 5)];
        assert_eq!(b.decide(&[0.9, 0.3], &ports), vec![Move { port: 2, to: 1 }]);
    }

    #[test]
    fn one_port_with_all_the_frames_stays() {
        // One-way flood: moving the receiving port would only move the heat; moving
        // the idle one would change nothing. No hopping either way.
        let mut b = Balancer::default();
        for _ in 0..10 {
            assert!(b.decide(&[1.0, 0.0], &[p(0, 0), p(0, 800)]).is_empty());
            assert!(b
                .decide(&[0.9, 0.1], &[p(0, 50), p(0, 950), p(1, 0)])
                .is_empty());
        }
    }

    #[test]
    fn no_move_without_a_cooler_worker_or_enough_load() {
        let mut b = Balancer::default();
        assert!(b.decide(&[0.9, 0.8], &[p(0, 10), p(0, 10)]).is_empty());
        assert!(b.decide(&[0.9, 0.1], &[p(0, 10), p(1, 10)]).is_empty());
        assert!(b.decide(&[0.4, 0.0], &[p(0, 10), p(0, 10)]).is_empty());
        assert!(b.decide(&[0.9, 0.0], &[p(0, 0), p(0, 0)]).is_empty());
    }

    #[test]
    fn out_of_range_workers_do_not_panic() {
        let mut b = Balancer::default();
        let _ = b.decide(&[0.9, 0.0], &[p(7, 10), p(0, 10), p(0, 3)]);
        for _ in 0..CALM_TICKS + 1 {
            let _ = b.decide(&[0.0, 0.0], &[p(7, 10), p(0, 10)]);
        }
    }
}
