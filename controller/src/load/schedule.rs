//! When requests should start: open-loop arrival schedules. Pure: offsets from the
//! start of the run, computed ahead of sending, so a slow system under test cannot
//! slow the schedule (the mistake behind coordinated omission).

use std::time::Duration;

/// A request rate over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// `rate` requests per second, evenly spaced.
    Constant { rate: f64 },
    /// Linear stages from `from`: each goes to its rate over its duration, then holds the last rate.
    Ramp { from: f64, stages: Vec<(f64, Duration)> },
    /// `base`, jumping to `peak` at `at` for `length`.
    Spike { base: f64, peak: f64, at: Duration, length: Duration },
    /// `requests` at once every `every`.
    Burst { requests: u32, every: Duration },
    /// Poisson arrivals: exponential gaps with mean 1/rate.
    Poisson { rate: f64 },
    /// `mean + amplitude * sin(2πt/period)`.
    Sine { mean: f64, amplitude: f64, period: Duration },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {problem}")]
pub struct ShapeError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ShapeError {
    ShapeError { field, problem: problem.into() }
}

fn rate(field: &'static str, s: &str) -> Result<f64, ShapeError> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad(field, format!("{s:?} is not a rate (requests per second)")))?;
    if !(r.is_finite() && r >= 0.0) {
        return Err(bad(field, format!("{s:?}: a rate is a number >= 0")));
    }
    Ok(r)
}

fn duration(field: &'static str, s: &str) -> Result<Duration, ShapeError> {
    let d = crate::units::duration(s.trim()).map_err(|e| bad(field, e))?;
    if d.is_zero() {
        return Err(bad(field, format!("{s:?}: must be longer than 0")));
    }
    Ok(d)
}

