//! Waiting for a socket without sleeping, when that is cheap.
//!
//! A thread that blocks in `read` is put to sleep and woken when data
//! comes; on an idle machine, and above all on a virtual machine whose
//! idle vCPU halts, the wake-up costs tens of microseconds — more than an
//! ECDSA signature or an AES-GCM encryption. Both ends of hsmlink therefore
//! look at the socket without blocking for a short while before they sleep
//! (the module for the HSM's reply, the HSM for a client's next request),
//! but only when the process is otherwise quiet: as soon as a second party
//! (another thread of the module, another connection of the HSM) has been
//! active within [`BUSY_WINDOW`], nobody spins, because then the CPU is
//! needed for work and a busy process wakes fast anyway. A party whose
//! waits keep outlasting the spin (a slow RSA key, a far HSM, a client
//! that calls once a second) stops spinning too, trying again now and then.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long after a second party's activity nobody spins.
pub const BUSY_WINDOW: Duration = Duration::from_millis(2);
/// Every this many waits, a party tries the way it does not prefer, to see
/// whether things changed.
const EXPLORE_EVERY: u32 = 256;

/// The parties of one process (the module's threads, or the HSM's
/// connections) and when more than one was active.
pub struct Activity {
    /// The party seen last (0: none yet).
    last: AtomicU64,
    /// When it was seen, in µs since [`epoch`].
    last_at: AtomicU64,
    /// Nobody spins before this time (µs since [`epoch`]).
    busy_until: AtomicU64,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn micros(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX)
}

impl Activity {
    pub const fn new() -> Activity {
        Activity {
            last: AtomicU64::new(0),
            last_at: AtomicU64::new(0),
            busy_until: AtomicU64::new(0),
        }
    }

    /// Party `who` (never 0) is active at `now`; returns whether it has
    /// been the only active party lately.
    pub fn seen(&self, who: u64, now: Instant) -> bool {
        let now = micros(now);
        let before = self.last.swap(who, Ordering::Relaxed);
        let before_at = self.last_at.swap(now, Ordering::Relaxed);
        if before != who && before != 0 && now.saturating_sub(before_at) < window_us() {
            self.busy_until
                .store(now.saturating_add(window_us()), Ordering::Relaxed);
            return false;
        }
        now >= self.busy_until.load(Ordering::Relaxed)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

fn window_us() -> u64 {
    BUSY_WINDOW.as_micros() as u64
}

/// One party's record of how long its waits took with and without
/// spinning. Spinning is kept only while it makes waits shorter by a
/// tenth: it does not when the answer takes longer than the spin anyway
/// (an RSA key, a far HSM, a client that calls once a second), nor when
/// the spinning vCPU takes its time from the one doing the work.
#[derive(Default, Debug)]
pub struct SpinHistory {
    /// Average wait (µs, moving) when spinning, and when sleeping at once.
    spinning: Option<f32>,
    sleeping: Option<f32>,
    waits: u32,
}
/// One wait for a socket, timed by [`SpinHistory::done`].
#[must_use]
pub struct Wait {
    start: Instant,
    /// Whether it spun; `None` when the process was busy (not counted).
    spun: Option<bool>,
}

impl Wait {
    /// When the wait began.
    pub fn started(&self) -> Instant {
        self.start
    }
}

impl SpinHistory {
    /// Begin waiting for `socket` to have data (counting `who` as active
    /// in `activity`): if `who` is alone there and spinning has been paying
    /// off, look at it without blocking until it has data (or an error or
    /// end of stream) or `budget` has passed. The caller then reads as
    /// usual and hands the returned [`Wait`] to [`SpinHistory::done`] once
    /// data came.
    pub fn await_readable(
        &mut self,
        socket: &TcpStream,
        budget: Duration,
        activity: &Activity,
        who: u64,
    ) -> Wait {
        let start = Instant::now();
        if !activity.seen(who, start) || budget.is_zero() {
            return Wait { start, spun: None };
        }
        self.waits = self.waits.wrapping_add(1);
        let spin = self.prefers_spinning() != self.waits.is_multiple_of(EXPLORE_EVERY);
        if spin {
            spin_until_readable(socket, start + budget, activity, who);
        }
        Wait {
            start,
            spun: Some(spin),
        }
    }

    /// The data `wait` waited for came. Waits are counted up to `budget`
    /// (the one given to [`SpinHistory::await_readable`]): a longer one is
    /// one the spin could not have shortened, whatever its cause (a slow
    /// operation, a preempted thread), and must not outweigh many short
    /// ones.
    pub fn done(&mut self, wait: Wait, budget: Duration) {
        let Some(spun) = wait.spun else {
            return;
        };
        let us = wait.start.elapsed().min(budget).as_secs_f32() * 1e6;
        let avg = if spun {
            &mut self.spinning
        } else {
            &mut self.sleeping
        };
        *avg = Some(match *avg {
            None => us,
            Some(a) => a + (us - a) / 8.0,
        });
    }

    /// Whether lone waits spin now (untried ways are tried first).
    fn prefers_spinning(&self) -> bool {
        match (self.spinning, self.sleeping) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(spin), Some(sleep)) => spin < 0.9 * sleep,
        }
    }
}

