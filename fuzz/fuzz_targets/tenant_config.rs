//! Tenant config YAML (`TenantConfig::from_yaml`) and its `webhooks:` section
//! (`WebhookConfig::from_tenant_yaml`) on arbitrary UTF-8.
//!
//! Never a panic. Checked as well: every error names the source and has a reason, its line
//! (when given) is a line of the text; a config that reads can be written back as YAML, and
//! that YAML reads again as the same tenant.
#![no_main]

use domain::config::ConfigError;
use domain::hooks::WebhookConfig;
use domain::TenantConfig;
use libfuzzer_sys::fuzz_target;

const SOURCE: &str = "fuzz.yaml";

fn check_error(e: &ConfigError, text: &str) {
    assert_eq!(e.file, SOURCE);
    assert!(!e.reason.trim().is_empty(), "an error without a reason");
    if let Some(l) = e.line {
        // YAML breaks lines at `\n`, `\r\n` and a lone `\r` (libyaml, under serde_yaml_ng,
        // also at NEL, LS and PS); `str::lines` counts fewer. An error at the end of input may
        // point one line further, two without a final line break (libyaml ends the stream
        // with an implicit break).
        let breaks = text
            .chars()
            .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
            .count()
            - text.matches("\r\n").count();
        let lines = breaks + 2;
        assert!(
            l >= 1 && l <= lines,
            "line {l} of a text with {breaks} line breaks: {}",
            e.reason
        );
    }
    assert!(!e.to_string().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TenantConfig::from_yaml(text, SOURCE) {
        Ok(cfg) => {
            let _ = cfg.family(domain::Family::Patients);
            let yaml = cfg.to_yaml();
            match TenantConfig::from_yaml(&yaml, SOURCE) {
                Ok(again) => {
                    assert_eq!(again.tenant, cfg.tenant, "round trip: tenant");
                    assert_eq!(again.timezone, cfg.timezone, "round trip: timezone");
                    assert_eq!(again.start, cfg.start, "round trip: start");
                    assert!(
                        again.families.keys().eq(cfg.families.keys()),
                        "round trip: families"
                    );
                    assert_eq!(
                        again.mapping.rules.len(),
                        cfg.mapping.rules.len(),
                        "round trip: mapping rules"
                    );
                    assert_eq!(
                        again.hooks.rules.len(),
                        cfg.hooks.rules.len(),
                        "round trip: webhook rules"
                    );
                }
                Err(e) => panic!("a config read does not read back: {e}\n---\n{yaml}"),
            }
        }
        Err(e) => check_error(&e, text),
    }
    match WebhookConfig::from_tenant_yaml(text, SOURCE) {
        Ok(h) => {
            let _ = h.rules.len();
        }
        Err(es) => {
            assert!(!es.is_empty(), "Err with no problem");
            for e in &es {
                check_error(e, text);
            }
        }
    }
});
