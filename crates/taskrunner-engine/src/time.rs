//! [`Timestamp`]: milliseconds since the Unix epoch (UTC), passed in by the driver.
//!
//! The engine never reads a clock. RFC 3339 formatting and parsing are pure arithmetic
//! (days ↔ civil date, after Howard Hinnant's `civil_from_days`), so no date library is needed.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Milliseconds since 1970-01-01T00:00:00Z. Serialised as the bare integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self + seconds` (saturating).
    pub fn plus_seconds(self, seconds: u64) -> Timestamp {
        let ms = i64::try_from(seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        Timestamp(self.0.saturating_add(ms))
    }

    /// `2025-12-06T10:00:00Z`, with `.sss` only when the milliseconds are not zero.
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = ms_of_day / 1000;
        let millis = ms_of_day % 1000;
        let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}");
        if millis != 0 {
            out.push_str(&format!(".{millis:03}"));
        }
        out.push('Z');
        out
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; fractions below a millisecond are
    /// truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, Error> {
        let bad = || Error::InvalidTimestamp(text.chars().take(64).collect());
        let b = text.as_bytes();
        if b.len() < 20 || !text.is_ascii() {
            return Err(bad());
        }
        let num = |from: usize, len: usize| -> Result<i64, Error> {
            let s = text.get(from..from + len).ok_or_else(bad)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<i64>().map_err(|_| bad())
        };
        let sep = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return Err(bad());
        }
        let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hh, mi, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || hh > 23 || mi > 59 {
            return Err(bad());
        }
        if ss > 60 {
            return Err(bad());
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            for _ in (i - start)..3 {
                millis *= 10;
            }
        }
        let offset_min = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let m = oh * 60 + om;
                if *sign == b'-' { -m } else { m }
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + hh * 3600 + mi * 60 + ss - offset_min * 60;
        Ok(Timestamp(secs * 1000 + millis))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_765_015_200_000).to_rfc3339(),
            "2025-12-06T10:00:00Z"
        );
        assert_eq!(
            Timestamp(1_765_015_200_123).to_rfc3339(),
            "2025-12-06T10:00:00.123Z"
        );
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t = |s| Timestamp::parse_rfc3339(s).unwrap();
        assert_eq!(t("2025-12-06T10:00:00Z"), Timestamp(1_765_015_200_000));
        assert_eq!(t("2025-12-06T11:00:00+01:00"), Timestamp(1_765_015_200_000));
        assert_eq!(t("2025-12-06T10:00:00.5Z"), Timestamp(1_765_015_200_500));
        assert_eq!(
            t("2025-12-06T10:00:00.123456Z"),
            Timestamp(1_765_015_200_123)
        );
        for bad in [
            "",
            "2025-13-01T00:00:00Z",
            "2025-02-30T00:00:00Z",
            "2025-12-06T10:00:00",
            "2025-12-06T10:00:00.Z",
            "2025-12-06T10:00:00+1:00",
            "2025-12-06T10:00:00Zjunk",
            "２０２５-12-06T10:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999i64) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        }
    }
}
