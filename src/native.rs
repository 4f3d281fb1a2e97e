//! The native host: the same state machines as an Envoy dynamic module
//! (`envoy.filters.http.dynamic_modules`), built with `--features
//! envoy-module` into `libgrpc_web_bridge.so`, for either side
//! (docs/design.md, "The native build"). Like the proxy-wasm adapter, it only turns Envoy's callbacks into [`StreamBridge`] calls and
//! implements [`Host`]; `unsafe` lives here and in [`ffi`] alone, and a
//! pointer Envoy hands over is used only inside the callback that gave it.
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

mod ffi;

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::abi::HeaderPairs;
use crate::bridge::edge::Edge;
use crate::bridge::origin::Origin;
use crate::bridge::{Action, Body, Host, Map, StreamBridge};
use crate::codec::{ErrorKind, Metadata, Peer, encode_grpc_message};
use crate::config::{Config, Side};
use crate::metrics::Counter;
use ffi::{EnvoyBuffer, EnvoyHttpHeader, FilterEnvoy, ModuleBuffer, ModuleHttpHeader};

/// The ABI version this module was written against (Envoy 1.40); Envoy
/// 1.38 on only warn on a mismatch.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    let _ = log::set_logger(&EnvoyLogger);
    log::set_max_level(log::LevelFilter::Info);
    ABI_VERSION.as_ptr().cast()
}

/// Forwards the `log` crate to Envoy's log, under `[dynamic_modules]`.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Error => 4,
            log::Level::Warn => 3,
            _ => 2,
        };
        let message = record.args().to_string();
        // SAFETY: the message outlives the call, which copies it.
        unsafe {
            ffi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes()))
        };
    }

    fn flush(&self) {}
}

/// One filter configuration: the parsed JSON and the ids of its counters,
/// which Envoy takes only while the configuration is created.
struct FilterConfig {
    /// Tells this configuration's per-thread copy from others'.
    id: u64,
    config: Config,
    counters: HashMap<Counter, usize>,
}

