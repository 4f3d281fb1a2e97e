//! grpc-web-bridge: a proxy-wasm HTTP filter for Envoy that turns native
//! gRPC into gRPC-web at the edge and back into native gRPC at the origin,
//! so gRPC can cross proxies that drop HTTP/2 trailers.
//!
//! Layers, from the bottom: [`codec`] (pure bytes-in/bytes-out, no proxy-wasm).

pub mod bridge;
pub mod codec;
pub mod config;
pub mod metrics;
