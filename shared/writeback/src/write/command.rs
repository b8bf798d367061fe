//! Write commands: `{"id", "tenant", "op", "data"}`, checked field by field before anything is
//! sent. What each operation's data is, how it is checked and which request it becomes is the
//! operation's module (`write/ops/`).
//!
//! Every problem of a command is reported together ([`Problem`]: the field's path and what is
//! wrong, never the value). Field names of `data` are this product's (snake_case), documented
//! per operation in `docs/write-back.md`.

use std::fmt;

use domain::op::{valid_id, Op};
use domain::tenant::TenantConfig;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::check::Checker;
pub use super::check::Problem;
pub use super::check::{normalise_gender, to_cents};
pub use super::ops::create_appointment::NewAppointment;
pub use super::ops::create_encounter::{NewEncounter, ServiceLine};
pub use super::ops::create_payment::NewPayment;
pub use super::ops::patient::{patient_members, update_body, PatientChanges};
pub use super::ops::Data;

/// A checked command. `Debug` shows the id, tenant and operation only (the data is PHI).
#[derive(Clone, PartialEq)]
pub struct Command {
    /// The caller's id: exactly once per (tenant, id).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Operation.
    pub op: Op,
    /// Checked data.
    pub data: Data,
    /// SHA-256 of the operation and the data as sent: a repeated id with other data is refused.
    pub fingerprint: String,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// Reads and checks a command from JSON text.
    pub fn from_json(text: &str) -> Result<Command, Vec<Problem>> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            vec![Problem {
                field: "(command)".into(),
                problem: format!(
                    "not JSON: {}",
                    e.to_string().split(" at line").next().unwrap_or("")
                ),
            }]
        })?;
        Command::from_value(&v)
    }

    /// Checks a command. Every problem is reported.
    pub fn from_value(v: &Value) -> Result<Command, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(obj) = v.as_object() else {
            return Err(vec![Problem {
                field: "(command)".into(),
                problem: "expected a JSON object {\"id\", \"tenant\", \"op\", \"data\"}".into(),
            }]);
        };
        let mut top = Checker::new(obj, "", &mut problems);
        let id = top.string("id", true).filter(|s| {
            let ok = valid_id(s);
            if !ok {
                top.problem("id", "must be 1-128 letters, digits, '-', '_', '.' or ':'");
            }
            ok
        });
        let tenant = top.string("tenant", true);
        let op_name = top.string("op", true);
        let data = match obj.get("data") {
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                top.problem("data", "must be an object");
                None
            }
            None => {
                top.problem("data", "missing");
                None
            }
        };
        top.unknown(&["id", "tenant", "op", "data"]);
        let op = op_name.as_deref().and_then(|n| {
            let op = Op::from_name(n);
            if op.is_none() {
                problems.push(Problem {
                    field: "op".into(),
                    problem: format!("must be one of {}", Op::ALL.map(Op::name).join(", ")),
                });
            }
            op
        });
        let data_checked = match (op, data) {
            (Some(op), Some(d)) => check_data(op, d, &mut problems),
            _ => None,
        };
        match (id, tenant, op, data_checked) {
            (Some(id), Some(tenant), Some(op), Some(data)) if problems.is_empty() => {
                let fingerprint = fingerprint(op, obj.get("data").unwrap_or(&Value::Null));
                Ok(Command {
                    id,
                    tenant,
                    op,
                    data,
                    fingerprint,
                })
            }
            _ => Err(problems),
        }
    }

    /// The ledger key: `write#<tenant>#<id>`.
    pub fn ledger_key(&self) -> String {
        format!("write#{}#{}", self.tenant, self.id)
    }

    /// The Kareo request body of a create or delete (Kareo's member names; the typed request
    /// structs check it). `UpdatePatient` is built from the current record: see
    /// [`update_body`].
    pub fn request_body(&self, tenant: &TenantConfig) -> Result<Value, Problem> {
        super::ops::of(self.op).request(&self.data, tenant, None)
    }

    /// The Kareo request body of a read-modify-write (UpdatePatient, UpdateAppointment) from
    /// the current record's members, as the executor builds it after reading them.
    pub fn request_body_from(
        &self,
        tenant: &TenantConfig,
        current: &std::collections::BTreeMap<String, String>,
    ) -> Result<Value, Problem> {
        super::ops::of(self.op).request(&self.data, tenant, Some(current))
    }

    /// Problems of this command for this tenant (what the tenant config must provide).
    pub fn check_tenant(&self, tenant: &TenantConfig) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.op == Op::CreateAppointment && tenant.kareo.practice_id.is_none() {
            out.push(Problem {
                field: "tenant".into(),
                problem: "the tenant config needs kareo.practice_id for CreateAppointment".into(),
            });
        }
        out
    }
}