static NEXT_CONFIG_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Each worker's copy of each configuration, for the state machines
    /// (which share it by `Rc`, as in the Wasm VM of a worker).
    static CONFIGS: RefCell<HashMap<u64, Rc<Config>>> = RefCell::new(HashMap::new());
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut std::ffi::c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const std::ffi::c_void {
    let created = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy's buffer is valid for this call.
        let json = unsafe { config.as_slice() };
        let config = match Config::from_json(json) {
            Ok(config) => config,
            Err(error) => {
                log::error!("grpc-web-bridge: {error}");
                return std::ptr::null();
            }
        };
        let mut counters = HashMap::new();
        for counter in Counter::all() {
            let name = counter.name(config.side);
            let mut id = 0usize;
            // SAFETY: the name outlives the call; `id` is ours.
            let result = unsafe {
                ffi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                    config_envoy,
                    ModuleBuffer::of(name.as_bytes()),
                    std::ptr::null_mut(),
                    0,
                    &mut id,
                )
            };
            if result == 0 {
                counters.insert(counter, id);
            }
        }
        log::info!("grpc-web-bridge: configured as {:?} (native)", config.side);
        let id = NEXT_CONFIG_ID.fetch_add(1, Ordering::Relaxed);
        Box::into_raw(Box::new(FilterConfig {
            id,
            config,
            counters,
        })) as *const std::ffi::c_void
    }));
    created.unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: *const std::ffi::c_void,
) {
    if !config.is_null() {
        // SAFETY: made by Box::into_raw in config_new, destroyed once.
        drop(unsafe { Box::from_raw(config as *mut FilterConfig) });
    }
}

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
    config: *const std::ffi::c_void,
    _envoy: FilterEnvoy,
) -> *const std::ffi::c_void {
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
        })) as *const std::ffi::c_void
    }));
    made.unwrap_or(std::ptr::null())
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const std::ffi::c_void) {
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
fn enter<R>(module: *const std::ffi::c_void, f: impl FnOnce(&Stream) -> R) -> Option<R> {
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
enum Phase {
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
            ffi::envoy_dynamic_module_callback_http_send_response_trailers(
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
            .headers(Map::RequestHeaders)
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
    module: *const std::ffi::c_void,
    phase: Phase,
    callback: impl FnOnce(&mut dyn StreamBridge, &mut NativeHost) -> Action,
) -> u32 {
    enter(module, |stream| status(stream.call(envoy, phase, callback))).unwrap_or(0)
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    module: *const std::ffi::c_void,
    end_of_stream: bool,
) -> u32 {
    on_stream(envoy, module, Phase::RequestHeaders, |b, h| {
        b.on_request_headers(h, end_of_stream)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoy,
    module: *const std::ffi::c_void,
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
    _module: *const std::ffi::c_void,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoy,
    module: *const std::ffi::c_void,
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
    module: *const std::ffi::c_void,
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
    module: *const std::ffi::c_void,
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
    module: *const std::ffi::c_void,
) {
    enter(module, |stream| stream.timer.disarm());
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoy,
    module: *const std::ffi::c_void,
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

/// The size of the body a body callback shows the state machine: what was
/// kept, then what was just received (or, where Envoy hands the kept body
/// over as received, that alone).
fn body_size(envoy: FilterEnvoy, body: Body, phase: Phase) -> usize {
    body_views(envoy, body, phase)
        .iter()
        // SAFETY: called inside the body callback.
        .map(|&kind| unsafe { ffi::envoy_dynamic_module_callback_http_get_body_size(envoy, kind) })
        .sum()
}

/// The Envoy buffers that make up the body the state machine sees, in order.
fn body_views(envoy: FilterEnvoy, body: Body, phase: Phase) -> Vec<u32> {
    let (received, kept) = match body {
        Body::Request => (ffi::RECEIVED_REQUEST_BODY, ffi::BUFFERED_REQUEST_BODY),
        Body::Response => (ffi::RECEIVED_RESPONSE_BODY, ffi::BUFFERED_RESPONSE_BODY),
    };
    let in_body_callback = matches!(
        (phase, body),
        (Phase::RequestBody, Body::Request)
            | (
                Phase::ResponseBody | Phase::LastResponseBody,
                Body::Response
            )
    );
    if !in_body_callback {
        return vec![kept];
    }
    // SAFETY: called inside the body callback.
    let received_is_kept = unsafe {
        match body {
            Body::Request => {
                ffi::envoy_dynamic_module_callback_http_received_buffered_request_body(envoy)
            }
            Body::Response => {
                ffi::envoy_dynamic_module_callback_http_received_buffered_response_body(envoy)
            }
        }
    };
    match received_is_kept {
        true => vec![received],
        false => vec![kept, received],
    }
}

struct NativeHost<'a> {
    envoy: FilterEnvoy,
    config: &'a FilterConfig,
    phase: Phase,
    timer: &'a Arc<TimerSlot>,
    held_trailers: &'a RefCell<Option<Metadata>>,
    /// Response headers have reached the module.
    response_started: bool,
}

fn header_type(map: Map) -> u32 {
    match map {
        Map::RequestHeaders => ffi::REQUEST_HEADER,
        Map::ResponseHeaders => ffi::RESPONSE_HEADER,
        Map::ResponseTrailers => ffi::RESPONSE_TRAILER,
    }
}

impl NativeHost<'_> {
    /// The trailers this callback adds to a response that has none, which
    /// the module holds and sends itself.
    fn held(&self, map: Map) -> Option<std::cell::RefMut<'_, Option<Metadata>>> {
        (map == Map::ResponseTrailers && self.phase == Phase::LastResponseBody)
            .then(|| self.held_trailers.borrow_mut())
    }

    /// Every byte of the body view, chunk by chunk.
    fn body_chunks(&self, body: Body) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        for kind in body_views(self.envoy, body, self.phase) {
            // SAFETY: inside this callback; the vector is sized as Envoy says.
            unsafe {
                let count =
                    ffi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.envoy, kind);
                if count == 0 {
                    continue;
                }
                let mut buffers = vec![EnvoyBuffer::EMPTY; count];
                if ffi::envoy_dynamic_module_callback_http_get_body_chunks(
                    self.envoy,
                    kind,
                    buffers.as_mut_ptr(),
                ) {
                    chunks.extend(buffers.iter().map(|b| b.as_slice()));
                }
            }
        }
        chunks
    }
}

impl Host for NativeHost<'_> {
    fn headers(&self, map: Map) -> HeaderPairs {
        if let Some(held) = self.held(map) {
            let fields = held.as_ref().map_or(&[][..], |fields| &fields.0[..]);
            return HeaderPairs::from_pairs(
                fields
                    .iter()
                    .map(|(name, value)| (name.as_bytes(), &value[..])),
            );
        }
        let kind = header_type(map);
        // SAFETY: inside this callback; the vector is sized as Envoy says,
        // and the fields are copied before it returns.
        unsafe {
            let count = ffi::envoy_dynamic_module_callback_http_get_headers_size(self.envoy, kind);
            let mut fields = vec![EnvoyHttpHeader::EMPTY; count];
            if count == 0
                || !ffi::envoy_dynamic_module_callback_http_get_headers(
                    self.envoy,
                    kind,
                    fields.as_mut_ptr(),
                )
            {
                return HeaderPairs::default();
            }
            HeaderPairs::from_pairs(fields.iter().map(|f| (f.key(), f.value())))
        }
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        if let Some(mut held) = self.held(map) {
            let fields = held.get_or_insert_with(Metadata::default);
            fields.0.retain(|(field, _)| field != name);
            fields.push(name, value);
            return;
        }
        // SAFETY: the buffers outlive the call, which copies them.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            );
        }
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        if let Some(mut held) = self.held(map) {
            held.get_or_insert_with(Metadata::default).push(name, value);
            return;
        }
        // SAFETY: the buffers outlive the call, which copies them.
        let added = unsafe {
            ffi::envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        if !added && !value.is_empty() {
            log::warn!("grpc-web-bridge: could not add {name} to {map:?}");
        }
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        if let Some(mut held) = self.held(map) {
            if let Some(fields) = held.as_mut() {
                fields.0.retain(|(field, _)| field != name);
            }
            return;
        }
        // SAFETY: a null value removes the field; the name is copied.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::NULL,
            );
        }
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        if let Some(mut held) = self.held(map) {
            *held = Some(fields.clone());
            return;
        }
        let current = self.headers(map);
        let mut names: Vec<String> = current
            .iter()
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
            .collect();
        names.dedup();
        for name in names {
            self.remove_header(map, &name);
        }
        for (name, value) in fields.iter() {
            self.add_header(map, name, value);
        }
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len);
        let mut at = 0;
        for chunk in self.body_chunks(body) {
            let (from, to) = (start.max(at), (start + len).min(at + chunk.len()));
            if from < to {
                out.extend_from_slice(&chunk[from - at..to - at]);
            }
            at += chunk.len();
            if at >= start + len {
                break;
            }
        }
        Bytes::from(out)
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        // Envoy can drain a buffer's front and append to its end: the rest
        // is copied out, everything drained, and the new body appended.
        let total: usize = self.body_chunks(body).iter().map(|c| c.len()).sum();
        let rest = self.body(body, len.min(total), total.saturating_sub(len));
        let views = body_views(self.envoy, body, self.phase);
        for &kind in &views {
            // SAFETY: inside this callback.
            unsafe {
                ffi::envoy_dynamic_module_callback_http_drain_body(self.envoy, kind, usize::MAX)
            };
        }
        let mut new_body = with.to_vec();
        new_body.extend_from_slice(&rest);
        if let Some(&last) = views.last() {
            // SAFETY: the data outlives the call, which copies it.
            unsafe {
                ffi::envoy_dynamic_module_callback_http_append_body(
                    self.envoy,
                    last,
                    ModuleBuffer::of(&new_body),
                )
            };
        }
    }

    fn send_reply(&mut self, headers: &Metadata) {
        let status = [(":status", &b"200"[..])];
        let fields: Vec<ModuleHttpHeader> = status
            .into_iter()
            .chain(headers.iter())
            .map(|(name, value)| ModuleHttpHeader::of(name.as_bytes(), value))
            .collect();
        let before_response = match self.phase {
            Phase::RequestHeaders | Phase::RequestBody => true,
            Phase::Timer => !self.response_started,
            _ => false,
        };
        if before_response {
            // Before the response: the module's own trailers-only response,
            // exactly these headers (a local reply would drop a
            // content-type Envoy does not take for gRPC, and pass none of
            // the module's response hooks to put it back).
            // SAFETY: the fields borrow `headers`, which outlive the call.
            unsafe {
                ffi::envoy_dynamic_module_callback_http_send_response_headers(
                    self.envoy,
                    fields.as_ptr(),
                    fields.len(),
                    true,
                );
            }
            return;
        }
        // Inside the response: a local reply, which Envoy writes past the
        // encoder chain.
        let fields = &fields[1..];
        // SAFETY: the fields borrow `headers`, which outlive the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                200,
                fields.as_ptr(),
                fields.len(),
                ModuleBuffer::NULL,
                ModuleBuffer::of(b"grpc_web_bridge"),
            );
        }
    }

    fn reset(&mut self) {
        // SAFETY: resets this stream; the details are copied.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_filter_reset_stream(
                self.envoy,
                0,
                ModuleBuffer::of(b"grpc_web_bridge"),
            );
        }
    }

    fn arm_timer(&mut self, at_millis: u64) {
        self.timer.arm(self.envoy, at_millis);
    }

    fn cancel_timer(&mut self) {
        self.timer.disarm();
    }

    fn count(&mut self, counter: Counter) {
        if let Some(&id) = self.config.counters.get(&counter) {
            // SAFETY: an id this configuration defined.
            unsafe {
                ffi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.envoy,
                    id,
                    std::ptr::null_mut(),
                    0,
                    1,
                );
            }
        }
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: inside this callback; the value is copied before it returns.
        let found = unsafe {
            match path {
                "xds\0cluster_name" => {
                    ffi::envoy_dynamic_module_callback_http_get_cluster_name(self.envoy, &mut value)
                }
                "response\0code_details" => {
                    ffi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                        self.envoy,
                        ffi::ATTRIBUTE_RESPONSE_CODE_DETAILS,
                        &mut value,
                    )
                }
                _ => false,
            }
        };
        // SAFETY: Envoy's buffer, valid in this callback.
        found.then(|| unsafe { value.as_slice() }.to_vec())
    }

    fn now_millis(&self) -> u64 {
        now_millis()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stream's timer, shared with the timer thread. The scheduler is
/// created on first arming and deleted when the stream goes, under the
/// lock the timer thread holds while it commits.
#[derive(Default)]
struct TimerSlot {
    scheduler: Mutex<Option<ffi::Scheduler>>,
    /// The event id of the latest arming; 0: not armed.
    armed: AtomicU64,
}

static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

impl TimerSlot {
    /// Runs `f` on the stream's scheduler, made first if there is none yet
    /// (inside one of its callbacks); `None` if there can be none.
    fn with_scheduler<R>(
        &self,
        envoy: FilterEnvoy,
        f: impl FnOnce(&ffi::Scheduler) -> R,
    ) -> Option<R> {
        let mut scheduler = self.scheduler.lock().ok()?;
        if scheduler.is_none() {
            *scheduler = ffi::Scheduler::new(envoy);
        }
        scheduler.as_ref().map(f)
    }

    /// Delivers `event` to the stream on the next turn of its event loop.
    fn commit_now(&self, envoy: FilterEnvoy, event: u64) -> bool {
        self.with_scheduler(envoy, |scheduler| scheduler.commit(event))
            .is_some()
    }

    fn arm(self: &Arc<Self>, envoy: FilterEnvoy, at_millis: u64) {
        if self.with_scheduler(envoy, |_| ()).is_none() {
            return;
        }
        let event = NEXT_EVENT.fetch_add(1, Ordering::Relaxed);
        self.armed.store(event, Ordering::Release);
        let _ = timer_thread().send(Due {
            at_millis,
            event,
            slot: Arc::downgrade(self),
        });
    }

    fn disarm(&self) {
        self.armed.store(0, Ordering::Release);
    }

    /// Whether `event` is the latest arming; it then counts as fired.
    fn fired(&self, event: u64) -> bool {
        event != 0
            && self
                .armed
                .compare_exchange(event, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn commit(&self, event: u64) {
        if self.armed.load(Ordering::Acquire) != event {
            return;
        }
        if let Ok(scheduler) = self.scheduler.lock() {
            if let Some(scheduler) = scheduler.as_ref() {
                scheduler.commit(event);
            }
        }
    }

    /// The stream is gone: no event reaches it again.
    fn close(&self) {
        self.disarm();
        if let Ok(mut scheduler) = self.scheduler.lock() {
            drop(scheduler.take());
        }
    }
}

/// An armed timer on its way to the timer thread.
struct Due {
    at_millis: u64,
    event: u64,
    slot: Weak<TimerSlot>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_millis, self.event) == (other.at_millis, other.event)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at_millis, other.event).cmp(&(self.at_millis, self.event))
    }
}

