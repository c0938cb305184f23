//! tc-like units for the command line: `100ms`, `10mbit`, `5%`.

use std::time::Duration;

/// `1.5s`, `100ms`, `250us`, `2m`; a bare number is milliseconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (like 100ms, 2s, 500us)"))?;
    let secs = match unit {
        "" | "ms" | "msec" => v / 1e3,
        "us" | "usec" => v / 1e6,
        "s" | "sec" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown time unit {unit:?} (use us, ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Bits per second, tc style: `10mbit`, `1gbit`, `500kbit`, `100bit`; `Xbps` is bytes/s.
pub fn rate(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a rate (like 10mbit)"))?;
    let mult = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(format!("{s:?}: unknown rate unit {unit:?} (use bit, kbit, mbit, gbit, or bps for bytes/s)")),
    };
    Ok((v * mult).round() as u64)
}

/// `5%` or `5`: a percentage (validated by the agent).
pub fn percent(s: &str) -> Result<f64, String> {
    s.trim().trim_end_matches('%').parse().map_err(|_| format!("{s:?} is not a percentage (like 5%)"))
}

/// `1500`, `15k`, `2m`: bytes.
pub fn size(s: &str) -> Result<u32, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.strip_suffix(['k', 'm']) {
        Some(n) if s.ends_with('k') => (n, 1024),
        Some(n) => (n, 1024 * 1024),
        None => (s.trim_end_matches('b'), 1),
    };
    num.parse::<u32>().map(|v| v * mult).map_err(|_| format!("{s:?} is not a size (like 15k)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tc_units() {
        assert_eq!(duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("250us").unwrap(), Duration::from_micros(250));
        assert!(duration("-5ms").is_err());
        assert!(duration("5parsecs").is_err());
        assert_eq!(rate("10mbit").unwrap(), 10_000_000);
        assert_eq!(rate("1Gbit").unwrap(), 1_000_000_000);
        assert_eq!(rate("1mbps").unwrap(), 8_000_000);
        assert!(rate("fast").is_err());
        assert_eq!(percent("5%").unwrap(), 5.0);
        assert_eq!(size("15k").unwrap(), 15360);
    }
}
