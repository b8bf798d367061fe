//! The streaming SOAP response reader (`kareo::reader::ResponseReader`) on arbitrary bodies.
//!
//! Input: the first byte picks the operation (`OPS[b % OPS.len()]`), the rest is the HTTP
//! body. Errors are fine; a panic is not. Also checked: the reader gives the same answer
//! whether the body comes as one slice or through a tiny `BufReader` (quick-xml sees it in
//! 7-byte pieces), and the records it yields can be read (id, dates, JSON) without panicking.
#![no_main]

use std::io::BufReader;

use kareo::{KareoError, Record, ResponseReader};
use libfuzzer_sys::fuzz_target;

/// The list reads of every family, the single-record reads, the writes and the utility ops.
const OPS: &[&str] = &[
    "GetPractices",
    "GetProviders",
    "GetServiceLocations",
    "GetProcedureCodes",
    "GetPatients",
    "GetAppointments",
    "GetCharges",
    "GetEncounterDetails",
    "GetPayments",
    "GetTransactions",
    "GetAllPatients",
    "GetAppointment",
    "GetPatient",
    "CreatePatient",
    "UpdatePatient",
    "CreateAppointment",
    "DeleteAppointment",
    "CreateEncounter",
    "CreatePayment",
    "GetThrottles",
    "GetCustomerIdFromKey",
];

/// Every record, and the paging key seen after each one.
fn read<R: std::io::BufRead>(
    r: &mut ResponseReader<R>,
) -> Result<Vec<(Record, Option<i64>)>, KareoError> {
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push((rec, r.next_start_key()));
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let name = OPS[pick as usize % OPS.len()];
    let op = kareo::op(name).expect("a known operation");

    let whole = read(&mut ResponseReader::new(op, body));
    let pieces = read(&mut ResponseReader::new(
        op,
        BufReader::with_capacity(7, body),
    ));
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert!(a == b, "{name}: records differ when read in pieces"),
        (Err(a), Err(b)) => assert_eq!(a.class(), b.class(), "{name}: {a} vs {b}"),
        (a, b) => panic!(
            "{name}: whole read {} but piecewise read {}",
            a.as_ref().map_or("failed", |_| "succeeded"),
            b.as_ref().map_or("failed", |_| "succeeded"),
        ),
    }
    // Errors render (their Display is what gets logged).
    if let Err(e) = &whole {
        let _ = e.to_string();
        let _ = e.class();
        let _ = e.kareo_text();
    }

    // What the poller does with each record.
    let tz = chrono_tz::America::New_York;
    for (rec, _) in whole.iter().flatten() {
        let _ = rec.type_name();
        let _ = rec.id();
        let _ = rec.kind();
        let _ = rec.version(tz);
        let _ = rec.created(tz);
        let _ = rec.to_json().to_string();
        for (m, _) in rec.texts() {
            let _ = rec.i64(m);
            let _ = rec.bool(m);
            let _ = rec.date(m, tz);
        }
    }
});
