//! What is wrong with a tenant's configuration, and where; and the one reader every section of
//! the file is read with.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A configuration that cannot be used: where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or source name).
    pub file: String,
    /// Line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// The span-aware reader every section of a tenant file is read with: one parse of the text,
/// one list of problems (each with file and line), helpers that keep a scalar's text as the
/// operator wrote it and suggest the nearest allowed key.
pub struct Reader<'s> {
    source: &'s str,
    chars: Vec<char>,
    errors: Vec<ConfigError>,
}

/// A mapping's entries, in file order.
pub type Entries<'n, 'i> = Vec<(&'n MarkedYaml<'i>, &'n MarkedYaml<'i>)>;

/// The line (1-based) a node starts on.
pub fn line(n: &MarkedYaml) -> usize {
    n.span.start.line()
}

impl<'s> Reader<'s> {
    /// A reader of `text`; `source` names it in errors.
    pub fn new(text: &str, source: &'s str) -> Reader<'s> {
        Reader {
            source,
            chars: text.chars().collect(),
            errors: Vec::new(),
        }
    }

    /// Records a problem at `line`.
    pub fn error(&mut self, line: usize, reason: String) {
        self.errors.push(ConfigError {
            file: self.source.to_string(),
            line: Some(line),
            reason,
        });
    }

    /// Records a problem with no line (something missing from the whole file).
    pub fn error_unplaced(&mut self, reason: String) {
        self.errors.push(ConfigError {
            file: self.source.to_string(),
            line: None,
            reason,
        });
    }

    /// How many problems so far.
    pub fn problems(&self) -> usize {
        self.errors.len()
    }

    /// The problems, sorted by line (unplaced ones last).
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors
            .sort_by_key(|e| (e.line.is_none(), e.line.unwrap_or(0)));
        self.errors
    }

    /// The text a node was written as.
    pub fn raw(&self, n: &MarkedYaml) -> String {
        let (a, b) = (n.span.start.index(), n.span.end.index());
        self.chars
            .get(a..b.min(self.chars.len()))
            .map(|c| c.iter().collect::<String>().trim().to_string())
            .unwrap_or_default()
    }

    /// A scalar's text, when it is one that survives a round trip through storage unchanged.
    pub fn text(&self, n: &MarkedYaml) -> Result<String, String> {
        match &n.data {
            YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
            YamlData::Representation(s, _, _) => Ok(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => {
                let raw = self.raw(n);
                if raw == i.to_string() {
                    Ok(raw)
                } else {
                    Err(
                        "quote this value: YAML reads it as a number and would not keep its text"
                            .into(),
                    )
                }
            }
            YamlData::Value(Scalar::Boolean(b)) => {
                let raw = self.raw(n);
                if raw == b.to_string() {
                    Ok(raw)
                } else {
                    Err(
                        "quote this value: YAML reads it as a boolean and would not keep its text"
                            .into(),
                    )
                }
            }
            YamlData::Value(Scalar::FloatingPoint(_)) => Err(
                "quote this value: YAML reads it as a number and would not keep its text".into(),
            ),
            YamlData::Value(Scalar::Null) => Err("a value is required".into()),
            YamlData::Sequence(_) => Err("expected a single value, not a list".into()),
            YamlData::Mapping(_) => Err("expected a single value, not a mapping".into()),
            YamlData::Tagged(..) => Err("YAML tags are not supported here".into()),
            YamlData::Alias(_) | YamlData::BadValue => Err("unreadable value".into()),
        }
    }

    /// A mapping's entries, or an error at the node's line.
    pub fn entries<'n, 'i>(
        &mut self,
        n: &'n MarkedYaml<'i>,
        at: usize,
        what: &str,
    ) -> Option<Entries<'n, 'i>> {
        match &n.data {
            YamlData::Mapping(m) => Some(m.iter().collect()),
            _ => {
                self.error(at, format!("{what}: expected a mapping"));
                None
            }
        }
    }

    /// Checks the keys of a mapping against the allowed ones.
    pub fn keys(&mut self, entries: &Entries, allowed: &[&str], prefix: &str) {
        for (k, _) in entries {
            let key = k.data.as_str().unwrap_or("");
            if !allowed.contains(&key) {
                let hint = suggest(key, allowed.iter().copied())
                    .map(|s| format!("did you mean '{s}'? "))
                    .unwrap_or_default();
                self.error(
                    line(k),
                    format!(
                        "{prefix}unknown key '{}' ({hint}expected {})",
                        self.raw(k),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
}

/// The candidate closest to `word`: same letters in another case, else the nearest by edit
/// distance (transpositions count one), within a third of the word (1 to 3 edits).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Parses a tenant file's text once: its first document (an empty file is a problem).
pub fn load<'i>(text: &'i str, source: &str) -> Result<MarkedYaml<'i>, ConfigError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| ConfigError {
        file: source.to_string(),
        line: Some(e.marker().line()),
        reason: format!("not valid YAML: {}", e.info()),
    })?;
    docs.into_iter().next().ok_or_else(|| ConfigError {
        file: source.to_string(),
        line: None,
        reason: "the file is empty".into(),
    })
}
