//! What the end-to-end tests share: the whole product in one process over both simulators
//! ([`pipeline`]), and the moto gate and unique names of every crate's tests.

pub use testkit::{moto, unique};

pub mod pipeline;
