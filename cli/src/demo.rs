//! `kareo-dock demo`: the product on embedded defaults, no account needed.

use std::process::ExitCode;
use std::time::Instant;

use kareo::{ClientConfig, Credentials, KareoClient};
use kareo_sim::{Family, KareoSim, SimConfig};
use serde_json::json;

/// Starts the simulator, reads every family through the client, changes a few records and
/// reads the changes back with a last-modified window.
pub fn run() -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = KareoSim::start(SimConfig::default()).await;
        let cfg = sim.config().clone();
        let tz = cfg.timezone;
        let creds = Credentials {
            customer_key: cfg.customer_key.clone(),
            user: cfg.user.clone(),
            password: cfg.password.clone(),
        };
        let client = KareoClient::new(ClientConfig {
            endpoint: sim.url(),
            ..ClientConfig::default()
        })?;
        println!("Kareo simulator at {} ({} , {})", sim.url(), cfg.practice_name, tz);
        let customer = client.customer_id(&creds).await?;
        let throttles = client.refresh_throttles(&creds).await?;
        println!("credentials ok: customer {} ; {throttles} live throttle intervals read\n", customer.unwrap_or_default());

        let started = Instant::now();
        let from = sim.now() - chrono::Duration::days(31);
        let to = sim.now();
        println!("{:<18} {:>8}  window", "family", "records");
        for family in Family::ALL {
            if family == Family::Encounters {
                continue;
            }
            let body = list_body(&sim, family, from, to);
            let resp = client.call(&creds, kareo::op(family.op()).expect("op"), &body).await?;
            println!("{:<18} {:>8}  {} .. {}", format!("{family:?}"), resp.records.len(), kareo::dates::format_filter(from, tz), kareo::dates::format_filter(to, tz));
        }
        let enc = sim.rows(Family::Encounters);
        let mut details = 0;
        for row in enc.iter().take(3) {
            let body = json!({"Fields": {}, "Filter": {"EncounterID": row["EncounterID"], "Practice": {"PracticeID": cfg.practice_id.to_string(), "PracticeName": cfg.practice_name}}});
            details += client.call(&creds, kareo::op("GetEncounterDetails").expect("op"), &body).await?.records.len();
        }
        println!("{:<18} {:>8}  by EncounterID (first 3)", "Encounters", details);

        // Change a few records, then read only what changed.
        let before = sim.now();
        sim.advance(chrono::Duration::minutes(10));
        let appts = sim.rows(Family::Appointments);
        sim.update(Family::Appointments, &appts[0]["ID"], &[("ConfirmationStatus", "Cancelled")]);
        let pats = sim.rows(Family::Patients);
        sim.update(Family::Patients, &pats[0]["ID"], &[("MobilePhone", "555-0199")]);
        let from = before + chrono::Duration::seconds(1);
        let mut changed = Vec::new();
        for family in [Family::Appointments, Family::Patients] {
            let body = list_body(&sim, family, from, sim.now());
            let resp = client.call(&creds, kareo::op(family.op()).expect("op"), &body).await?;
            changed.extend(resp.records.iter().map(|r| format!("{family:?} {}", r.id().unwrap_or("?"))));
        }
        println!("\nafter two changes, the next window returns: {}", changed.join(", "));
        println!("{} Kareo calls in {:.1}s (spaced by the per-operation throttle)", sim.calls().len(), started.elapsed().as_secs_f64());
        Ok(ExitCode::SUCCESS)
    })
}

fn list_body(
    sim: &KareoSim,
    family: Family,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    let cfg = sim.config();
    let tz = cfg.timezone;
    let mut filter = json!({
        "FromLastModifiedDate": kareo::dates::format_filter(from, tz),
        "ToLastModifiedDate": kareo::dates::format_filter(to, tz),
    });
    let filter_type = match kareo::op(family.op())
        .and_then(|o| o.request.def().member("Filter"))
        .map(|m| m.ty)
    {
        Some(kareo::schema::Ty::Complex(t)) => Some(t.def()),
        _ => None,
    };
    if filter_type.is_some_and(|t| t.member("PracticeName").is_some()) {
        filter["PracticeName"] = json!(cfg.practice_name);
    }
    if family == Family::Charges {
        filter["IncludeUnapprovedCharges"] = json!("T");
    }
    json!({"Fields": {}, "Filter": filter})
}
