//! Per-stream state machines, one per side, written against [`Host`]: the
//! few things they need from Envoy. The proxy-wasm adapter implements
//! `Host` with hostcalls; the tests implement it with a fake that mimics the
//! measured Envoy behaviour (held chunks accumulate, released ones leave).

use bytes::Bytes;

use crate::codec::{
    Base64Decoder, Code, ContentType, Error, ErrorKind, FrameScanner, Metadata, Piece,
    encode_grpc_message,
};
use crate::metrics::Counter;

pub mod edge;
pub mod origin;

#[cfg(test)]
mod fake_host;
#[cfg(test)]
mod tests;

/// A header map of the current stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Map {
    RequestHeaders,
    ResponseHeaders,
    ResponseTrailers,
}

/// A body of the current stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Request,
    Response,
}

/// What the callback tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Stop iteration: headers are held, body chunks are buffered.
    Pause,
}

/// What a state machine needs from Envoy. Failures of the underlying
/// hostcalls are the adapter's to log; the machines carry on.
pub trait Host {
    /// The first value of `name`.
    fn header(&self, map: Map, name: &str) -> Option<Vec<u8>>;
    /// Every field, duplicates included, in order.
    fn headers(&self, map: Map) -> Metadata;
    fn set_header(&mut self, map: Map, name: &str, value: &[u8]);
    fn add_header(&mut self, map: Map, name: &str, value: &[u8]);
    fn remove_header(&mut self, map: Map, name: &str);
    /// Replaces the whole map.
    fn set_headers(&mut self, map: Map, fields: &Metadata);
    /// `len` bytes of the body buffer from `start`.
    fn body(&self, body: Body, start: usize, len: usize) -> Bytes;
    /// Replaces the first `len` bytes of the body buffer with `with`
    /// (Envoy can replace a prefix or append, nothing in between).
    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]);
    /// Appends to the body buffer.
    fn append_body(&mut self, body: Body, data: &[u8]);
    /// Ends the stream with a local reply: HTTP 200, these headers, no body.
    fn send_reply(&mut self, headers: &Metadata);
    /// Asks for the held response to be resumed on the next event-loop pass.
    fn release_later(&mut self);
    /// Releases held response headers after `millis` unless cancelled
    /// (re-arming moves the deadline).
    fn release_headers_after(&mut self, millis: u32);
    fn cancel_header_release(&mut self);
    /// Whether the held response was resumed (by the queue or the header
    /// timer) since the last callback.
    fn take_released(&mut self) -> bool;
    fn count(&mut self, counter: Counter);
    /// Milliseconds on a monotonic-enough clock (Envoy's wall clock).
    fn now_millis(&self) -> u64;
}

/// The callbacks of one HTTP stream, in the order Envoy calls them per
/// direction (the two directions interleave freely on streaming calls).
pub trait StreamBridge {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action;
    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Action;
    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action;
    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool)
    -> Action;
    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action;
}

/// The classified content-type of a header map (`None`: absent or not gRPC).
fn content_type(host: &dyn Host, map: Map) -> Option<ContentType> {
    host.header(map, "content-type")
        .and_then(|value| ContentType::parse(&value))
}

/// `grpc-status` and `grpc-message` for an error.
fn status_fields(code: Code, message: &str) -> Metadata {
    let mut fields = Metadata::default();
    fields.push("grpc-status", code.as_header_value());
    fields.push("grpc-message", encode_grpc_message(message));
    fields
}

fn error_fields(error: &Error) -> Metadata {
    status_fields(error.code(), &error.to_string())
}

/// Logs and counts an error; every error passes through here once.
fn report(host: &mut dyn Host, error: &Error) {
    log::warn!("{error}");
    host.count(Counter::error(error));
}

/// Ends the stream with a trailers-only gRPC reply. Envoy drops the
/// content-type of a local reply without a body, so the caller sets it
/// again when the reply passes through its `on_response_headers`.
fn reply_error(host: &mut dyn Host, error: &Error) {
    report(host, error);
    host.send_reply(&error_fields(error));
}

/// Constant-time comparison, so the marker secret cannot be probed by timing.
fn secret_matches(given: &[u8], secret: &[u8]) -> bool {
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Reads a gRPC or gRPC-web body as it streams: undoes text mode, checks
/// the framing, and cuts out the trailer frame.
struct FrameReader {
    text: Option<Base64Decoder>,
    scanner: FrameScanner,
}

/// What one chunk of a body became.
struct Read {
    /// The bytes to forward, or `None` when the chunk passes unchanged.
    forward: Option<Vec<u8>>,
    /// The trailer frame, if it completed in this chunk: (compressed, block).
    trailers: Option<(bool, Bytes)>,
}

impl FrameReader {
    fn new(text: bool, limit: u32) -> Self {
        Self {
            text: text.then(Base64Decoder::new),
            scanner: FrameScanner::new(limit),
        }
    }

    /// Reads one chunk; with `end_of_stream`, also checks that nothing is
    /// left half-read. An empty last chunk is how a trailers callback ends it.
    fn read(&mut self, chunk: Bytes, end_of_stream: bool) -> Result<Read, ErrorKind> {
        let received = chunk.len();
        let binary = match &mut self.text {
            Some(decoder) => {
                let mut out = Vec::with_capacity(received / 4 * 3 + 3);
                decoder.push(&chunk, &mut out)?;
                if end_of_stream {
                    decoder.finish(&mut out)?;
                }
                Bytes::from(out)
            }
            None => chunk,
        };
        let mut pieces = Vec::new();
        self.scanner.push(binary, &mut pieces)?;
        if end_of_stream {
            self.scanner.finish()?;
        }
        let mut trailers = None;
        let mut forwarded = 0;
        for piece in &pieces {
            match piece {
                Piece::Message(bytes) => forwarded += bytes.len(),
                Piece::MessageEnd => {}
                Piece::Trailers { compressed, block } => {
                    trailers = Some((*compressed, block.clone()))
                }
            }
        }
        if self.text.is_none() && forwarded == received {
            return Ok(Read {
                forward: None,
                trailers,
            });
        }
        let mut forward = Vec::with_capacity(forwarded);
        for piece in pieces {
            if let Piece::Message(bytes) = piece {
                forward.extend_from_slice(&bytes);
            }
        }
        Ok(Read {
            forward: Some(forward),
            trailers,
        })
    }

    /// Reads a request chunk, where a trailer frame is not allowed.
    fn read_request(
        &mut self,
        chunk: Bytes,
        end_of_stream: bool,
    ) -> Result<Option<Vec<u8>>, ErrorKind> {
        let read = self.read(chunk, end_of_stream)?;
        match read.trailers {
            Some(_) => Err(ErrorKind::UnexpectedTrailerFrame),
            None => Ok(read.forward),
        }
    }
}
