//! State-machine tests against the fake host: each drives the callbacks the
//! way Envoy does and asserts what the client and the upstream receive.

use std::rc::Rc;

use bytes::BytesMut;

use super::fake_host::{FakeHost, metadata};
use super::{Action, StreamBridge};
use crate::codec::{Base64Encoder, Metadata, Peer, decode_grpc_message, encode_frame};
use crate::config::{Config, Marker, Side};
use crate::metrics::Counter;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const KEY: &str = "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-";
const MARKER: &str = "x-grpc-web-bridge";
const PATH: &str = "/grpc.testing.TestService/UnaryCall";

fn config(side: Side, serve_browsers: bool) -> Rc<Config> {
    Rc::new(Config {
        side,
        marker: Marker {
            header: MARKER.into(),
            keys: [("k1".to_string(), KEY.to_string())].into(),
            sign_with: (side == Side::Edge).then(|| "k1".into()),
            max_age_s: 30,
            static_secret: None,
            content_type_header: format!("{MARKER}-content-type"),
        },
        origin_clusters: Vec::new(),
        max_frame_bytes: 1024,
        serve_browsers,
        deadline_grace_ms: 1000,
        max_trailer_bytes: 512,
    })
}

/// The marker the edge puts on a POST to `PATH` at time `now_s`.
fn signed_marker(now_s: u64) -> String {
    let request = crate::marker::Request {
        method: b"POST",
        path: PATH.as_bytes(),
        now_s,
    };
    crate::marker::sign("k1", KEY.as_bytes(), &request).unwrap()
}

/// Sends two 1000-byte request messages in 250-byte chunks: they reach
/// the upstream unchanged, and only the chunks where a frame begins are read.
fn assert_request_payload_is_not_read(bridge: &mut dyn StreamBridge, host: &mut FakeHost) {
    let large = message(&[7; 1000]);
    let body = [large.clone(), large].concat();
    let chunks: Vec<&[u8]> = body.chunks(250).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        host.send_request_body(bridge, chunk, i + 1 == chunks.len());
    }
    assert_eq!(host.upstream_body, body);
    assert!(host.reply.is_none());
    assert!(
        host.body_bytes_read.get() <= 2 * 250,
        "{}",
        host.body_bytes_read.get()
    );
}

fn message(payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(false, false, payload, &mut out).unwrap();
    out.to_vec()
}

fn trailer_frame(block: &[u8], compressed: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(compressed, true, block, &mut out).unwrap();
    out.to_vec()
}

/// Asserts the `grpc-status` and decoded `grpc-message` of a header map.
fn assert_status(fields: &Metadata, code: &str, message: &str) {
    assert_eq!(
        status_of(fields),
        (code.to_string(), message.to_string()),
        "{fields:?}"
    );
}

fn status_of(fields: &Metadata) -> (String, String) {
    let text =
        |name| String::from_utf8(decode_grpc_message(fields.get(name).unwrap_or(b""))).unwrap();
    (text("grpc-status"), text("grpc-message"))
}

/// Envoy runs a local reply through the filter's response path, where
/// Envoy has dropped its content-type: returns what the client gets.
fn deliver_reply(host: &mut FakeHost, bridge: &mut dyn StreamBridge) -> Metadata {
    let mut fields = vec![(":status".to_string(), b"200".to_vec())];
    fields.extend(host.reply.clone().expect("a local reply").0);
    host.response_headers = Metadata(fields);
    assert_eq!(bridge.on_response_headers(host, true), Action::Continue);
    host.response_headers.clone()
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = Base64Encoder::new();
    let mut out = Vec::new();
    encoder.push(bytes, &mut out);
    encoder.end_segment(&mut out);
    out
}

/// Warnings are for what an operator should act on; deadlines and a
/// client's own bad requests, which the client hears about and the counters
/// carry, log at debug.
#[test]
fn only_what_an_operator_acts_on_logs_above_debug() {
    use crate::codec::ErrorKind;
    use log::Level::{Debug, Error, Warn};
    let cases = [
        (ErrorKind::DeadlineExceeded.from(Peer::Upstream), Debug),
        (ErrorKind::DeadlineExceeded.from(Peer::Downstream), Debug),
        (
            ErrorKind::TruncatedFrame { missing: 3 }.from(Peer::Downstream),
            Debug,
        ),
        (
            ErrorKind::MalformedContentType("x".into()).from(Peer::Downstream),
            Debug,
        ),
        (
            ErrorKind::TruncatedFrame { missing: 3 }.from(Peer::Upstream),
            Warn,
        ),
        (
            ErrorKind::HttpStatus {
                status: 503,
                by: None,
            }
            .from(Peer::Upstream),
            Warn,
        ),
        (
            ErrorKind::InvalidMarker(crate::marker::Refusal::BadSignature).from(Peer::Downstream),
            Warn,
        ),
        (ErrorKind::Panic.from(Peer::Upstream), Error),
    ];
    for (error, level) in cases {
        assert_eq!(super::log_level(&error), level, "{error}");
    }
}

mod edge {
    use super::*;
    use crate::bridge::edge::Edge;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NATIVE_REQUEST: &[(&str, &str)] = &[
        (":method", "POST"),
        (":path", PATH),
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
        ("content-length", "12"),
        ("grpc-timeout", "1S"),
        (MARKER, "forged-by-client"),
    ];
    const WEB_RESPONSE: &[(&str, &str)] = &[
        (":status", "200"),
        ("content-type", "application/grpc-web+proto"),
        ("server", "nginx"),
    ];

    fn converted() -> (Edge, FakeHost) {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        host.send_request_headers(&mut edge, NATIVE_REQUEST, false);
        (edge, host)
    }

