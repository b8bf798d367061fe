//! Write-back commands (`writeback::write::command::Command::from_json`) and the value
//! readers they use (`to_cents`, `normalise_gender`), on arbitrary UTF-8.
//!
//! The input is the command's JSON text. `to_cents` and `normalise_gender` also get every
//! piece of it between double quotes (so the JSON seeds feed them real-shaped values such as
//! `"125.50"` and `"Female"`). Never a panic. Properties: a command that reads has a valid
//! id, a ledger key `write#<tenant>#<id>`, a 64-hex fingerprint, and reads the same again
//! from the same text; an amount `to_cents` reads is printed back as `<int>.<2 digits>` and
//! reads as the same number of cents; `normalise_gender` answers one of Kareo's three names.
#![no_main]

use writeback::write::command::{normalise_gender, to_cents, Command};
use domain::op::valid_id;
use libfuzzer_sys::fuzz_target;

fn values(s: &str) {
    if let Some(c) = to_cents(s) {
        let printed = format!("{}.{:02}", c / 100, c % 100);
        assert_eq!(to_cents(&printed), Some(c), "{s:?} → {c} → {printed:?}");
    }
    if let Some(g) = normalise_gender(s) {
        assert!(["Female", "Male", "Unknown"].contains(&g), "{s:?} → {g}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Command::from_json(text) {
        Ok(cmd) => {
            assert!(valid_id(&cmd.id), "id {:?}", cmd.id);
            assert_eq!(cmd.ledger_key(), format!("write#{}#{}", cmd.tenant, cmd.id));
            assert_eq!(cmd.fingerprint.len(), 64);
            assert!(cmd.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
            let _ = format!("{cmd:?}");
            let again = Command::from_json(text).expect("reads twice");
            assert!(again == cmd, "the same text reads differently");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a problem");
            for p in &problems {
                assert!(!p.problem.is_empty(), "a problem without text: {}", p.field);
            }
        }
    }
    values(text);
    for piece in text.split('"').take(64) {
        values(piece);
    }
});
