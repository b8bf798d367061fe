//! The simulator's own reading of Kareo's dates (`kareo-api.md` §6), written apart from the
//! product's own date module, so that a mistake the two shared would show up in a test instead
//! of passing unseen:
//! - filter members (strings) are read as .NET's en-US `DateTime.Parse` would read the forms
//!   Kareo's guides and public requests show — `yyyy-MM-dd`, `M/d/yyyy`, `M-d-yyyy`, each with
//!   an optional time (`h:mm[:ss] AM|PM` or `HH:mm[:ss]`), and ISO `yyyy-MM-ddTHH:mm[:ss[.f]]`
//!   with an optional `Z` or offset; a value without a zone is the practice's wall clock;
//! - list responses write stamps as `M/d/yyyy h:mm:ss AM` on the practice's wall clock (whole
//!   seconds); typed `xs:dateTime` members as ISO 8601 UTC with milliseconds;
//! - `xs:dateTime` request members must have XSD's lexical form.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

/// A list-response stamp: `9/23/2026 1:00:00 PM` on the practice's wall clock.
pub(crate) fn stamp(t: DateTime<Utc>, tz: Tz) -> String {
    let l = t.with_timezone(&tz);
    let (pm, h12) = l.hour12();
    format!(
        "{}/{}/{} {}:{:02}:{:02} {}",
        l.month(),
        l.day(),
        l.year(),
        h12,
        l.minute(),
        l.second(),
        if pm { "PM" } else { "AM" }
    )
}

/// A typed `xs:dateTime` answer: `2026-10-05T14:00:00.000Z`.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The instant a wall-clock time of the practice names: the first of two in the autumn hour
/// that happens twice; a time inside the spring gap is read an hour later (the clock jumped).
pub(crate) fn at_local(n: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    tz.from_local_datetime(&n)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(n + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&n))
}

/// The wall-clock part of a filter value (`None` when it is not one of the forms).
pub(crate) fn read_local(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let d = read_date(date)?;
    let t = match time {
        None | Some("") => NaiveTime::MIN,
        Some(t) => read_time(t)?,
    };
    Some(d.and_time(t))
}

fn read_date(s: &str) -> Option<NaiveDate> {
    let num = |p: &str| {
        (!p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    let parts: Vec<&str> = s.split(['-', '/']).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    if a.len() == 4 && s.contains('-') && !s.contains('/') {
        NaiveDate::from_ymd_opt(num(a)? as i32, num(b)?, num(c)?)
    } else if c.len() == 4 {
        NaiveDate::from_ymd_opt(num(c)? as i32, num(a)?, num(b)?)
    } else {
        None
    }
}

fn read_time(s: &str) -> Option<NaiveTime> {
    let (clock, meridiem) = match s.rsplit_once(' ') {
        Some((c, m)) if m.eq_ignore_ascii_case("AM") || m.eq_ignore_ascii_case("PM") => {
            (c, Some(m.eq_ignore_ascii_case("PM")))
        }
        _ => (s, None),
    };
    let mut it = clock.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let (sec, nanos) = match it.next() {
        None => (0, 0),
        Some(x) => {
            let (whole, frac) = x.split_once('.').unwrap_or((x, ""));
            let frac = if frac.is_empty() {
                0
            } else {
                let digits: String = frac.chars().take(9).collect();
                digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
            };
            (whole.parse().ok()?, frac)
        }
    };
    if it.next().is_some() {
        return None;
    }
    let h = match meridiem {
        None => h,
        Some(_) if !(1..=12).contains(&h) => return None,
        Some(pm) => h % 12 + if pm { 12 } else { 0 },
    };
    NaiveTime::from_hms_nano_opt(h, m, sec, nanos)
}

/// A filter (or other string) date: with a zone it is that instant, without one the
/// practice's wall clock. `None` when it is not one of the forms.
pub(crate) fn read(s: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return read_local(t).map(|n| Utc.from_utc_datetime(&n));
    }
    // A trailing ±hh:mm after an ISO time.
    if s.len() > 6 && s.contains('T') {
        let (body, off) = s.split_at(s.len() - 6);
        let ob = off.as_bytes();
        if (ob[0] == b'+' || ob[0] == b'-') && ob[3] == b':' {
            let hh: i32 = off[1..3].parse().ok()?;
            let mm: i32 = off[4..6].parse().ok()?;
            let secs = (hh * 3600 + mm * 60) * if ob[0] == b'-' { -1 } else { 1 };
            let fixed = FixedOffset::east_opt(secs)?;
            let n = read_local(body)?;
            return fixed
                .from_local_datetime(&n)
                .single()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    read_local(s).map(|n| at_local(n, tz))
}

/// XSD's `xs:dateTime` lexical form: `yyyy-MM-ddTHH:mm:ss(.s+)?(Z|±hh:mm)?`.
pub(crate) fn is_xs_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|x| x.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 19
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &f[n..];
    }
    let zone_ok = match rest.as_bytes() {
        [] | [b'Z'] => true,
        [s, h1, h2, b':', m1, m2] if (*s == b'+' || *s == b'-') => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    };
    zone_ok && NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_kareo_shows_read_as_net_would() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let want = Utc.with_ymd_and_hms(2026, 10, 5, 14, 0, 0).unwrap();
        for s in [
            "2026-10-05T10:00:00",
            "10/5/2026 10:00:00 AM",
            "10/05/2026 10:00 AM",
            "10-5-2026 10:00",
            "2026-10-05 10:00:00",
            "2026-10-05T14:00:00Z",
            "2026-10-05T14:00:00.000Z",
            "2026-10-05T10:00:00-04:00",
        ] {
            assert_eq!(read(s, ny), Some(want), "{s}");
        }
        assert_eq!(
            read("10/5/2026", ny),
            Some(Utc.with_ymd_and_hms(2026, 10, 5, 4, 0, 0).unwrap())
        );
        for bad in [
            "",
            "2026-13-01",
            "13/5/2026",
            "5 Oct 2026",
            "10/5/26",
            "2026-10-05T25:00:00",
        ] {
            assert_eq!(read(bad, ny), None, "{bad}");
        }
        assert_eq!(stamp(want, ny), "10/5/2026 10:00:00 AM");
        assert_eq!(iso(want), "2026-10-05T14:00:00.000Z");
        assert!(is_xs_datetime("2026-10-05T14:00:00.000Z"));
        assert!(is_xs_datetime("1984-03-07T00:00:00"));
        assert!(is_xs_datetime("2026-10-05T10:00:00-04:00"));
        assert!(!is_xs_datetime("10/5/2026 10:00:00 AM"));
        assert!(!is_xs_datetime("2026-10-05"));
        assert!(!is_xs_datetime("2026-10-05T14:00:00.Z"));
    }
}
