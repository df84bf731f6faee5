//! The WebSocket echo example's parsers: see `checks/websocket.rs`.

#![no_main]

// The module holds the checks of `http_request` and every `websocket_*` target; this one
// runs one of them.
#[allow(dead_code)]
#[path = "../checks/websocket.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_request(data));
