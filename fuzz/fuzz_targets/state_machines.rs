//! Each side's state machine, driven through arbitrary event sequences in
//! the order Envoy keeps (request headers first; response headers, body,
//! trailers in that order; the timer at any point), with arbitrary bodies,
//! against the fake host. Never a panic; every call the bridge guards ends
//! with exactly one valid grpc-status; the origin never lets a partial
//! frame reach the client.
#![no_main]

use std::rc::Rc;

use bytes::BytesMut;
use grpc_web_bridge::bridge::edge::Edge;
use grpc_web_bridge::bridge::fake_host::FakeHost;
use grpc_web_bridge::bridge::origin::Origin;
use grpc_web_bridge::bridge::{Action, StreamBridge};
use grpc_web_bridge::codec::{FrameDecoder, Metadata, is_valid_status};
use grpc_web_bridge::config::{Config, Marker, Side};
use grpc_web_bridge::metrics::Counter;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzz-key-fuzz-key-fuzz-key-fuzz!";
const PATH: &str = "/grpc.testing.TestService/FullDuplexCall";

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken
    }
}

fn config(side: Side, serve_browsers: bool) -> Rc<Config> {
    Rc::new(Config {
        side,
        marker: Marker {
            header: "x-grpc-web-bridge".into(),
            keys: [("k".to_string(), KEY.to_string())].into(),
            sign_with: (side == Side::Edge).then(|| "k".into()),
            max_age_s: 30,
            static_secret: None,
            content_type_header: "x-grpc-web-bridge-content-type".into(),
        },
        origin_clusters: Vec::new(),
        max_frame_bytes: 64,
        max_trailer_bytes: 512,
        serve_browsers,
        deadline_grace_ms: 100,
    })
}

fn marker() -> String {
    let request = grpc_web_bridge::marker::Request {
        method: b"POST",
        path: PATH.as_bytes(),
        now_s: 0,
    };
    grpc_web_bridge::marker::sign("k", KEY.as_bytes(), &request).unwrap_or_default()
}

/// Exactly one grpc-status, and a valid one.
fn one_valid_status(fields: &Metadata) -> bool {
    let statuses: Vec<_> = fields.iter().filter(|(n, _)| *n == "grpc-status").collect();
    matches!(statuses.as_slice(), [(_, value)] if is_valid_status(value))
}

fn whole_frames(body: &[u8]) -> bool {
    let mut decoder = FrameDecoder::new(u32::MAX);
    let mut buf = BytesMut::from(body);
    while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    buf.is_empty() && decoder.finish(&buf).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(setup) = input.byte() else { return };
    let side = if setup & 1 == 0 {
        Side::Edge
    } else {
        Side::Origin
    };
    let mut bridge: Box<dyn StreamBridge> = match side {
        Side::Edge => Box::new(Edge::new(config(side, false))),
        Side::Origin => Box::new(Origin::new(config(side, setup & 2 != 0))),
    };
    let mut host = FakeHost::new();
    let signed = marker();
    let content_type = match (side, setup >> 2 & 3) {
        (Side::Edge, 0) => "application/grpc-web",
        (Side::Edge, _) => "application/grpc",
        (Side::Origin, 0) => "application/grpc-web-text",
        (Side::Origin, _) => "application/grpc",
    };
    let mut request = vec![
        (":method", "POST"),
        (":path", PATH),
        ("content-type", content_type),
    ];
    match setup >> 4 & 3 {
        0 => request.push(("x-grpc-web-bridge", signed.as_str())),
        1 => request.push(("x-grpc-web-bridge", "v1.k.0.00")),
        2 => request.push(("grpc-timeout", "50m")),
        _ => {}
    }
    if setup & 0x40 != 0 {
        request.push(("x-grpc-web-bridge", signed.as_str()));
        request.push(("grpc-timeout", "20m"));
    }
    let request_eos = setup & 0x80 != 0;
    if host.send_request_headers(bridge.as_mut(), &request, request_eos) == Action::Pause {
        check_reply(&mut host, bridge.as_mut());
        return;
    }
    let guarded = host
        .counters
        .iter()
        .any(|c| matches!(c, Counter::Converted | Counter::BrowserConverted));
    let web = side == Side::Edge;
    let (mut request_open, mut headers_sent, mut ended) = (!request_eos, false, false);
    while let Some(op) = input.byte() {
        if host.reply.is_some() {
            check_reply(&mut host, bridge.as_mut());
            return;
        }
        match op % 5 {
            0 if request_open => {
                let eos = op & 0x80 != 0;
                let chunk = input.bytes();
                if host.send_request_body(bridge.as_mut(), chunk, eos) == Action::Pause {
                    check_reply(&mut host, bridge.as_mut());
                    return;
                }
                request_open = !eos;
            }
            1 if !headers_sent => {
                let eos = op & 0x80 != 0;
                let ct = if web {
                    "application/grpc-web"
                } else {
                    "application/grpc"
                };
                let headers: Vec<(&str, &str)> = match op >> 3 & 3 {
                    0 => vec![(":status", "200"), ("content-type", ct)],
                    1 => vec![
                        (":status", "200"),
                        ("content-type", ct),
                        ("grpc-status", "5"),
                    ],
                    2 => vec![(":status", "503"), ("content-type", "text/plain")],
                    _ => vec![
                        (":status", "200"),
                        ("content-type", "application/grpc-web-text"),
                    ],
                };
                host.send_response_headers(bridge.as_mut(), &headers, eos);
                headers_sent = true;
                ended = eos;
            }
            2 if headers_sent => {
                let eos = op & 0x80 != 0;
                let chunk = input.bytes();
                host.send_response_body(bridge.as_mut(), chunk, eos);
                ended = eos;
            }
            3 if headers_sent => {
                let trailers: Vec<(&str, &str)> = match op >> 3 & 3 {
                    0 => vec![("grpc-status", "0"), ("x-t", "v")],
                    1 => vec![("grpc-status", "abc")],
                    2 => vec![("x-only", "1")],
                    _ => vec![("grpc-status", "0"), ("grpc-status", "13")],
                };
                host.send_response_trailers(bridge.as_mut(), &trailers);
                ended = true;
            }
            4 => {
                let to = host.clock_millis + u64::from(op >> 3) * 10;
                host.advance_to(bridge.as_mut(), to);
                if host.reset {
                    return;
                }
            }
            _ => {}
        }
        if ended {
            break;
        }
    }
    if host.reply.is_some() {
        check_reply(&mut host, bridge.as_mut());
        return;
    }
    if !(ended && guarded) {
        return;
    }
    let last = match &host.downstream_trailers {
        Some(trailers) => trailers.clone(),
        None => host.downstream_headers.clone().unwrap_or_default(),
    };
    let mapped_by_envoy = side == Side::Origin
        && host
            .downstream_headers
            .as_ref()
            .is_some_and(|h| h.get(":status") != Some(b"200"));
    if !mapped_by_envoy {
        assert!(one_valid_status(&last), "final fields {last:?}");
    }
    if side == Side::Origin {
        assert!(
            whole_frames(&host.downstream_body),
            "partial frame left: {:?}",
            host.downstream_body
        );
    }
});

/// A local reply carries exactly one valid status.
fn check_reply(host: &mut FakeHost, bridge: &mut dyn StreamBridge) {
    if let Some(reply) = host.reply.clone() {
        assert!(one_valid_status(&reply), "reply {reply:?}");
        host.response_headers = reply;
        bridge.on_response_headers(host, true);
    }
}
