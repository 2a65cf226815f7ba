//! Generates the Open Inference Protocol's gRPC types, server and client from the vendored
//! `proto/grpc_service.proto`, compiled in Rust (protox): no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        // Tensor bytes (`raw_input_contents`, BYTES elements) as `Bytes`: slices of the
        // received buffer, not copies.
        .bytes(".inference")
        .compile_fds(descriptors)?;
    Ok(())
}