impl Shape {
    /// Parses `--shape`, with `--rate` as the constant, Poisson, sine-mean or base rate:
    /// `constant`, `poisson`, `ramp:FROM..TO/DUR[,..TO/DUR]`, `spike:PEAK@AT/LEN`,
    /// `burst:N/EVERY`, `sine:AMPLITUDE/PERIOD`.
    pub fn parse(spec: &str, base_rate: Option<f64>) -> Result<Self, ShapeError> {
        let (kind, args) = spec.split_once(':').unwrap_or((spec, ""));
        let need_rate = || match base_rate {
            None => Err(bad("--rate", format!("required with --shape {kind}"))),
            Some(r) if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) => Err(bad(
                "--rate",
                format!("{r} is not a rate in (0, 10000000] requests per second"),
            )),
            Some(r) => Ok(r),
        };
        let shape = match kind {
            "constant" => Self::Constant { rate: need_rate()? },
            "poisson" => Self::Poisson { rate: need_rate()? },
            "ramp" => {
                // 0..500/30s,500..100/10s : each stage FROM..TO/DUR; FROM of a later stage must
                // continue the previous one, so only the first FROM matters.
                let mut from = None;
                let mut stages = Vec::new();
                for st in args.split(',').filter(|s| !s.trim().is_empty()) {
                    let (range, dur) = st.split_once('/').ok_or_else(|| {
                        bad("--shape", format!("ramp stage {st:?} is not FROM..TO/DURATION"))
                    })?;
                    let (a, b) = range.split_once("..").ok_or_else(|| {
                        bad("--shape", format!("ramp stage {st:?} is not FROM..TO/DURATION"))
                    })?;
                    let (a, b) = (rate("--shape", a)?, rate("--shape", b)?);
                    match from {
                        None => from = Some(a),
                        Some(_)
                            if stages.last().is_some_and(|(to, _): &(f64, Duration)| {
                                (*to - a).abs() > 1e-9
                            }) =>
                        {
                            return Err(bad(
                                "--shape",
                                format!(
                                    "ramp stage {st:?} starts at {a}, but the previous stage ended at {}",
                                    stages.last().map_or(0.0, |s| s.0)
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                    stages.push((b, duration("--shape", dur)?));
                }
                let Some(from) = from else {
                    return Err(bad("--shape", "ramp needs at least one stage FROM..TO/DURATION"));
                };
                Self::Ramp { from, stages }
            }
            "spike" => {
                let (peak, rest) = args
                    .split_once('@')
                    .ok_or_else(|| bad("--shape", "spike is spike:PEAK@AT/LENGTH"))?;
                let (at, len) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("--shape", "spike is spike:PEAK@AT/LENGTH"))?;
                let at = crate::units::duration(at.trim()).map_err(|e| bad("--shape", e))?;
                Self::Spike {
                    base: need_rate()?,
                    peak: rate("--shape", peak)?,
                    at,
                    length: duration("--shape", len)?,
                }
            }
            "burst" => {
                let (n, every) = args
                    .split_once('/')
                    .ok_or_else(|| bad("--shape", "burst is burst:REQUESTS/EVERY"))?;
                let requests: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad("--shape", format!("burst size {n:?} is not a whole number > 0"))
                })?;
                Self::Burst { requests, every: duration("--shape", every)? }
            }
            "sine" => {
                let (amp, period) = args
                    .split_once('/')
                    .ok_or_else(|| bad("--shape", "sine is sine:AMPLITUDE/PERIOD"))?;
                let mean = need_rate()?;
                let amplitude = rate("--shape", amp)?;
                if amplitude > mean {
                    return Err(bad(
                        "--shape",
                        format!(
                            "sine amplitude {amplitude} exceeds the mean rate {mean}: the rate would go negative"
                        ),
                    ));
                }
                Self::Sine { mean, amplitude, period: duration("--shape", period)? }
            }
            other => {
                return Err(bad(
                    "--shape",
                    format!(
                        "unknown shape {other:?} (constant, poisson, ramp, spike, burst, sine)"
                    ),
                ));
            }
        };
        if kind != "ramp"
            && kind != "burst"
            && kind != "spike"
            && kind != "sine"
            && !args.is_empty()
        {
            return Err(bad("--shape", format!("{kind} takes no arguments (the rate is --rate)")));
        }
        Ok(shape)
    }

    /// The intended rate at `t` seconds (for deterministic shapes).
    pub fn rate_at(&self, t: f64) -> f64 {
        match self {
            Self::Constant { rate } | Self::Poisson { rate } => *rate,
            Self::Ramp { from, stages } => {
                let (mut start, mut level) = (0.0, *from);
                for (to, d) in stages {
                    let d = d.as_secs_f64();
                    if t < start + d {
                        return level + (to - level) * (t - start) / d;
                    }
                    start += d;
                    level = *to;
                }
                level
            }
            Self::Spike { base, peak, at, length } => {
                if t >= at.as_secs_f64() && t < (*at + *length).as_secs_f64() {
                    *peak
                } else {
                    *base
                }
            }
            Self::Burst { requests, every } => f64::from(*requests) / every.as_secs_f64(),
            Self::Sine { mean, amplitude, period } => {
                mean + amplitude * (std::f64::consts::TAU * t / period.as_secs_f64()).sin()
            }
        }
    }

    /// Every intended start within `length`, in order.
    pub fn arrivals(&self, length: Duration, seed: u64) -> Vec<Duration> {
        let end = length.as_secs_f64();
        let mut out = Vec::new();
        match self {
            Self::Burst { requests, every } => {
                let mut t = Duration::ZERO;
                while t < length {
                    out.extend(std::iter::repeat_n(t, *requests as usize));
                    t += *every;
                }
            }
            Self::Poisson { rate } if *rate > 0.0 => {
                let mut rng = seed | 1;
                let mut t = 0.0;
                loop {
                    // xorshift64*, then a uniform in (0, 1]: -ln(u)/rate is an exponential gap.
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    let u = ((rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 1.0)
                        / (1u64 << 53) as f64;
                    t += -u.ln() / rate;
                    if t >= end {
                        break;
                    }
                    out.push(Duration::from_secs_f64(t));
                }
            }
            Self::Poisson { .. } => {}
            _ => {
                // The k-th request starts where the integral of the rate reaches k (k = 0, 1, ...):
                // exact for constant rates, and within a 1 ms step of it for the others.
                const STEP: f64 = 0.001;
                let (mut t, mut n) = (0.0_f64, 0.0_f64);
                let mut next = 0.0_f64;
                while t < end {
                    let dt = STEP.min(end - t);
                    let r = self.rate_at(t + dt / 2.0);
                    let n2 = n + r * dt;
                    // The epsilon keeps float drift from adding a request at the very end.
                    while next < n2 - 1e-6 && r > 0.0 {
                        out.push(Duration::from_secs_f64(t + (next - n) / r));
                        next += 1.0;
                    }
                    t += dt;
                    n = n2;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_exact() {
        let a = Shape::Constant { rate: 200.0 }.arrivals(s(10.0), 1);
        assert_eq!(a.len(), 2000);
        assert_eq!(a[0], Duration::ZERO);
        let gaps: Vec<f64> =
            a.windows(2).map(|w| w[1].checked_sub(w[0]).unwrap().as_secs_f64()).collect();
        assert!(gaps.iter().all(|g| (g - 0.005).abs() < 1e-6), "{:?}", &gaps[..5]);
    }

    #[test]
    fn a_ramp_sends_the_area_under_its_rate() {
        // 0 -> 500 over 30 s: 7500 requests; then 500 -> 100 over 10 s: 3000.
        let shape = Shape::parse("ramp:0..500/30s,500..100/10s", None).unwrap();
        let a = shape.arrivals(s(40.0), 1);
        assert!((a.len() as i64 - 10_500).abs() <= 1, "{}", a.len());
        let first_half = a.iter().filter(|t| t.as_secs_f64() < 15.0).count();
        assert!((first_half as i64 - 1875).abs() <= 1, "{first_half}"); // 15 s * 250/2
        // Holds the last rate after the stages.
        assert!((shape.rate_at(45.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn spike_burst_and_sine_counts() {
        let spike = Shape::parse("spike:1000@2s/1s", Some(100.0)).unwrap();
        assert_eq!(spike.arrivals(s(5.0), 1).len(), 100 * 4 + 1000);
        let burst = Shape::parse("burst:50/500ms", None).unwrap();
        let a = burst.arrivals(s(2.0), 1);
        assert_eq!(a.len(), 200);
        assert_eq!(a.iter().filter(|t| **t == s(0.5)).count(), 50);
        // A whole number of periods sends mean * length.
        let sine = Shape::parse("sine:50/2s", Some(100.0)).unwrap();
        assert!((sine.arrivals(s(4.0), 1).len() as i64 - 400).abs() <= 1);
        let quarter = sine.arrivals(s(0.5), 1).len() as f64; // rate above the mean
        assert!(quarter > 50.0 + 10.0, "{quarter}");
    }

    #[test]
    fn poisson_gaps_are_exponential() {
        let rate = 1000.0;
        let a = Shape::Poisson { rate }.arrivals(s(60.0), 42);
        let n = a.len() as f64;
        // Count: Poisson(60000), sd 245; 4 sd.
        assert!((n - 60_000.0).abs() < 4.0 * 245.0, "{n}");
        let gaps: Vec<f64> =
            a.windows(2).map(|w| w[1].checked_sub(w[0]).unwrap().as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: sd equals the mean (coefficient of variation 1; evenly spaced would be 0).
        assert!((mean - 0.001).abs() < 0.001 * 0.02, "mean gap {mean}");
        assert!((var.sqrt() / mean - 1.0).abs() < 0.03, "cv {}", var.sqrt() / mean);
        // Kolmogorov-Smirnov against 1 - e^(-rate t): D < 1.63/sqrt(n) at the 1 % level.
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let m = sorted.len() as f64;
        let d = sorted
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let f = 1.0 - (-rate * g).exp();
                (f - i as f64 / m).abs().max(((i + 1) as f64 / m - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.63 / m.sqrt(), "KS D = {d}, limit {}", 1.63 / m.sqrt());
        // Seeds give different but equally valid schedules.
        assert_ne!(
            Shape::Poisson { rate }.arrivals(s(1.0), 1),
            Shape::Poisson { rate }.arrivals(s(1.0), 2)
        );
    }

    #[test]
    fn bad_shapes_name_the_field() {
        assert_eq!(Shape::parse("poisson", None).unwrap_err().field, "--rate");
        assert!(Shape::parse("ramp:0..x/1s", None).unwrap_err().problem.contains("\"x\""));
        assert!(
            Shape::parse("ramp:0..10/1s,20..30/1s", None)
                .unwrap_err()
                .problem
                .contains("previous stage ended at 10")
        );
        assert!(Shape::parse("sine:200/1s", Some(100.0)).unwrap_err().problem.contains("negative"));
        assert!(Shape::parse("zigzag", Some(1.0)).unwrap_err().problem.contains("unknown shape"));
        assert!(Shape::parse("burst:0/1s", None).is_err());
        assert!(Shape::parse("constant:5", Some(1.0)).is_err());
    }
}
