//! Kareo credentials read out of Dock tasks, as practices paste them. Dock's page asks a
//! practice to "create a task and simply paste the API Key as the task description", and the
//! same for the user name and password; practices also write labelled lines, in any order and
//! case, in the title or the details, one task or several. Three layouts are read, in this
//! order of trust:
//!
//! 1. **Labelled values** — `Customer key: …`, `API key = …`, `Username: …`, `Login - …`,
//!    `Password: …` (several on one line, or the value alone on the next line);
//! 2. **A labelled title** — a title naming what the task holds (`Kareo password`, `Kareo
//!    username and password`) over details holding exactly that many values, in that order;
//! 3. **Bare values**, as the page says to paste them — a task that is one word (the customer
//!    key) and a task that is two (the user name, then the password; `/` between them is read
//!    as a separator).
//!
//! A value is one word. Nothing is guessed: a labelled value followed by more words, two
//! different values for one thing, or a thing found nowhere is an error naming the task (by id)
//! and the thing — never the text — so that no wrong password is tried against an account that
//! locks users after failed sign-ins.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kareo::Credentials;
use regex::Regex;

/// One of the three things a practice shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// The account's customer key.
    CustomerKey,
    /// The API user's name.
    User,
    /// The API user's password.
    Password,
}

impl Slot {
    /// As the practice would say it.
    pub fn name(self) -> &'static str {
        match self {
            Slot::CustomerKey => "customer key",
            Slot::User => "user name",
            Slot::Password => "password",
        }
    }

    fn of_label(label: &str) -> Slot {
        let l = label.to_ascii_lowercase();
        if l.contains("key") {
            Slot::CustomerKey
        } else if l.starts_with('p') {
            Slot::Password
        } else {
            Slot::User
        }
    }
}

/// A task's text, as Dock holds it: the title (`description`) and the details.
#[derive(Clone, Copy)]
pub struct TaskText<'a> {
    /// The task's id.
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Details.
    pub details: &'a str,
}

/// The credentials, and the tasks that held a part of them (to be scrubbed).
pub struct Intake {
    /// The three values.
    pub credentials: Credentials,
    /// Ids of the tasks that held a value, in the order given.
    pub tasks: Vec<String>,
}

/// Why the tasks do not give the credentials. Names tasks and things, never text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Some things are in no task.
    #[error("no {} found in the open tasks (write them as `Customer key: …`, `Username: …`, `Password: …`)", names(.0))]
    Missing(Vec<Slot>),
    /// Two different values for one thing.
    #[error("two different values for the {} (tasks {}): leave one open task per value", .slot.name(), .tasks.join(", "))]
    Conflict {
        /// The thing.
        slot: Slot,
        /// Tasks holding a value for it.
        tasks: Vec<String>,
    },
    /// A labelled value followed by more words.
    #[error("task {task}: the {} is followed by more words; put the value alone after its label", .slot.name())]
    Unclear {
        /// The task.
        task: String,
        /// The thing.
        slot: Slot,
    },
}

fn names(slots: &[Slot]) -> String {
    slots
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

const LABELS: &str = r"customer\s*api\s*key|customer\s*key|api\s*key|key|user\s*name|username|user\s*id|userid|login|user|pass\s*word|passwd|pwd";

/// A label and its separator (`:`, `=`, or a dash followed by a space or the line's end).
static INLINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b({LABELS})[ \t]*(?::|=|[-–—](?:[ \t]|$))[ \t]*"
    ))
    .expect("valid pattern")
});

/// A label word anywhere between spaces (a title naming what the task holds; `KEY` inside a
/// pasted `ABC-KEY-123` is not one).
static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)(?:^|\s)({LABELS})(?:\s|$)")).expect("valid pattern")
});

/// What one task says.
#[derive(Default)]
struct Found {
    values: Vec<(Slot, String)>,
    /// Bare words, when the task has no label at all.
    bare: Vec<String>,
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| !matches!(*w, "/" | "|" | ","))
        .map(unquote)
        .collect()
}

fn unquote(w: &str) -> String {
    for q in ['"', '\'', '`'] {
        if w.len() >= 2 && w.starts_with(q) && w.ends_with(q) {
            return w[1..w.len() - 1].to_string();
        }
    }
    w.to_string()
}

