//! The proxy-wasm host (the `.wasm` build): turns Envoy's Wasm callbacks
//! into [`StreamBridge`] calls. [`host`] implements `Host` over
//! [`hostcalls`], raw calls wrapped once, because the SDK's wrappers panic
//! on any non-OK status and a panic traps the whole VM (every later request
//! on the worker would fail).

mod host;
mod hostcalls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, ContextType, LogLevel};

use crate::bridge::edge::Edge;
use crate::bridge::origin::Origin;
use crate::bridge::{Action, Host, StreamBridge};
use crate::config::{Config, Side};
use crate::metrics::Counter;
use host::EnvoyHost;

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
        let json = hostcalls::get_buffer(hostcalls::BUFFER_PLUGIN_CONFIGURATION, 0, usize::MAX)
            .unwrap_or_default();
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
        let now = hostcalls::now_millis();
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
            if hostcalls::set_effective_context(id) {
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
            hostcalls::set_tick_period(0);
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
