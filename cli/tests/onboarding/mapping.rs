//! `kareo-dock mapping import` / `export`, run as a process: the practice's form (CSV and
//! Markdown) with every read interface of Dock's page becomes rules that pass `check`, the
//! export gives the same table back, and a form with unknown names is reported by row and
//! column without writing anything.

use std::path::PathBuf;
use std::process::Output;

use dock_sim::{DockSim, Seed};
use serde_json::json;

use crate::support::{bin, run, text, tmp};

const CONFIG: &str = "tenant: acme   # kept as written\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: kareo/acme\n  practice: \"Sim Family Practice & Associates\"\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {}\n";

/// Every read interface of the page, with each optional column used somewhere.
const ROWS: [[&str; 8]; 15] = [
    [
        "Appointments (bulk)",
        "Reschedule SmartFlow",
        "Front Desk",
        "Reschedules",
        "",
        "ConfirmationStatus changed from Scheduled to Cancelled",
        "",
        "cancelled-appointment",
    ],
    [
        "Appointments (bulk)",
        "",
        "Front Desk",
        "Callbacks",
        "",
        "",
        "New appointment {ID}",
        "new-appointment",
    ],
    [
        "Charges",
        "",
        "Billing",
        "Claims",
        "",
        "any and Status is On Hold",
        "",
        "charge-on-hold",
    ],
    [
        "Encounter Details",
        "",
        "Billing",
        "",
        "",
        "updated and EncounterStatus is one of Rejected, Unpayable",
        "Encounter {EncounterID}: {EncounterStatus}",
        "encounter-rejected",
    ],
    [
        "Patients (bulk)",
        "New Patient Intake",
        "Front Desk",
        "New Patients",
        "",
        "",
        "",
        "new-patient",
    ],
    [
        "Patients (bulk)",
        "",
        "Front Desk",
        "",
        "",
        "deleted",
        "",
        "patient-deleted",
    ],
    [
        "Payments",
        "",
        "Billing",
        "",
        "billing@acme.example",
        "Amount matches \"^[0-9]{4,}\"",
        "",
        "large-payment",
    ],
    [
        "Practices",
        "",
        "Billing",
        "",
        "",
        "PracticeName changed",
        "",
        "practice-renamed",
    ],
    [
        "Procedure Codes",
        "",
        "Billing",
        "",
        "",
        "",
        "",
        "new-procedure-code",
    ],
    [
        "Providers",
        "",
        "Front Desk",
        "",
        "",
        "",
        "",
        "new-provider",
    ],
    [
        "Service Locations",
        "",
        "Front Desk",
        "",
        "",
        "AddressLine1 changed",
        "",
        "location-moved",
    ],
    [
        "Transactions",
        "",
        "Billing",
        "",
        "",
        "",
        "",
        "new-transaction",
    ],
    [
        "Create Patient",
        "",
        "Front Desk",
        "",
        "",
        "task completed",
        "",
        "intake-creates-patient",
    ],
    [
        "Update Patient",
        "",
        "Front Desk",
        "",
        "",
        "task status changed",
        "",
        "contact-update",
    ],
    [
        "Delete Appointment",
        "",
        "Front Desk",
        "",
        "",
        "task completed",
        "",
        "cancel-in-kareo",
    ],
];

const HEADER: [&str; 8] = [
    "Kareo Interface",
    "Dock Workflow/SmartFlow Name",
    "Dock Task List Name",
    "Task Group",
    "Default Assignee",
    "When",
    "Task Description",
    "Rule",
];