fn read_task(t: &TaskText) -> Result<Found, IntakeError> {
    let text = format!("{}\n{}", t.title, t.details);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Found::default();
    let unclear = |slot| IntakeError::Unclear {
        task: t.id.to_string(),
        slot,
    };
    for (i, line) in lines.iter().enumerate() {
        let marks: Vec<_> = INLINE.captures_iter(line).collect();
        for (k, m) in marks.iter().enumerate() {
            let slot = Slot::of_label(&m[1]);
            let end = m.get(0).expect("whole match").end();
            let until = marks
                .get(k + 1)
                .map_or(line.len(), |n| n.get(0).expect("whole match").start());
            let mut value = words(&line[end..until]);
            if value.is_empty() && k + 1 == marks.len() {
                // The value alone on the next non-blank line (unless that is labelled).
                if let Some(next) = lines[i + 1..].iter().find(|l| !l.trim().is_empty()) {
                    if !INLINE.is_match(next) {
                        value = words(next);
                    }
                }
            }
            match value.len() {
                0 => {}
                1 => found.values.push((slot, value.remove(0))),
                _ => return Err(unclear(slot)),
            }
        }
    }
    if !found.values.is_empty() {
        return Ok(found);
    }
    let named: Vec<Slot> = WORD
        .captures_iter(t.title)
        .map(|c| Slot::of_label(&c[1]))
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
    if !named.is_empty() {
        let values = words(t.details);
        if values.len() == named.len() {
            found.values = named.into_iter().zip(values).collect();
        } else if !values.is_empty() {
            return Err(unclear(named[0]));
        }
        return Ok(found);
    }
    found.bare = words(&text);
    Ok(found)
}

