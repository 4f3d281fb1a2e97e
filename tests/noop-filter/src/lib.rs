//! A proxy-wasm HTTP filter that creates a context per stream and passes
//! every callback through: what any Rust Wasm filter costs Envoy, for
//! docs/benchmarks.md. A plugin configuration `<call> N` also makes one
//! kind of hostcall N times per request, to price it:
//! - `N` or `header N`: read one request header;
//! - `map N`: read the whole request header map;
//! - `rawmap N`: the same, left as the bytes Envoy sends (no parsing);
//! - `response N`: read one response header;
//! - `body N`: read the request body (each chunk);
//! - `set N`: replace a request header (no data comes back);
//! - `time N`: read the clock (no allocation in the module);
//! - `metric N`: increment a counter.
//!
//! Any other configuration (the bridge's JSON, in topologies that swap the
//! module for this one) makes no calls.
#![cfg(target_os = "wasi")]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { call: Call::Header, count: 0, metric: 0 })
    });
}}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, len: *mut usize) -> u32;
}

#[derive(Clone, Copy)]
enum Call {
    Header,
    Map,
    RawMap,
    Set,
    Time,
    ResponseHeader,
    RequestBody,
    Metric,
}

struct Root {
    call: Call,
    count: usize,
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let (call, count) = config
            .trim()
            .split_once(' ')
            .unwrap_or(("header", config.trim()));
        self.call = match call {
            "header" => Call::Header,
            "map" => Call::Map,
            "rawmap" => Call::RawMap,
            "set" => Call::Set,
            "time" => Call::Time,
            "response" => Call::ResponseHeader,
            "body" => Call::RequestBody,
            "metric" => Call::Metric,
            _ => return true,
        };
        self.count = count.parse().unwrap_or(0);
        if let Call::Metric = self.call {
            self.metric =
                hostcalls::define_metric(MetricType::Counter, "noop_filter_calls").unwrap_or(0);
        }
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            call: self.call,
            count: self.count,
            metric: self.metric,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    call: Call,
    count: usize,
    metric: u32,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for _ in 0..self.count {
            match self.call {
                Call::Header => {
                    std::hint::black_box(self.get_http_request_header_bytes("content-type"));
                }
                Call::Map => {
                    std::hint::black_box(self.get_http_request_headers_bytes());
                }
                Call::RawMap => {
                    let (mut data, mut len) = (std::ptr::null_mut(), 0);
                    // SAFETY: pointers to live locals; the host hands over
                    // an allocation of `len` bytes made by this module.
                    unsafe {
                        proxy_get_header_map_pairs(0, &mut data, &mut len);
                        if !data.is_null() {
                            drop(Vec::from_raw_parts(data, len, len));
                        }
                    }
                }
                Call::Set => self.set_http_request_header("x-noop", Some("1")),
                Call::Time => {
                    std::hint::black_box(self.get_current_time());
                }
                Call::Metric => {
                    let _ = hostcalls::increment_metric(self.metric, 1);
                }
                Call::ResponseHeader | Call::RequestBody => {}
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, _: bool) -> Action {
        if let Call::RequestBody = self.call {
            for _ in 0..self.count {
                std::hint::black_box(self.get_http_request_body(0, size));
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Call::ResponseHeader = self.call {
            for _ in 0..self.count {
                std::hint::black_box(self.get_http_response_header_bytes("content-type"));
            }
        }
        Action::Continue
    }
}