fn markdown() -> String {
    let mut s = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(8));
    for r in ROWS {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

fn csv() -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER).unwrap();
    for r in ROWS {
        w.write_record(r).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

struct World {
    dock: DockSim,
    dir: PathBuf,
}

impl World {
    async fn start(name: &str) -> World {
        let dock = DockSim::start(Seed::default()).await;
        let dir = tmp(&format!("mapping-{name}"));
        std::fs::write(dir.join("acme.yaml"), CONFIG).unwrap();
        let secrets = json!({ "dock/acme": dock.secret() });
        std::fs::write(dir.join("secrets.json"), secrets.to_string()).unwrap();
        World { dock, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    async fn cli(&self, args: &[&str]) -> Output {
        let mut c = bin();
        c.env("DOCK_API_URL", self.dock.api_url())
            .env("DOCK_AUTH_URL", self.dock.auth_url())
            .env_remove("KAREO_DOCK_SECRETS")
            .args(args);
        run(c).await
    }
}

#[tokio::test]
async fn a_form_with_every_read_interface_imports_checks_and_exports_back_the_same_table() {
    for (ext, form) in [("md", markdown()), ("csv", csv())] {
        let w = World::start(ext).await;
        let form_path = w.path(&format!("form.{ext}"));
        std::fs::write(&form_path, &form).unwrap();
        let cfg = w.path("acme.yaml");
        let secrets = w.path("secrets.json");
        let o = w
            .cli(&[
                "mapping",
                "import",
                &form_path,
                "--config",
                &cfg,
                "--write",
                "--check",
                "--secrets",
                &secrets,
            ])
            .await;
        let o = if o.status.code() == Some(0) {
            o
        } else {
            panic!("{ext}: {}", text(&o))
        };
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("12 rule(s) and 3 webhook rule(s)") && out.contains("0 failed"),
            "{ext}: {out}"
        );
        // The written config keeps what it had, enables the families, and is what `check`
        // and the functions read.
        let written = std::fs::read_to_string(&cfg).unwrap();
        assert!(
            written.starts_with("tenant: acme   # kept as written\n"),
            "{written}"
        );
        let t = domain::TenantConfig::from_yaml(&written, "acme.yaml").unwrap();
        assert_eq!(t.mapping.rules.len(), 12);
        assert_eq!(t.families.len(), 10, "every read family enabled");
        let cancelled = &t.mapping.rules[0];
        assert_eq!(cancelled.name, "cancelled-appointment");
        assert_eq!(cancelled.on.name(), "updated");
        assert_eq!(
            cancelled.task.workflow.as_deref(),
            Some("Reschedule SmartFlow")
        );
        assert_eq!(t.mapping.rules[5].on.name(), "deleted");
        let hooks = &t.hooks.rules;
        assert_eq!(hooks.len(), 3);
        assert_eq!(hooks[0].op.name(), "CreatePatient");
        assert_eq!(hooks[0].events, vec!["MARK_COMPLETE".to_string()]);
        assert!(!hooks[0].modify_existing && hooks[2].modify_existing);
        // Export gives the table back, in the form it was written.
        let flag: &[&str] = if ext == "csv" { &["--csv"] } else { &[] };
        let mut args = vec!["mapping", "export", "--config", &cfg];
        args.extend_from_slice(flag);
        let e = w.cli(&args).await;
        assert_eq!(e.status.code(), Some(0), "{}", text(&e));
        assert_eq!(
            String::from_utf8_lossy(&e.stdout),
            form,
            "{ext}: export differs"
        );
    }
}

#[tokio::test]
async fn unknown_names_are_reported_by_row_and_column_and_nothing_is_written() {
    let w = World::start("unknown").await;
    let form = "Kareo Interface,Dock Workflow/SmartFlow Name,Dock Task List Name,When\n\
                Patients (bulk),,Front Desk,\n\
                Apointments (bulk),,Front Desk,\n\
                Charges,New Charge Flow,Billing,\n\
                Payments,,Billing,Amount goes up\n\
                Create Patient,,Front Desk,\n\
                Providers,,Front Desk,Colour changed\n";
    let form_path = w.path("form.csv");
    std::fs::write(&form_path, form).unwrap();
    let cfg = w.path("acme.yaml");
    let o = w
        .cli(&["mapping", "import", &form_path, "--config", &cfg, "--write"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 3, Kareo Interface: unknown interface 'Apointments (bulk)' (did you mean 'Appointments (bulk)'?)"),
        "{err}"
    );
    assert!(
        err.contains("line 4, Task Group: required with a workflow"),
        "{err}"
    );
    assert!(
        err.contains("line 5, When: 'Amount goes up' is not a condition"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("line 6: 'Create Patient' is not automatable from the form: a write needs the Dock event"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        CONFIG,
        "nothing written"
    );

    // A field the family's record does not have is placed on its row too.
    let form = "Kareo Interface,Dock Task List Name,When\nProviders,Front Desk,Colour changed\n";
    std::fs::write(&form_path, form).unwrap();
    let o = w
        .cli(&["mapping", "import", &form_path, "--config", &cfg, "--write"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2:") && err.contains("Colour"), "{err}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), CONFIG);

    // A list Dock does not have: written, then the live check places it on its row.
    let form = "Kareo Interface,Dock Task List Name\nProviders,Front Desk\nPayments,Collections\n";
    std::fs::write(&form_path, form).unwrap();
    let o = w
        .cli(&[
            "mapping",
            "import",
            &form_path,
            "--config",
            &cfg,
            "--write",
            "--check",
            "--secrets",
            &w.path("secrets.json"),
        ])
        .await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("line 3, Dock Task List Name: FAIL") && l.contains("Collections")),
        "{out}"
    );
    assert!(!out.contains("line 2, Dock Task List Name: FAIL"), "{out}");
}
