//! Each function binary is linked position-dependent (`functions/no-pie.rs`): an ELF of type
//! `EXEC`, whose relocations the linker resolved, not a `DYN` (PIE) the loader relocates at
//! every start. One file, the integration test of every function crate: each sees its own
//! binary only.

/// The binary of the crate under test (cargo names it to the crate's integration tests).
fn binary() -> &'static str {
    let found: Vec<&str> = [
        option_env!("CARGO_BIN_EXE_poll"),
        option_env!("CARGO_BIN_EXE_task"),
        option_env!("CARGO_BIN_EXE_write"),
        option_env!("CARGO_BIN_EXE_webhook"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(found.len(), 1, "one function binary per crate: {found:?}");
    found[0]
}

#[test]
#[cfg(target_os = "linux")]
fn the_function_binary_is_linked_position_dependent() {
    const ET_EXEC: u16 = 2;
    let path = binary();
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&elf[..4], b"\x7fELF", "{path} is not an ELF file");
    let e_type = u16::from_le_bytes([elf[16], elf[17]]);
    assert_eq!(
        e_type, ET_EXEC,
        "{path}: ELF type {e_type}, not EXEC (a PIE is 3)"
    );
}
