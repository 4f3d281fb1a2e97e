//! A proxy-wasm HTTP filter that creates a context per stream and passes
//! every callback through: what any Rust Wasm filter costs Envoy, for
//! docs/benchmarks.md. With a plugin configuration of a number N, it also
//! reads one request header N times per request: the price of a hostcall;
//! with `map N`, the whole request header map N times.
#![cfg(target_os = "wasi")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { reads: 0, whole_map: false }) });
}}

struct Root {
    reads: usize,
    whole_map: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let (whole_map, reads) = match config.trim().strip_prefix("map ") {
            Some(n) => (true, n),
            None => (false, config.trim()),
        };
        self.whole_map = whole_map;
        self.reads = reads.parse().unwrap_or(0);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            reads: self.reads,
            whole_map: self.whole_map,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    reads: usize,
    whole_map: bool,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for _ in 0..self.reads {
            if self.whole_map {
                std::hint::black_box(self.get_http_request_headers_bytes());
            } else {
                std::hint::black_box(self.get_http_request_header_bytes("content-type"));
            }
        }
        Action::Continue
    }
}
