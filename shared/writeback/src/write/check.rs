//! Checking a command's JSON field by field: every problem is collected under its path
//! (`data.service_lines[0].units`) and names what is wrong, never the value.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value};

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem of a command: which field, and what is wrong (never the value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The field's path: `id`, `data.first_name`, `data.service_lines[0].units`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Checks the fields of one JSON object, collecting problems under a path prefix.
pub(crate) struct Checker<'a, 'p> {
    pub(crate) obj: &'a Map<String, Value>,
    prefix: String,
    pub(crate) problems: &'p mut Vec<Problem>,
}

impl<'a, 'p> Checker<'a, 'p> {
    pub(crate) fn new(
        obj: &'a Map<String, Value>,
        prefix: &str,
        problems: &'p mut Vec<Problem>,
    ) -> Self {
        Checker {
            obj,
            prefix: prefix.to_string(),
            problems,
        }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn problem(&mut self, key: &str, what: &str) {
        let field = self.path(key);
        self.problems.push(Problem {
            field,
            problem: what.to_string(),
        });
    }

    /// The raw value: `None` when absent (reported when required); `Some(Null)` passes.
    pub(crate) fn raw(&mut self, key: &str, required: bool) -> Option<&'a Value> {
        match self.obj.get(key) {
            None | Some(Value::Null) if required => {
                self.problem(key, "missing");
                None
            }
            v => v,
        }
    }

    pub(crate) fn unknown(&mut self, allowed: &[&str]) {
        let mut unknown: Vec<&String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            let what = format!("unknown field (expected one of {})", allowed.join(", "));
            self.problem(k, &what);
        }
    }

    pub(crate) fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.raw(key, required)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => {
                self.problem(key, if required { "missing (empty)" } else { "empty" });
                None
            }
            Value::String(s) if s.chars().count() > 256 => {
                self.problem(key, "longer than 256 characters");
                None
            }
            Value::String(s) if s.chars().any(|c| c.is_control() && c != '\t') => {
                self.problem(key, "contains control characters");
                None
            }
            Value::String(s) => Some(s.trim().to_string()),
            _ => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    pub(crate) fn id(&mut self, key: &str, required: bool) -> Option<i64> {
        let v = self.raw(key, required)?;
        let n = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                s.parse::<i64>().ok()
            }
            _ => None,
        };
        match n {
            Some(n) if n > 0 && n <= i64::from(i32::MAX) => Some(n),
            _ => {
                self.problem(key, "must be a positive whole number (a Kareo id)");
                None
            }
        }
    }

    pub(crate) fn date(&mut self, key: &str, required: bool) -> Option<NaiveDate> {
        let s = match self.raw(key, required)? {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            _ => {
                self.problem(key, "must be a date string YYYY-MM-DD");
                return None;
            }
        };
        let shape = s.len() == 10
            && s.chars().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !shape {
            self.problem(key, "must be a date YYYY-MM-DD");
            return None;
        }
        match NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            Ok(d) if d.year() >= 1850 => Some(d),
            Ok(_) => {
                self.problem(key, "is before 1850");
                None
            }
            Err(_) => {
                self.problem(key, "is not a real calendar date");
                None
            }
        }
    }

    pub(crate) fn instant(&mut self, key: &str, required: bool) -> Option<DateTime<Utc>> {
        let s = match self.raw(key, required)? {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            _ => {
                self.problem(key, "must be a date-time string");
                return None;
            }
        };
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.problem(
                    key,
                    "must be a real date-time with an offset (RFC 3339, e.g. 2026-10-05T10:00:00-04:00)",
                );
                None
            }
        }
    }

    pub(crate) fn choice(
        &mut self,
        key: &str,
        required: bool,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let v = self.raw(key, required)?;
        if v.is_null() {
            return None;
        }
        match v.as_str().and_then(|s| allowed.iter().find(|a| **a == s)) {
            Some(a) => Some(*a),
            None => {
                let what = format!("must be one of {}", allowed.join(", "));
                self.problem(key, &what);
                None
            }
        }
    }

    /// Money: a string or number, non-negative, at most two decimals (`125.50`).
    pub(crate) fn money(&mut self, key: &str, required: bool, positive: bool) -> Option<String> {
        let v = self.raw(key, required)?;
        let text = match v {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text.as_str(), None),
        };
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        let ok = digits(int) && int.len() <= 9 && frac.is_none_or(|f| digits(f) && f.len() <= 2);
        if !ok {
            self.problem(
                key,
                "must be an amount of money: digits with at most two decimals, e.g. 125.50",
            );
            return None;
        }
        let cents = to_cents(&text)?;
        if positive && cents == 0 {
            self.problem(key, "must be more than 0");
            return None;
        }
        Some(format!("{}.{:02}", cents / 100, cents % 100))
    }

    pub(crate) fn number(&mut self, key: &str, required: bool) -> Option<f64> {
        let v = self.raw(key, required)?;
        let n = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 && n <= 9999.0 => Some(n),
            _ => {
                self.problem(key, "must be a number above 0 (at most 9999)");
                None
            }
        }
    }

    /// A list of codes (strings matching `valid`), `min..=max` long.
    pub(crate) fn codes(
        &mut self,
        key: &str,
        min: usize,
        max: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Option<Vec<String>> {
        let v = self.raw(key, min > 0)?;
        let items = match v {
            Value::Null => return Some(Vec::new()),
            Value::Array(a) => a,
            Value::String(s) if max == 1 || min <= 1 => {
                return if valid(s.trim()) {
                    Some(vec![s.trim().to_string()])
                } else {
                    let m = format!("must be {what}");
                    self.problem(key, &m);
                    None
                };
            }
            _ => {
                let m = format!("must be a list of {min} to {max} {what}s");
                self.problem(key, &m);
                return None;
            }
        };
        if items.len() < min || items.len() > max {
            let m = format!("must hold {min} to {max} items");
            self.problem(key, &m);
            return None;
        }
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            match it.as_str().map(str::trim) {
                Some(s) if valid(s) => out.push(s.to_string()),
                _ => {
                    let m = format!("must be {what}");
                    self.problem(&format!("{key}[{i}]"), &m);
                }
            }
        }
        (out.len() == items.len()).then_some(out)
    }
}

/// `12.5` → 1250.
pub fn to_cents(text: &str) -> Option<u64> {
    let (int, frac) = match text.trim().split_once('.') {
        Some((i, f)) => (i, f),
        None => (text.trim(), ""),
    };
    let int: u64 = int.parse().ok()?;
    let frac: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().ok()? * 10,
        2 => frac.parse().ok()?,
        _ => {
            // Kareo may send more decimals on reads (`125.5000`): only zeros are accepted.
            let (two, rest) = frac.split_at_checked(2)?;
            if !rest.chars().all(|c| c == '0') {
                return None;
            }
            two.parse().ok()?
        }
    };
    int.checked_mul(100)?.checked_add(frac)
}

pub(crate) fn is_procedure_code(s: &str) -> bool {
    (4..=7).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn is_diagnosis_code(s: &str) -> bool {
    (3..=8).contains(&s.len())
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

pub(crate) fn is_modifier(s: &str) -> bool {
    s.len() == 2 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || ",;<>()[]\"".contains(c))
}

pub(crate) fn is_phone(s: &str) -> bool {
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    (7..=15).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

/// Kareo's gender forms (`Female`, `F`, …) as the enum name.
pub fn normalise_gender(s: &str) -> Option<&'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "female" | "f" => Some("Female"),
        "male" | "m" => Some("Male"),
        "unknown" | "u" => Some("Unknown"),
        _ => None,
    }
}
