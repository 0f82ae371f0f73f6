#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static DISPATCHER: checks::Dispatcher = checks::Dispatcher::new();
}

// First byte: which Task method (and v2/v3 service name); the rest: its payload. Every input
// is decoded as every request type and dispatched to an empty shim's real handlers.
fuzz_target!(|data: &[u8]| {
    let (sel, payload) = data.split_first().map(|(s, p)| (*s, p)).unwrap_or((0, &[]));
    checks::check_request_decode(payload);
    DISPATCHER.with(|d| {
        d.call(sel, payload);
    });
});
