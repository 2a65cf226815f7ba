//! The gRPC `ModelInferRequest` decoder: a protobuf message after the signature-picking byte
//! (raw or typed contents, parameters, requested outputs), fitted to each test signature: no
//! input may panic.
#![no_main]

#[path = "../signatures.rs"]
mod signatures;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((pick, message)) = data.split_first() else {
        return;
    };
    let _ = vigil::api::decode::grpc_request(message, &signatures::signature(*pick), 64);
});
