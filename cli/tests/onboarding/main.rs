//! Onboarding a practice (issue #14), run as processes against the Kareo and Dock simulators:
//! credential intake from the practice's Dock list (`onboard`), the mapping form in and out
//! (`mapping import` / `export`), and the support bundle for Tebra cases (`kareo capture`).

#[path = "../support/mod.rs"]
mod support;

mod capture;
mod mapping;
mod onboard;
