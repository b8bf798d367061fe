//! Where dead letters are kept — the port [`DeadLetters`] and its two adapters: the local
//! `<state>/dead-letters.jsonl` ([`FileLetters`]) and the task function's on-failure SQS queue
//! ([`QueueLetters`]).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use domain::ChangeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{self, Exit};

/// Why a letter could not be redriven (ids, names and classes only).
#[derive(Debug, Clone)]
pub struct Fail {
    /// Error class.
    pub class: String,
    /// What failed.
    pub reason: String,
    /// A retry cannot help.
    pub permanent: bool,
}

impl Fail {
    /// A failure of `class` for `reason`.
    pub fn new(class: &str, reason: impl Into<String>) -> Fail {
        Fail {
            class: class.into(),
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// One dead letter: what to deliver again, and what it is about.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Event id (file) or message id (queue).
    pub id: String,
    /// The rule that failed (file); `None`: every rule of the events (queue).
    pub rule: Option<String>,
    /// The events to deliver again.
    pub events: Vec<ChangeEvent>,
    /// How many events the letter holds (as stored: some may not parse).
    pub count: usize,
    /// The task function's payload as it was (queue); `None`: `{"events": events}`.
    pub payload: Option<Value>,
    /// The function that failed (queue: the record's `functionArn`).
    pub function: Option<String>,
    /// The class it was dead-lettered with.
    pub class: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// It cannot be redriven at all (malformed, its event is gone).
    pub unusable: Option<Fail>,
    /// The adapter's own handle (a line, a receipt handle).
    pub(super) handle: String,
}

/// What became of a letter: redriven, or still failing (`None` for a dry run).
pub type Settled = Option<Result<(), Fail>>;

/// Where dead letters are kept.
///
/// Contract: [`pending`](DeadLetters::pending) returns every letter once; after the redrive,
/// [`settle`](DeadLetters::settle) removes exactly the letters that were redriven and keeps the
/// others (with their new failure), so that a later replay sees them again; `settled[i]` is
/// what became of `letters[i]`. A dry run settles with `None` everywhere: nothing is removed or
/// rewritten. `settle` may turn a success into a failure when the removal itself fails.
pub trait DeadLetters {
    /// Every letter.
    async fn pending(&mut self) -> Result<Vec<Letter>, Exit>;
    /// Removes the redriven letters, keeps the rest.
    async fn settle(&mut self, letters: &[Letter], settled: &mut [Settled]) -> Result<(), Exit>;
    /// Where the letters still failing are kept (for the summary).
    fn place(&self) -> String;
}

/// A line of `dead-letters.jsonl` (`tasks::deliver::Failure`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    event: String,
    rule: String,
    class: String,
    reason: String,
    permanent: bool,
}

/// `<state>/dead-letters.jsonl`; the events are looked up in `<state>/events.jsonl`.
pub struct FileLetters {
    path: PathBuf,
    events: PathBuf,
    lines: Vec<Line>,
}

impl FileLetters {
    /// The dead letters of a local state directory.
    pub fn in_state(dir: &Path) -> FileLetters {
        FileLetters {
            path: embedded::DeadLetterFile::in_state(dir).path().to_path_buf(),
            events: dir.join("events.jsonl"),
            lines: Vec::new(),
        }
    }
}

impl DeadLetters for FileLetters {
    async fn pending(&mut self) -> Result<Vec<Letter>, Exit> {
        self.lines = read_lines(&self.path)?;
        let ids: HashSet<&str> = self.lines.iter().map(|d| d.event.as_str()).collect();
        let events = find_events(&self.events, &ids)?;
        Ok(self
            .lines
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let event = events.get(&d.event);
                Letter {
                    id: d.event.clone(),
                    rule: Some(d.rule.clone()),
                    events: event.cloned().into_iter().collect(),
                    count: 1,
                    payload: None,
                    function: None,
                    class: d.class.clone(),
                    reason: d.reason.clone(),
                    unusable: event
                        .is_none()
                        .then(|| Fail::new(&d.class, "the event is not in events.jsonl")),
                    handle: i.to_string(),
                }
            })
            .collect())
    }

    async fn settle(&mut self, letters: &[Letter], settled: &mut [Settled]) -> Result<(), Exit> {
        if settled.iter().all(Option::is_none) {
            return Ok(());
        }
        // Rewrite the file with what still fails (write, then rename).
        let mut text = String::new();
        for (letter, settled) in letters.iter().zip(settled.iter()) {
            let Some(Err(f)) = settled else { continue };
            let Some(line) = letter
                .handle
                .parse()
                .ok()
                .and_then(|i: usize| self.lines.get(i))
            else {
                continue;
            };
            let kept = Line {
                class: f.class.clone(),
                reason: f.reason.clone(),
                permanent: f.permanent,
                ..line.clone()
            };
            text.push_str(&serde_json::to_string(&kept).unwrap_or_default());
            text.push('\n');
        }
        domain::local::private::write(&self.path, text.as_bytes())
            .map_err(|e| Exit(common::REMOTE, format!("{}: {e}", self.path.display())))
    }

    fn place(&self) -> String {
        format!("kept in {}", self.path.display())
    }
}

