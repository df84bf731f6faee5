//! The SMTP example's parsers: see `checks/smtp.rs`.

#![no_main]

// The module holds the checks of every `smtp_*` target; this one runs one of them.
#[allow(dead_code)]
#[path = "../checks/smtp.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::command(data));
