//! Dock webhook signature check (`writeback::webhook::verify`).
//!
//! Input layout (short inputs are zero-padded):
//!
//! | bytes  | meaning                                                                   |
//! |--------|---------------------------------------------------------------------------|
//! | 0..8   | `now`, Unix seconds (i64 LE; clamped into chrono's range)                 |
//! | 8..10  | `max_age`, seconds (u16 LE)                                               |
//! | 10..18 | `t` of the signed header (i64 LE): as is (flag 0x01) or `now − (i16)t`    |
//! | 18     | flags: 0x01 raw t, 0x02 no header for the fuzzed call, 0x04 upper-case    |
//! |        | hex, 0x08 spaces after commas, 0x10 v1 before t, 0x20 a wrong v1 first    |
//! | 19..21 | which body byte to flip (u16 LE, modulo the body length)                  |
//! | 21     | XOR mask of the flip (0 means 1)                                          |
//! | 22..   | `secret` 0xFF `header` 0xFF `body` (0xFF never occurs in UTF-8)           |
//!
//! Never a panic. Properties: the fuzzed header over the fuzzed body only verifies when it
//! carries the body's real HMAC; a header built with the real HMAC-SHA256(secret, body)
//! verifies exactly when `|now − t| ≤ max_age` (else `Stale`); with one body byte flipped it
//! is `Forged`; `challenge_digest` is that same HMAC in lower-case hex.
#![no_main]

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use writeback::webhook::{challenge_digest, verify, Refused};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const PREFIX: usize = 22;

fn hmac_hex(secret: &[u8], body: &[u8], upper: bool) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut head = [0u8; PREFIX];
    let n = data.len().min(PREFIX);
    head[..n].copy_from_slice(&data[..n]);
    let rest = data.get(PREFIX..).unwrap_or(&[]);

    let now_raw = i64::from_le_bytes(head[0..8].try_into().unwrap());
    let max_age = Duration::from_secs(u16::from_le_bytes([head[8], head[9]]).into());
    let t_raw = i64::from_le_bytes(head[10..18].try_into().unwrap());
    let flags = head[18];
    let flip_at = u16::from_le_bytes([head[19], head[20]]) as usize;
    let mask = if head[21] == 0 { 1 } else { head[21] };

    // chrono covers about ±8.2e12 s: fold anything else into that range.
    let now: DateTime<Utc> = DateTime::from_timestamp(now_raw, 0)
        .or_else(|| DateTime::from_timestamp(now_raw % 8_000_000_000_000, 0))
        .expect("in range");

    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let secret = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let header = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let body = parts.next().unwrap_or(&[]);

    // 1. Arbitrary header, body, secret: no panic; accepted only with the real HMAC.
    let fuzzed = verify(
        &secret,
        (flags & 0x02 == 0).then_some(header.as_str()),
        body,
        now,
        max_age,
    );
    if fuzzed.is_ok() {
        let real = hmac_hex(secret.as_bytes(), body, false);
        let lower = header.to_ascii_lowercase();
        assert!(
            lower.contains(&real),
            "a header without the body's HMAC was accepted: {header:?}"
        );
    }

    // 2. A correctly signed delivery.
    let t = if flags & 0x01 != 0 {
        t_raw
    } else {
        now.timestamp() - i64::from(t_raw as i16)
    };
    let sig = hmac_hex(secret.as_bytes(), body, flags & 0x04 != 0);
    let sep = if flags & 0x08 != 0 { ", " } else { "," };
    let mut fields = vec![format!("t={t}"), format!("v1={sig}")];
    if flags & 0x10 != 0 {
        fields.reverse();
    }
    if flags & 0x20 != 0 {
        fields.insert(0, format!("v1={}", "00".repeat(32)));
    }
    let signed = fields.join(sep);

    let within = (i128::from(now.timestamp()) - i128::from(t)).unsigned_abs()
        <= u128::from(max_age.as_secs());
    let expected = if within { Ok(()) } else { Err(Refused::Stale) };
    assert_eq!(
        verify(&secret, Some(&signed), body, now, max_age),
        expected,
        "correctly signed: {signed:?} now={} max_age={max_age:?}",
        now.timestamp()
    );

    // 3. The same header over the body with one byte flipped: forged.
    if !body.is_empty() {
        let mut tampered = body.to_vec();
        tampered[flip_at % body.len()] ^= mask;
        assert_eq!(
            verify(&secret, Some(&signed), &tampered, now, max_age),
            Err(Refused::Forged),
            "one flipped body byte still verifies"
        );
    }

    // 4. Dock's verification challenge uses the same HMAC.
    if let Ok(message) = std::str::from_utf8(body) {
        assert_eq!(
            challenge_digest(&secret, message),
            hmac_hex(secret.as_bytes(), body, false)
        );
    }
});
