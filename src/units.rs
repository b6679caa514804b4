//! Sizes, durations and rates: parsed from the command line and formatted
//! for people, in one place so that every message uses the same units.
//!
//! Sizes on the command line are bytes with an optional `K`, `M` or `G`
//! suffix (powers of 1024). Amounts shown to people are in binary units
//! (`KiB`, `MiB`, ...); rates are always in MB/s (10^6 bytes per second), as
//! `dd` and the benchmark report them.

use std::time::Duration;

/// The low byte of `n`: test data in byte patterns that wrap on purpose.
#[cfg(test)]
pub(crate) fn low_byte(n: usize) -> u8 {
    n.to_le_bytes()[0]
}

/// Parses a byte count with an optional `K`, `M` or `G` suffix (powers of
/// 1024, either case): `4096`, `4K`, `16M`, `1G`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    const HINT: &str =
        "expected a number of bytes with an optional K, M or G suffix, like 4K or 16M";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("not a size ({HINT})"));
    }
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        other => return Err(format!("unknown suffix '{other}' ({HINT})")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "too large to be a size".to_string())?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| "too large to be a size".to_string())?;
    if bytes == 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(bytes)
}

/// Parses a duration: seconds, or a number with an `s`, `m` or `h` suffix.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "expected seconds, or a number with an s, m or h suffix, like 60s or 5m";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration ({HINT})"))?;
    let secs = match suffix {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        other => return Err(format!("unknown suffix '{other}' ({HINT})")),
    }
    .ok_or("too long")?;
    if secs == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Formats a byte count the way `parse_size` reads it, when exact (`4K`,
/// `16M`), else as plain bytes.
pub(crate) fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Longest sample interval accepted.
const MAX_INTERVAL_SECS: f64 = 3600.0;

/// Parses `--interval`: seconds, fractions allowed (`0.5`).
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=MAX_INTERVAL_SECS).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a number of seconds from 0 to {MAX_INTERVAL_SECS}, like 1 or 0.5"
        )),
    }
}

const BINARY_UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count for people, in powers of 1024 with three significant
/// digits: `512 B`, `4 KiB`, `15.9 MiB`, `12.3 GiB`. Exact multiples of a
/// unit show no decimals (`16 MiB`).
pub fn format_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let exp = (((63 - n.leading_zeros()) / 10) as usize).min(BINARY_UNITS.len());
    let unit = 1u64 << (10 * exp);
    if n.is_multiple_of(unit) {
        return format!("{} {}", n / unit, BINARY_UNITS[exp - 1]);
    }
    // Move up while the value would print as 1024 or more of this unit.
    let mut exp = 0;
    let mut x = n as f64;
    while exp < BINARY_UNITS.len() && x >= 1023.5 {
        x /= 1024.0;
        exp += 1;
    }
    let text = if x < 9.995 {
        format!("{x:.2}")
    } else if x < 99.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    };
    format!("{text} {}", BINARY_UNITS[exp - 1])
}

/// A rate in MB/s (10^6 bytes per second) with one decimal: `566.2 MB/s`,
/// `1494.0 MB/s`; the one unit every rate is shown in.
pub(crate) fn format_rate(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second.max(0.0) / 1e6)
}

/// A fill level as a whole percentage, rounded down, so that `100%` means
/// exactly full.
pub(crate) fn format_percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    format!("{}%", (part as u128 * 100 / whole as u128))
}

/// A duration for people: `45s`, `3m 05s`, `1h 02m 03s`, `2d 03h 04m 05s`.
pub(crate) fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").unwrap_err().contains("greater than zero"));
        assert!(parse_size("0K").unwrap_err().contains("greater than zero"));
        assert!(parse_size("4Q").unwrap_err().contains("unknown suffix 'Q'"));
        assert!(
            parse_size("4KB")
                .unwrap_err()
                .contains("unknown suffix 'KB'")
        );
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("-4").unwrap_err().contains("not a size"));
        assert!(parse_size("K").unwrap_err().contains("not a size"));
        assert!(
            parse_size("18446744073709551616")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size("17179869184G")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn parse_durations() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(
            parse_duration("0")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("unknown suffix 'd'")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("99999999999999999h")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn format_size_round_trips() {
        for s in ["4K", "16M", "1G", "100", "1536"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        assert_eq!(format_size(1536 * 1024), "1536K");
    }

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(16 << 20), "16 MiB");
        assert_eq!(format_bytes((159 << 20) / 10), "15.9 MiB");
        assert_eq!(format_bytes(13_207_024_435), "12.3 GiB");
        assert_eq!(format_bytes(123_456_789), "118 MiB");
        // Rounding never shows 1024 of a unit: it moves to the next one.
        assert_eq!(format_bytes((1 << 20) - 1), "1.00 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(0.0), "0.0 MB/s");
        assert_eq!(format_rate(-3.0), "0.0 MB/s");
        assert_eq!(format_rate(49_999.0), "0.0 MB/s");
        assert_eq!(format_rate(50_001.0), "0.1 MB/s");
        assert_eq!(format_rate(540.0 * 1048576.0), "566.2 MB/s");
        assert_eq!(format_rate(1.5e9), "1500.0 MB/s");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(185), "3m 05s");
        assert_eq!(format_duration(3723), "1h 02m 03s");
        assert_eq!(
            format_duration(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2d 03h 04m 05s"
        );
    }

    #[test]
    fn percent_is_rounded_down() {
        assert_eq!(format_percent(0, 16), "0%");
        assert_eq!(format_percent(15_999, 16_000), "99%");
        assert_eq!(format_percent(16, 16), "100%");
        assert_eq!(format_percent(1, 0), "-");
        assert_eq!(format_percent(u64::MAX, u64::MAX), "100%");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        for bad in ["-1", "x", "", "NaN", "inf", "3601"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