    /// A client that half-closes inside a frame once the response has
    /// started: a local reply would only reset the stream. The partial
    /// frame is dropped, the end of the request passes, and the call ends
    /// with the error as its status when the response ends.
    #[test]
    fn a_request_cut_inside_a_frame_after_the_response_started_ends_with_a_status() {
        let (mut edge, mut host) = converted();
        host.send_request_body(&mut edge, &message(b"ping"), false);
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &message(b"pong"), false);
        let action = host.send_request_body(&mut edge, &[0, 0, 0], true);
        assert_eq!(action, Action::Continue);
        assert_eq!(host.upstream_body, message(b"ping"));
        assert!(!host.reset && host.reply.is_none());
        let mut body = message(b"late");
        body.extend(trailer_frame(b"grpc-status: 0\r\n", false));
        host.send_response_body(&mut edge, &body, true);
        assert_eq!(
            host.downstream_body,
            [message(b"pong"), message(b"late")].concat()
        );
        let (code, text) = status_of(&host.downstream_trailers.clone().unwrap());
        assert_eq!(code, "13");
        assert!(
            text.starts_with("grpc-web-bridge: client ended the stream")
                && text.ends_with("short of a frame's end"),
            "{text}"
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Downstream, "truncated_frame"))
        );
    }

    #[test]
    fn native_request_becomes_grpc_web_with_the_secret_marker() {
        let (_, host) = converted();
        let headers = &host.request_headers;
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc-web+proto"[..])
        );
        assert_eq!(
            headers.get("accept"),
            Some(&b"application/grpc-web+proto"[..])
        );
        assert_eq!(headers.get("te"), None);
        assert_eq!(headers.get("content-length"), None);
        assert_eq!(headers.get("grpc-timeout"), Some(&b"1S"[..]));
        assert_eq!(headers.get(MARKER), Some(signed_marker(0).as_bytes()));
        assert_eq!(headers.iter().filter(|(n, _)| *n == MARKER).count(), 1);
        assert_eq!(host.counters, vec![Counter::Converted]);
    }

    /// Reads are what a call costs Envoy (docs/benchmarks.md): one per
    /// header map and per body chunk, plus the route's cluster when
    /// `origin_clusters` is set.
    #[test]
    fn a_unary_call_reads_each_map_and_chunk_once() {
        let mut config = (*config(Side::Edge, false)).clone();
        config.origin_clusters = vec!["hop".into()];
        let mut edge = Edge::new(Rc::new(config));
        let mut host = FakeHost::new();
        host.properties.insert("xds\0cluster_name", b"hop".to_vec());
        host.send_request_headers(&mut edge, NATIVE_REQUEST, false);
        host.send_request_body(&mut edge, &message(b"ping"), true);
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        let mut body = message(b"pong");
        body.extend(trailer_frame(b"grpc-status: 0\r\n", false));
        host.send_response_body(&mut edge, &body, true);
        assert_eq!(host.downstream_body, message(b"pong"));
        assert_status(host.downstream_trailers.as_ref().unwrap(), "0", "");
        // Request map, cluster, request chunk; response map, response chunk.
        assert_eq!(host.reads.get(), 5);
        // Request: the client's marker, content-type, accept, the client's
        // content type (+proto) carried, te, content-length, our marker.
        // Response: content-type; the status added as a trailer. Nothing
        // absent is removed.
        assert_eq!(host.header_writes, 9);
    }

    #[test]
    fn headers_a_request_lacks_are_not_removed() {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        let request = [
            (":method", "POST"),
            (":path", PATH),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        host.send_request_headers(&mut edge, &request, false);
        // content-type, accept, te, the marker: no marker or
        // content-length to remove.
        assert_eq!(host.header_writes, 4);
        assert_eq!(
            host.request_headers.get(MARKER),
            Some(signed_marker(0).as_bytes())
        );
    }

    #[test]
    fn only_routes_to_an_origin_are_converted_and_marked() {
        let mut config = (*config(Side::Edge, false)).clone();
        config.origin_clusters = vec!["hop".into()];
        let config = Rc::new(config);
        for (cluster, converted) in [(Some("hop"), true), (Some("billing"), false), (None, false)] {
            let mut edge = Edge::new(config.clone());
            let mut host = FakeHost::new();
            if let Some(cluster) = cluster {
                host.properties
                    .insert("xds\0cluster_name", cluster.as_bytes().to_vec());
            }
            host.send_request_headers(&mut edge, NATIVE_REQUEST, false);
            assert_eq!(
                host.request_headers.get(MARKER).is_some(),
                converted,
                "{cluster:?}"
            );
            let content_type = host.request_headers.get("content-type").unwrap();
            assert_eq!(content_type.starts_with(b"application/grpc-web"), converted);
        }
    }

    #[test]
    fn browser_grpc_web_at_the_edge_passes_untouched_but_loses_a_forged_marker() {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        host.send_request_headers(
            &mut edge,
            &[
                ("content-type", "application/grpc-web-text"),
                (MARKER, "forged"),
            ],
            false,
        );
        assert_eq!(
            host.request_headers,
            metadata(&[("content-type", "application/grpc-web-text")])
        );
        assert_eq!(host.counters, vec![Counter::PassedThrough]);
        // Its response is not touched either.
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        let body = [message(b"hi"), trailer_frame(b"grpc-status:0\r\n", false)].concat();
        host.send_response_body(&mut edge, &body, true);
        assert_eq!(host.downstream_body, body);
        assert_eq!(
            host.downstream_headers.unwrap().get("content-type"),
            Some(&b"application/grpc-web+proto"[..])
        );
    }

    #[test]
    fn response_payload_passes_without_being_read_and_the_trailer_frame_is_cut() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        let large = message(&[5; 1000]);
        let end = trailer_frame(b"grpc-status:0\r\n", false);
        let body = [large.clone(), large.clone(), end].concat();
        // 250-byte chunks: the last carries the end of a message and the
        // trailer frame.
        for chunk in body.chunks(250) {
            host.send_response_body(&mut edge, chunk, false);
        }
        host.send_response_body(&mut edge, &[], true);
        assert_eq!(host.downstream_body, [large.clone(), large].concat());
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "0")]))
        );
        // Read: the chunks holding a prefix, not the payload between.
        assert!(
            host.body_bytes_read.get() <= 4 * 250,
            "{}",
            host.body_bytes_read.get()
        );
        // No read at all for a chunk that is all payload.
        assert!(
            host.body_reads.get() <= 5,
            "{} reads",
            host.body_reads.get()
        );
    }

    /// After a flow-control pause Envoy hands over all it read at once: the
    /// end of a large message and the trailer frame in one chunk of
    /// megabytes. The frame is cut off without the chunk passing through the
    /// module whole.
    #[test]
    fn a_trailer_frame_behind_a_large_chunk_is_cut_a_piece_at_a_time() {
        let mut config = (*config(Side::Edge, false)).clone();
        config.max_frame_bytes = 4 << 20;
        let mut edge = Edge::new(Rc::new(config));
        let mut host = FakeHost::new();
        host.send_request_headers(&mut edge, NATIVE_REQUEST, false);
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        let large: Vec<u8> = message(&(0..3 << 20).map(|i| i as u8).collect::<Vec<_>>());
        let end = trailer_frame(b"grpc-status:0\r\n", false);
        host.send_response_body(&mut edge, &large[..1000], false);
        host.send_response_body(&mut edge, &[&large[1000..], &end[..]].concat(), true);
        assert!(host.downstream_body == large, "the message changed");
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "0")]))
        );
        assert!(
            host.largest_body_read.get() <= 64 * 1024,
            "{} bytes in one read",
            host.largest_body_read.get()
        );
    }

    /// A large request message crosses in chunks; only the chunks where a
    /// frame begins are read, not the payload between.
    #[test]
    fn request_payload_passes_without_being_read() {
        let (mut edge, mut host) = converted();
        assert_request_payload_is_not_read(&mut edge, &mut host);
    }

    #[test]
    fn request_body_passes_unchanged() {
        let (mut edge, mut host) = converted();
        let body = [message(b"one"), message(b"two")].concat();
        assert_eq!(
            host.send_request_body(&mut edge, &body[..7], false),
            Action::Continue
        );
        assert_eq!(
            host.send_request_body(&mut edge, &body[7..], true),
            Action::Continue
        );
        assert_eq!(host.upstream_body, body);
    }

    #[test]
    fn oversized_request_frame_gets_resource_exhausted() {
        let (mut edge, mut host) = converted();
        assert_eq!(
            host.send_request_body(&mut edge, &[0, 0, 0, 4, 1], false),
            Action::Pause
        );
        let reply = deliver_reply(&mut host, &mut edge);
        assert_eq!(
            reply.get("content-type"),
            Some(&b"application/grpc+proto"[..])
        );
        assert_status(
            &reply,
            "8",
            "grpc-web-bridge: client sent a 1025-byte frame, over the 1024-byte limit",
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Downstream, "frame_too_large"))
        );
    }

    #[test]
    fn trailer_frame_becomes_http2_trailers_under_every_chunking() {
        let messages = [message(b"first"), message(b""), message(b"third")].concat();
        let block = b"grpc-status:0\r\ngrpc-message:ok\r\nx-dup:1\r\nX-Dup:2\r\n";
        let body = [messages.clone(), trailer_frame(block, false)].concat();
        let mut chunkings: Vec<Vec<&[u8]>> = vec![body.chunks(1).collect()];
        for cut in 1..body.len() {
            chunkings.push(vec![&body[..cut], &body[cut..]]);
        }
        for chunks in chunkings {
            // HTTP/1.1 upstream: end of stream arrives as an empty last chunk.
            for empty_last_chunk in [true, false] {
                let (mut edge, mut host) = converted();
                host.send_response_headers(&mut edge, WEB_RESPONSE, false);
                let last = chunks.len() - 1;
                for (i, chunk) in chunks.iter().enumerate() {
                    host.send_response_body(&mut edge, chunk, i == last && !empty_last_chunk);
                }
                if empty_last_chunk {
                    host.send_response_body(&mut edge, b"", true);
                }
                assert_eq!(host.downstream_body, messages, "{chunks:?}");
                assert_eq!(
                    host.downstream_trailers
                        .clone()
                        .or(Some(host.response_trailers.clone())),
                    Some(metadata(&[
                        ("grpc-status", "0"),
                        ("grpc-message", "ok"),
                        ("x-dup", "1"),
                        ("x-dup", "2")
                    ]))
                );
                let headers = host.downstream_headers.unwrap();
                assert_eq!(
                    headers.get("content-type"),
                    Some(&b"application/grpc+proto"[..])
                );
            }
        }
    }

    #[test]
    fn each_message_leaves_in_the_chunk_it_arrived_in() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &message(b"one"), false);
        assert_eq!(host.downstream_body, message(b"one"));
        host.send_response_body(&mut edge, &message(b"two"), false);
        assert_eq!(
            host.downstream_body,
            [message(b"one"), message(b"two")].concat()
        );
    }

    #[test]
    fn trailers_only_reply_stays_trailers_only() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[
                (":status", "200"),
                ("content-type", "application/grpc-web"),
                ("grpc-status", "12"),
            ],
            true,
        );
        let headers = host.downstream_headers.unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc+proto"[..])
        );
        assert_eq!(headers.get("grpc-status"), Some(&b"12"[..]));
        assert!(host.downstream_body.is_empty());
    }

    #[test]
    fn status_in_headers_before_a_body_moves_into_trailers() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[
                (":status", "200"),
                ("content-type", "application/grpc-web+proto"),
                ("date", "today"),
                ("grpc-status", "5"),
                ("grpc-message", "not%20here"),
                ("x-trailing-bin", "AAE="),
            ],
            false,
        );
        host.send_response_body(&mut edge, b"", true);
        let headers = host.downstream_headers.unwrap();
        assert_eq!(headers.get("grpc-status"), None);
        assert_eq!(headers.get("date"), Some(&b"today"[..]));
        assert_eq!(
            host.response_trailers,
            metadata(&[
                ("grpc-status", "5"),
                ("grpc-message", "not%20here"),
                ("x-trailing-bin", "AAE=")
            ])
        );
    }

    #[test]
    fn trailer_frame_wins_over_status_in_headers() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[
                (":status", "200"),
                ("content-type", "application/grpc-web"),
                ("grpc-status", "13"),
            ],
            false,
        );
        host.send_response_body(&mut edge, &trailer_frame(b"grpc-status:0\r\n", false), true);
        assert_eq!(host.response_trailers, metadata(&[("grpc-status", "0")]));
    }

    #[test]
    fn body_ending_without_trailer_frame_is_an_error_never_ok() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &message(b"x"), false);
        host.send_response_body(&mut edge, b"", true);
        assert_eq!(host.downstream_body, message(b"x"));
        assert_status(
            &host.response_trailers,
            "13",
            "grpc-web-bridge: upstream ended the response without trailers",
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Upstream, "missing_trailers"))
        );
    }

    #[test]
    fn trailer_block_without_status_gets_unknown_and_keeps_metadata() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(
            &mut edge,
            &trailer_frame(b"x-a:1\r\ngrpc-message:hm\r\n", false),
            true,
        );
        assert_eq!(host.response_trailers.get("x-a"), Some(&b"1"[..]));
        assert_status(
            &host.response_trailers,
            "2",
            "grpc-web-bridge: upstream sent trailers without grpc-status",
        );
    }

    #[test]
    fn injected_trailer_line_is_an_internal_error() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(
            &mut edge,
            &trailer_frame(b"grpc-status:0\r\nx-a:1\rx-b:2\r\n", false),
            true,
        );
        assert_eq!(status_of(&host.response_trailers).0, "13");
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Upstream, "invalid_trailers"))
        );
    }

    #[test]
    fn gzip_compressed_trailer_frame_is_read() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(b"grpc-status:0\r\nx-z:compressed\r\n")
            .unwrap();
        let block = gzip.finish().unwrap();
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[
                (":status", "200"),
                ("content-type", "application/grpc-web"),
                ("grpc-encoding", "gzip"),
            ],
            false,
        );
        host.send_response_body(&mut edge, &trailer_frame(&block, true), true);
        assert_eq!(
            host.response_trailers,
            metadata(&[("grpc-status", "0"), ("x-z", "compressed")])
        );
    }

    #[test]
    fn compressed_trailer_frame_without_known_encoding_is_an_error() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &trailer_frame(b"junk", true), true);
        assert_eq!(status_of(&host.response_trailers).0, "13");
        assert!(host.counters.contains(&Counter::Error(
            Peer::Upstream,
            "unsupported_trailer_compression"
        )));
    }

    #[test]
    fn http_error_from_upstream_maps_to_grpc_status_and_drops_the_body() {
        for (http, grpc, eos, reason) in [
            ("503", "14", false, "Service Unavailable"),
            ("404", "12", true, "Not Found"),
            ("401", "16", false, "Unauthorized"),
        ] {
            let (mut edge, mut host) = converted();
            host.send_response_headers(
                &mut edge,
                &[(":status", http), ("content-type", "text/html")],
                eos,
            );
            if !eos {
                host.send_response_body(&mut edge, b"<html>oops</html>", false);
                host.send_response_body(&mut edge, b"", true);
            }
            let headers = host.downstream_headers.clone().unwrap();
            assert_eq!(headers.get(":status"), Some(&b"200"[..]));
            assert_eq!(
                headers.get("content-type"),
                Some(&b"application/grpc+proto"[..])
            );
            let status_block = if eos {
                headers
            } else {
                host.response_trailers.clone()
            };
            let message =
                format!("grpc-web-bridge: upstream answered with HTTP status {http} {reason}");
            assert_status(&status_block, grpc, &message);
            assert!(host.downstream_body.is_empty());
        }
    }

    /// An intermediary's own page (a WAF's 403, a proxy's 200 HTML) reaches
    /// the client as the mapped status, naming the intermediary, never as a
    /// message.
    #[test]
    fn a_hops_own_page_names_the_hop() {
        for (headers, code, message) in [
            (
                [
                    (":status", "403"),
                    ("content-type", "text/html"),
                    ("server", "Apache/2.4.71 (Debian)"),
                ],
                "7",
                "grpc-web-bridge: upstream answered with HTTP status 403 Forbidden, from \"Apache/2.4.71 (Debian)\"",
            ),
            (
                [
                    (":status", "200"),
                    ("content-type", "text/html"),
                    ("via", "1.1 varnish (Varnish/7.1)"),
                ],
                "2",
                "grpc-web-bridge: upstream answered with content-type \"text/html\", not gRPC, from \"1.1 varnish (Varnish/7.1)\"",
            ),
        ] {
            let (mut edge, mut host) = converted();
            host.send_response_headers(&mut edge, &headers, false);
            host.send_response_body(&mut edge, b"<html>blocked</html>", true);
            assert!(host.downstream_body.is_empty());
            assert_status(&host.response_trailers.clone(), code, message);
        }
    }

    #[test]
    fn http_error_after_the_grpc_timeout_is_deadline_exceeded() {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        let request = [
            ("content-type", "application/grpc"),
            ("grpc-timeout", "100m"),
        ];
        host.send_request_headers(&mut edge, &request, false);
        host.clock_millis += 100;
        host.send_response_headers(&mut edge, &[(":status", "504")], true);
        let headers = host.downstream_headers.unwrap();
        assert_status(
            &headers,
            "4",
            "grpc-web-bridge: deadline exceeded before the upstream answered",
        );
    }

    #[test]
    fn http_error_before_the_grpc_timeout_keeps_its_mapping() {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        let request = [
            ("content-type", "application/grpc"),
            ("grpc-timeout", "100m"),
        ];
        host.send_request_headers(&mut edge, &request, false);
        host.clock_millis += 99;
        host.send_response_headers(&mut edge, &[(":status", "504")], true);
        assert_eq!(status_of(&host.downstream_headers.unwrap()).0, "14");
    }

    #[test]
    fn non_grpc_200_is_unknown() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[(":status", "200"), ("content-type", "text/plain")],
            false,
        );
        host.send_response_body(&mut edge, b"hello", true);
        assert_eq!(status_of(&host.response_trailers).0, "2");
        assert!(host.downstream_body.is_empty());
    }

    #[test]
    fn text_reply_is_decoded() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(
            &mut edge,
            &[
                (":status", "200"),
                ("content-type", "application/grpc-web-text"),
            ],
            false,
        );
        let text = [
            base64(&message(b"hi")),
            base64(&trailer_frame(b"grpc-status:0\r\n", false)),
        ]
        .concat();
        for chunk in text.chunks(3) {
            host.send_response_body(&mut edge, chunk, false);
        }
        host.send_response_body(&mut edge, b"", true);
        assert_eq!(host.downstream_body, message(b"hi"));
        assert_eq!(host.response_trailers, metadata(&[("grpc-status", "0")]));
    }

    #[test]
    fn real_upstream_trailers_yield_to_the_trailer_frame() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(
            &mut edge,
            &trailer_frame(b"grpc-status:3\r\n", false),
            false,
        );
        host.send_response_trailers(&mut edge, &[("grpc-status", "0")]);
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "3")]))
        );
    }
    #[test]
    fn oversized_trailer_frame_never_becomes_an_oversized_block() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        let block = format!("grpc-status:0\r\nx-big:{}\r\n", "x".repeat(600));
        host.send_response_body(&mut edge, &trailer_frame(block.as_bytes(), false), false);
        host.send_response_body(&mut edge, b"", true);
        let trailers = host.downstream_trailers.clone().unwrap();
        assert_eq!(status_of(&trailers).0, "8");
        assert_eq!(trailers.get("x-big"), None);
    }

    #[test]
    fn real_trailers_without_status_keep_their_metadata_and_get_unknown() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &message(b"hi"), false);
        host.send_response_trailers(&mut edge, &[("x-only", "1")]);
        let trailers = host.downstream_trailers.clone().unwrap();
        assert_status(
            &trailers,
            "2",
            "grpc-web-bridge: upstream sent trailers without grpc-status",
        );
        assert_eq!(trailers.get("x-only"), Some(&b"1"[..]));
    }

    #[test]
    fn deadline_before_the_response_is_a_trailers_only_deadline_exceeded() {
        let (mut edge, mut host) = converted();
        assert_eq!(host.timer, Some(1000));
        host.advance_to(&mut edge, 1000);
        let headers = deliver_reply(&mut host, &mut edge);
        assert_status(
            &headers,
            "4",
            "grpc-web-bridge: deadline exceeded before the upstream answered",
        );
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc+proto"[..])
        );
    }

    #[test]
    fn deadline_under_way_waits_for_the_upstream_then_resets() {
        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.send_response_body(&mut edge, &message(b"hi"), false);
        host.advance_to(&mut edge, 1000);
        assert!(!host.reset);
        host.clock_millis = 1100;
        let block = trailer_frame(b"grpc-status:1\r\ngrpc-message:Timeout expired\r\n", false);
        host.send_response_body(&mut edge, &block, false);
        host.send_response_body(&mut edge, b"", true);
        assert_status(
            &host.downstream_trailers.clone().unwrap(),
            "4",
            "grpc-web-bridge: deadline exceeded before the upstream answered",
        );
        assert!(host.timer.is_none());

        let (mut edge, mut host) = converted();
        host.send_response_headers(&mut edge, WEB_RESPONSE, false);
        host.advance_to(&mut edge, 1000);
        host.advance_to(&mut edge, 2000);
        assert!(host.reset);
    }

    /// The header in which the content type crosses the hop.
    const CARRIED: &str = "x-grpc-web-bridge-content-type";

    fn converted_as(content_type: &str) -> (Edge, FakeHost) {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        let request = [
            (":method", "POST"),
            (":path", PATH),
            ("content-type", content_type),
            (CARRIED, "application/grpc+forged"),
        ];
        host.send_request_headers(&mut edge, &request, false);
        (edge, host)
    }

    #[test]
    fn a_subtype_crosses_the_hop_in_the_bridge_header_under_a_type_envoy_converts() {
        for (client, hop, carried) in [
            ("application/grpc", "application/grpc-web", None),
            (
                "application/grpc+proto",
                "application/grpc-web+proto",
                Some("application/grpc+proto"),
            ),
            (
                "Application/GRPC+JSON; charset=utf-8",
                "application/grpc-web",
                Some("application/grpc+json"),
            ),
            (
                "application/grpc+x-custom.v1",
                "application/grpc-web",
                Some("application/grpc+x-custom.v1"),
            ),
        ] {
            let (_, host) = converted_as(client);
            let headers = &host.request_headers;
            assert_eq!(
                headers.get("content-type"),
                Some(hop.as_bytes()),
                "{client}"
            );
            assert_eq!(headers.get("accept"), Some(hop.as_bytes()), "{client}");
            // The client's own copy never crosses.
            assert_eq!(headers.get(CARRIED), carried.map(str::as_bytes), "{client}");
            assert_eq!(host.counters, [Counter::Converted]);
        }
    }

    #[test]
    fn the_reply_has_the_requests_content_type_or_the_one_the_origin_carried() {
        let cases = [
            ("application/grpc+json", None, "application/grpc+json"),
            ("application/grpc", None, "application/grpc"),
            (
                "application/grpc+json",
                Some("application/grpc"),
                "application/grpc",
            ),
            (
                "application/grpc",
                Some("application/grpc+proto"),
                "application/grpc+proto",
            ),
            // Not a native content type: the request's wins.
            (
                "application/grpc+json",
                Some("application/grpc-web+x"),
                "application/grpc+json",
            ),
        ];
        for (client, carried, expected) in cases {
            for trailers_only in [false, true] {
                let (mut edge, mut host) = converted_as(client);
                let mut response = vec![
                    (":status", "200"),
                    ("content-type", "application/grpc-web+proto"),
                ];
                if trailers_only {
                    response.push(("grpc-status", "5"));
                }
                response.extend(carried.map(|c| (CARRIED, c)));
                host.send_response_headers(&mut edge, &response, trailers_only);
                let headers = host.downstream_headers.clone().unwrap();
                assert_eq!(
                    headers.get("content-type"),
                    Some(expected.as_bytes()),
                    "{client} {carried:?}"
                );
                assert_eq!(headers.get(CARRIED), None);
            }
        }
    }

    #[test]
    fn a_grpc_web_servers_own_subtype_is_kept() {
        let (mut edge, mut host) = converted_as("application/grpc");
        let response = [
            (":status", "200"),
            ("content-type", "application/grpc-web+json"),
        ];
        host.send_response_headers(&mut edge, &response, false);
        let headers = host.downstream_headers.unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc+json"[..])
        );
    }

    #[test]
    fn the_carried_header_is_not_moved_into_trailers() {
        let (mut edge, mut host) = converted_as("application/grpc+json");
        let response = [
            (":status", "200"),
            ("content-type", "application/grpc-web+proto"),
            ("grpc-status", "0"),
            ("x-meta", "m"),
            (CARRIED, "application/grpc"),
        ];
        host.send_response_headers(&mut edge, &response, false);
        host.send_response_body(&mut edge, b"", true);
        let trailers = host.downstream_trailers.unwrap();
        assert_eq!(trailers, metadata(&[("grpc-status", "0"), ("x-meta", "m")]));
    }

    #[test]
    fn errors_carry_the_requests_content_type() {
        let (mut edge, mut host) = converted_as("application/grpc+json");
        let response = [(":status", "503"), ("content-type", "text/plain")];
        host.send_response_headers(&mut edge, &response, true);
        let headers = host.downstream_headers.unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc+json"[..])
        );
        assert_eq!(headers.get("grpc-status"), Some(&b"14"[..]));
    }

    #[test]
    fn a_malformed_grpc_content_type_is_refused_not_passed_on() {
        for value in [
            "application/grpc+",
            "application/grpc+a/b",
            "application/grpcweb",
            "application/grpc-webby",
        ] {
            let (mut edge, mut host) = converted_as(value);
            assert!(host.upstream_body.is_empty());
            let reply = deliver_reply(&mut host, &mut edge);
            assert_status(
                &reply,
                "13",
                &format!("grpc-web-bridge: client sent a malformed gRPC content-type {value:?}"),
            );
            assert_eq!(reply.get("content-type"), Some(&b"application/grpc"[..]));
            assert_eq!(
                host.counters,
                [Counter::Error(Peer::Downstream, "malformed_content_type")]
            );
        }
    }

    #[test]
    fn a_long_malformed_content_type_is_cut_in_the_message() {
        let value = format!("application/grpc+{}", "é".repeat(5000));
        let (mut edge, mut host) = converted_as(&value);
        let reply = deliver_reply(&mut host, &mut edge);
        let (_, message) = status_of(&reply);
        let shown: String = value.chars().take(64).collect();
        assert_eq!(
            message,
            format!("grpc-web-bridge: client sent a malformed gRPC content-type \"{shown}...\"")
        );
    }
}

