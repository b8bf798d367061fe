//! Kareo's dates.
//!
//! Kareo sends dates in several forms and without an offset in its list responses
//! (`9/23/2026 1:00:00 PM`, `2026-09-23`, `2026-09-23T13:00:00`, `2026-09-23T13:00:00Z`, …).
//! A date without an offset is read in the practice's IANA time zone:
//!
//! - a local time that happens twice (the hour after a DST fall-back) is read as the
//!   **earlier** instant, so a high-water mark taken from it never skips the later one;
//! - a local time that never happens (the hour skipped by a DST spring-forward) is read as the
//!   first instant after the gap.
//!
//! What this crate sends:
//! - filter members (`FromLastModifiedDate`, … all `xs:string`): `yyyy-MM-ddTHH:mm:ss` in the
//!   practice's local time, no offset ([`format_filter`]) — .NET's `DateTime.Parse` reads it
//!   unambiguously, and it keeps the time of day, which `M/d/yyyy` would drop;
//! - `xs:dateTime` members: ISO 8601 in UTC with milliseconds, `2020-01-24T22:00:00.000Z`, the
//!   form Kareo's guide shows ([`format_datetime`]).

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;

/// A date string that is none of the forms Kareo is known to send. Holds no value: the text
/// could be PHI (a birth date).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Kareo date ({len} characters; expected M/d/yyyy[ h:mm:ss AM], yyyy-MM-dd[THH:mm:ss[.fff][Z|±hh:mm]] or M-d-yyyy)")]
pub struct DateError {
    len: usize,
}

/// Parses any of Kareo's date forms. Forms without an offset are read in `tz`.
pub fn parse(s: &str, tz: Tz) -> Result<DateTime<Utc>, DateError> {
    let t = s.trim();
    let err = || DateError {
        len: s.chars().count(),
    };
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(dt) = DateTime::<FixedOffset>::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    // ISO with an offset but without seconds or with a space separator.
    for f in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(dt) = DateTime::<FixedOffset>::parse_from_str(t, f) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    parse_local(t).map(|n| localize(n, tz)).ok_or_else(err)
}

/// Parses a form without an offset into a naive local date-time.
pub fn parse_local(t: &str) -> Option<NaiveDateTime> {
    const DATETIME: [&str; 9] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%m/%d/%Y %I:%M:%S %p",
        "%m/%d/%Y %I:%M %p",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M",
        "%m-%d-%Y %I:%M:%S %p",
        "%m-%d-%Y %H:%M:%S",
    ];
    const DATE: [&str; 3] = ["%Y-%m-%d", "%m/%d/%Y", "%m-%d-%Y"];
    let t = t.trim();
    for f in DATETIME {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Some(n);
        }
    }
    for f in DATE {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return Some(d.and_time(NaiveTime::MIN));
        }
    }
    None
}

/// Reads a local date-time in `tz`: the earlier instant when it happens twice, with the
/// pre-gap offset when it never happens.
pub fn localize(n: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&n) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Inside a spring-forward gap: read it with the offset in force just before the
            // gap, as a clock that was not moved forward would show it.
            let before = tz
                .from_local_datetime(&(n - Duration::hours(6)))
                .earliest()
                .map(|t| t.offset().fix())
                .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
            Utc.from_utc_datetime(&(n - before))
        }
    }
}