/// Reads the credentials out of the open tasks of the practice's credentials list.
pub fn read(tasks: &[TaskText]) -> Result<Intake, IntakeError> {
    let mut by_slot: BTreeMap<Slot, Vec<(String, String)>> = BTreeMap::new();
    let mut bare_one = Vec::new();
    let mut bare_two = Vec::new();
    for t in tasks {
        let f = read_task(t)?;
        for (slot, v) in f.values {
            by_slot.entry(slot).or_default().push((t.id.to_string(), v));
        }
        match f.bare.len() {
            1 => bare_one.push((t.id.to_string(), f.bare)),
            2 => bare_two.push((t.id.to_string(), f.bare)),
            _ => {}
        }
    }
    // Bare values fill only what no label gave, and only when exactly one task offers them.
    if !by_slot.contains_key(&Slot::CustomerKey) && bare_one.len() == 1 {
        let (id, mut v) = bare_one.remove(0);
        by_slot.insert(Slot::CustomerKey, vec![(id, v.remove(0))]);
    }
    if !by_slot.contains_key(&Slot::User)
        && !by_slot.contains_key(&Slot::Password)
        && bare_two.len() == 1
    {
        let (id, mut v) = bare_two.remove(0);
        let password = v.pop().expect("two words");
        let user = v.pop().expect("two words");
        by_slot.insert(Slot::User, vec![(id.clone(), user)]);
        by_slot.insert(Slot::Password, vec![(id, password)]);
    }
    let value = |slot: Slot| -> Result<Option<String>, IntakeError> {
        let Some(found) = by_slot.get(&slot) else {
            return Ok(None);
        };
        if found.iter().any(|(_, v)| v != &found[0].1) {
            let mut tasks: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
            tasks.dedup();
            return Err(IntakeError::Conflict { slot, tasks });
        }
        Ok(Some(found[0].1.clone()))
    };
    let (key, user, password) = (
        value(Slot::CustomerKey)?,
        value(Slot::User)?,
        value(Slot::Password)?,
    );
    let (Some(customer_key), Some(user), Some(password)) =
        (key.clone(), user.clone(), password.clone())
    else {
        let missing = [
            (Slot::CustomerKey, key.is_none()),
            (Slot::User, user.is_none()),
            (Slot::Password, password.is_none()),
        ]
        .into_iter()
        .filter_map(|(s, m)| m.then_some(s))
        .collect();
        return Err(IntakeError::Missing(missing));
    };
    let mut holding: Vec<String> = Vec::new();
    for t in tasks {
        if by_slot.values().flatten().any(|(id, _)| id == t.id)
            && !holding.iter().any(|h| h == t.id)
        {
            holding.push(t.id.to_string());
        }
    }
    Ok(Intake {
        credentials: Credentials {
            customer_key,
            user,
            password,
        },
        tasks: holding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task<'a>(id: &'a str, title: &'a str, details: &'a str) -> TaskText<'a> {
        TaskText { id, title, details }
    }

    fn creds(tasks: &[TaskText]) -> (String, String, String, Vec<String>) {
        let i = read(tasks).unwrap_or_else(|e| panic!("{e}"));
        (
            i.credentials.customer_key,
            i.credentials.user,
            i.credentials.password,
            i.tasks,
        )
    }

    fn want(ids: &[&str]) -> (String, String, String, Vec<String>) {
        (
            "k3y-123".into(),
            "api@practice.example".into(),
            "S3cr:t!/x".into(),
            ids.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn labelled_lines_in_any_order_case_and_place() {
        let details = "Hi Dock team,\n\nPASSWORD: S3cr:t!/x\n\nusername = api@practice.example\nCustomer Key: k3y-123\nThanks!";
        assert_eq!(
            creds(&[task("t1", "Kareo API access", details)]),
            want(&["t1"])
        );
        let one_line = "Customer key: k3y-123 Username: api@practice.example Password: S3cr:t!/x";
        assert_eq!(creds(&[task("t1", one_line, "")]), want(&["t1"]));
        let next_line = "API key:\n  k3y-123\nLogin -\napi@practice.example\nPwd:\n\"S3cr:t!/x\"";
        assert_eq!(creds(&[task("t1", "creds", next_line)]), want(&["t1"]));
    }

    #[test]
    fn several_tasks_one_value_each_labelled_in_the_title_or_the_line() {
        let tasks = [
            task("a", "Kareo customer key", "k3y-123"),
            task("b", "Username: api@practice.example", ""),
            task("c", "Kareo password", "\n S3cr:t!/x \n"),
            task("d", "Call the practice back about the form", ""),
        ];
        assert_eq!(creds(&tasks), want(&["a", "b", "c"]));
        let pair = [
            task("a", "API key: k3y-123", ""),
            task(
                "b",
                "Kareo username and password",
                "api@practice.example\nS3cr:t!/x",
            ),
        ];
        assert_eq!(creds(&pair), want(&["a", "b"]));
    }

    #[test]
    fn bare_values_pasted_as_the_page_says() {
        let tasks = [
            task("a", "k3y-123", ""),
            task("b", "api@practice.example / S3cr:t!/x", ""),
        ];
        assert_eq!(creds(&tasks), want(&["a", "b"]));
        // Bare values never override a labelled one.
        let labelled = [
            task("a", "Customer key: k3y-123", ""),
            task("b", "something", ""),
            task("c", "api@practice.example S3cr:t!/x", ""),
        ];
        assert_eq!(creds(&labelled), want(&["a", "c"]));
    }

    #[test]
    fn nothing_is_guessed_and_errors_name_tasks_and_things_never_values() {
        let e = read(&[task("t1", "Password: S3cr:t!/x please", "")]).err();
        assert_eq!(
            e,
            Some(IntakeError::Unclear {
                task: "t1".into(),
                slot: Slot::Password
            })
        );
        let e = read(&[
            task("a", "Password: pw-alpha", "Username: u\nKey: k"),
            task("b", "Password: pw-beta", ""),
        ])
        .err()
        .expect("conflict");
        assert_eq!(
            e,
            IntakeError::Conflict {
                slot: Slot::Password,
                tasks: vec!["a".into(), "b".into()]
            }
        );
        assert!(!e.to_string().contains("pw-alpha") && !e.to_string().contains("pw-beta"));
        let e = read(&[task("a", "Username: u", "")]).err();
        assert_eq!(
            e,
            Some(IntakeError::Missing(vec![
                Slot::CustomerKey,
                Slot::Password
            ]))
        );
        // Two bare one-word tasks: which is the key is not guessed.
        let e = read(&[
            task("a", "k3y-123", ""),
            task("b", "other", ""),
            task("c", "Username: u", "Password: p"),
        ])
        .err();
        assert_eq!(e, Some(IntakeError::Missing(vec![Slot::CustomerKey])));
        // The same value in two tasks is one value.
        let same = [
            task("a", "Customer key: k3y-123", ""),
            task(
                "b",
                "key = k3y-123\nUser: api@practice.example\nPassword: S3cr:t!/x",
                "",
            ),
        ];
        assert_eq!(creds(&same), want(&["a", "b"]));
    }
}