mod origin {
    //! The module sits after Envoy's gRPC-web filter, so requests it guards
    //! arrive as native gRPC still carrying the marker.
    use super::*;
    use crate::bridge::PEEK_WINDOW;
    use crate::bridge::origin::{HELD_FRAME_BYTES, Origin};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NATIVE_RESPONSE: &[(&str, &str)] =
        &[(":status", "200"), ("content-type", "application/grpc")];

    fn start(fields: &[(&str, &str)], serve_browsers: bool) -> (Origin, FakeHost) {
        let mut origin = Origin::new(config(Side::Origin, serve_browsers));
        let mut host = FakeHost::new();
        let mut request = vec![(":method", "POST"), (":path", PATH), ("te", "trailers")];
        request.extend_from_slice(fields);
        host.send_request_headers(&mut origin, &request, false);
        (origin, host)
    }

    fn marked() -> (Origin, FakeHost) {
        let marker = signed_marker(0);
        start(
            &[("content-type", "application/grpc"), (MARKER, &marker)],
            false,
        )
    }

    fn streaming() -> (Origin, FakeHost) {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        (origin, host)
    }

    /// Reads are what a call costs Envoy (docs/benchmarks.md): one per
    /// header map and per body chunk.
    #[test]
    fn a_unary_call_reads_each_map_and_chunk_once() {
        let (mut origin, mut host) = marked();
        host.send_request_body(&mut origin, &message(b"ping"), true);
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_body(&mut origin, &message(b"pong"), false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(host.downstream_body, message(b"pong"));
        assert_status(host.downstream_trailers.as_ref().unwrap(), "0", "");
        assert_eq!(host.reads.get(), 5);
    }

    /// As at the edge: request payload between frame prefixes is not read.
    #[test]
    fn request_payload_passes_without_being_read() {
        let (mut origin, mut host) = marked();
        assert_request_payload_is_not_read(&mut origin, &mut host);
    }

    #[test]
    fn marked_request_is_guarded_and_loses_its_marker() {
        let (_, host) = marked();
        assert_eq!(host.request_headers.get(MARKER), None);
        assert_eq!(host.counters, [Counter::Converted]);
        assert!(host.reply.is_none());
    }

    #[test]
    fn wrong_empty_stale_or_duplicate_markers_are_refused_with_unauthenticated() {
        let good = signed_marker(0);
        let stale = signed_marker(1000);
        let last = if good.ends_with('0') { "1" } else { "0" };
        let tampered = format!("{}{last}", &good[..good.len() - 1]);
        let cases: [(&[&str], &str); 5] = [
            (&["nope"], "is malformed"),
            (&[""], "is empty"),
            (&[&stale], "is outside its time window"),
            (&[&good, &good], "appears more than once"),
            (&[&tampered], "does not match the request"),
        ];
        for (markers, why) in cases {
            let mut fields = vec![("content-type", "application/grpc")];
            fields.extend(markers.iter().map(|m| (MARKER, *m)));
            let (mut origin, mut host) = start(&fields, true);
            let headers = deliver_reply(&mut host, &mut origin);
            assert_status(
                &headers,
                "16",
                &format!("grpc-web-bridge: client sent a bridge marker that {why}"),
            );
            assert_eq!(headers.get("content-type"), Some(&b"application/grpc"[..]));
            assert!(
                host.counters
                    .contains(&Counter::Error(Peer::Downstream, "invalid_marker"))
            );
        }
    }

    #[test]
    fn unconverted_grpc_web_and_unmarked_grpc_pass_untouched() {
        for (fields, serve_browsers) in [
            (vec![("content-type", "application/grpc-web")], false),
            (vec![("content-type", "application/grpc-web+json")], false),
            (vec![("content-type", "application/grpc-web+")], false),
            (vec![("content-type", "application/grpc")], false),
            (vec![("content-type", "text/plain"), (MARKER, "x")], false),
        ] {
            let (mut origin, mut host) = start(&fields, serve_browsers);
            assert_eq!(host.counters, [Counter::PassedThrough]);
            host.send_response_headers(&mut origin, &[(":status", "200")], false);
            host.send_response_body(&mut origin, b"\x01\x02", false);
            host.send_response_trailers(&mut origin, &[("x", "y")]);
            assert_eq!(host.downstream_body, b"\x01\x02");
            assert_eq!(host.downstream_trailers, Some(metadata(&[("x", "y")])));
            assert!(host.timer.is_none());
        }
    }

    #[test]
    fn served_browser_calls_are_guarded_and_counted() {
        let (_, host) = start(
            &[("content-type", "application/grpc"), ("x-grpc-web", "1")],
            true,
        );
        assert_eq!(host.counters, [Counter::BrowserConverted]);
    }

    #[test]
    fn request_frames_are_checked_not_rewritten() {
        let (mut origin, mut host) = marked();
        let body = message(b"hello");
        host.send_request_body(&mut origin, &body[..3], false);
        host.send_request_body(&mut origin, &body[3..], true);
        assert_eq!(host.upstream_body, body);
        let (mut origin, mut host) = marked();
        host.send_request_body(&mut origin, &[0, 0, 0, 0x08, 0], false);
        let headers = deliver_reply(&mut host, &mut origin);
        assert_status(
            &headers,
            "8",
            "grpc-web-bridge: client sent a 2048-byte frame, over the 1024-byte limit",
        );
        let (mut origin, mut host) = marked();
        host.send_request_body(
            &mut origin,
            &trailer_frame(b"grpc-status:0\r\n", false),
            true,
        );
        let headers = deliver_reply(&mut host, &mut origin);
        assert_eq!(status_of(&headers).0, "13");
    }

    #[test]
    fn whole_frames_pass_in_the_chunk_they_came_in() {
        let (mut origin, mut host) = streaming();
        let two = [message(b"one"), message(b"two")].concat();
        host.send_response_body(&mut origin, &two, false);
        assert_eq!(host.downstream_body, two);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "0")]))
        );
        assert!(host.timer.is_none());
    }

    #[test]
    fn only_whole_frames_leave_under_every_chunking() {
        let body = [message(b"first"), message(b""), message(b"third message")].concat();
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let (mut origin, mut host) = streaming();
                let mut left = Vec::new();
                for part in [&body[..cut], &body[cut..cut2], &body[cut2..]] {
                    host.send_response_body(&mut origin, part, false);
                    left.push(host.downstream_body.len());
                }
                host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
                assert_eq!(host.downstream_body, body, "cuts {cut} {cut2}");
                let boundaries = [0, 10, 15, 33];
                assert!(left.iter().all(|n| boundaries.contains(n)), "{left:?}");
            }
        }
    }

    #[test]
    fn a_chunk_ending_inside_the_next_frame_is_read_once() {
        let (mut origin, mut host) = streaming();
        let (first, second) = (message(b"first"), message(b"second"));
        let mut chunk = first.clone();
        chunk.extend_from_slice(&second[..3]);
        host.send_response_body(&mut origin, &chunk, false);
        assert_eq!(host.downstream_body, first);
        // The whole frame goes back from what was read, not read again.
        assert_eq!(host.body_bytes_read.get(), chunk.len());
        host.send_response_body(&mut origin, &second[3..], false);
        assert_eq!(host.downstream_body, [first, second].concat());
    }

    /// A response whose frames may be larger than the origin holds.
    fn streaming_large() -> (Origin, FakeHost) {
        let mut config = (*config(Side::Origin, false)).clone();
        config.max_frame_bytes = 1 << 20;
        let mut origin = Origin::new(Rc::new(config));
        let mut host = FakeHost::new();
        let marker = signed_marker(0);
        host.send_request_headers(
            &mut origin,
            &[
                (":method", "POST"),
                (":path", PATH),
                ("content-type", "application/grpc"),
                (MARKER, &marker),
            ],
            false,
        );
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        (origin, host)
    }

    #[test]
    fn a_message_larger_than_the_held_size_streams_on_as_it_comes() {
        let (mut origin, mut host) = streaming_large();
        let large = message(&vec![5; HELD_FRAME_BYTES * 3]);
        let mut left = 0;
        for chunk in large.chunks(16 * 1024) {
            let action = host.send_response_body(&mut origin, chunk, false);
            assert_eq!(action, Action::Continue);
            left += chunk.len();
            assert_eq!(host.downstream_body.len(), left, "nothing is held");
        }
        // Only a peek at the prefix was read into the module, not the
        // payload that followed it in the chunk.
        assert_eq!(host.body_bytes_read.get(), PEEK_WINDOW);
        let _ = host.body_bytes_read.take();
        // A small frame behind it is held until whole again.
        let small = message(b"small");
        assert_eq!(
            host.send_response_body(&mut origin, &small[..4], false),
            Action::Pause
        );
        host.send_response_body(&mut origin, &small[4..], false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(host.downstream_body, [large, small].concat());
        assert_status(&host.downstream_trailers.clone().unwrap(), "0", "");
        assert!(!host.reset);
    }

    /// After a flow-control pause Envoy hands over megabytes at once: only
    /// frame prefixes are read, a window at a time, never the chunk whole.
    #[test]
    fn a_chunk_of_megabytes_is_read_only_at_its_prefixes() {
        let (mut origin, mut host) = streaming_large();
        let large = message(&vec![9; 300 * 1024]);
        let small = message(b"small");
        let chunk = [&large[..], &large[..], &small[..], &large[..1000]].concat();
        host.send_response_body(&mut origin, &chunk, false);
        host.send_response_body(&mut origin, &large[1000..], false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert!(host.downstream_body == [&chunk[..], &large[1000..]].concat());
        assert!(
            host.largest_body_read.get() <= 64 * 1024,
            "{} bytes in one read",
            host.largest_body_read.get()
        );
        assert!(!host.reset);
    }

    #[test]
    fn a_frame_that_turns_out_large_once_its_prefix_is_whole_streams() {
        let (mut origin, mut host) = streaming_large();
        let whole = message(b"whole");
        let large = message(&vec![6; HELD_FRAME_BYTES]);
        let mut chunk = whole.clone();
        chunk.extend_from_slice(&large[..3]);
        // The front of the next frame is carried until its length is known.
        assert_eq!(
            host.send_response_body(&mut origin, &chunk, false),
            Action::Continue
        );
        assert_eq!(host.downstream_body, whole);
        host.send_response_body(&mut origin, &large[3..1000], false);
        assert_eq!(host.downstream_body, [&whole[..], &large[..1000]].concat());
    }

    #[test]
    fn a_streaming_message_the_upstream_never_finishes_resets_the_stream() {
        for end_with_trailers in [true, false] {
            let (mut origin, mut host) = streaming_large();
            let large = message(&vec![7; HELD_FRAME_BYTES * 2]);
            host.send_response_body(&mut origin, &large[..HELD_FRAME_BYTES], false);
            if end_with_trailers {
                host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
            } else {
                host.send_response_body(&mut origin, &large[HELD_FRAME_BYTES..][..10], true);
            }
            assert!(host.reset, "trailers: {end_with_trailers}");
            assert!(host.downstream_trailers.is_none());
            assert!(host.timer.is_none());
            assert!(
                host.counters
                    .contains(&Counter::Error(Peer::Upstream, "truncated_frame"))
            );
        }
    }

    #[test]
    fn a_small_message_is_held_in_envoy_and_read_only_at_its_prefix() {
        let (mut origin, mut host) = streaming();
        // The largest frame the test config allows, in quarters.
        let large = message(&[5; 1000]);
        let chunks: Vec<&[u8]> = large.chunks(250).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let action = host.send_response_body(&mut origin, chunk, false);
            let last = i + 1 == chunks.len();
            assert_eq!(
                action,
                if last {
                    Action::Continue
                } else {
                    Action::Pause
                }
            );
            assert_eq!(
                host.downstream_body.len(),
                if last { large.len() } else { 0 }
            );
        }
        assert_eq!(host.downstream_body, large);
        // The first chunk is read for the prefix; the payload never is.
        assert_eq!(host.body_reads.get(), 1);
        assert!(
            host.body_bytes_read.get() <= 250,
            "{}",
            host.body_bytes_read.get()
        );
        let before = host.body_bytes_read.get();
        let next = message(&[6; 1000]);
        for chunk in next.chunks(250) {
            host.send_response_body(&mut origin, chunk, false);
        }
        assert_eq!(host.downstream_body.len(), 2 * large.len());
        assert!(host.body_bytes_read.get() - before <= 250);
    }

    #[test]
    fn a_held_message_the_upstream_never_finishes_never_leaves() {
        for end_with_trailers in [true, false] {
            let (mut origin, mut host) = streaming();
            let unfinished = message(&[7; 1000]);
            host.send_response_body(&mut origin, &message(b"whole"), false);
            let held = host.send_response_body(&mut origin, &unfinished[..300], false);
            assert_eq!(held, Action::Pause);
            if end_with_trailers {
                host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
            } else {
                host.send_response_body(&mut origin, &unfinished[300..600], true);
            }
            assert_eq!(host.downstream_body, message(b"whole"));
            let (code, _) = status_of(&host.downstream_trailers.clone().unwrap());
            assert_eq!(code, "13", "trailers: {end_with_trailers}");
        }
    }

    /// As at the edge: a request cut inside a frame after the response
    /// started ends with a status, not a reset.
    #[test]
    fn a_request_cut_inside_a_frame_after_the_response_started_ends_with_a_status() {
        let (mut origin, mut host) = streaming();
        let action = host.send_request_body(&mut origin, &[0, 0, 0], true);
        assert_eq!(action, Action::Continue);
        assert!(host.upstream_body.is_empty());
        assert!(!host.reset && host.reply.is_none());
        host.send_response_body(&mut origin, &message(b"pong"), false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(host.downstream_body, message(b"pong"));
        let (code, text) = status_of(&host.downstream_trailers.clone().unwrap());
        assert_eq!(code, "13");
        assert!(
            text.starts_with("grpc-web-bridge: client ended the stream"),
            "{text}"
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Downstream, "truncated_frame"))
        );
    }

    #[test]
    fn truncated_message_never_leaves_and_ends_internal() {
        let (mut origin, mut host) = streaming();
        let mut body = message(b"whole");
        let unfinished = message(&[7; 121]);
        body.extend_from_slice(&unfinished[..15]);
        host.send_response_body(&mut origin, &body, false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(host.downstream_body, message(b"whole"));
        let trailers = host.downstream_trailers.clone().unwrap();
        assert_status(
            &trailers,
            "13",
            "grpc-web-bridge: upstream ended the stream 111 bytes short of a frame's end",
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Upstream, "truncated_frame"))
        );
    }

    #[test]
    fn body_ending_without_trailers_gets_internal_trailers() {
        let (mut origin, mut host) = streaming();
        host.send_response_body(&mut origin, &message(b"hi"), true);
        assert_eq!(host.downstream_body, message(b"hi"));
        assert_status(
            &host.downstream_trailers.clone().unwrap(),
            "13",
            "grpc-web-bridge: upstream ended the response without trailers",
        );
    }

    #[test]
    fn bad_upstream_frame_drops_the_rest_and_ends_with_its_error() {
        let (mut origin, mut host) = streaming();
        host.send_response_body(&mut origin, &message(b"ok"), false);
        host.send_response_body(&mut origin, &[0x40, 0, 0, 0, 1, 9], false);
        host.send_response_body(&mut origin, &message(b"late"), false);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(host.downstream_body, message(b"ok"));
        assert_status(
            &host.downstream_trailers.clone().unwrap(),
            "13",
            "grpc-web-bridge: upstream sent a frame with unknown flags 0x40",
        );
    }

    #[test]
    fn statuses_are_settled_to_one_valid_code() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 5] = [
            (&[("grpc-status", "7"), ("grpc-message", "no")], "7", "no"),
            (
                &[("grpc-status", "abc")],
                "2",
                "grpc-web-bridge: upstream sent an invalid grpc-status \"abc\"",
            ),
            (
                &[("grpc-status", "0"), ("grpc-status", "13")],
                "2",
                "grpc-web-bridge: upstream sent an invalid grpc-status \"0,13\"",
            ),
            (
                &[("grpc-status", "99999999999999999999")],
                "2",
                "grpc-web-bridge: upstream sent an invalid grpc-status \"99999999999999999999\"",
            ),
            (
                &[("x-only", "1")],
                "2",
                "grpc-web-bridge: upstream sent trailers without grpc-status",
            ),
        ];
        for (trailers, code, text) in cases {
            let (mut origin, mut host) = streaming();
            host.send_response_trailers(&mut origin, trailers);
            let settled = host.downstream_trailers.clone().unwrap();
            assert_status(&settled, code, text);
            // Metadata stays where the server put it.
            for (name, value) in trailers.iter().filter(|(n, _)| !n.starts_with("grpc-")) {
                assert_eq!(settled.get(name), Some(value.as_bytes()));
            }
        }
    }

    #[test]
    fn trailers_over_the_limit_become_resource_exhausted() {
        let (mut origin, mut host) = streaming();
        let big = "x".repeat(600);
        host.send_response_trailers(&mut origin, &[("grpc-status", "0"), ("x-big", &big)]);
        let trailers = host.downstream_trailers.clone().unwrap();
        assert_status(
            &trailers,
            "8",
            "grpc-web-bridge: upstream sent 681 bytes of trailers, over the 512-byte limit",
        );
        assert_eq!(trailers.get("x-big"), None);
    }

    #[test]
    fn trailers_only_reply_stays_trailers_only_with_its_metadata() {
        let (mut origin, mut host) = marked();
        let mut reply = NATIVE_RESPONSE.to_vec();
        reply.extend([("grpc-status", "5"), ("x-meta", "m")]);
        host.send_response_headers(&mut origin, &reply, true);
        let headers = host.downstream_headers.clone().unwrap();
        assert_eq!(headers, metadata(&reply));
        assert!(host.timer.is_none());
    }

    #[test]
    fn initial_metadata_leaves_at_once_with_the_headers() {
        let (mut origin, mut host) = marked();
        let mut headers = NATIVE_RESPONSE.to_vec();
        headers.push(("x-grpc-test-echo-initial", "v"));
        assert_eq!(
            host.send_response_headers(&mut origin, &headers, false),
            Action::Continue
        );
        assert_eq!(host.downstream_headers, Some(metadata(&headers)));
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "0")]))
        );
    }

    #[test]
    fn non_grpc_reply_becomes_a_mapped_grpc_error_with_the_body_dropped() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(
            &mut origin,
            &[
                (":status", "503"),
                ("content-type", "text/plain"),
                ("content-length", "4"),
            ],
            false,
        );
        host.send_response_body(&mut origin, b"busy", true);
        let headers = host.downstream_headers.clone().unwrap();
        assert_eq!(headers.get(":status"), Some(&b"200"[..]));
        assert_eq!(headers.get("content-type"), Some(&b"application/grpc"[..]));
        assert_eq!(headers.get("content-length"), None);
        assert!(host.downstream_body.is_empty());
        assert_status(
            &host.downstream_trailers.clone().unwrap(),
            "14",
            "grpc-web-bridge: upstream answered with HTTP status 503 Service Unavailable",
        );
        assert!(host.timer.is_none());
    }

    #[test]
    fn envoys_base64_refusal_becomes_internal_blaming_the_client() {
        let (mut origin, mut host) = marked();
        host.properties.insert(
            "response\0code_details",
            b"grpc_base_64_decode_failed".to_vec(),
        );
        host.send_response_headers(&mut origin, &[(":status", "400")], true);
        assert_status(
            &host.downstream_headers.clone().unwrap(),
            "13",
            "grpc-web-bridge: client sent a grpc-web-text body that is not valid base64",
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Downstream, "invalid_base64"))
        );
    }

    fn with_deadline() -> (Origin, FakeHost) {
        let marker = signed_marker(0);
        start(
            &[
                ("content-type", "application/grpc"),
                (MARKER, &marker),
                ("grpc-timeout", "200m"),
            ],
            false,
        )
    }

    #[test]
    fn deadline_before_any_response_is_a_trailers_only_deadline_exceeded() {
        let (mut origin, mut host) = with_deadline();
        assert_eq!(host.timer, Some(200));
        host.advance_to(&mut origin, 199);
        assert!(host.reply.is_none());
        host.advance_to(&mut origin, 200);
        let headers = deliver_reply(&mut host, &mut origin);
        assert_status(
            &headers,
            "4",
            "grpc-web-bridge: deadline exceeded before the upstream answered",
        );
        assert!(
            host.counters
                .contains(&Counter::Error(Peer::Upstream, "deadline_exceeded"))
        );
    }

    #[test]
    fn error_ending_after_the_deadline_is_deadline_exceeded() {
        let (mut origin, mut host) = with_deadline();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_body(&mut origin, &message(b"early"), false);
        host.advance_to(&mut origin, 200);
        assert!(
            host.reply.is_none() && !host.reset,
            "the upstream may still end the call"
        );
        host.clock_millis = 210;
        host.send_response_trailers(
            &mut origin,
            &[("grpc-status", "1"), ("grpc-message", "Timeout expired")],
        );
        assert_status(
            &host.downstream_trailers.clone().unwrap(),
            "4",
            "grpc-web-bridge: deadline exceeded before the upstream answered",
        );
        assert!(host.timer.is_none());
    }

    #[test]
    fn ok_or_deadline_status_after_the_deadline_is_kept() {
        for status in ["0", "4"] {
            let (mut origin, mut host) = with_deadline();
            host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
            host.clock_millis = 500;
            host.send_response_trailers(&mut origin, &[("grpc-status", status)]);
            assert_eq!(
                host.downstream_trailers,
                Some(metadata(&[("grpc-status", status)]))
            );
        }
    }

    #[test]
    fn upstream_silent_past_deadline_and_grace_is_reset() {
        let (mut origin, mut host) = with_deadline();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.advance_to(&mut origin, 200);
        assert_eq!(host.timer, Some(200 + 1000));
        host.advance_to(&mut origin, 1199);
        assert!(!host.reset);
        host.advance_to(&mut origin, 1200);
        assert!(host.reset);
        assert!(host.counters.contains(&Counter::DeadlineReset));
    }

    const CARRIED: &str = "x-grpc-web-bridge-content-type";

    fn marked_as(carried: &str) -> (Origin, FakeHost) {
        let marker = signed_marker(0);
        start(
            &[
                ("content-type", "application/grpc"),
                (MARKER, &marker),
                (CARRIED, carried),
            ],
            false,
        )
    }

    #[test]
    fn the_carried_content_type_is_restored_for_the_upstream() {
        for (carried, upstream) in [
            ("application/grpc+json", "application/grpc+json"),
            ("application/grpc+proto", "application/grpc+proto"),
            ("Application/GRPC+Thrift", "application/grpc+thrift"),
        ] {
            let (_, host) = marked_as(carried);
            let headers = &host.request_headers;
            assert_eq!(headers.get("content-type"), Some(upstream.as_bytes()));
            assert_eq!(headers.get(CARRIED), None);
            assert_eq!(host.counters, [Counter::Converted]);
        }
    }

    #[test]
    fn the_upstreams_content_type_is_carried_back_only_when_it_differs() {
        let marker = signed_marker(0);
        let plain = [
            ("content-type", "application/grpc"),
            (MARKER, marker.as_str()),
        ];
        let cases = [
            (Some("application/grpc+json"), "application/grpc+json", None),
            (
                Some("application/grpc+json"),
                "application/grpc",
                Some("application/grpc"),
            ),
            (None, "application/grpc", None),
            (
                None,
                "application/grpc+proto",
                Some("application/grpc+proto"),
            ),
        ];
        for (carried, upstream, back) in cases {
            for trailers_only in [false, true] {
                let (mut origin, mut host) = match carried {
                    Some(carried) => marked_as(carried),
                    None => start(&plain, false),
                };
                let mut response = vec![(":status", "200"), ("content-type", upstream)];
                if trailers_only {
                    response.push(("grpc-status", "0"));
                }
                host.send_response_headers(&mut origin, &response, trailers_only);
                let headers = host.downstream_headers.unwrap();
                assert_eq!(
                    headers.get(CARRIED),
                    back.map(str::as_bytes),
                    "{carried:?} {upstream}"
                );
            }
        }
    }

    #[test]
    fn an_invalid_carried_content_type_is_refused() {
        let (mut origin, mut host) = marked_as("application/grpc-web+json");
        let reply = deliver_reply(&mut host, &mut origin);
        assert_status(
            &reply,
            "13",
            "grpc-web-bridge: client sent a malformed gRPC content-type \"application/grpc-web+json\"",
        );
    }

    #[test]
    fn an_unmarked_carried_content_type_is_dropped_not_used() {
        let (_, host) = start(
            &[
                ("content-type", "application/grpc"),
                ("x-grpc-web", "1"),
                (CARRIED, "application/grpc+json"),
            ],
            true,
        );
        let headers = &host.request_headers;
        assert_eq!(headers.get("content-type"), Some(&b"application/grpc"[..]));
        assert_eq!(headers.get(CARRIED), None);
        // Nothing is carried back to a browser.
        let (mut origin, mut host) = (Origin::new(config(Side::Origin, true)), host);
        host.send_request_headers(&mut origin, &[("content-type", "application/grpc")], false);
        host.send_response_headers(
            &mut origin,
            &[
                (":status", "200"),
                ("content-type", "application/grpc+json"),
            ],
            false,
        );
        assert_eq!(host.downstream_headers.unwrap().get(CARRIED), None);
    }

    /// gRPC-web Envoy's filter did not convert reaches the module as it
    /// was: a browser origin refuses it with a status in the client's own
    /// protocol, never passing it on half-converted.
    #[test]
    fn grpc_web_envoy_did_not_convert_is_refused_at_a_browser_origin() {
        let cases = [
            (
                "application/grpc-web+proto; charset=utf-8",
                "unconverted",
                "application/grpc-web+proto",
            ),
            (
                "Application/GRPC-Web",
                "unconverted",
                "application/grpc-web",
            ),
            (
                "application/grpc-web-text+proto; charset=utf-8",
                "unconverted",
                "application/grpc-web-text+proto",
            ),
            (
                "application/grpc-web+json",
                "unconverted",
                "application/grpc-web+json",
            ),
            (
                "application/grpc-web+",
                "malformed",
                "application/grpc-web+proto",
            ),
            (
                "application/grpc-web-text+a b",
                "malformed",
                "application/grpc-web-text+proto",
            ),
            ("application/grpcx", "malformed", "application/grpc"),
        ];
        for (value, kind, reply_type) in cases {
            let (mut origin, mut host) = start(&[("content-type", value)], true);
            let reply = deliver_reply(&mut host, &mut origin);
            let (code, message) = status_of(&reply);
            assert_eq!(code, "13", "{value}");
            let expected = match kind {
                "malformed" => {
                    format!("grpc-web-bridge: client sent a malformed gRPC content-type {value:?}")
                }
                _ => format!(
                    "grpc-web-bridge: client sent content-type {value:?}, which this origin does not convert (gRPC-web: application/grpc-web or application/grpc-web-text, optionally +proto, without parameters)"
                ),
            };
            assert_eq!(message, expected);
            assert_eq!(
                reply.get("content-type"),
                Some(reply_type.as_bytes()),
                "{value}"
            );
            assert_eq!(
                host.counters,
                [Counter::Error(
                    Peer::Downstream,
                    if kind == "malformed" {
                        "malformed_content_type"
                    } else {
                        "unconverted_content_type"
                    }
                )]
            );
        }
    }

    #[test]
    fn a_marked_request_envoy_did_not_convert_is_refused_and_a_forged_one_unauthenticated() {
        let marker = signed_marker(0);
        let (mut origin, mut host) = start(
            &[
                ("content-type", "application/grpc-web+json"),
                (MARKER, &marker),
            ],
            false,
        );
        let (code, _) = status_of(&deliver_reply(&mut host, &mut origin));
        assert_eq!(code, "13");
        assert_eq!(host.request_headers.get(MARKER), None);
        let (mut origin, mut host) = start(
            &[
                ("content-type", "application/grpc-web+json"),
                (MARKER, "forged"),
            ],
            false,
        );
        let (code, _) = status_of(&deliver_reply(&mut host, &mut origin));
        assert_eq!(code, "16");
    }
}