/// Formats an instant for a filter member: practice-local `yyyy-MM-ddTHH:mm:ss`.
pub fn format_filter(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Formats an instant for an `xs:dateTime` member: `2020-01-24T22:00:00.000Z`.
pub fn format_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Formats an instant the way Kareo's list responses show dates: practice-local
/// `M/d/yyyy h:mm:ss AM` (used by the simulator).
pub fn format_response(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%-m/%-d/%Y %-I:%M:%S %p")
        .to_string()
}

/// Is this a valid `xs:dateTime` lexical form (ISO 8601, optional fraction and offset)?
pub fn is_xs_datetime(s: &str) -> bool {
    DateTime::<FixedOffset>::parse_from_rfc3339(s).is_ok()
        || NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York as NY;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_documented_form_parses() {
        let cases = [
            ("9/23/2026 1:00:00 PM", "2026-09-23T17:00:00Z"),
            ("09/23/2026 01:00:00 PM", "2026-09-23T17:00:00Z"),
            ("9/23/2026 12:05:00 AM", "2026-09-23T04:05:00Z"),
            ("9/23/2026", "2026-09-23T04:00:00Z"),
            ("2026-09-23", "2026-09-23T04:00:00Z"),
            ("3-1-2021", "2021-03-01T05:00:00Z"),
            ("2026-09-23T13:00:00", "2026-09-23T17:00:00Z"),
            ("2026-09-23T13:00:00.123", "2026-09-23T17:00:00.123Z"),
            ("2026-09-23T13:00:00Z", "2026-09-23T13:00:00Z"),
            ("2026-09-23T13:00:00.000Z", "2026-09-23T13:00:00Z"),
            ("2026-09-23T13:00:00-07:00", "2026-09-23T20:00:00Z"),
            ("2026-09-23 13:00:00", "2026-09-23T17:00:00Z"),
            ("  2026-09-23T13:00:00Z ", "2026-09-23T13:00:00Z"),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input, NY).unwrap(), utc(want), "{input}");
        }
    }

    #[test]
    fn garbage_is_an_error_that_hides_the_value() {
        for bad in [
            "",
            "yesterday",
            "13/45/2026",
            "2026-02-30",
            "9/23/2026 25:00:00",
        ] {
            let e = parse(bad, NY).unwrap_err();
            assert!(!e.to_string().contains(bad) || bad.is_empty());
        }
    }

    #[test]
    fn fall_back_hour_reads_as_the_earlier_instant() {
        // 2026-11-01 01:30 happens twice in New York: EDT (05:30Z) then EST (06:30Z).
        assert_eq!(
            parse("11/1/2026 1:30:00 AM", NY).unwrap(),
            utc("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn spring_forward_gap_reads_with_the_offset_before_it() {
        // 2026-03-08 02:30 never happens in New York: clocks jump from 02:00 EST to 03:00 EDT.
        assert_eq!(
            parse("3/8/2026 2:30:00 AM", NY).unwrap(),
            utc("2026-03-08T07:30:00Z")
        );
        assert_eq!(
            parse("3/8/2026 3:00:00 AM", NY).unwrap(),
            utc("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            parse("3/8/2026 1:59:59 AM", NY).unwrap(),
            utc("2026-03-08T06:59:59Z")
        );
    }

    #[test]
    fn formats() {
        let t = utc("2026-09-23T17:00:00Z");
        assert_eq!(format_filter(t, NY), "2026-09-23T13:00:00");
        assert_eq!(format_datetime(t), "2026-09-23T17:00:00.000Z");
        assert_eq!(format_response(t, NY), "9/23/2026 1:00:00 PM");
        assert!(is_xs_datetime("2020-01-24T22:00:00.000Z"));
        assert!(is_xs_datetime("2020-01-24T22:00:00"));
        assert!(!is_xs_datetime("1/24/2020"));
    }

    proptest! {
        // Any instant survives the response form and the filter form, in zones with and without
        // DST, except the second pass of a fall-back hour, which reads as the first (by design).
        #[test]
        fn formats_round_trip(secs in 0i64..4_102_444_800, zone in 0usize..4) {
            let tz = [chrono_tz::UTC, NY, chrono_tz::Australia::Lord_Howe, chrono_tz::Asia::Kolkata][zone];
            let t = Utc.timestamp_opt(secs, 0).unwrap();
            for s in [format_response(t, tz), format_filter(t, tz)] {
                let back = parse(&s, tz).unwrap();
                prop_assert!(back <= t && t - back <= Duration::hours(1), "{s}");
                let local = t.with_timezone(&tz).naive_local();
                prop_assert_eq!(back.with_timezone(&tz).naive_local(), local);
            }
            prop_assert_eq!(parse(&format_datetime(t), tz).unwrap(), t);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s, NY);
        }
    }
}
