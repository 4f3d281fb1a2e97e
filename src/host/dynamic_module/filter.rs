//! The per-stream filter: Envoy's exported stream hooks, the one boundary
//! that catches a panic and turns it into a status, and the re-entrancy
//! guard.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use super::abi::{self, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoy, ModuleHttpHeader};
use super::body::body_size;
use super::config::{CONFIGS, FilterConfig};
use super::host::NativeHost;
use super::timers::TimerSlot;
use crate::bridge::edge::Edge;
use crate::bridge::origin::Origin;
use crate::bridge::{Action, Body, Host, StreamBridge};
use crate::codec::{ErrorKind, Metadata, Peer, encode_grpc_message};
use crate::config::Side;
use crate::metrics::Counter;

/// A stream: its state machine, timer and held trailers. Envoy owns the
/// pointer between `on_http_filter_new` and `on_http_filter_destroy`; it is
/// only ever borrowed shared (see [`enter`]).
struct Stream {
    config: *const FilterConfig,
    bridge: RefCell<Box<dyn StreamBridge>>,
    timer: Arc<TimerSlot>,
    /// Response headers have gone downstream: an error can only reset.
    response_started: Cell<bool>,
    /// A callback panicked: the state machine is not called again.
    poisoned: Cell<bool>,
    /// Trailers added in the last response body callback, sent by
    /// [`SEND_TRAILERS`].
    held_trailers: RefCell<Option<Metadata>>,
    /// The module has sent the response's trailers: the response trailers
    /// hook that follows is its own.
    sent_trailers: Cell<bool>,
    /// Callbacks of this stream under way (Envoy can nest them).
    depth: Cell<u32>,
    /// Envoy destroyed the stream inside one of its callbacks.
    destroyed: Cell<bool>,
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _envoy: FilterEnvoy,
) -> *const c_void {
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy keeps the configuration alive while its streams live.
        let filter_config = unsafe { &*(config as *const FilterConfig) };
        let shared = CONFIGS.with(|configs| {
            configs
                .borrow_mut()
                .entry(filter_config.id)
                .or_insert_with(|| Rc::new(filter_config.config.clone()))
                .clone()
        });
        let bridge: Box<dyn StreamBridge> = match shared.side {
            Side::Edge => Box::new(Edge::new(shared)),
            Side::Origin => Box::new(Origin::new(shared)),
        };
        Box::into_raw(Box::new(Stream {
            config: filter_config,
            bridge: RefCell::new(bridge),
            timer: Arc::new(TimerSlot::default()),
            response_started: Cell::new(false),
            poisoned: Cell::new(false),
            held_trailers: RefCell::new(None),
            sent_trailers: Cell::new(false),
            depth: Cell::new(0),
            destroyed: Cell::new(false),
        })) as *const c_void
    }));
    made.unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    // SAFETY: a pointer filter_new returned, destroyed once, here or when
    // the callback it is destroyed in returns.
    let Some(live) = (unsafe { (stream as *const Stream).as_ref() }) else {
        return;
    };
    live.timer.close();
    match live.depth.get() {
        0 => drop(unsafe { Box::from_raw(stream as *mut Stream) }),
        _ => live.destroyed.set(true),
    }
}

/// Runs `f` on the stream behind a module pointer Envoy passes back; frees
/// the stream afterwards if Envoy destroyed it meanwhile.
fn enter<R>(module: *const c_void, f: impl FnOnce(&Stream) -> R) -> Option<R> {
    // SAFETY: Envoy passes back a pointer filter_new returned and it has
    // not destroyed, on the stream's worker thread; while any callback is
    // under way, destruction is deferred (see filter_destroy).
    let stream = unsafe { (module as *const Stream).as_ref() }?;
    stream.depth.set(stream.depth.get() + 1);
    let result = f(stream);
    stream.depth.set(stream.depth.get() - 1);
    if stream.depth.get() == 0 && stream.destroyed.get() {
        // SAFETY: destroyed by Envoy inside this callback, freed once.
        drop(unsafe { Box::from_raw(module as *mut Stream) });
    }
    Some(result)
}

/// Which callback of the stream is running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    /// The response body callback that ends the stream: no trailers follow.
    LastResponseBody,
    Trailers,
    Timer,
}

impl Stream {
    /// Runs `callback` on the state machine with a host for this callback,
    /// catching a panic. A nested call (Envoy calling back while the state
    /// machine runs) finds it busy and lets Envoy go on.
    fn call(
        &self,
        envoy: FilterEnvoy,
        phase: Phase,
        callback: impl FnOnce(&mut dyn StreamBridge, &mut NativeHost) -> Action,
    ) -> Action {
        if self.poisoned.get() {
            return Action::Continue;
        }
        let Ok(mut bridge) = self.bridge.try_borrow_mut() else {
            return Action::Continue;
        };
        // SAFETY: the configuration outlives its streams.
        let config = unsafe { &*self.config };
        let mut host = NativeHost {
            envoy,
            config,
            phase,
            timer: &self.timer,
            held_trailers: &self.held_trailers,
            response_started: self.response_started.get(),
        };
        let run = AssertUnwindSafe(|| {
            #[cfg(feature = "panic-test")]
            test_panic(&host);
            callback(bridge.as_mut(), &mut host)
        });
        match catch_unwind(run) {
            Ok(action) => action,
            Err(_) => {
                self.poisoned.set(true);
                self.held_trailers.borrow_mut().take();
                host.cancel_timer();
                let error = ErrorKind::Panic.from(Peer::Upstream);
                log::error!("{error}");
                host.count(Counter::error(&error));
                if self.response_started.get() {
                    host.reset();
                } else {
                    let mut fields = Metadata::default();
                    fields.push("grpc-status", error.code().as_header_value());
                    fields.push("grpc-message", encode_grpc_message(&error.to_string()));
                    fields.push("content-type", b"application/grpc".to_vec());
                    host.send_reply(&fields);
                }
                Action::Pause
            }
        }
    }

