//! The one error type of the bridge. Every error names the peer whose bytes
//! broke the rules, maps to the grpc-status the client sees, and renders a
//! stable message (tests and dashboards match on it).

use std::fmt;

use super::status::Code;

/// Which side of the proxy produced the offending input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The client side of this Envoy (the request body and headers).
    Downstream,
    /// The server side of this Envoy (the response body, headers and trailers).
    Upstream,
}

impl Peer {
    fn noun(self) -> &'static str {
        match self {
            Peer::Downstream => "client",
            Peer::Upstream => "upstream",
        }
    }
}

/// What went wrong, independent of who caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A frame's flag byte is none of 0x00, 0x01, 0x80, 0x81.
    UnknownFrameFlag(u8),
    /// A frame announced a length above the configured maximum.
    FrameTooLarge { length: u32, limit: u32 },
    /// The stream ended inside a frame.
    TruncatedFrame { missing: u64 },
    /// Data followed the trailer frame, which must be last.
    DataAfterTrailers,
    /// A trailer frame arrived where none is allowed (a request body).
    UnexpectedTrailerFrame,
    /// A grpc-web-text body held a byte that is not base64 at this offset
    /// of the encoded stream.
    InvalidBase64 { offset: u64 },
    /// A grpc-web-text body ended with a single dangling base64 character.
    TruncatedBase64 { offset: u64 },
    /// A trailer block line has no colon or an empty name (1-based line).
    MalformedTrailerLine { line: usize },
    /// A trailer name holds a byte outside the HTTP token set (CR, LF, NUL, space, ...).
    InvalidTrailerName { line: usize },
    /// A trailer value holds CR, LF or NUL: header injection.
    InvalidTrailerValue { line: usize },
    /// A pseudo-header (`:name`) inside a trailer block.
    PseudoHeaderInTrailers { line: usize },
    /// The trailer frame is compressed with an encoding we cannot undo.
    UnsupportedTrailerCompression,
    /// The response ended without trailers or a trailer frame.
    MissingTrailers,
    /// Trailers arrived, but without `grpc-status`.
    MissingStatus,
    /// The upstream answered with a non-200 HTTP status; `by` is who wrote
    /// the reply (its `server`, else its `via`), so a hop's own error page
    /// names the hop.
    HttpStatus { status: u16, by: Option<String> },
    /// Envoy's gRPC-web filter refused a grpc-web-text request body as
    /// invalid base64 (it names no offset).
    InvalidBase64Text,
    /// A trailer block larger than `max_trailer_bytes` (HTTP/2 header-list
    /// size: each field's name and value plus 32).
    TrailersTooLarge { size: usize, limit: u32 },
    /// `grpc-status` was not exactly one code from 0 to 16 (the values seen).
    InvalidStatus(String),
    /// The upstream answered 200 with a content-type that is not gRPC (the
    /// value, if any, and who wrote the reply, as for `HttpStatus`).
    NotGrpc {
        content_type: Option<String>,
        by: Option<String>,
    },
    /// A request carried a bridge marker the origin refuses.
    InvalidMarker(crate::marker::Refusal),
    /// A content-type that starts like gRPC's but is none (the value seen).
    MalformedContentType(String),
    /// Origin: gRPC-web that Envoy's gRPC-web filter did not convert (it
    /// converts only `application/grpc-web[-text][+proto]`, exactly).
    UnconvertedContentType(String),
    /// The module itself failed inside a callback (a caught panic); the
    /// call ends, Envoy and the next call go on.
    Panic,
    /// The call's `grpc-timeout` passed before the upstream answered (the
    /// HTTP error a proxy then sends is the symptom, not the cause).
    DeadlineExceeded,
}

/// A protocol error, attributed to the peer that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub peer: Peer,
    pub kind: ErrorKind,
}

impl ErrorKind {
    /// Attributes this error to `peer`.
    pub fn from(self, peer: Peer) -> Error {
        Error { peer, kind: self }
    }
}