/// The module's one timer thread, started on first use.
fn timer_thread() -> Sender<Due> {
    static SENDER: OnceLock<Mutex<Sender<Due>>> = OnceLock::new();
    let sender = SENDER.get_or_init(|| {
        let (sender, receiver) = channel();
        let _ = std::thread::Builder::new()
            .name("grpc-web-bridge-timers".into())
            .spawn(move || run_timers(receiver));
        Mutex::new(sender)
    });
    match sender.lock() {
        Ok(sender) => sender.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn run_timers(receiver: Receiver<Due>) {
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    loop {
        let now = now_millis();
        while heap.peek().is_some_and(|due| due.at_millis <= now) {
            if let Some(due) = heap.pop() {
                if let Some(slot) = due.slot.upgrade() {
                    slot.commit(due.event);
                }
            }
        }
        let wait = heap.peek().map_or(Duration::from_secs(3600), |due| {
            Duration::from_millis(due.at_millis - now)
        });
        match receiver.recv_timeout(wait) {
            Ok(due) => heap.push(due),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

// Hooks Envoy requires to exist; the bridge makes no callouts or streams.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
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
    _: *const std::ffi::c_void,
    _: u64,
    _: *const EnvoyHttpHeader,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
    _: u64,
    _: *const EnvoyHttpHeader,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
    _: u64,
    _: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoy,
    _: *const std::ffi::c_void,
) {
}