/// Checks `data` for `op`: unknown fields, then the operation's own checks.
fn check_data(op: Op, d: &Map<String, Value>, problems: &mut Vec<Problem>) -> Option<Data> {
    let before = problems.len();
    let mut c = Checker::new(d, "data.", problems);
    c.unknown(&op.fields());
    let data = super::ops::of(op).check(&mut c);
    (problems.len() == before).then_some(data)
}

fn fingerprint(op: Op, data: &Value) -> String {
    // serde_json's map is ordered by key: the same data gives the same text.
    let mut h = Sha256::new();
    h.update(op.name().as_bytes());
    h.update(b"\n");
    h.update(data.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::op::PATIENT_FIELDS;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        match Command::from_value(&v) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn patient_fields_are_members_of_kareos_types() {
        let create = kareo::schema::op("CreatePatient").unwrap();
        let create_ty = match create.request.def().member("Patient").unwrap().ty {
            kareo::schema::Ty::Complex(t) => t.def(),
            _ => unreachable!(),
        };
        let data = kareo::Family::Patients.data_type();
        for f in &PATIENT_FIELDS {
            assert!(create_ty.member(f.member).is_some(), "{}", f.member);
            assert!(data.member(f.data_member).is_some(), "{}", f.data_member);
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let p = problems(json!({
            "id": "bad id!", "op": "CreatePayment", "extra": 1,
            "data": {"payer_type": "Cash", "amount": "12.345", "payment_method": "Bitcoin",
                      "post_date": "2026-02-30", "colour": "red"}
        }));
        let expect = [
            "id: must be 1-128",
            "tenant: missing",
            "extra: unknown field",
            "data.colour: unknown field",
            "data.payer_type: must be one of Insurance, Other, Patient",
            "data.amount: must be an amount of money",
            "data.payment_method: must be one of",
            "data.reference_number: missing",
            "data.post_date: is not a real calendar date",
        ];
        for e in expect {
            assert!(p.iter().any(|x| x.starts_with(e)), "{e} not in {p:#?}");
        }
        assert_eq!(p.len(), expect.len(), "{p:#?}");
    }

    #[test]
    fn a_good_command_reads_and_hides_its_data_in_debug() {
        let c = Command::from_value(&json!({
            "id": "c-1", "tenant": "acme", "op": "CreatePatient",
            "data": {"first_name": "Zoë", "last_name": "O'Brien", "date_of_birth": "1984-03-07",
                      "gender": "Female", "home_phone": "(617) 555-0100"}
        }))
        .unwrap();
        assert_eq!(c.op, Op::CreatePatient);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("Zoë") && !dbg.contains("1984"), "{dbg}");
        assert_eq!(c.ledger_key(), "write#acme#c-1");
    }

    #[test]
    fn money_and_cents() {
        assert_eq!(to_cents("125.5"), Some(12550));
        assert_eq!(to_cents("125.5000"), Some(12550));
        assert_eq!(to_cents("125.501"), None);
        // Found by fuzzing (Kareo's `Amount` text on reads): no overflow, no split inside a
        // character.
        assert_eq!(to_cents("999999999128260474"), None);
        assert_eq!(to_cents("2.[\u{793}"), None);
        let ok = Command::from_value(&json!({"id": "p", "tenant": "t", "op": "CreatePayment",
            "data": {"payer_type": "Patient", "patient_id": 3, "amount": 125.5,
                     "payment_method": "Check", "reference_number": "CHK-1"}}))
        .unwrap();
        let Data::CreatePayment(p) = ok.data else {
            panic!()
        };
        assert_eq!(p.amount, "125.50");
        for bad in [
            json!("-5"),
            json!("$5"),
            json!("1e3"),
            json!(0),
            json!(true),
        ] {
            let p = problems(json!({"id": "p", "tenant": "t", "op": "CreatePayment",
                "data": {"payer_type": "Patient", "patient_id": 3, "amount": bad,
                         "payment_method": "Check", "reference_number": "CHK-1"}}));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with("data.amount: "), "{p:?}");
        }
    }
}
