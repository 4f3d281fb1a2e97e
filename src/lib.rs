//! grpc-web-bridge: a proxy-wasm HTTP filter for Envoy that turns native
//! gRPC into gRPC-web at the edge and back into native gRPC at the origin,
//! so gRPC can cross proxies that drop HTTP/2 trailers.
//!
//! Layers, from the bottom:
//! - [`codec`]: pure bytes-in/bytes-out (frames, trailer blocks, base64, content types);
//! - [`bridge`]: one state machine per side, written against the small [`bridge::Host`] trait;
//! - [`config`] and [`metrics`]: the plugin configuration and the counters;
//! - [`marker`]: the signed marker that tells the origin what the edge converted;
//! - [`abi`]: the proxy-wasm header-map wire format;
//! - `adapter` (only in the `wasm32-wasip1` module): proxy-wasm callbacks and raw hostcalls;
//! - `native` (only with `--features envoy-module`): the same machines as an
//!   Envoy dynamic module, through Envoy's C ABI.

pub mod abi;
pub mod bridge;
pub mod codec;
pub mod config;
pub mod marker;
pub mod metrics;

#[cfg(target_os = "wasi")]
mod adapter;
#[cfg(all(feature = "envoy-module", not(target_arch = "wasm32")))]
mod native;