    /// After the last response body callback, if trailers were added: the
    /// chunk is held (StopIterationAndBuffer) and the scheduler sends the
    /// trailers on the next turn of the event loop, which releases the
    /// chunk ahead of them. (Sent inside this callback instead, they would
    /// pass the encoder filters after the module while Envoy is still
    /// encoding this chunk: Envoy's gRPC-web filter's trailer frame is then
    /// lost, and calls hung in the tests.)
    fn end_with_trailers(&self, envoy: FilterEnvoy, action: Action) -> Action {
        if self.held_trailers.borrow().is_none() {
            return action;
        }
        if self.timer.commit_now(envoy, SEND_TRAILERS) {
            return Action::Pause;
        }
        log::warn!("grpc-web-bridge: no scheduler; the response ends without trailers");
        self.held_trailers.borrow_mut().take();
        action
    }

    /// Sends the held trailers, through the whole encoder chain (the module
    /// is the first encoder filter: the last before the router).
    fn send_held_trailers(&self, envoy: FilterEnvoy) {
        let Some(trailers) = self.held_trailers.borrow_mut().take() else {
            return;
        };
        self.sent_trailers.set(true);
        let fields: Vec<ModuleHttpHeader> = trailers
            .iter()
            .map(|(name, value)| ModuleHttpHeader::of(name.as_bytes(), value))
            .collect();
        // SAFETY: inside a callback of this stream; the fields borrow
        // `trailers`, which outlive the call, which copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response_trailers(
                envoy,
                fields.as_ptr(),
                fields.len(),
            );
        }
    }
}

/// The scheduler event that sends held trailers (timer events count up
/// from 1 and never reach it).
const SEND_TRAILERS: u64 = u64::MAX;

/// Panics inside a callback when the request asks for it: the test build
/// (`--features panic-test`) that shows a panic ends one call only.
#[cfg(feature = "panic-test")]
#[allow(clippy::panic)]
fn test_panic(host: &NativeHost) {
    if host.phase == Phase::RequestHeaders
        && host
            .headers(crate::bridge::Map::RequestHeaders)
            .get("x-grpc-web-bridge-test-panic")
            .is_some()
    {
        panic!("grpc-web-bridge: test panic");
    }
}

fn status(action: Action) -> u32 {
    match action {
        Action::Continue => 0,
        // StopIteration for headers and trailers, StopIterationAndBuffer
        // for a body: the next body callback sees what was kept.
        Action::Pause => 1,
    }
}

/// Runs `callback` on the stream behind `module` and says what Envoy
/// should do next.
fn on_stream(
    envoy: FilterEnvoy,
    module: *const c_void,
    phase: Phase,
    callback: impl FnOnce(&mut dyn StreamBridge, &mut NativeHost) -> Action,
) -> u32 {
    enter(module, |stream| status(stream.call(envoy, phase, callback))).unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    on_stream(envoy, module, Phase::RequestHeaders, |b, h| {
        b.on_request_headers(h, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoy,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    on_stream(envoy, module, Phase::RequestBody, |b, h| {
        let size = body_size(envoy, Body::Request, Phase::RequestBody);
        b.on_request_body(h, size, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: FilterEnvoy,
    _module: *const c_void,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoy,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    enter(module, |stream| {
        let action = stream.call(envoy, Phase::ResponseHeaders, |b, h| {
            b.on_response_headers(h, end_of_stream)
        });
        stream.response_started.set(true);
        status(action)
    })
    .unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: FilterEnvoy,
    module: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let phase = match end_of_stream {
        true => Phase::LastResponseBody,
        false => Phase::ResponseBody,
    };
    enter(module, |stream| {
        let action = stream.call(envoy, phase, |b, h| {
            let size = body_size(envoy, Body::Response, phase);
            b.on_response_body(h, size, end_of_stream)
        });
        status(match end_of_stream {
            true => stream.end_with_trailers(envoy, action),
            false => action,
        })
    })
    .unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    envoy: FilterEnvoy,
    module: *const c_void,
) -> u32 {
    enter(module, |stream| match stream.sent_trailers.get() {
        // The module's own trailers, already settled.
        true => 0,
        false => status(stream.call(envoy, Phase::Trailers, |b, h| b.on_response_trailers(h))),
    })
    .unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoy,
    module: *const c_void,
) {
    enter(module, |stream| stream.timer.disarm());
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoy,
    module: *const c_void,
    event_id: u64,
) {
    enter(module, |stream| {
        if event_id == SEND_TRAILERS {
            stream.send_held_trailers(envoy);
        } else if stream.timer.fired(event_id) {
            // Only the latest arming counts: a stale event is ignored.
            stream.call(envoy, Phase::Timer, |b, h| {
                b.on_timer(h);
                Action::Continue
            });
        }
    });
}

// Hooks Envoy requires to exist; the bridge makes no callouts or streams.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
    _: u32,
    _: *const EnvoyHttpHeader,
    _: usize,
    _: *const EnvoyBuffer,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
    _: *const EnvoyHttpHeader,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
    _: *const EnvoyHttpHeader,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterEnvoy,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoy,
    _: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoy,
    _: *const c_void,
) {
}
