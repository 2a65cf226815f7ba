//! The v1 `instances` decoder (arrays, objects keyed by feature names, scalars): no input may
//! panic.
#![no_main]

#[path = "../signatures.rs"]
mod signatures;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let signature = signatures::signature(0);
    let _ = vigil::api::decode::v1_instances(data, &signature, &signatures::features());
});
