//! The v2 decoder with the binary tensor extension: a JSON header of the length the first two
//! bytes give, then binary tensor data, fitted to each test signature: no input may panic.
#![no_main]

#[path = "../signatures.rs"]
mod signatures;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [pick, high, low, body @ ..] = data else {
        return;
    };
    let json_len = usize::from(u16::from_be_bytes([*high, *low]));
    let _ = vigil::api::decode::v2_request(body, Some(json_len), &signatures::signature(*pick), 64);
});
