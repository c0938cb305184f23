//! Sleeping until an instant with microsecond precision, inside the runtime.
//!
//! tokio's timer wheel has millisecond slots and rounds every sleep up to the next one:
//! an open-loop start released by `tokio::time::sleep_until` left on average ~0.5 ms
//! late and up to 1 ms, which put a ~0.8 ms floor under every corrected latency
//! (issue 17). A one-shot timerfd wakes the runtime's epoll at the instant asked for
//! (hrtimer; no timer slack applies to it), without a thread of its own and so without a
//! cross-thread wake per start.

use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    time::Instant,
};

use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::unix::AsyncFd;

pub struct Timer(Option<AsyncFd<Fd>>);

/// nix's `TimerFd` offers `AsFd`; tokio registers an `AsRawFd`.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// Falls back to tokio's millisecond timer where no timerfd can be had (a seccomp
    /// profile refusing it, descriptors exhausted): starts then come up to 1 ms late,
    /// which the corrected latencies show, rather than the load failing.
    pub fn new() -> Self {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok();
        // SAFETY: the `TimerFd` owns its descriptor from creation until it is dropped, and
        // the `AsyncFd` owns the `TimerFd`: the descriptor stays open and the same for the
        // registration's whole life.
        Self(fd.and_then(|fd| unsafe { AsyncFd::register(Fd(fd)) }.ok()))
    }

    pub async fn sleep_until(&self, at: Instant) {
        let Some(fd) = &self.0 else { return tokio::time::sleep_until(at.into()).await };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // Relative to now: an `Instant` does not expose its CLOCK_MONOTONIC value, and the
        // nanoseconds between reading the clock and arming the timer do not matter.
        if fd
            .get_ref()
            .0
            .set(Expiration::OneShot(TimeSpec::from_duration(left)), TimerSetTimeFlags::empty())
            .is_err()
        {
            return tokio::time::sleep_until(at.into()).await;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(at.into()).await;
            };
            // `wait` reads the expiration count; EAGAIN means the readiness was stale.
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(_) => return,
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a timing assertion: only that it sleeps at least as long as asked, returns,
    /// and that a time already past returns at once.
    #[tokio::test(flavor = "current_thread")]
    async fn sleeps_until_the_instant_and_not_before() {
        let t = Timer::new();
        assert!(t.0.is_some(), "a timerfd is available on Linux");
        for us in [50, 300, 2000] {
            let at = Instant::now() + std::time::Duration::from_micros(us);
            t.sleep_until(at).await;
            assert!(Instant::now() >= at);
        }
        t.sleep_until(Instant::now().checked_sub(std::time::Duration::from_millis(5)).unwrap())
            .await;
    }
}
