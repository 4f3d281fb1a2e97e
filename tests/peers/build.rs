//! Compiles the interop protos with protox (pure Rust), so no protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/grpc/testing/test.proto"];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
