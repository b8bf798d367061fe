//! The build script of every function crate: link the function binary as a position-dependent
//! executable (`-no-pie`) on Linux, where Lambda runs it.
//!
//! Why: a position-independent executable is relocated by the dynamic loader at every start.
//! A function binary carries about 62,000 relative relocations (the SDK's endpoint and shape
//! tables, vtables, every `&'static str` held in a static), and applying them writes, so
//! copies, each of the ~390 pages of `.data.rel.ro` before `main` runs: half of a function's
//! start (`BENCHMARKS.md`, start → ready: 3.2 → 2.2 ms for poll, 2.0 → 1.0 ms to `main`). A
//! position-dependent executable has them resolved by the linker; its read-only data is mapped
//! from the file as it is, and only the pages used are ever read.
//!
//! The cost: the executable's own image is not placed at a random address (shared libraries,
//! stack, heap and mappings still are) — the default of Go binaries on Linux, and of every
//! Lambda function written in Go. The code stays position-independent (it is compiled so;
//! only the link changes), so nothing else differs. To link PIE again, delete the `build`
//! line of the function's `Cargo.toml`.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=../no-pie.rs");
}
