//! faultline's wire types, and the transport every side uses to carry them. Domain
//! types live with the components; these only travel.

pub mod doctor;
pub mod fuzzing;
pub mod identity;
pub mod listener;
pub mod service;
pub mod transport;

pub mod agent {
    // Generated: its doc comments are the .proto's, not written for rustdoc lints.
    #[allow(clippy::pedantic)]
    pub mod v1 {
        include!("gen/faultline.agent.v1.rs");
    }
}

pub mod controller {
    #[allow(clippy::pedantic)]
    pub mod v1 {
        include!("gen/faultline.controller.v1.rs");
    }
}

/// Kubernetes' Container Runtime Interface (kubernetes/cri-api `runtime.v1`, verbatim), a
/// client only: how an agent finds a node's pods through containerd or CRI-O.
pub mod cri {
    #[allow(clippy::pedantic, clippy::all)]
    pub mod v1 {
        include!("gen/runtime.v1.rs");
    }
}

impl agent::v1::fault_spec::Kind {
    /// The kind's name as the CLI, scenarios, the Web API, events, logs and metrics labels
    /// spell it: one spelling, the `fault apply` subcommand's (`cpu-stress`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Netem(_) => "netem",
            Self::Bandwidth(_) => "bandwidth",
            Self::Drop(_) => "drop",
            Self::Partition(_) => "partition",
            Self::Freeze(_) => "freeze",
            Self::Kill(_) => "kill",
            Self::Restart(_) => "restart",
            Self::CpuStress(_) => "cpu-stress",
            Self::MemoryPressure(_) => "memory-pressure",
            Self::CpuThrottle(_) => "cpu-throttle",
        }
    }
}

impl agent::v1::Histogram {
    /// The upper bound, in microseconds, of the log2 bucket holding quantile `q` (bucket
    /// `b` holds `[2^b, 2^(b+1))` µs); None when empty. The one reading of the kernel's
    /// latency histograms (the CLI's table, the OTLP export). An agent's answer may carry
    /// any number of buckets: past 63 the bound saturates instead of overflowing.
    #[must_use]
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let want = (self.count as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, n) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= want {
                return Some(
                    u32::try_from(b + 1).ok().and_then(|s| 1u64.checked_shl(s)).unwrap_or(u64::MAX),
                );
            }
        }
        None
    }

    /// The mean in microseconds (0 when empty).
    #[must_use]
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum_us as f64 / self.count as f64 }
    }
}

/// Milliseconds since the Unix epoch (0 before it): how every side reports wall time.
#[must_use]
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The id the controller answers a one-shot fault (kill, restart) with: it acted once,
/// holds nothing and has no controller id to revert by.
pub const ONE_SHOT_ID: &str = "done";

/// A gRPC status code as a person reads it (the CLI's errors, events, a run's errors):
/// what happened, never the code's name (`InvalidArgument` means nothing to an SRE).
#[must_use]
pub fn code_in_words(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "done",
        Code::Cancelled => "cancelled",
        Code::Unknown => "failed",
        Code::InvalidArgument => "invalid request",
        Code::DeadlineExceeded => "timed out",
        Code::NotFound => "not found",
        Code::AlreadyExists => "conflict",
        Code::PermissionDenied => "not allowed",
        Code::ResourceExhausted => "too many requests",
        Code::FailedPrecondition => "not possible here",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not supported by this version",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data lost",
        Code::Unauthenticated => "not authenticated",
    }
}

/// A refusal as a person reads it: "not found: target: no agent ...".
#[must_use]
pub fn status_in_words(e: &tonic::Status) -> String {
    format!("{}: {}", code_in_words(e.code()), e.message())
}

/// Now, in milliseconds since the Unix epoch.
#[must_use]
pub fn now_unix_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

/// A Prometheus label value, escaped as the text format wants it.
#[must_use]
pub fn prometheus_escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The causes under an error, outermost first (a TLS refusal hides two levels down).
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

/// The longest lease anything accepts (CLI, scenario files, controller, agent): a week.
pub const MAX_LEASE: std::time::Duration = std::time::Duration::from_hours(168);

/// A caller's input inside an error message: Debug-quoted and cut to a short prefix, so
/// an error about a 100 KB value stays small (and well inside gRPC's message limits).
#[must_use]
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &s[..end], s.len())
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_are_short() {
        assert_eq!(super::quote("eth0"), "\"eth0\"");
        let long = "é".repeat(100_000);
        let q = super::quote(&long);
        assert!(q.len() < 100 && q.ends_with("(200000 bytes)"), "{q}");
    }

    #[test]
    fn histogram_quantiles_are_bucket_bounds_and_hostile_sizes_saturate() {
        use super::agent::v1::Histogram;
        // 1 sample in [1, 2) µs, 98 in [4, 8) µs, 1 in [1024, 2048) µs.
        let mut buckets = vec![0u64; 32];
        buckets[0] = 1;
        buckets[2] = 98;
        buckets[10] = 1;
        let h = Histogram { buckets, count: 100, sum_us: 1 + 98 * 5 + 1500 };
        assert_eq!(h.quantile_bound_us(0.01), Some(2));
        assert_eq!(h.quantile_bound_us(0.5), Some(8));
        assert_eq!(h.quantile_bound_us(0.99), Some(8));
        assert_eq!(h.quantile_bound_us(1.0), Some(2048));
        assert!((h.mean_us() - 19.91).abs() < 1e-9);
        assert_eq!(Histogram::default().quantile_bound_us(0.5), None);
        assert_eq!(Histogram::default().mean_us(), 0.0);
        // An answer with 100 buckets, the last one full: no overflow, a saturated bound.
        let mut wide = vec![0u64; 100];
        wide[99] = u64::MAX;
        let h = Histogram { buckets: wide, count: 5, sum_us: 0 };
        assert_eq!(h.quantile_bound_us(0.5), Some(u64::MAX));
    }
}
