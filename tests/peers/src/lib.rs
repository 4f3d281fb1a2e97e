//! Test peers for grpc-web-bridge and the harness that runs the local
//! edge → HTTP/1.1 hop → origin topology with real Envoy and nginx.

pub mod flags;
pub mod graph;
pub mod harness;
pub mod hops;
pub mod interop_client;
pub mod interop_server;
pub mod raw;
pub mod topology;

/// The gRPC interop service (`grpc.testing`), generated from `proto/`.
pub mod proto {
    tonic::include_proto!("grpc.testing");
}
