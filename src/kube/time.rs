//! Wall-clock timestamps in the apiserver's `Time` form (RFC 3339, UTC, seconds): the plugin's
//! core/v1 Events write them, the installer reads a TokenRequest's expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Now as `Time`: RFC 3339 UTC with seconds (`firstTimestamp` of Events).
pub fn now() -> String {
    rfc3339(since_epoch().as_secs())
}

/// Seconds since the epoch of a `Time` as the apiserver writes it (`2024-02-29T01:01:01Z`,
/// fractions and offsets accepted); `None` if it is not one.
pub fn parse(text: &str) -> Option<u64> {
    let (date, time) = text.trim().split_once(['T', 't'])?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => return None,
    };
    let offset_secs = match offset {
        "Z" | "z" => 0,
        _ => {
            let (h, m) = offset[1..].split_once(':')?;
            let secs = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
            if offset.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
    };
    let mut hms = clock.splitn(3, ':');
    let (h, m) = (hms.next()?.parse::<i64>().ok()?, hms.next()?.parse::<i64>().ok()?);
    let s = hms.next()?.split('.').next()?.parse::<i64>().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // H. Hinnant's days-from-civil, the inverse of [`rfc3339`]'s.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s - offset_secs).ok()
}

/// H. Hinnant's days-to-civil algorithm.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_709_164_800 + 3661), "2024-02-29T01:01:01Z");
    }

    #[test]
    fn parsed_timestamps_are_the_formatted_ones() {
        for secs in [0, 951_782_400, 1_709_164_800 + 3661, 4_102_444_799] {
            assert_eq!(super::parse(&super::rfc3339(secs)), Some(secs));
            let micros = super::rfc3339(secs).replace('Z', ".000007Z");
            assert_eq!(super::parse(&micros), Some(secs));
        }
        assert_eq!(super::parse("2024-02-29T02:01:01+01:00"), Some(1_709_164_800 + 3661));
        for bad in ["", "2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29T01:01:01", "x-y-zT1:2:3Z"] {
            assert_eq!(super::parse(bad), None, "{bad}");
        }
    }
}
