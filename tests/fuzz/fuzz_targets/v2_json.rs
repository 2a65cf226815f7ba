//! The v2 JSON decoder, fitted to each test signature: no input may panic.
#![no_main]

#[path = "../signatures.rs"]
mod signatures;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let _ = vigil::api::decode::v2_request(body, None, &signatures::signature(pick), 64);
});
