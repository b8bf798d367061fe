//! Observability of local runs: `tracing` logs on stderr (text or JSON, level from `RUST_LOG`,
//! default `warn`) and, with `--metrics <file>`, the same CloudWatch Embedded Metric Format
//! lines the Lambda functions print, appended to a file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ::sync::Report;
use chrono::Utc;
use tasks::deliver::Delivered;

/// Log line format.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line (as the Lambda functions log).
    Json,
}

static METRICS: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Sets up logging and the metrics file.
pub fn init(format: LogFormat, metrics: Option<&PathBuf>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(path) = metrics {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let _ = METRICS.set(Mutex::new(f));
    }
    Ok(())
}

fn emit(line: String) {
    if let Some(m) = METRICS.get() {
        let mut f = m.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{line}");
    }
}

/// Records a poll run's metrics.
pub fn poll_runs(reports: &[Report]) {
    let now = Utc::now();
    for r in reports {
        emit(::sync::metrics::poll_run(r, now).line(now));
    }
}

/// Records a delivery's metrics.
pub fn delivered(d: &Delivered) {
    emit(tasks::metrics::delivery(d).line(Utc::now()));
    for l in tasks::metrics::latencies(d) {
        emit(l.line(Utc::now()));
    }
}
