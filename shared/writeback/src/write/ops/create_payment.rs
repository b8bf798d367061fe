//! Kareo CreatePayment. Reconciled by reference number, amount and payer type among the payments
//! created in the claim's window.

use chrono::NaiveDate;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{
    CreatePaymentRequest, PaymentAppointmentCreate, PaymentCreate, PaymentInsuranceCreate,
    PaymentPatientCreate, PaymentPaymentCreate, PaymentPracticeCreate,
};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::Data;
use super::{body, distinct, found, Found, Kareo, Operation};
use crate::write::check::*;

/// A new payment.
#[derive(Clone, PartialEq)]
pub struct NewPayment {
    /// Insurance, Other or Patient.
    pub payer_type: &'static str,
    /// Amount, `123.45`.
    pub amount: String,
    /// Kareo PaymentMethodCode.
    pub payment_method: &'static str,
    /// The caller's reference (check number, transaction id): what reconciliation looks for.
    pub reference_number: String,
    /// Kareo PatientID (required for a patient payment).
    pub patient_id: Option<i64>,
    /// Insurance plan id.
    pub insurance_plan_id: Option<i64>,
    /// Insurance plan name.
    pub insurance_plan_name: Option<String>,
    /// Posting date.
    pub post_date: Option<NaiveDate>,
    /// Adjudication date.
    pub adjudication_date: Option<NaiveDate>,
    /// Batch number.
    pub batch_number: Option<String>,
    /// Appointment.
    pub appointment_id: Option<i64>,
}

const PAYER_TYPES: [&str; 3] = ["Insurance", "Other", "Patient"];
const PAYMENT_METHODS: [&str; 6] = [
    "Cash",
    "Check",
    "CreditCard",
    "ElectronicFundsTransfer",
    "Other",
    "Unknown",
];

/// CreatePayment.
pub(crate) struct CreatePayment;

impl Operation for CreatePayment {
    fn check(&self, c: &mut Checker) -> Data {
        let payer_type = c.choice("payer_type", true, &PAYER_TYPES);
        let amount = c.money("amount", true, true);
        let payment_method = c.choice("payment_method", true, &PAYMENT_METHODS);
        let reference_number = c.string("reference_number", true);
        let patient_id = c.id("patient_id", payer_type == Some("Patient"));
        let insurance_plan_id = c.id("insurance_plan_id", false);
        let insurance_plan_name = c.string("insurance_plan_name", false);
        if payer_type == Some("Insurance")
            && insurance_plan_id.is_none()
            && insurance_plan_name.is_none()
            && !c.obj.contains_key("insurance_plan_id")
            && !c.obj.contains_key("insurance_plan_name")
        {
            c.problem(
                "insurance_plan_id",
                "missing (an insurance payment needs insurance_plan_id or insurance_plan_name)",
            );
        }
        let post_date = c.date("post_date", false);
        let adjudication_date = c.date("adjudication_date", false);
        let batch_number = c.string("batch_number", false);
        let appointment_id = c.id("appointment_id", false);
        Data::CreatePayment(NewPayment {
            payer_type: payer_type.unwrap_or("Patient"),
            amount: amount.unwrap_or_default(),
            payment_method: payment_method.unwrap_or("Unknown"),
            reference_number: reference_number.unwrap_or_default(),
            patient_id,
            insurance_plan_id,
            insurance_plan_name,
            post_date,
            adjudication_date,
            batch_number,
            appointment_id,
        })
    }

    fn kareo_op(&self) -> &'static str {
        "CreatePayment"
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::CreatePayment(p) = data else {
            unreachable!("CreatePayment data")
        };
        let practice_id = tenant.kareo.practice_id;
        let practice_name = tenant.kareo.practice.clone();
        let date = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
        let insurance = if p.insurance_plan_id.is_some() || p.insurance_plan_name.is_some() {
            Some(PaymentInsuranceCreate {
                company_plan_id: p.insurance_plan_id.map(|i| i.to_string()),
                company_plan_name: p.insurance_plan_name.clone(),
            })
        } else {
            None
        };
        let req = CreatePaymentRequest {
            payment: Some(PaymentCreate {
                ajudication_date: date(p.adjudication_date),
                appointment: p.appointment_id.map(|a| PaymentAppointmentCreate {
                    appointment_id: Some(a.to_string()),
                }),
                batch_number: p.batch_number.clone(),
                insurance,
                patient: p.patient_id.map(|id| PaymentPatientCreate {
                    patient_id: Some(id.to_string()),
                    ..Default::default()
                }),
                payer_type: Some(p.payer_type.to_string()),
                payment: Some(PaymentPaymentCreate {
                    amount_paid: Some(p.amount.clone()),
                    payment_method: Some(p.payment_method.to_string()),
                    reference_number: Some(p.reference_number.clone()),
                }),
                post_date: date(p.post_date),
                practice: Some(PaymentPracticeCreate {
                    practice_id: practice_id.map(|i| i.to_string()),
                    practice_name: Some(practice_name.clone()),
                }),
                ..Default::default()
            }),
        };
        body(req)
    }

    fn ids(&self, _data: &Data, answer: &Record) -> Option<Value> {
        let id = answer.i64("PaymentID").ok().flatten()?;
        Some(json!({"PaymentID": id}))
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let Data::CreatePayment(p) = data else {
                unreachable!("CreatePayment data")
            };
            let mut f = k.created_filter(true, since, until);
            f.insert("ReferenceNumber".into(), json!(p.reference_number));
            let recs = k.list("GetPayments", f).await?;
            let cents = to_cents(&p.amount);
            let ids = distinct(
                recs.iter().filter(|r| {
                    r.get("ReferenceNumber").map(str::trim) == Some(p.reference_number.as_str())
                        && r.get("Amount").and_then(to_cents) == cents
                        && r.get("PayerType").map(str::trim) == Some(p.payer_type)
                }),
                "ID",
            );
            Ok(found(ids, "PaymentID", "no payment with this reference number and amount was created since the first attempt"))
        })
    }
}
