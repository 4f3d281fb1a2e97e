//! The two hosts of [`crate::bridge::Host`], side by side: each turns one
//! kind of Envoy extension's callbacks into [`crate::bridge::StreamBridge`]
//! calls and implements `Host` over its calls into Envoy. Nothing above
//! this module knows which one runs.
//!
//! - [`proxy_wasm`] (only in the `wasm32-wasip1` module): Envoy's
//!   `envoy.filters.http.wasm`, through raw proxy-wasm hostcalls;
//! - [`dynamic_module`] (only with `--features envoy-module`): Envoy's
//!   `envoy.filters.http.dynamic_modules`, through its C ABI.

#[cfg(target_os = "wasi")]
pub mod proxy_wasm;

#[cfg(all(feature = "envoy-module", not(target_arch = "wasm32")))]
pub mod dynamic_module;
