//! The dynamic-module host (the native build): the same state machines as
//! an Envoy dynamic module (`envoy.filters.http.dynamic_modules`), built
//! with `--features envoy-module` into `libgrpc_web_bridge.so`, for either
//! side (docs/design.md, "The native build"). Like the proxy-wasm host, it
//! only turns Envoy's callbacks into `StreamBridge` calls and implements
//! `Host`; a pointer Envoy hands over is used only inside the callback that
//! gave it.
//!
//! Read in layers, as Envoy's own Rust SDK is laid out: [`abi`] declares the
//! C ABI, [`filter`] exports the stream hooks and is the one boundary that
//! catches panics, [`host`] implements `Host` for one callback, [`body`]
//! reads Envoy's body buffers in place, [`timers`] runs deadlines, and
//! [`config`] and [`logger`] do the rest.
//!
//! What differs from proxy-wasm, and how it is bridged:
//! - A body callback sees two buffers: the chunk just received and what an
//!   earlier `StopIterationAndBuffer` kept. The host shows the state
//!   machines one buffer, kept ++ received, as Envoy's Wasm host does.
//! - There is no per-stream timer: deadlines run on one timer thread of the
//!   module's own, which wakes the stream through its scheduler; an event
//!   for a timer re-armed or cancelled since is ignored.
//! - The ABI cannot add trailers to a response that has none (proxy-wasm
//!   can, in the last body callback). Trailers the state machines add there
//!   are kept; the body callback holds the last chunk back, and the
//!   stream's scheduler sends the trailers on the next turn of the event
//!   loop, which releases the held chunk ahead of them.
//! - A panic inside a callback is caught: that call ends with INTERNAL (or a
//!   reset, once its response has started), is counted, and the stream's
//!   state machine is not called again. Envoy goes on serving.
//! - Envoy may call back into the module while it is inside a callback
//!   (its own trailers pass its response hooks; the end of a stream
//!   destroys the filter): a stream is only ever borrowed shared, a nested
//!   hook finds the state machine busy and lets Envoy go on, and a stream
//!   destroyed inside a callback is freed when the callback returns.

mod abi;
mod body;
mod config;
mod filter;
mod host;
mod logger;
mod timers;

use logger::EnvoyLogger;

/// The ABI version this module was written against (Envoy 1.40); Envoy
/// 1.38 on only warn on a mismatch.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    let _ = log::set_logger(&EnvoyLogger);
    log::set_max_level(log::LevelFilter::Info);
    ABI_VERSION.as_ptr().cast()
}
