//! The ready payloads in `events/` (for `cargo lambda invoke` and the console) stay valid:
//! each parses as what its function expects, and each write command passes validation.

use std::path::PathBuf;

use domain::ChangeEvent;
use sync::run::Payload;
use writeback::write::command::Command;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

#[test]
fn every_ready_payload_is_valid_for_its_function() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        if name.starts_with("poll-") {
            let p: Payload = serde_json::from_str(&text).unwrap();
            p.mode().unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("task-") {
            #[derive(serde::Deserialize)]
            struct Batch {
                events: Vec<ChangeEvent>,
            }
            let b: Batch = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!b.events.is_empty(), "{name}");
        } else if name.starts_with("write-") {
            let c = Command::from_json(&text)
                .unwrap_or_else(|p| panic!("{name}: {} problems", p.len()));
            assert!(
                name.contains(c.op.name()),
                "{name} holds a {} command",
                c.op.name()
            );
        } else {
            panic!("{name}: unknown kind of payload");
        }
        seen += 1;
    }
    assert!(seen >= 12, "{seen}");
}
