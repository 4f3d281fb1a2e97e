//! The counters the filter keeps. Envoy shows them in its admin `/stats`
//! under `wasmcustom.`, e.g. `wasmcustom.grpc_web_bridge.edge.converted`.

use crate::codec::{Error, ErrorKind, Peer};
use crate::config::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// A request was converted (edge: gRPC → gRPC-web; origin: marked gRPC-web → gRPC).
    Converted,
    /// Origin: an unmarked browser gRPC-web request was converted (`serve_browsers`).
    BrowserConverted,
    /// A request was left untouched (not gRPC, or gRPC-web the side does not convert).
    PassedThrough,
    /// A call was still open `deadline_grace_ms` after its deadline, with
    /// response headers already sent, so the stream was reset.
    DeadlineReset,
    /// A protocol error, by who caused it and what it was.
    Error(Peer, &'static str),
}

/// Every error slug, for hosts that must define counters up front.
const ERROR_SLUGS: &[&str] = &[
    "unknown_frame_flag",
    "frame_too_large",
    "truncated_frame",
    "data_after_trailers",
    "unexpected_trailer_frame",
    "invalid_base64",
    "invalid_trailers",
    "unsupported_trailer_compression",
    "missing_trailers",
    "missing_status",
    "invalid_status",
    "trailers_too_large",
    "http_status",
    "not_grpc",
    "invalid_marker",
    "deadline_exceeded",
    "malformed_content_type",
    "unconverted_content_type",
    "internal_panic",
];

impl Counter {
    /// Every counter a side can count (the native host defines them all
    /// when its configuration is created; Envoy refuses new ones later).
    pub fn all() -> Vec<Counter> {
        let mut all = vec![
            Counter::Converted,
            Counter::BrowserConverted,
            Counter::PassedThrough,
            Counter::DeadlineReset,
        ];
        for peer in [Peer::Downstream, Peer::Upstream] {
            all.extend(ERROR_SLUGS.iter().map(|slug| Counter::Error(peer, slug)));
        }
        all
    }

    pub fn error(error: &Error) -> Self {
        Counter::Error(error.peer, slug(&error.kind))
    }

    /// The metric name, e.g. `grpc_web_bridge.origin.errors.client.invalid_base64`.
    pub fn name(self, side: Side) -> String {
        let side = match side {
            Side::Edge => "edge",
            Side::Origin => "origin",
        };
        let what = match self {
            Counter::Converted => "converted",
            Counter::BrowserConverted => "browser_converted",
            Counter::PassedThrough => "passed_through",
            Counter::DeadlineReset => "deadline_reset",
            Counter::Error(peer, kind) => {
                let peer = match peer {
                    Peer::Downstream => "downstream",
                    Peer::Upstream => "upstream",
                };
                return format!("grpc_web_bridge.{side}.errors.{peer}.{kind}");
            }
        };
        format!("grpc_web_bridge.{side}.{what}")
    }
}

fn slug(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::UnknownFrameFlag(_) => "unknown_frame_flag",
        ErrorKind::FrameTooLarge { .. } => "frame_too_large",
        ErrorKind::TruncatedFrame { .. } => "truncated_frame",
        ErrorKind::DataAfterTrailers => "data_after_trailers",
        ErrorKind::UnexpectedTrailerFrame => "unexpected_trailer_frame",
        ErrorKind::InvalidBase64 { .. }
        | ErrorKind::TruncatedBase64 { .. }
        | ErrorKind::InvalidBase64Text => "invalid_base64",
        ErrorKind::MalformedTrailerLine { .. }
        | ErrorKind::InvalidTrailerName { .. }
        | ErrorKind::InvalidTrailerValue { .. }
        | ErrorKind::PseudoHeaderInTrailers { .. } => "invalid_trailers",
        ErrorKind::UnsupportedTrailerCompression => "unsupported_trailer_compression",
        ErrorKind::MissingTrailers => "missing_trailers",
        ErrorKind::MissingStatus => "missing_status",
        ErrorKind::InvalidStatus(_) => "invalid_status",
        ErrorKind::TrailersTooLarge { .. } => "trailers_too_large",
        ErrorKind::HttpStatus { .. } => "http_status",
        ErrorKind::NotGrpc { .. } => "not_grpc",
        ErrorKind::InvalidMarker(_) => "invalid_marker",
        ErrorKind::DeadlineExceeded => "deadline_exceeded",
        ErrorKind::MalformedContentType(_) => "malformed_content_type",
        ErrorKind::UnconvertedContentType(_) => "unconverted_content_type",
        ErrorKind::Panic => "internal_panic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn every_error_kind_has_a_counter_in_the_full_list() {
        let all = Counter::all();
        for kind in [
            ErrorKind::NotGrpc {
                content_type: None,
                by: None,
            },
            ErrorKind::Panic,
            ErrorKind::MalformedContentType(String::new()),
            ErrorKind::TrailersTooLarge { size: 1, limit: 1 },
        ] {
            assert!(all.contains(&Counter::error(&kind.from(Peer::Upstream))));
        }
        assert_eq!(all.len(), 4 + 2 * ERROR_SLUGS.len());
    }

    #[test]
    fn names_say_side_peer_and_kind() {
        assert_eq!(
            Counter::Converted.name(Side::Edge),
            "grpc_web_bridge.edge.converted"
        );
        let error = ErrorKind::InvalidBase64 { offset: 3 }.from(Peer::Downstream);
        assert_eq!(
            Counter::error(&error).name(Side::Origin),
            "grpc_web_bridge.origin.errors.downstream.invalid_base64"
        );
    }
}
