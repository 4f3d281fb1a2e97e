//! The proxy-wasm adapter: the only code that talks to Envoy. It turns
//! callbacks into [`StreamBridge`] calls and implements [`Host`] with raw
//! hostcalls, because the SDK's wrappers panic on any non-OK status and a
//! panic traps the whole VM (every later request on the worker would fail).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, ContextType, LogLevel};

use crate::abi::{HeaderPairs, serialize_map};
use crate::bridge::edge::Edge;
use crate::bridge::origin::Origin;
use crate::bridge::{Action, Body, Host, Map, StreamBridge};
use crate::codec::Metadata;
use crate::config::{Config, Side};
use crate::metrics::Counter;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| log::error!("grpc-web-bridge: panic: {info}")));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// A stream's state machine, shared by its context and, while its timer is
/// armed, the worker's timer table.
type SharedBridge = Rc<RefCell<Box<dyn StreamBridge>>>;

thread_local! {
    /// Timers by stream (ms since the epoch); each worker runs its own VM.
    static TIMERS: RefCell<HashMap<u32, u64>> = RefCell::new(HashMap::new());
    /// The state machines of streams with an armed timer, for `on_tick`.
    static TIMED: RefCell<HashMap<u32, SharedBridge>> =
        RefCell::new(HashMap::new());
    /// Envoy's metric ids, defined on first use (one side per VM).
    static METRICS: RefCell<HashMap<Counter, u32>> = RefCell::new(HashMap::new());
}