fn read_lines(path: &Path) -> Result<Vec<Line>, Exit> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Exit(common::USAGE, format!("{}: {e}", path.display()))),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|_| {
                Exit(
                    common::USAGE,
                    format!(
                        "{}:{}: not a dead letter ({{event, rule, class, reason, permanent}})",
                        path.display(),
                        i + 1
                    ),
                )
            })
        })
        .collect()
}

/// The events with these ids from `events.jsonl` (the last copy of each).
fn find_events(path: &Path, ids: &HashSet<&str>) -> Result<HashMap<String, ChangeEvent>, Exit> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Exit(common::USAGE, format!("{}: {e}", path.display()))),
    };
    let mut out = HashMap::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Exit(common::USAGE, format!("{}: {e}", path.display())))?;
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        let Ok(Id { id }) = serde_json::from_str::<Id>(&line) else {
            continue;
        };
        if ids.contains(id.as_str()) {
            if let Ok(e) = serde_json::from_str::<ChangeEvent>(&line) {
                out.insert(id, e);
            }
        }
    }
    Ok(out)
}

/// The task function's on-failure queue: each message is a Lambda destination record whose
/// `requestPayload` is the batch that failed. Messages are received (hidden for 5 minutes)
/// until none is new; a redriven one is deleted, every other is made visible again at once.
pub struct QueueLetters {
    sqs: aws_sdk_sqs::Client,
    url: String,
    /// Receipt handles of duplicates received in the loop (released on settle).
    again: Vec<String>,
}

impl QueueLetters {
    /// The queue at `url`.
    pub fn new(sqs: aws_sdk_sqs::Client, url: &str) -> QueueLetters {
        QueueLetters {
            sqs,
            url: url.into(),
            again: Vec::new(),
        }
    }
}

impl DeadLetters for QueueLetters {
    async fn pending(&mut self) -> Result<Vec<Letter>, Exit> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(300)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| {
                    Exit(
                        common::REMOTE,
                        format!(
                            "ReceiveMessage {}: {}",
                            self.url,
                            e.code()
                                .map(str::to_string)
                                .unwrap_or_else(|| e.to_string())
                        ),
                    )
                })?;
            let mut new = 0;
            for m in received.messages.unwrap_or_default() {
                let id = m.message_id.clone().unwrap_or_default();
                let Some(handle) = m.receipt_handle.clone() else {
                    continue;
                };
                if !seen.insert(id.clone()) {
                    self.again.push(handle);
                    continue;
                }
                new += 1;
                out.push(letter_of(id, handle, m.body().unwrap_or("")));
            }
            if new == 0 {
                return Ok(out);
            }
        }
    }

    async fn settle(&mut self, letters: &[Letter], settled: &mut [Settled]) -> Result<(), Exit> {
        let mut release = std::mem::take(&mut self.again);
        for (letter, settled) in letters.iter().zip(settled.iter_mut()) {
            if !matches!(settled, Some(Ok(()))) {
                release.push(letter.handle.clone());
                continue;
            }
            let deleted = self
                .sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(&letter.handle)
                .send()
                .await;
            if let Err(e) = deleted {
                *settled = Some(Err(Fail::new(
                    "sqs_delete",
                    format!(
                        "redriven, but the message could not be deleted: {}",
                        e.code().unwrap_or("error")
                    ),
                )));
            }
        }
        // What stays in the queue is visible again at once (for the next replay or inspection).
        for h in release {
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(h)
                .visibility_timeout(0)
                .send()
                .await;
        }
        Ok(())
    }

    fn place(&self) -> String {
        "left in the queue".into()
    }
}

/// A destination record as a letter (a malformed one is unusable).
fn letter_of(id: String, handle: String, body: &str) -> Letter {
    let mut letter = Letter {
        id,
        rule: None,
        events: Vec::new(),
        count: 0,
        payload: None,
        function: None,
        class: "on_failure".into(),
        reason: String::new(),
        unusable: None,
        handle,
    };
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        letter.unusable = Some(Fail::new("malformed", "the message is not JSON"));
        return letter;
    };
    let Some(payload) = v.get("requestPayload").filter(|p| !p.is_null()) else {
        letter.unusable = Some(Fail::new(
            "malformed",
            "the message is not a Lambda destination record (no requestPayload)",
        ));
        return letter;
    };
    letter.function = v
        .pointer("/requestContext/functionArn")
        .and_then(Value::as_str)
        .map(str::to_string);
    let stored = payload.get("events").and_then(Value::as_array);
    letter.count = stored.map_or(0, Vec::len);
    letter.events = stored
        .map(|a| {
            a.iter()
                .filter_map(|e| serde_json::from_value(e.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    letter.payload = Some(payload.clone());
    letter
}
