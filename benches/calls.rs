//! The module's own work per call (`make bench-codec`): a whole unary call
//! through each side's state machine, driven by the fake host the
//! state-machine tests use, natively and as wasm32 in V8. The fake host's
//! own bookkeeping is measured alone ("host only", a bridge that does
//! nothing) so the difference is the state machine's. Results:
//! docs/benchmarks.md.

use std::hint::black_box;
use std::rc::Rc;

use criterion::{Criterion, criterion_group, criterion_main};
use grpc_web_bridge::bridge::edge::Edge;
use grpc_web_bridge::bridge::fake_host::FakeHost;
use grpc_web_bridge::bridge::origin::Origin;
use grpc_web_bridge::bridge::{Action, Host, StreamBridge};
use grpc_web_bridge::config::Config;
use grpc_web_bridge::marker;

const KEY: &str = "bench-key-0123456789abcdef0123456789";
const PATH: &str = "/grpc.testing.TestService/UnaryCall";

/// A 64-byte message in its frame.
fn message() -> Vec<u8> {
    let mut frame = vec![0, 0, 0, 0, 64];
    frame.extend([7; 64]);
    frame
}

fn config(json: &str) -> Rc<Config> {
    match Config::from_json(json.as_bytes()) {
        Ok(config) => Rc::new(config),
        Err(error) => unreachable!("bench config: {error}"),
    }
}

/// Does nothing: what driving a call through the fake host costs by itself.
struct Idle;

impl StreamBridge for Idle {
    fn on_request_headers(&mut self, _: &mut dyn Host, _: bool) -> Action {
        Action::Continue
    }
    fn on_request_body(&mut self, _: &mut dyn Host, _: usize, _: bool) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _: &mut dyn Host, _: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _: &mut dyn Host, _: usize, _: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self, _: &mut dyn Host) -> Action {
        Action::Continue
    }
    fn on_timer(&mut self, _: &mut dyn Host) {}
}

/// One unary call as Envoy delivers it to the origin's module (after
/// Envoy's gRPC-web filter): marked request, native response.
fn origin_call(bridge: &mut dyn StreamBridge, marker: &str) -> FakeHost {
    let mut host = FakeHost::new();
    let request = [
        (":method", "POST"),
        (":path", PATH),
        (":authority", "origin"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-grpc-web", "1"),
        ("user-agent", "grpc-web-javascript/0.1"),
        ("x-grpc-web-bridge", marker),
    ];
    host.send_request_headers(bridge, &request, false);
    host.send_request_body(bridge, &message(), true);
    let response = [(":status", "200"), ("content-type", "application/grpc")];
    host.send_response_headers(bridge, &response, false);
    host.send_response_body(bridge, &message(), false);
    host.send_response_trailers(bridge, &[("grpc-status", "0")]);
    host
}

/// One unary call at the edge: native request, gRPC-web response with its
/// trailer frame.
fn edge_call(bridge: &mut dyn StreamBridge) -> FakeHost {
    let mut host = FakeHost::new();
    let request = [
        (":method", "POST"),
        (":path", PATH),
        (":authority", "edge"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "grpc-rust/0.1"),
    ];
    host.send_request_headers(bridge, &request, false);
    host.send_request_body(bridge, &message(), true);
    let response = [
        (":status", "200"),
        ("content-type", "application/grpc-web+proto"),
    ];
    host.send_response_headers(bridge, &response, false);
    let mut body = message();
    let block = b"grpc-status:0\r\n";
    body.extend([0x80, 0, 0, 0, block.len() as u8]);
    body.extend(block);
    host.send_response_body(bridge, &body, true);
    host
}

fn unary_calls(c: &mut Criterion) {
    let origin_config = config(&format!(
        r#"{{"side": "origin", "marker": {{"keys": {{"k1": "{KEY}"}}}}}}"#
    ));
    let edge_config = config(&format!(
        r#"{{"side": "edge", "marker": {{"keys": {{"k1": "{KEY}"}}, "sign_with": "k1"}}}}"#
    ));
    let request = marker::Request {
        method: b"POST",
        path: PATH.as_bytes(),
        now_s: 0,
    };
    let Some(marker) = marker::sign("k1", KEY.as_bytes(), &request) else {
        unreachable!("the key signs")
    };
    let mut group = c.benchmark_group("unary_call");
    group.bench_function("host_only", |b| {
        b.iter(|| black_box(origin_call(&mut Idle, &marker)))
    });
    group.bench_function("origin", |b| {
        b.iter(|| {
            let mut origin = Origin::new(origin_config.clone());
            black_box(origin_call(&mut origin, &marker))
        })
    });
    group.bench_function("edge", |b| {
        b.iter(|| {
            let mut edge = Edge::new(edge_config.clone());
            black_box(edge_call(&mut edge))
        })
    });
    group.finish();
}

criterion_group!(benches, unary_calls);
criterion_main!(benches);