fn spin_until_readable(socket: &TcpStream, until: Instant, activity: &Activity, who: u64) {
    let sock = socket2::SockRef::from(socket);
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    loop {
        match sock.recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Data, end of stream or an error: the blocking read sees it.
            _ => return,
        }
        if Instant::now() >= until || activity.last.load(Ordering::Relaxed) != who {
            return;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_lone_party_spins_and_sees_data() {
        let activity = Activity::new();
        let (a, mut b) = pair();
        b.write_all(b"x").unwrap();
        let mut h = SpinHistory::default();
        let w = h.await_readable(&a, Duration::from_millis(500), &activity, 1);
        assert_eq!(w.spun, Some(true));
        h.done(w, Duration::from_millis(2));
        assert!(h.spinning.is_some());
    }

    #[test]
    fn two_active_parties_do_not_spin() {
        let activity = Activity::new();
        let (a, _b) = pair();
        assert!(activity.seen(1, Instant::now()));
        assert!(!activity.seen(2, Instant::now()));
        assert!(!activity.seen(1, Instant::now()));
        let mut h = SpinHistory::default();
        // The process is busy: no spin, and the wait is not counted.
        let t = Instant::now();
        let w = h.await_readable(&a, Duration::from_secs(5), &activity, 1);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(w.spun, None);
        h.done(w, Duration::from_millis(2));
        assert!(h.spinning.is_none() && h.sleeping.is_none());
    }

    #[test]
    fn spinning_that_does_not_shorten_waits_stops() {
        let activity = Activity::new();
        let (a, _b) = pair();
        let mut h = SpinHistory::default();
        let budget = Duration::from_millis(2);
        // No data ever comes: a spinning wait lasts the whole budget, a
        // sleeping one (here: none at all) is shorter.
        let mut spun = 0;
        for _ in 0..64 {
            let w = h.await_readable(&a, budget, &activity, 7);
            if w.spun == Some(true) {
                spun += 1;
            }
            h.done(w, Duration::from_millis(2));
        }
        assert!(!h.prefers_spinning());
        assert!(spun < 8, "spun {spun} times of 64");
    }

    #[test]
    fn spinning_that_pays_is_kept() {
        let activity = Activity::new();
        let mut h = SpinHistory {
            spinning: Some(10.0),
            sleeping: Some(50.0),
            waits: 0,
        };
        assert!(h.prefers_spinning());
        let (a, mut b) = pair();
        b.write_all(b"x").unwrap();
        let spins = (0..512)
            .filter(|_| {
                // Not handed to `done`: the averages stay as they are.
                h.await_readable(&a, Duration::from_millis(1), &activity, 3)
                    .spun
                    == Some(true)
            })
            .count();
        // All but the exploring waits spin.
        assert_eq!(spins, 510);
    }
}