impl Error {
    /// The grpc-status the client receives for this error.
    pub fn code(&self) -> Code {
        match self.kind {
            ErrorKind::FrameTooLarge { .. } | ErrorKind::TrailersTooLarge { .. } => {
                Code::ResourceExhausted
            }
            ErrorKind::MissingStatus | ErrorKind::InvalidStatus(_) => Code::Unknown,
            ErrorKind::HttpStatus { status, .. } => Code::from_http_status(status),
            ErrorKind::NotGrpc { .. } => Code::Unknown,
            ErrorKind::InvalidMarker(_) => Code::Unauthenticated,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.peer.noun();
        write!(f, "grpc-web-bridge: ")?;
        match &self.kind {
            ErrorKind::UnknownFrameFlag(flag) => {
                write!(f, "{who} sent a frame with unknown flags 0x{flag:02x}")
            }
            ErrorKind::FrameTooLarge { length, limit } => {
                write!(
                    f,
                    "{who} sent a {length}-byte frame, over the {limit}-byte limit"
                )
            }
            ErrorKind::TruncatedFrame { missing } => {
                write!(
                    f,
                    "{who} ended the stream {missing} bytes short of a frame's end"
                )
            }
            ErrorKind::DataAfterTrailers => write!(f, "{who} sent data after the trailer frame"),
            ErrorKind::UnexpectedTrailerFrame => {
                write!(f, "{who} sent a trailer frame in a request body")
            }
            ErrorKind::InvalidBase64 { offset } => {
                write!(f, "{who} sent invalid base64 at offset {offset}")
            }
            ErrorKind::TruncatedBase64 { offset } => {
                write!(
                    f,
                    "{who} ended base64 with a dangling character at offset {offset}"
                )
            }
            ErrorKind::MalformedTrailerLine { line } => {
                write!(
                    f,
                    "{who} sent a trailer line {line} without a name and colon"
                )
            }
            ErrorKind::InvalidTrailerName { line } => {
                write!(f, "{who} sent an invalid trailer name on line {line}")
            }
            ErrorKind::InvalidTrailerValue { line } => {
                write!(
                    f,
                    "{who} sent CR, LF or NUL in a trailer value on line {line}"
                )
            }
            ErrorKind::PseudoHeaderInTrailers { line } => {
                write!(f, "{who} sent a pseudo-header in trailers on line {line}")
            }
            ErrorKind::UnsupportedTrailerCompression => {
                write!(
                    f,
                    "{who} sent a trailer frame compressed with an unsupported encoding"
                )
            }
            ErrorKind::MissingTrailers => {
                write!(f, "{who} ended the response without trailers")
            }
            ErrorKind::InvalidBase64Text => {
                write!(
                    f,
                    "{who} sent a grpc-web-text body that is not valid base64"
                )
            }
            ErrorKind::MissingStatus => write!(f, "{who} sent trailers without grpc-status"),
            ErrorKind::TrailersTooLarge { size, limit } => write!(
                f,
                "{who} sent {size} bytes of trailers, over the {limit}-byte limit"
            ),
            ErrorKind::InvalidStatus(values) => {
                write!(f, "{who} sent an invalid grpc-status {values:?}")
            }
            ErrorKind::HttpStatus { status, by } => {
                write!(f, "{who} answered with HTTP status {status}")?;
                if let Some(reason) = crate::codec::status::http_reason(*status) {
                    write!(f, " {reason}")?;
                }
                written_by(f, by)
            }
            ErrorKind::NotGrpc { content_type, by } => {
                match content_type {
                    Some(value) => {
                        write!(f, "{who} answered with content-type {value:?}, not gRPC")?
                    }
                    None => write!(f, "{who} answered with no content-type, not gRPC")?,
                }
                written_by(f, by)
            }
            ErrorKind::InvalidMarker(refusal) => {
                write!(f, "{who} sent a bridge marker that {refusal}")
            }
            ErrorKind::DeadlineExceeded => write!(f, "deadline exceeded before the {who} answered"),
            ErrorKind::Panic => write!(f, "internal error in the bridge module"),
            ErrorKind::MalformedContentType(value) => {
                write!(f, "{who} sent a malformed gRPC content-type {value:?}")
            }
            ErrorKind::UnconvertedContentType(value) => write!(
                f,
                "{who} sent content-type {value:?}, which this origin does not convert \
                 (gRPC-web: application/grpc-web or application/grpc-web-text, \
                 optionally +proto, without parameters)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// `, from "nginx/1.22.1"`: who wrote a reply that is not gRPC.
fn written_by(f: &mut std::fmt::Formatter<'_>, by: &Option<String>) -> std::fmt::Result {
    match by {
        Some(by) => write!(f, ", from {by:?}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn message_names_the_peer_and_the_problem() {
        let error = ErrorKind::FrameTooLarge {
            length: 5_000_000,
            limit: 4_194_304,
        }
        .from(Peer::Downstream);
        assert_eq!(
            error.to_string(),
            "grpc-web-bridge: client sent a 5000000-byte frame, over the 4194304-byte limit"
        );
        assert_eq!(error.code(), Code::ResourceExhausted);
        let error = ErrorKind::InvalidBase64 { offset: 7 }.from(Peer::Upstream);
        assert_eq!(
            error.to_string(),
            "grpc-web-bridge: upstream sent invalid base64 at offset 7"
        );
    }

    #[test]
    fn protocol_violations_map_to_internal_and_http_errors_per_mapping() {
        assert_eq!(
            ErrorKind::UnknownFrameFlag(2).from(Peer::Upstream).code(),
            Code::Internal
        );
        assert_eq!(
            ErrorKind::MissingTrailers.from(Peer::Upstream).code(),
            Code::Internal
        );
        assert_eq!(
            ErrorKind::MissingStatus.from(Peer::Upstream).code(),
            Code::Unknown
        );
        assert_eq!(
            ErrorKind::HttpStatus {
                status: 503,
                by: None
            }
            .from(Peer::Upstream)
            .code(),
            Code::Unavailable
        );
    }
}
