//! What the test suites of several crates share (dev-dependency only): whether the tests that
//! need moto run, and names no other test of the run uses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other test of this run (or an earlier run against the same emulator) uses:
/// `prefix-<pid>-<n>-<µs>`.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{micros}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a test that needs moto runs (`what` names it in the messages): yes with a loopback
/// `AWS_ENDPOINT_URL`; a loud skip with `KAREO_DOCK_SKIP_MOTO=1`; else a loud failure. These
/// tests create and delete tables, secrets and queues, so never against anything but an
/// emulator on this machine: any other endpoint fails the test.
pub fn moto(what: &str) -> bool {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => {
            assert!(
                is_loopback(&url),
                "AWS_ENDPOINT_URL={url} is not a loopback emulator: {what} creates and deletes \
                 tables, secrets and queues and only runs against moto on this machine"
            );
            true
        }
        _ if std::env::var("KAREO_DOCK_SKIP_MOTO").as_deref() == Ok("1") => {
            eprintln!("\n!!! SKIPPED: KAREO_DOCK_SKIP_MOTO=1 — {what} did NOT run.\n");
            false
        }
        _ => panic!(
            "\n!!! AWS_ENDPOINT_URL is not set: {what} did NOT run.\n\
             !!! Run scripts/test (it starts moto server), or start `moto_server -p PORT` and set\n\
             !!! AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
             AWS_SECRET_ACCESS_KEY=test,\n!!! or set KAREO_DOCK_SKIP_MOTO=1 to skip them knowingly.\n"
        ),
    }
}

/// Is `url`'s host this machine?
fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    host == "localhost" || host.starts_with("127.")
}

/// Kareo's own schema for the XSD suites: `KAREO_XSD` (scripts/test sets it to
/// `../shared/reference/kareo-wsdl/soapui-2025/all.xsd`). `None` — a loud skip — only with
/// `KAREO_XSD_SKIP=1`; unset otherwise, the test FAILS naming what is missing (`what`).
pub fn kareo_xsd(what: &str) -> Option<std::path::PathBuf> {
    match std::env::var_os("KAREO_XSD") {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            assert!(p.exists(), "KAREO_XSD={} does not exist", p.display());
            Some(p)
        }
        None if std::env::var("KAREO_XSD_SKIP").as_deref() == Ok("1") => {
            eprintln!("\n!!!!!!!! {what} DID NOT RUN (KAREO_XSD_SKIP=1) !!!!!!!!\n");
            None
        }
        None => panic!(
            "{what} DID NOT RUN: set KAREO_XSD to Kareo's schema \
             (../shared/reference/kareo-wsdl/soapui-2025/all.xsd; scripts/test sets it) and \
             install xmllint (apt-get install libxml2-utils), or set KAREO_XSD_SKIP=1 to skip \
             it knowingly"
        ),
    }
}

/// `xmllint --noout --schema xsd` over `files`: whether all validate, and its report
/// (stderr), one `<file> validates` or `<file> fails to validate` line per file.
pub fn xmllint(xsd: &std::path::Path, files: &[std::path::PathBuf]) -> (bool, String) {
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .args(files)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_only_loopback_counts_as_an_emulator() {
        assert_ne!(unique("t"), unique("t"));
        assert!(is_loopback("http://127.0.0.1:5000"));
        assert!(is_loopback("http://localhost:5000/"));
        assert!(!is_loopback("https://dynamodb.us-east-1.amazonaws.com"));
        assert!(!is_loopback("http://127example.com"));
    }
}
