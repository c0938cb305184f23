//! Every request's outcome, per second of the schedule: latency from the intended start
//! (coordinated-omission corrected) and from the actual start (what a closed-loop tool
//! reports), status classes, error classes, and starts that came late.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Why a request got no HTTP status (or other answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    /// Reset, closed, refused mid-request.
    Io,
    /// The answer did not parse or did not match.
    Protocol,
    /// The server answered with an error of its protocol (Redis -ERR, gRPC health not
    /// SERVING or unknown service).
    Rejected,
    /// Its intended start passed the end of the run plus the timeout while every
    /// connection was busy: it was never sent.
    NotStarted,
}

impl Failure {
    pub const ALL: [Self; 6] =
        [Self::Connect, Self::Timeout, Self::Io, Self::Protocol, Self::Rejected, Self::NotStarted];

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Protocol => "protocol",
            Self::Rejected => "rejected",
            Self::NotStarted => "not_started",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP status, or 0 for a non-HTTP success (TCP, Redis, gRPC OK). 1xx-3xx and
    /// 0 are good; 4xx, 5xx and failures are errors.
    Answer(u16),
    Failed(Failure),
}

/// The latency at quantile `q` in milliseconds (the histograms hold µs); 0 when empty.
pub fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 }
}

/// A start more than this after its intended time is counted late.
pub const LATE: Duration = Duration::from_millis(5);

/// Microseconds, growing as needed. Per second 2 significant digits (1 %), so a
/// ten-minute run stays in tens of MiB; the run's totals keep 3.
fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).expect("2 or 3 significant digits is valid")
}

pub struct Second {
    /// From the intended start to the answer, µs.
    pub corrected: Histogram<u64>,
    /// From the actual start to the answer, µs.
    pub uncorrected: Histogram<u64>,
    /// Index: status / 100 (0 for non-HTTP successes), 1..=5.
    pub status: [u64; 6],
    pub failures: [u64; Failure::ALL.len()],
    pub late: u64,
}

impl Default for Second {
    fn default() -> Self {
        Self::new(2)
    }
}

impl Second {
    fn new(sigfig: u8) -> Self {
        Self {
            corrected: histogram(sigfig),
            uncorrected: histogram(sigfig),
            status: [0; 6],
            failures: [0; Failure::ALL.len()],
            late: 0,
        }
    }

    fn record(&mut self, lag: Duration, took: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Answer(status) => self.status[usize::from(status / 100).min(5)] += 1,
            Outcome::Failed(f) => {
                self.failures[Failure::ALL.iter().position(|x| *x == f).expect("listed")] += 1;
            }
        }
        if outcome != Outcome::Failed(Failure::NotStarted) {
            // Auto-resizing histograms only refuse values beyond u64 range.
            let _ = self.corrected.record((lag + took).as_micros() as u64);
            let _ = self.uncorrected.record(took.as_micros() as u64);
        }
        if lag > LATE {
            self.late += 1;
        }
    }

    pub fn requests(&self) -> u64 {
        self.status.iter().sum::<u64>() + self.failures.iter().sum::<u64>()
    }

    /// Requests the target answered (any status, errors included): what it served.
    pub fn answered(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Intended starts never sent (every connection busy until the run's end).
    pub fn not_started(&self) -> u64 {
        self.failures[Failure::ALL.len() - 1]
    }

    pub fn errors(&self) -> u64 {
        self.status[4] + self.status[5] + self.failures.iter().sum::<u64>()
    }

    pub fn add(&mut self, other: &Self) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        self.late += other.late;
    }
}

pub struct Recorder {
    /// Indexed by the second of the intended start.
    pub seconds: Vec<Second>,
    /// The whole run, at 3 significant digits.
    pub total: Second,
    pub max_lag: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { seconds: Vec::new(), total: Second::new(3), max_lag: Duration::ZERO }
    }
}

impl Recorder {
    /// One request: intended start at `intended` (from the run's start), sent `lag`
    /// after that, answered `took` after it was sent.
    pub fn record(&mut self, intended: Duration, lag: Duration, took: Duration, outcome: Outcome) {
        let i = intended.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        self.seconds[i].record(lag, took, outcome);
        self.total.record(lag, took, outcome);
        self.max_lag = self.max_lag.max(lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_land_in_the_second_they_were_meant_for() {
        let mut r = Recorder::default();
        let ms = Duration::from_millis;
        r.record(ms(100), ms(0), ms(2), Outcome::Answer(200));
        r.record(ms(1500), ms(900), ms(100), Outcome::Answer(503));
        r.record(ms(1600), ms(0), ms(0), Outcome::Failed(Failure::Timeout));
        r.record(ms(2100), ms(3000), ms(0), Outcome::Failed(Failure::NotStarted));
        assert_eq!(r.seconds.len(), 3);
        assert_eq!(r.seconds[1].requests(), 2);
        assert_eq!(r.seconds[1].errors(), 2);
        assert_eq!(r.seconds[1].late, 1);
        // Corrected latency includes the 900 ms the start waited; uncorrected does not.
        assert_eq!(r.total.corrected.max() / 1000, 1000);
        assert_eq!(r.total.uncorrected.max() / 1000, 100);
        assert!(
            r.seconds[1].corrected.max().abs_diff(1_000_000) < 10_000,
            "per second: 2 significant digits"
        );
        // A request never sent has no latency, but counts as an error.
        assert_eq!(r.seconds[2].corrected.len(), 0);
        assert_eq!(r.total.errors(), 3);
        // Issue 17: what the target answered (any status) apart from what was never sent.
        assert_eq!((r.total.answered(), r.total.not_started()), (2, 1));
        let mut sum = Second::default();
        r.seconds.iter().for_each(|s| sum.add(s));
        assert_eq!((sum.requests(), sum.errors()), (r.total.requests(), r.total.errors()));
        assert_eq!(r.max_lag, ms(3000));
    }
}
