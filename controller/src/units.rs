//! tc-like units for the command line: `100ms`, `10mbit`, `5%`.

use std::time::Duration;

/// The longest duration any flag or scenario field takes: a year. Longer values are a
/// typo or an attack, and bounding them keeps every sum and conversion in range.
pub const MAX_DURATION: Duration = Duration::from_hours(8760);

/// `1.5s`, `100ms`, `250us`, `2m`, and `0`; any other number needs its unit (issue 32:
/// `--delay 100` is microseconds to tc, milliseconds here once, and `--lease 60` was read
/// as 60 ms). At most a year.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 =
        num.parse().map_err(|_| format!("{s:?} is not a duration (like 100ms, 2s, 500us)"))?;
    if unit.is_empty() && v != 0.0 {
        return Err(format!("{s:?} has no unit: write {s}ms, {s}s or {s}us"));
    }
    let secs = match unit {
        "" | "ms" | "msec" => v / 1e3,
        "us" | "usec" => v / 1e6,
        "s" | "sec" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown time unit {unit:?} (use us, ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{} is not a duration", faultline_proto::quote(s)));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("{} is more than a year", faultline_proto::quote(s))),
    }
}

/// A duration as a user would write it back: `1s`, `500ms`, `2m`, `250us`.
pub fn show_duration(d: Duration) -> String {
    let us = d.as_micros();
    match us {
        0 => "0s".to_owned(),
        _ if us.is_multiple_of(60_000_000) => format!("{}m", us / 60_000_000),
        _ if us.is_multiple_of(1_000_000) => format!("{}s", us / 1_000_000),
        _ if us.is_multiple_of(1000) => format!("{}ms", us / 1000),
        _ => format!("{us}us"),
    }
}

/// A lease: a duration of at most a week (what the agents and the controller accept),
/// always with its unit (`--lease 60` meant as a minute once ended the fault 60 ms later
/// without a word); not even `0`, which would end it at once.
pub fn lease(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{} has no unit: write {t}s, {t}m or {t}ms (a lease without one would be read as milliseconds)",
            faultline_proto::quote(s)
        ));
    }
    let d = duration(s)?;
    if d > faultline_proto::MAX_LEASE {
        return Err(format!(
            "{} is longer than a lease may be ({} s, a week)",
            faultline_proto::quote(s),
            faultline_proto::MAX_LEASE.as_secs()
        ));
    }
    Ok(d)
}

/// Bits per second, tc style: `10mbit`, `1gbit`, `500kbit`, `100bit`; `Xbps` is bytes/s.
pub fn rate(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{} is not a rate (like 10mbit)", faultline_proto::quote(&s)))?;
    let mult = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(format!(
                "{}: unknown rate unit (use bit, kbit, mbit, gbit, or bps for bytes/s)",
                faultline_proto::quote(&s)
            ));
        }
    };
    let bps = v * mult;
    // Up to 1 Tbit/s: far beyond any NIC, and exact in a u64.
    if !(bps.is_finite() && (0.0..=1e12).contains(&bps)) {
        return Err(format!("{} is not a rate between 0 and 1000gbit", faultline_proto::quote(&s)));
    }
    Ok(bps.round() as u64)
}

/// `5%` or `5`: a percentage, 0 to 100 (the agent checks again).
pub fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (like 5%)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v)
}

/// `1500`, `15k`, `2m`, `1g` (binary multiples): bytes.
pub fn bytes(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let t = s.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.strip_suffix(['k', 'm', 'g']) {
        Some(n) if t.ends_with('k') => (n, 1u64 << 10),
        Some(n) if t.ends_with('m') => (n, 1 << 20),
        Some(n) => (n, 1 << 30),
        None => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (like 15k or 512m)"))
}

/// A size that fits a 32-bit field (burst).
pub fn size(s: &str) -> Result<u32, String> {
    bytes(s).and_then(|v| u32::try_from(v).map_err(|_| format!("{s:?} is too large (at most 4g)")))
}

/// `9`, `KILL` or `SIGKILL`.
pub fn signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => {
            return Err(format!(
                "{s:?} is not a signal (a number, or HUP INT QUIT ABRT KILL USR1 SEGV USR2 TERM CONT STOP)"
            ));
        }
    };
    Ok(n)
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
        // Issue 32: every number but 0 needs its unit.
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        let e = duration("100").unwrap_err();
        assert!(e.contains("no unit") && e.contains("100ms"), "{e}");
        assert!(duration("1.5").is_err());
        assert_eq!(rate("10mbit").unwrap(), 10_000_000);
        assert_eq!(rate("1Gbit").unwrap(), 1_000_000_000);
        assert_eq!(rate("1mbps").unwrap(), 8_000_000);
        assert!(rate("fast").is_err());
        assert_eq!(percent("5%").unwrap(), 5.0);
        assert_eq!(size("15k").unwrap(), 15360);
        assert!(size("8g").is_err());
        assert!(size("99999999999m").is_err());
        assert_eq!(bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(signal("term").unwrap(), 15);
        assert_eq!(signal("SIGKILL").unwrap(), 9);
        assert!(signal("SIGFOO").is_err());
    }

    #[test]
    fn huge_numbers_are_refused_not_wrapped() {
        assert!(duration("99999999999999999999999s").is_err());
        assert!(duration("18446744073709551615ms").is_err());
        assert!(duration("1e400s").is_err());
        assert_eq!(
            duration("365d").unwrap_err(),
            "\"365d\": unknown time unit \"d\" (use us, ms, s, m, h)"
        );
        assert!(lease("8d").is_err() && lease("169h").is_err() && lease("168h").is_ok());
        // Issue 32: a bare number is refused, saying which units there are.
        let e = lease("60").unwrap_err();
        assert!(e.contains("no unit") && e.contains("60s"), "{e}");
        assert!(lease(" 1.5 ").is_err() && lease("60s").is_ok() && lease("60ms").is_ok());
        assert!(rate("99999999999999999999gbit").is_err());
        assert!(rate("nan").is_err());
    }
}
