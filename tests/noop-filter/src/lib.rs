//! A proxy-wasm HTTP filter that creates a context per stream and passes
//! every callback through: what any Rust Wasm filter costs Envoy, for
//! docs/benchmarks.md. With a plugin configuration of a number N, it also
//! reads one request header N times per request: the price of a hostcall.
#![cfg(target_os = "wasi")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { reads: 0 }) });
}}

struct Root {
    reads: usize,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.reads = String::from_utf8_lossy(&config).trim().parse().unwrap_or(0);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { reads: self.reads }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    reads: usize,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for _ in 0..self.reads {
            std::hint::black_box(self.get_http_request_header_bytes("content-type"));
        }
        Action::Continue
    }
}