/// How often armed timers are checked; ticks run only while one is armed.
const TICK_MS: u32 = 10;

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let json =
            raw::get_buffer(raw::BUFFER_PLUGIN_CONFIGURATION, 0, usize::MAX).unwrap_or_default();
        match Config::from_json(&json) {
            Ok(config) => {
                log::info!("grpc-web-bridge: configured as {:?}", config.side);
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                log::error!("grpc-web-bridge: {error}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = raw::now_millis();
        let due: Vec<u32> = TIMERS.with(|timers| {
            let mut timers = timers.borrow_mut();
            let due = timers
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(id, _)| *id)
                .collect();
            timers.retain(|_, at| *at > now);
            due
        });
        for id in due {
            let Some(bridge) = TIMED.with(|timed| timed.borrow_mut().remove(&id)) else {
                continue;
            };
            // A stream that ended meanwhile is skipped.
            if raw::set_effective_context(id) {
                let side = self.config.as_ref().map_or(Side::Edge, |c| c.side);
                let mut host = EnvoyHost {
                    id,
                    side,
                    bridge: Rc::downgrade(&bridge),
                };
                // Busy only if Envoy re-entered the module from a callback of
                // this stream; the timer is then moot.
                if let Ok(mut bridge) = bridge.try_borrow_mut() {
                    bridge.on_timer(&mut host);
                }
            }
        }
        if TIMERS.with(|timers| timers.borrow().is_empty()) {
            raw::set_tick_period(0);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        let bridge: Box<dyn StreamBridge> = match config.side {
            Side::Edge => Box::new(Edge::new(config.clone())),
            Side::Origin => Box::new(Origin::new(config.clone())),
        };
        let bridge = Rc::new(RefCell::new(bridge));
        Some(Box::new(Stream {
            host: EnvoyHost {
                id: context_id,
                side: config.side,
                bridge: Rc::downgrade(&bridge),
            },
            bridge,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    host: EnvoyHost,
    bridge: SharedBridge,
}

fn to_wasm(action: Action) -> WasmAction {
    match action {
        Action::Continue => WasmAction::Continue,
        Action::Pause => WasmAction::Pause,
    }
}

impl Stream {
    fn call(
        &mut self,
        callback: impl FnOnce(&mut dyn StreamBridge, &mut EnvoyHost) -> Action,
    ) -> WasmAction {
        to_wasm(callback(self.bridge.borrow_mut().as_mut(), &mut self.host))
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.host.cancel_timer();
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> WasmAction {
        self.call(|bridge, host| bridge.on_request_headers(host, end_of_stream))
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> WasmAction {
        self.call(|bridge, host| bridge.on_request_body(host, size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> WasmAction {
        self.call(|bridge, host| bridge.on_response_headers(host, end_of_stream))
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> WasmAction {
        self.call(|bridge, host| bridge.on_response_body(host, size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _: usize) -> WasmAction {
        self.call(|bridge, host| bridge.on_response_trailers(host))
    }
}

struct EnvoyHost {
    id: u32,
    side: Side,
    /// The stream's own state machine, registered while its timer is armed.
    bridge: Weak<RefCell<Box<dyn StreamBridge>>>,
}

fn map_type(map: Map) -> u32 {
    match map {
        Map::RequestHeaders => 0,
        Map::ResponseHeaders => 2,
        Map::ResponseTrailers => 3,
    }
}

fn buffer_type(body: Body) -> u32 {
    match body {
        Body::Request => 0,
        Body::Response => 1,
    }
}

impl Host for EnvoyHost {
    fn headers(&self, map: Map) -> HeaderPairs {
        raw::get_headers(map_type(map))
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        raw::check(
            "replace header",
            raw::replace_header(map_type(map), name, value),
        );
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        raw::check("add header", raw::add_header(map_type(map), name, value));
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        raw::check("remove header", raw::remove_header(map_type(map), name));
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        raw::check(
            "set headers",
            raw::set_headers(map_type(map), &serialize_map(fields)),
        );
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        Bytes::from(raw::get_buffer(buffer_type(body), start, len).unwrap_or_default())
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        raw::check(
            "replace body",
            raw::set_buffer(buffer_type(body), 0, len, with),
        );
    }

    fn send_reply(&mut self, headers: &Metadata) {
        raw::check(
            "local reply",
            raw::send_local_response(200, "grpc_web_bridge", &serialize_map(headers)),
        );
    }

    fn reset(&mut self) {
        raw::check("reset", raw::close_response());
    }

    fn arm_timer(&mut self, at_millis: u64) {
        let Some(bridge) = self.bridge.upgrade() else {
            return;
        };
        TIMED.with(|timed| timed.borrow_mut().insert(self.id, bridge));
        let first = TIMERS.with(|timers| {
            let mut timers = timers.borrow_mut();
            timers.insert(self.id, at_millis);
            timers.len() == 1
        });
        if first {
            raw::set_tick_period(TICK_MS);
        }
    }

    fn cancel_timer(&mut self) {
        TIMERS.with(|timers| timers.borrow_mut().remove(&self.id));
        TIMED.with(|timed| timed.borrow_mut().remove(&self.id));
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        raw::get_property(path.as_bytes())
    }

    fn now_millis(&self) -> u64 {
        raw::now_millis()
    }

    fn count(&mut self, counter: Counter) {
        let id = METRICS.with(|metrics| {
            let mut metrics = metrics.borrow_mut();
            if let Some(id) = metrics.get(&counter) {
                return Some(*id);
            }
            let id = raw::define_counter(&counter.name(self.side))?;
            metrics.insert(counter, id);
            Some(id)
        });
        if let Some(id) = id {
            raw::check("increment metric", raw::increment_metric(id));
        }
    }
}

/// Hostcalls that report failure as a status instead of panicking.
mod raw {
    use std::ptr::null_mut;

    use super::HeaderPairs;

    pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
    const STREAM_HTTP_RESPONSE: u32 = 1;
    const METRIC_COUNTER: u32 = 0;
    const OK: u32 = 0;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, len: *mut usize) -> u32;
        fn proxy_set_header_map_pairs(map: u32, data: *const u8, len: usize) -> u32;
        fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> u32;
        fn proxy_add_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
        fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max: usize,
            data: *mut *mut u8,
            len: *mut usize,
        ) -> u32;
        fn proxy_set_buffer_bytes(
            buffer: u32,
            start: usize,
            size: usize,
            data: *const u8,
            len: usize,
        ) -> u32;
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_len: usize,
            body: *const u8,
            body_len: usize,
            headers: *const u8,
            headers_len: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_set_effective_context(id: u32) -> u32;
        fn proxy_close_stream(stream: u32) -> u32;
        fn proxy_get_property(
            path: *const u8,
            path_len: usize,
            value: *mut *mut u8,
            value_len: *mut usize,
        ) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, name_len: usize, id: *mut u32) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    }

    pub fn now_millis() -> u64 {
        let mut nanos = 0;
        // SAFETY: a pointer to a live local.
        unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
        nanos / 1_000_000
    }

    /// Sets the root context's tick period; 0 stops the ticks.
    pub fn set_tick_period(millis: u32) {
        // SAFETY: no pointers.
        check("set tick period", unsafe {
            proxy_set_tick_period_milliseconds(millis)
        });
    }

    /// Logs a failed hostcall; the stream carries on.
    pub fn check(what: &str, status: u32) {
        if status != OK {
            log::debug!("grpc-web-bridge: {what} returned status {status}");
        }
    }

    /// Takes ownership of memory the host allocated through the SDK's
    /// `proxy_on_memory_allocate`.
    /// An OK status with no data is an empty value (a header present but
    /// empty must not read as absent).
    fn owned(status: u32, data: *mut u8, len: usize) -> Option<Vec<u8>> {
        if status != OK {
            return None;
        }
        if data.is_null() || len == 0 {
            return Some(Vec::new());
        }
        // SAFETY: the host wrote `len` bytes into an allocation of exactly
        // `len` bytes made by this module's allocator, and hands it over.
        Some(unsafe { Vec::from_raw_parts(data, len, len) })
    }

    pub fn get_headers(map: u32) -> HeaderPairs {
        let (mut data, mut len) = (null_mut(), 0);
        // SAFETY: pointers to live locals.
        let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut len) };
        owned(status, data, len)
            .and_then(HeaderPairs::parse)
            .unwrap_or_default()
    }

    pub fn set_headers(map: u32, serialized: &[u8]) -> u32 {
        // SAFETY: a live slice.
        unsafe { proxy_set_header_map_pairs(map, serialized.as_ptr(), serialized.len()) }
    }

    pub fn replace_header(map: u32, name: &str, value: &[u8]) -> u32 {
        // SAFETY: live slices.
        unsafe {
            proxy_replace_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        }
    }

    pub fn add_header(map: u32, name: &str, value: &[u8]) -> u32 {
        // SAFETY: live slices.
        unsafe {
            proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        }
    }

    pub fn remove_header(map: u32, name: &str) -> u32 {
        // SAFETY: a live &str.
        unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) }
    }

    pub fn get_buffer(buffer: u32, start: usize, max: usize) -> Option<Vec<u8>> {
        let (mut data, mut len) = (null_mut(), 0);
        // SAFETY: pointers to live locals.
        let status = unsafe { proxy_get_buffer_bytes(buffer, start, max, &mut data, &mut len) };
        owned(status, data, len)
    }

    pub fn set_buffer(buffer: u32, start: usize, size: usize, data: &[u8]) -> u32 {
        // SAFETY: a live slice.
        unsafe { proxy_set_buffer_bytes(buffer, start, size, data.as_ptr(), data.len()) }
    }

    pub fn send_local_response(status: u32, details: &str, headers: &[u8]) -> u32 {
        // SAFETY: live slices; a null body of length 0 is no body.
        unsafe {
            proxy_send_local_response(
                status,
                details.as_ptr(),
                details.len(),
                std::ptr::null(),
                0,
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        }
    }

    pub fn set_effective_context(id: u32) -> bool {
        // SAFETY: no pointers.
        unsafe { proxy_set_effective_context(id) == OK }
    }

    /// A property by its path (segments joined by NUL).
    pub fn get_property(path: &[u8]) -> Option<Vec<u8>> {
        let (mut data, mut len) = (null_mut(), 0);
        // SAFETY: a live slice and pointers to live locals.
        let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut len) };
        owned(status, data, len)
    }

    /// Resets the current stream; Envoy ends both directions.
    pub fn close_response() -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_close_stream(STREAM_HTTP_RESPONSE) }
    }

    pub fn define_counter(name: &str) -> Option<u32> {
        let mut id = 0;
        // SAFETY: a live &str and local.
        let status =
            unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
        (status == OK).then_some(id)
    }

    pub fn increment_metric(id: u32) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_increment_metric(id, 1) }
    }
}
