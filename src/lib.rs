//! grpc-web-bridge: a proxy-wasm HTTP filter for Envoy that turns native
//! gRPC into gRPC-web at the edge and back into native gRPC at the origin,
//! so gRPC can cross proxies that drop HTTP/2 trailers.
//!
//! Layers, from the bottom:
//! - [`codec`]: pure bytes-in/bytes-out (frames, trailer blocks, base64, content types);
//! - [`bridge`]: one state machine per side, written against the small [`bridge::Host`] trait;
//! - [`config`] and [`metrics`]: the plugin configuration and the counters;
//! - [`marker`]: the signed marker that tells the origin what the edge converted;
//! - [`abi`]: the header map the state machines read (proxy-wasm's wire format);
//! - `host`: the two hosts of the state machines, side by side: `proxy_wasm`
//!   (the `.wasm` Envoy's Wasm filter loads) and `dynamic_module` (the `.so`
//!   Envoy loads as a dynamic module, `--features envoy-module`).

pub mod abi;
pub mod bridge;
pub mod codec;
pub mod config;
pub mod marker;
pub mod metrics;

mod host;
