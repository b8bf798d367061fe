//! `kareo-dock kareo capture`: one real call written as a support bundle that holds no
//! credential and no record value, and that `kareo decode` reads back.

use kareo_sim::{Family, SimConfig};
use serde_json::json;

use super::onboard::{World, KEY, PASSWORD, USER};
use crate::support::{bin, run, text};

#[tokio::test]
async fn a_capture_bundle_holds_no_canary_and_decodes_back() {
    let w = World::start(
        "capture",
        SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        },
    )
    .await;
    // Canary values in a patient, as the PHI-leak tests use them.
    let id = w.sim.rows(Family::Patients)[0]["ID"].clone();
    w.sim.update(
        Family::Patients,
        &id,
        &[("FirstName", "CANARYFIRST"), ("LastName", "CANARYLAST")],
    );
    let secrets = json!({
        "kareo/acme": {"customer_key": KEY, "user": USER, "password": PASSWORD},
    });
    std::fs::write(w.dir.join("kareo-secrets.json"), secrets.to_string()).unwrap();
    let input = json!({"Fields": {}, "Filter": {"PracticeName": w.sim.config().practice_name}});
    std::fs::write(w.dir.join("input.json"), input.to_string()).unwrap();
    let out = w.dir.join("bundle");
    let mut c = bin();
    c.env("KAREO_ENDPOINT", w.sim.url())
        .env_remove("KAREO_DOCK_SECRETS")
        .args(["kareo", "capture", "--op", "GetPatients"])
        .args(["--input", &w.path("input.json")])
        .args(["--config", &w.path("acme.yaml")])
        .args(["--secrets", &w.path("kareo-secrets.json")])
        .args(["--out", out.to_str().unwrap()]);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(w.sim.calls().len(), 1, "one real call");
    for name in ["request.xml", "response.xml", "README.txt"] {
        let body = std::fs::read_to_string(out.join(name)).unwrap();
        for canary in [KEY, USER, PASSWORD, "CANARYFIRST", "CANARYLAST"] {
            assert!(!body.contains(canary), "{name} holds a value");
        }
    }
    let request = std::fs::read_to_string(out.join("request.xml")).unwrap();
    assert!(
        request.contains("{CUSTOMER_KEY}") && request.contains("{PASSWORD}"),
        "{request}"
    );
    let response = std::fs::read_to_string(out.join("response.xml")).unwrap();
    assert!(
        response.contains("<SecurityResult>Success</SecurityResult>"),
        "kept: {response}"
    );
    assert!(response.contains("PatientData") && response.contains("REDACTED"));
    // `kareo decode` reads the bundle's response back: the structure is intact.
    let mut d = bin();
    d.args(["kareo", "decode", "--op", "GetPatients"])
        .arg(out.join("response.xml"));
    let o = run(d).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let records = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(records >= 1, "{}", text(&o));
}
