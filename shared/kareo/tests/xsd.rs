//! Every request the client can build must validate against Kareo's own XSD.
//!
//! Runs `xmllint --schema $KAREO_XSD` (Debian's libxml2-utils) over the operation element of
//! three envelopes per operation: the realistic fixture in `fixtures/requests/`, the same with
//! every string replaced by hostile text, and one with *every* member of the request type
//! filled (nested types, arrays, enums), so that the order and namespace of each element the
//! schema allows are checked. `KAREO_XSD` points at Kareo's schema outside this repository
//! (`.ci/run` sets it to `../shared/reference/kareo-wsdl/soapui-2025/all.xsd`).

use std::path::PathBuf;

use kareo::envelope::{self, Credentials};
use kareo::schema::{self, Ty, TypeDef};
use serde_json::{json, Map, Value};

const HOSTILE: &str = "O'Brien & <Søn> \"Zoë\" ]]> &amp; \r\n\tend";

fn fixture(op: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/requests/{op}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture exists"))
        .expect("fixture is JSON")
}

fn hostile_strings(ty: &'static TypeDef, v: &mut Value) {
    let Value::Object(map) = v else { return };
    for (k, val) in map.iter_mut() {
        let m = ty.member(k).expect("fixture members exist");
        match m.ty {
            Ty::Str if val.is_string() => *val = json!(HOSTILE),
            Ty::Complex(t) => {
                let def = t.def();
                match (val, def.array_item()) {
                    (Value::Array(items), Some(item)) => {
                        for i in items {
                            if let (Ty::Complex(it), true) = (item.ty, i.is_object()) {
                                hostile_strings(it.def(), i)
                            } else if item.ty == Ty::Str {
                                *i = json!(HOSTILE)
                            }
                        }
                    }
                    (o @ Value::Object(_), _) => hostile_strings(def, o),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn scalar(ty: Ty) -> Value {
    match ty {
        Ty::Str => json!(HOSTILE),
        Ty::Bool => json!(true),
        Ty::Int => json!(42),
        Ty::Long => json!(4_200_000_001i64),
        Ty::Double => json!(1.5),
        Ty::Decimal => json!("12.34"),
        Ty::DateTime => json!("2026-10-05T14:00:00.000Z"),
        Ty::Guid => json!("0f8fa7a2-3b1c-4d5e-8f90-a1b2c3d4e5f6"),
        Ty::Enum(e) => json!(e.def().values[e.def().values.len() - 1]),
        Ty::Complex(_) => unreachable!(),
    }
}

/// A value for every member of `ty`, recursively (two items for each repeated member).
fn everything(ty: &'static TypeDef, depth: usize) -> Value {
    let mut map = Map::new();
    for m in ty.members {
        if ["RequestHeader", "CustomerKey", "Password", "User"].contains(&m.name) {
            continue;
        }
        let one = match m.ty {
            Ty::Complex(t) if depth == 0 => {
                let _ = t;
                continue;
            }
            Ty::Complex(t) => everything(t.def(), depth - 1),
            other => scalar(other),
        };
        let v = if m.repeated {
            json!([one.clone(), one])
        } else {
            one
        };
        map.insert(m.name.to_string(), v);
    }
    Value::Object(map)
}

#[test]
fn every_request_validates_against_kareos_xsd() {
    let Some(xsd) = testkit::kareo_xsd("XSD VALIDATION") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kareo-xsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = Credentials {
        customer_key: "k&y<>\"'".into(),
        user: "api&user".into(),
        password: "p&ss<w>rd\"' ]]>".into(),
    };
    let mut files = Vec::new();
    for op in schema::OPS {
        let realistic = fixture(op.name);
        let mut hostile = realistic.clone();
        hostile_strings(op.request.def(), &mut hostile);
        let full = everything(op.request.def(), 8);
        for (variant, body) in [
            ("realistic", realistic),
            ("hostile", hostile),
            ("every-member", full),
        ] {
            let env = envelope::write(op, &creds, "kareo-dock/test", &body)
                .unwrap_or_else(|e| panic!("{} {variant}: {e}", op.name));
            let path = dir.join(format!("{}-{variant}.xml", op.name));
            std::fs::write(&path, envelope::operation_element(&env)).unwrap();
            files.push(path);
        }
    }
    // The harness must be able to fail: a misordered header (User before Password) and a k7
    // member sent in k must both be rejected.
    let good = envelope::write(
        schema::op("GetServiceLocations").unwrap(),
        &creds,
        "t",
        &fixture("GetServiceLocations"),
    )
    .unwrap();
    let bad_order =
        envelope::operation_element(&good).replacen("<k:Password>", "<k:Userx/><k:Password>", 1);
    let bad_ns = envelope::operation_element(&good)
        .replace("<k7:Filter>", "<k:Filter>")
        .replace("</k7:Filter>", "</k:Filter>");
    let negatives = [dir.join("negative-order.xml"), dir.join("negative-ns.xml")];
    std::fs::write(&negatives[0], bad_order).unwrap();
    std::fs::write(&negatives[1], bad_ns).unwrap();
    let (_, neg_err) = testkit::xmllint(&xsd, &negatives);
    for n in &negatives {
        assert!(
            neg_err.contains(&format!("{} fails to validate", n.display())),
            "{neg_err}"
        );
    }

    let (ok, stderr) = testkit::xmllint(&xsd, &files);
    for f in &files {
        let ok = format!("{} validates", f.display());
        assert!(
            stderr.contains(&ok),
            "{} does not validate:\n{stderr}",
            f.display()
        );
    }
    assert!(ok, "{stderr}");
    assert_eq!(files.len(), 69);
    std::fs::remove_dir_all(&dir).ok();
}
