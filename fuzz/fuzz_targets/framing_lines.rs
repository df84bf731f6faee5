//! `Framing<LinesCodec>` fed a peer's bytes cut anywhere: see `checks/framing.rs`.

#![no_main]

use switchboard::Framing;

// The module holds the checks of both `framing_*` targets; this one runs one of them.
#[allow(dead_code)]
#[path = "../checks/framing.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::lines(data));
