//! What is wrong with a tenant's configuration, and where.

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
