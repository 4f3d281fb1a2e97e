//! State-machine tests against the fake host: each drives the callbacks the
//! way Envoy does and asserts what the client and the upstream receive.

use std::rc::Rc;

use bytes::BytesMut;

use super::fake_host::{FakeHost, metadata};
use super::{Action, StreamBridge};
use crate::codec::{
    Base64Decoder, Base64Encoder, Metadata, Peer, decode_grpc_message, encode_frame,
    encode_trailer_block,
};
use crate::config::{Config, Side};
use crate::metrics::Counter;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SECRET: &str = "s3cret-s3cret-s3cret";
const MARKER: &str = "x-grpc-web-bridge";

fn config(side: Side, serve_browsers: bool) -> Rc<Config> {
    Rc::new(Config {
        side,
        marker_header: MARKER.into(),
        marker_secret: SECRET.into(),
        max_frame_bytes: 1024,
        serve_browsers,
        header_hold_ms: 50,
    })
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

fn unbase64(text: &[u8]) -> Vec<u8> {
    let mut decoder = Base64Decoder::new();
    let mut out = Vec::new();
    decoder.push(text, &mut out).unwrap();
    decoder.finish(&mut out).unwrap();
    out
}

#[test]
fn marker_secret_must_match_in_length_and_every_byte() {
    use super::secret_matches;
    assert!(secret_matches(b"s3cret-s3cret", b"s3cret-s3cret"));
    assert!(!secret_matches(b"s3cret-s3creT", b"s3cret-s3cret"));
    assert!(!secret_matches(b"s3cret", b"s3cret-s3cret"));
    assert!(!secret_matches(b"s3cret-s3cret-and-more", b"s3cret-s3cret"));
    assert!(!secret_matches(b"", b"s3cret-s3cret"));
}

mod edge {
    use super::*;
    use crate::bridge::edge::Edge;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NATIVE_REQUEST: &[(&str, &str)] = &[
        (":method", "POST"),
        (":path", "/grpc.testing.TestService/UnaryCall"),
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
        assert_eq!(headers.get(MARKER), Some(SECRET.as_bytes()));
        assert_eq!(headers.iter().filter(|(n, _)| *n == MARKER).count(), 1);
        assert_eq!(host.counters, vec![Counter::Converted]);
    }

    #[test]
    fn browser_grpc_web_at_the_edge_passes_untouched_but_loses_a_forged_marker() {
        let mut edge = Edge::new(config(Side::Edge, false));
        let mut host = FakeHost::new();
        host.send_request_headers(
            &mut edge,
            &[
                ("content-type", "application/grpc-web-text"),
                (MARKER, SECRET),
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
        assert_eq!(reply.get("content-type"), Some(&b"application/grpc"[..]));
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
        assert_eq!(headers.get("content-type"), Some(&b"application/grpc"[..]));
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
        for (http, grpc, eos) in [
            ("503", "14", false),
            ("404", "12", true),
            ("401", "16", false),
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
            assert_eq!(headers.get("content-type"), Some(&b"application/grpc"[..]));
            let status_block = if eos {
                headers
            } else {
                host.response_trailers.clone()
            };
            let message = format!("grpc-web-bridge: upstream answered with HTTP status {http}");
            assert_status(&status_block, grpc, &message);
            assert!(host.downstream_body.is_empty());
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
}

mod origin {
    use super::*;
    use crate::bridge::origin::Origin;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NATIVE_RESPONSE: &[(&str, &str)] = &[
        (":status", "200"),
        ("content-type", "application/grpc+proto"),
    ];

    fn request(
        content_type: &str,
        marker: Option<&str>,
        accept: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut fields = vec![(":path", "/grpc.testing.TestService/UnaryCall".to_string())];
        fields.push(("content-type", content_type.to_string()));
        fields.push(("content-length", "99".to_string()));
        if let Some(marker) = marker {
            fields.push((MARKER, marker.to_string()));
        }
        if let Some(accept) = accept {
            fields.push(("accept", accept.to_string()));
        }
        fields
    }

    fn start(
        content_type: &str,
        marker: Option<&str>,
        accept: Option<&str>,
        serve_browsers: bool,
    ) -> (Origin, FakeHost) {
        let mut origin = Origin::new(config(Side::Origin, serve_browsers));
        let mut host = FakeHost::new();
        let fields = request(content_type, marker, accept);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        host.send_request_headers(&mut origin, &fields, false);
        (origin, host)
    }

    fn marked() -> (Origin, FakeHost) {
        start("application/grpc-web+proto", Some(SECRET), None, false)
    }

    #[test]
    fn marked_request_becomes_native_grpc() {
        let (_, host) = marked();
        let headers = &host.request_headers;
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc+proto"[..])
        );
        assert_eq!(headers.get("te"), Some(&b"trailers"[..]));
        assert_eq!(headers.get("content-length"), None);
        assert_eq!(headers.get(MARKER), None);
        assert_eq!(host.counters, vec![Counter::Converted]);
    }

    #[test]
    fn forged_marker_is_refused_with_unauthenticated() {
        let (mut origin, mut host) = start("application/grpc-web", Some("guess"), None, false);
        let reply = deliver_reply(&mut host, &mut origin);
        assert_eq!(
            reply.get("content-type"),
            Some(&b"application/grpc-web"[..])
        );
        assert_status(
            &reply,
            "16",
            "grpc-web-bridge: client sent a bridge marker with a wrong secret",
        );
        assert_eq!(
            host.counters,
            vec![Counter::Error(Peer::Downstream, "invalid_marker")]
        );
    }

    #[test]
    fn unmarked_browser_request_is_left_alone_unless_browsers_are_served() {
        let (_, host) = start("application/grpc-web-text", None, None, false);
        assert_eq!(
            host.request_headers.get("content-type"),
            Some(&b"application/grpc-web-text"[..])
        );
        assert_eq!(host.counters, vec![Counter::PassedThrough]);
        let (_, host) = start("application/grpc-web-text", None, None, true);
        assert_eq!(
            host.request_headers.get("content-type"),
            Some(&b"application/grpc"[..])
        );
        assert_eq!(host.counters, vec![Counter::BrowserConverted]);
    }

    #[test]
    fn text_request_is_decoded_as_it_streams() {
        let binary = [message(b"one"), message(b"two")].concat();
        let text = [base64(&message(b"one")), base64(&message(b"two"))].concat();
        for cut in 0..=text.len() {
            let (mut origin, mut host) =
                start("application/grpc-web-text", Some(SECRET), None, false);
            host.send_request_body(&mut origin, &text[..cut], false);
            host.send_request_body(&mut origin, &text[cut..], true);
            assert_eq!(host.upstream_body, binary, "cut at {cut}");
        }
    }

    #[test]
    fn bad_base64_is_refused_with_its_offset() {
        let (mut origin, mut host) = start("application/grpc-web-text", Some(SECRET), None, false);
        host.send_request_body(&mut origin, b"AAAA", false);
        assert_eq!(
            host.send_request_body(&mut origin, b"AA!A", false),
            Action::Pause
        );
        let reply = deliver_reply(&mut host, &mut origin);
        assert_eq!(
            reply.get("content-type"),
            Some(&b"application/grpc-web-text"[..])
        );
        assert_status(
            &reply,
            "13",
            "grpc-web-bridge: client sent invalid base64 at offset 6",
        );
    }

    #[test]
    fn trailer_frame_in_a_request_is_refused() {
        let (mut origin, mut host) = marked();
        host.send_request_body(
            &mut origin,
            &trailer_frame(b"grpc-status:0\r\n", false),
            true,
        );
        assert_eq!(status_of(&host.reply.unwrap()).0, "13");
    }

    #[test]
    fn each_chunk_is_released_on_the_next_queue_pass_before_the_next_message() {
        let (mut origin, mut host) = marked();
        assert_eq!(
            host.send_response_headers(&mut origin, NATIVE_RESPONSE, false),
            Action::Pause
        );
        assert_eq!(
            host.downstream_headers, None,
            "headers wait for the first message"
        );
        assert_eq!(
            host.send_response_body(&mut origin, &message(b"one"), false),
            Action::Pause
        );
        host.run_queue();
        let headers = host.downstream_headers.clone().unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc-web+proto"[..])
        );
        assert_eq!(host.downstream_body, message(b"one"));
        host.send_response_body(&mut origin, &message(b"two"), false);
        host.run_queue();
        assert_eq!(
            host.downstream_body,
            [message(b"one"), message(b"two")].concat()
        );
        // Trailers after the release: appended, paused, released once more.
        assert_eq!(
            host.send_response_trailers(&mut origin, &[("grpc-status", "0"), ("x-t", "v")]),
            Action::Pause
        );
        host.run_queue();
        let expected = [
            message(b"one"),
            message(b"two"),
            trailer_frame(b"grpc-status:0\r\nx-t:v\r\n", false),
        ];
        assert_eq!(host.downstream_body, expected.concat());
        assert_eq!(host.downstream_trailers, Some(Metadata::default()));
    }

    #[test]
    fn trailers_joining_a_held_chunk_leave_with_it() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_body(&mut origin, &message(b"only"), false);
        assert_eq!(
            host.send_response_trailers(&mut origin, &[("grpc-status", "0")]),
            Action::Continue
        );
        assert_eq!(
            host.downstream_body,
            [message(b"only"), trailer_frame(b"grpc-status:0\r\n", false)].concat()
        );
        // The queued release finds nothing left to do.
        host.run_queue();
        assert_eq!(host.downstream_body.len(), message(b"only").len() + 20);
    }

    #[test]
    fn chunks_arriving_while_one_is_held_are_converted_once() {
        let (mut origin, mut host) = start("application/grpc-web-text", Some(SECRET), None, false);
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        let body = [message(b"abcd"), message(b"efghij")].concat();
        for chunk in body.chunks(2) {
            host.send_response_body(&mut origin, chunk, false);
        }
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        let decoded = unbase64(&host.downstream_body);
        assert_eq!(
            decoded,
            [body, trailer_frame(b"grpc-status:0\r\n", false)].concat()
        );
        let headers = host.downstream_headers.unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc-web-text+proto"[..])
        );
    }

    #[test]
    fn text_reply_pads_each_frame_as_its_own_segment() {
        let (mut origin, mut host) = start(
            "application/grpc-web",
            Some(SECRET),
            Some("application/grpc-web-text"),
            false,
        );
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_body(&mut origin, &message(b"a"), false);
        host.run_queue();
        assert_eq!(
            host.downstream_body,
            base64(&message(b"a")),
            "a whole frame is flushed, padding included"
        );
    }

    #[test]
    fn headers_then_trailers_with_no_body_become_trailers_only() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_trailers(
            &mut origin,
            &[("grpc-status", "5"), ("grpc-message", "gone")],
        );
        let headers = host.downstream_headers.unwrap();
        assert_eq!(headers.get("grpc-status"), Some(&b"5"[..]));
        assert_eq!(headers.get("grpc-message"), Some(&b"gone"[..]));
        assert!(
            host.downstream_body.is_empty(),
            "no trailer frame on a trailers-only reply"
        );
        assert_eq!(host.downstream_trailers, Some(Metadata::default()));
    }

    #[test]
    fn trailers_only_reply_stays_trailers_only() {
        let (mut origin, mut host) = marked();
        let fields = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
        ];
        assert_eq!(
            host.send_response_headers(&mut origin, &fields, true),
            Action::Continue
        );
        let headers = host.downstream_headers.unwrap();
        assert_eq!(
            headers.get("content-type"),
            Some(&b"application/grpc-web"[..])
        );
        assert!(host.downstream_body.is_empty());
    }

    #[test]
    fn upstream_body_ending_without_trailers_gets_an_error_frame() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.send_response_body(&mut origin, &message(b"x"), true);
        let block = encode_trailer_block(&metadata(&[
            ("grpc-status", "13"),
            (
                "grpc-message",
                "grpc-web-bridge: upstream ended the response without trailers",
            ),
        ]))
        .unwrap();
        assert_eq!(
            host.downstream_body,
            [message(b"x"), trailer_frame(&block, false)].concat()
        );
    }

    #[test]
    fn non_grpc_upstream_reply_passes_for_the_client_to_map() {
        let (mut origin, mut host) = marked();
        assert_eq!(
            host.send_response_headers(
                &mut origin,
                &[(":status", "503"), ("content-type", "text/plain")],
                false
            ),
            Action::Continue
        );
        host.send_response_body(&mut origin, b"down", true);
        assert_eq!(host.downstream_body, b"down");
    }

    #[test]
    fn unconverted_request_leaves_the_response_alone() {
        let (mut origin, mut host) = start("application/grpc-web", None, None, false);
        assert_eq!(
            host.send_response_headers(&mut origin, NATIVE_RESPONSE, false),
            Action::Continue
        );
        assert_eq!(
            host.send_response_body(&mut origin, &message(b"x"), false),
            Action::Continue
        );
        assert!(!host.release_queued());
    }

    #[test]
    fn open_idle_request_gets_the_headers_after_the_hold_time() {
        // A client that waits for headers before sending must not deadlock.
        let (mut origin, mut host) = marked();
        assert_eq!(
            host.send_response_headers(&mut origin, NATIVE_RESPONSE, false),
            Action::Pause
        );
        assert_eq!(host.header_timer, Some(50));
        host.fire_header_timer();
        assert!(host.downstream_headers.is_some());
        // Messages still stream and the trailer frame still follows them.
        host.send_response_body(&mut origin, &message(b"pong"), false);
        host.run_queue();
        host.send_response_trailers(&mut origin, &[("grpc-status", "0")]);
        host.run_queue();
        assert_eq!(
            host.downstream_body,
            [message(b"pong"), trailer_frame(b"grpc-status:0\r\n", false)].concat()
        );
    }

    #[test]
    fn request_data_rearms_and_request_end_cancels_the_header_timer() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.header_timer = None;
        host.send_request_body(&mut origin, &message(b"ping"), false);
        assert_eq!(
            host.header_timer,
            Some(50),
            "a sending client re-arms the timer"
        );
        host.send_request_body(&mut origin, b"", true);
        assert_eq!(
            host.header_timer, None,
            "a finished request cannot be waiting on us"
        );
    }

    #[test]
    fn no_header_timer_when_the_request_already_ended() {
        let (mut origin, mut host) = marked();
        host.send_request_body(&mut origin, &message(b"req"), true);
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        assert_eq!(host.header_timer, None);
        host.send_response_trailers(&mut origin, &[("grpc-status", "7")]);
        assert_eq!(
            host.downstream_headers.unwrap().get("grpc-status"),
            Some(&b"7"[..])
        );
    }

    #[test]
    fn trailers_after_early_headers_and_no_body_leave_as_real_trailers() {
        let (mut origin, mut host) = marked();
        host.send_response_headers(&mut origin, NATIVE_RESPONSE, false);
        host.fire_header_timer();
        assert_eq!(
            host.send_response_trailers(&mut origin, &[("grpc-status", "9")]),
            Action::Continue
        );
        assert_eq!(
            host.downstream_trailers,
            Some(metadata(&[("grpc-status", "9")]))
        );
        assert!(host.counters.contains(&Counter::TrailersNotFramed));
    }
}
