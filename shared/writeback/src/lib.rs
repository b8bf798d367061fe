//! Write-back: write commands run against Kareo exactly once ([`mod@write`]), and Dock webhook
//! deliveries, authenticated, turned into write commands by the tenant's rules ([`webhook`]).
//! What the write and webhook functions need. The reference below is `docs/write-back.md`,
//! written once and included here.
//!
#![doc = include_str!("../../../docs/write-back.md")]

pub mod webhook;
pub mod write;
