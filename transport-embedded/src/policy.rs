//! Time as the caller counts it, and the bounds on every wait.

use core::sync::atomic::{AtomicU32, Ordering};

/// The caller's clock. The transport reads no clock of its own: it counts
/// *ticks* of this one, in whatever unit the [`Policy`] is written in
/// (milliseconds of a timer, or polls with [`Polls`]).
pub trait Clock {
    /// Ticks since an arbitrary origin. It may wrap around: the transport
    /// only takes wrapping differences, so one wait must stay below 2^31
    /// ticks.
    fn now(&self) -> u32;

    /// Called each time the stack answers "would block", and while pausing
    /// between connection attempts: poll the network interface, sleep, or
    /// wait for an interrupt. The default returns at once (busy polling).
    fn wait(&self) {}
}

impl<K: Clock + ?Sized> Clock for &K {
    fn now(&self) -> u32 {
        (**self).now()
    }
    fn wait(&self) {
        (**self).wait()
    }
}

/// A clock for boards without a timer: one tick per [`Clock::wait`], so a
/// [`Policy`] counts polls of the stack. Only the order of magnitude of such
/// a bound is known in time; prefer a timer where there is one.
#[derive(Debug, Default)]
pub struct Polls {
    count: AtomicU32,
}

impl Polls {
    /// A counter at zero.
    pub const fn new() -> Self {
        Polls {
            count: AtomicU32::new(0),
        }
    }
}

impl Clock for Polls {
    fn now(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
    fn wait(&self) {
        // Load and store (no read-modify-write): available on every target,
        // and a lost tick only lengthens a wait by one poll.
        let n = self.count.load(Ordering::Relaxed);
        self.count.store(n.wrapping_add(1), Ordering::Relaxed);
    }
}

/// Bounded retries and timeouts, in ticks of the caller's [`Clock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy {
    /// Connection attempts per connect (0 counts as 1).
    pub connect_attempts: u8,
    /// Longest wait for one connection attempt to complete.
    pub connect_timeout: u32,
    /// Pause between two connection attempts.
    pub retry_pause: u32,
    /// Longest time a send or a receive may make no progress; the HSM's
    /// slowest answer (an RSA-4096 key generation) must fit in it.
    pub io_timeout: u32,
}

impl Policy {
    /// Bounds in milliseconds: 3 attempts of 5 s each, 0.5 s apart, and
    /// 30 s of I/O silence at most.
    pub const MILLIS: Policy = Policy {
        connect_attempts: 3,
        connect_timeout: 5_000,
        retry_pause: 500,
        io_timeout: 30_000,
    };
}

impl Default for Policy {
    fn default() -> Self {
        Policy::MILLIS
    }
}

/// A wait that started at some tick and may last `limit` ticks.
#[derive(Clone, Copy)]
pub(crate) struct Deadline {
    start: u32,
    limit: u32,
}

impl Deadline {
    pub(crate) fn start(clock: &impl Clock, limit: u32) -> Self {
        Deadline {
            start: clock.now(),
            limit,
        }
    }

    pub(crate) fn expired(&self, clock: &impl Clock) -> bool {
        clock.now().wrapping_sub(self.start) >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_deadlines_count_waits() {
        let clock = Polls::new();
        let d = Deadline::start(&clock, 3);
        assert!(!d.expired(&clock));
        clock.wait();
        clock.wait();
        assert!(!d.expired(&clock));
        clock.wait();
        assert!(d.expired(&clock));
    }

    #[test]
    fn deadlines_survive_wrap_around() {
        let clock = Polls {
            count: AtomicU32::new(u32::MAX - 1),
        };
        let d = Deadline::start(&clock, 2);
        clock.wait();
        assert!(!d.expired(&clock));
        clock.wait();
        assert_eq!(clock.now(), 0);
        assert!(d.expired(&clock));
    }
}
