//! The origin side: downstream gRPC-web → upstream native gRPC.
//!
//! ```text
//! request:   Converting ──(body end | error)──► Done     (PassThrough if not converted)
//! response:  Waiting ──headers (held)──► Streaming ──trailers──► Closed
//!               │                          ├──(trailers, no body: trailers-only)──► Closed
//!               │                          └──(bad frame | body ends untrailed)──► Closed
//!               ├──(headers end the stream: trailers-only)──► PassThrough
//!               └──(non-200 or non-gRPC: the client maps it)──► PassThrough
//! ```
//!
//! Envoy offers no body buffer to write the trailer frame into unless the
//! last body callback paused (docs/design.md). So every chunk is held
//! (`Pause`) and released on the next event-loop pass through the worker's
//! shared queue ([`Host::release_later`]); when the trailers come, the frame
//! is appended to the held chunk, or, if the chunk already left, appended
//! and released once more.
//!
//! Response headers are held too, so that trailers with no body before them
//! can still become a trailers-only reply. Holding them has one danger: a
//! client that waits for the response headers before it sends its first
//! message, talking to a server that waits for that message, would wait
//! forever. So while the request is still open and idle, the headers are
//! released after `header_hold_ms` ([`Host::release_headers_after`]); only
//! if trailers then follow with no message at all can they not be framed,
//! and they leave as real trailers (counted as `trailers_not_framed`).

use std::rc::Rc;

use bytes::Bytes;

use super::{
    Action, Body, FrameReader, Host, Map, StreamBridge, content_type, error_fields, reply_error,
    report, secret_matches,
};
use crate::codec::{
    Base64Encoder, ContentType, Error, ErrorKind, FrameScanner, Metadata, Peer, Piece, Protocol,
    encode_frame, encode_trailer_block, web_protocol_from_accept,
};
use crate::config::Config;
use crate::metrics::Counter;

enum Request {
    PassThrough,
    /// Converted: text mode is decoded and the framing checked as it streams.
    Converting(FrameReader),
    Done,
}

enum Response {
    /// Nothing to do for this response.
    PassThrough,
    /// Our local error reply, of this content-type, is on its way out.
    LocalReply(String),
    /// Converted request; the reply will be gRPC-web in this protocol.
    Waiting(Protocol),
    Streaming(Stream),
    /// The trailer frame is written; anything the upstream still sends is dropped.
    Closed,
}

struct Stream {
    scanner: FrameScanner,
    /// Text-mode replies: each frame becomes its own padded base64 segment.
    text: Option<Base64Encoder>,
    /// Bytes at the front of Envoy's body buffer that are already converted
    /// (a held chunk stays in the buffer and the next callback sees it again).
    converted: usize,
    held: Held,
}

/// What of the response Envoy is holding for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The headers, and no body has come yet.
    Headers,
    /// Nothing: the headers left early (idle request), no body has come yet.
    HeadersReleased,
    /// A body chunk, whose release is queued.
    Chunk,
    /// Nothing: the last chunk was released.
    Nothing,
}

impl Stream {
    /// Notes a release by the queue or the header timer since the last callback.
    fn note_release(&mut self, host: &mut dyn Host) {
        if host.take_released() {
            self.converted = 0;
            self.held = match self.held {
                Held::Headers | Held::HeadersReleased => Held::HeadersReleased,
                Held::Chunk | Held::Nothing => Held::Nothing,
            };
        }
    }
}

pub struct Origin {
    config: Rc<Config>,
    request: Request,
    response: Response,
}

impl Origin {
    pub fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            request: Request::PassThrough,
            response: Response::PassThrough,
        }
    }

    /// Ends the stream with the error as a trailers-only gRPC-web reply.
    fn fail_request(&mut self, host: &mut dyn Host, reply: &ContentType, error: Error) -> Action {
        reply_error(host, &error);
        self.request = Request::Done;
        self.response = Response::LocalReply(reply.render());
        Action::Pause
    }
}

impl StreamBridge for Origin {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let marker = host.header(Map::RequestHeaders, &self.config.marker_header);
        host.remove_header(Map::RequestHeaders, &self.config.marker_header);
        let content_type = content_type(host, Map::RequestHeaders);
        let Some(content_type) = content_type.filter(|ct| ct.protocol.is_web()) else {
            host.count(Counter::PassedThrough);
            return Action::Continue;
        };
        let reply_protocol = host
            .header(Map::RequestHeaders, "accept")
            .and_then(|accept| web_protocol_from_accept(&accept))
            .unwrap_or(content_type.protocol);
        let reply = content_type.with_protocol(reply_protocol);
        match marker {
            Some(value) if secret_matches(&value, self.config.marker_secret.as_bytes()) => {
                host.count(Counter::Converted)
            }
            Some(_) => {
                let error = ErrorKind::InvalidMarker.from(Peer::Downstream);
                return self.fail_request(host, &reply, error);
            }
            None if self.config.serve_browsers => host.count(Counter::BrowserConverted),
            None => {
                host.count(Counter::PassedThrough);
                return Action::Continue;
            }
        }
        let native = content_type.with_protocol(Protocol::Grpc).render();
        host.set_header(Map::RequestHeaders, "content-type", native.as_bytes());
        host.set_header(Map::RequestHeaders, "te", b"trailers");
        host.remove_header(Map::RequestHeaders, "content-length");
        self.request = if end_of_stream {
            Request::Done
        } else {
            let text = content_type.protocol == Protocol::GrpcWebText;
            Request::Converting(FrameReader::new(text, self.config.max_frame_bytes))
        };
        self.response = Response::Waiting(reply_protocol);
        Action::Continue
    }

    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Action {
        let Request::Converting(reader) = &mut self.request else {
            return Action::Continue;
        };
        match reader.read_request(host.body(Body::Request, 0, size), end_of_stream) {
            Ok(forward) => {
                if let Some(binary) = forward {
                    host.replace_body(Body::Request, size, &binary);
                }
                if end_of_stream {
                    self.request = Request::Done;
                }
                if let Response::Streaming(stream) = &mut self.response {
                    stream.note_release(host);
                    if stream.held == Held::Headers {
                        // A client that sends is not waiting for our headers.
                        match end_of_stream {
                            true => host.cancel_header_release(),
                            false => host.release_headers_after(self.config.header_hold_ms),
                        }
                    }
                }
                Action::Continue
            }
            Err(kind) => {
                let reply = match self.response {
                    Response::Waiting(protocol) => protocol,
                    _ => Protocol::GrpcWeb,
                };
                let reply = ContentType {
                    protocol: reply,
                    subtype: None,
                };
                self.fail_request(host, &reply, kind.from(Peer::Downstream))
            }
        }
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let reply = match &self.response {
            Response::Waiting(reply) => *reply,
            Response::LocalReply(content_type) => {
                host.set_header(
                    Map::ResponseHeaders,
                    "content-type",
                    content_type.as_bytes(),
                );
                self.response = Response::PassThrough;
                return Action::Continue;
            }
            _ => return Action::Continue,
        };
        let status = host.header(Map::ResponseHeaders, ":status");
        let content_type = content_type(host, Map::ResponseHeaders);
        let native = match (status.as_deref(), content_type) {
            (Some(b"200"), Some(ct)) if ct.protocol == Protocol::Grpc => ct,
            _ => {
                // Not a gRPC reply: gRPC-web clients map the HTTP status themselves.
                self.response = Response::PassThrough;
                return Action::Continue;
            }
        };
        let web = native.with_protocol(reply).render();
        host.set_header(Map::ResponseHeaders, "content-type", web.as_bytes());
        host.remove_header(Map::ResponseHeaders, "content-length");
        if end_of_stream {
            // Trailers-only stays trailers-only: no trailer frame is added.
            self.response = Response::PassThrough;
            return Action::Continue;
        }
        self.response = Response::Streaming(Stream {
            scanner: FrameScanner::new(self.config.max_frame_bytes),
            text: (reply == Protocol::GrpcWebText).then(Base64Encoder::new),
            converted: 0,
            held: Held::Headers,
        });
        // Held until the first chunk or the trailers: see the module docs.
        if matches!(self.request, Request::Converting(_)) {
            host.release_headers_after(self.config.header_hold_ms);
        }
        Action::Pause
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        let stream = match &mut self.response {
            Response::Streaming(stream) => stream,
            Response::Closed => {
                host.replace_body(Body::Response, size, &[]);
                return Action::Continue;
            }
            Response::PassThrough | Response::LocalReply(_) | Response::Waiting(_) => {
                return Action::Continue;
            }
        };
        stream.note_release(host);
        if stream.held == Held::Headers {
            host.cancel_header_release();
        }
        let fresh = host.body(Body::Response, stream.converted, size - stream.converted);
        let ending = match stream.convert(fresh) {
            Ok(converted) => {
                match converted {
                    Some(text) => stream.replace_fresh(host, size, &text),
                    None => stream.converted = size,
                }
                end_of_stream.then(|| ErrorKind::MissingTrailers.from(Peer::Upstream))
            }
            Err(kind) => {
                // Drop the bad chunk; the error frame follows what was good.
                stream.replace_fresh(host, size, &[]);
                Some(kind.from(Peer::Upstream))
            }
        };
        if let Some(error) = ending {
            report(host, &error);
            let frame = stream.trailer_frame(&error_fields(&error));
            host.append_body(Body::Response, &frame);
            self.response = Response::Closed;
            return Action::Continue;
        }
        if stream.held != Held::Chunk {
            stream.held = Held::Chunk;
            host.release_later();
        }
        Action::Pause
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action {
        let stream = match &mut self.response {
            Response::Streaming(stream) => stream,
            Response::Closed => {
                host.set_headers(Map::ResponseTrailers, &Metadata::default());
                return Action::Continue;
            }
            Response::PassThrough | Response::LocalReply(_) | Response::Waiting(_) => {
                return Action::Continue;
            }
        };
        stream.note_release(host);
        match stream.held {
            Held::Headers => {
                // Headers + trailers with no body become trailers-only.
                host.cancel_header_release();
                for (name, value) in host.headers(Map::ResponseTrailers).iter() {
                    host.add_header(Map::ResponseHeaders, name, value);
                }
                host.set_headers(Map::ResponseTrailers, &Metadata::default());
                self.response = Response::Closed;
                return Action::Continue;
            }
            Held::HeadersReleased => {
                // No body buffer exists to hold a frame: see the module docs.
                log::warn!(
                    "grpc-web-bridge: trailers after early headers and no message leave as real trailers"
                );
                host.count(Counter::TrailersNotFramed);
                self.response = Response::Closed;
                return Action::Continue;
            }
            Held::Chunk | Held::Nothing => {}
        }
        let trailers = host.headers(Map::ResponseTrailers);
        host.set_headers(Map::ResponseTrailers, &Metadata::default());
        let fields = match stream.scanner.finish() {
            Ok(()) => trailers,
            Err(kind) => {
                let error = kind.from(Peer::Upstream);
                report(host, &error);
                error_fields(&error)
            }
        };
        let frame = stream.trailer_frame(&fields);
        host.append_body(Body::Response, &frame);
        let held = stream.held;
        self.response = Response::Closed;
        if held == Held::Chunk {
            // The frame joins the held chunk, which leaves with this Continue.
            Action::Continue
        } else {
            // The chunk already left: a Continue here would lose the frame.
            host.release_later();
            Action::Pause
        }
    }
}

impl Stream {
    /// Checks the framing of newly arrived bytes; in text mode returns them
    /// base64-encoded, one padded segment per frame.
    fn convert(&mut self, fresh: Bytes) -> Result<Option<Vec<u8>>, ErrorKind> {
        let mut pieces = Vec::new();
        self.scanner.push(fresh, &mut pieces)?;
        let Some(encoder) = &mut self.text else {
            return match pieces.iter().any(|p| matches!(p, Piece::Trailers { .. })) {
                true => Err(ErrorKind::UnexpectedTrailerFrame),
                false => Ok(None),
            };
        };
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Message(bytes) => encoder.push(&bytes, &mut out),
                Piece::MessageEnd => encoder.end_segment(&mut out),
                Piece::Trailers { .. } => return Err(ErrorKind::UnexpectedTrailerFrame),
            }
        }
        Ok(Some(out))
    }

    /// Replaces the bytes after `converted` with `with`. Envoy can only
    /// replace a prefix of the buffer, so the converted part is rewritten too.
    fn replace_fresh(&mut self, host: &mut dyn Host, size: usize, with: &[u8]) {
        if self.converted == 0 {
            host.replace_body(Body::Response, size, with);
        } else {
            let mut whole = host.body(Body::Response, 0, self.converted).to_vec();
            whole.extend_from_slice(with);
            host.replace_body(Body::Response, size, &whole);
        }
        self.converted += with.len();
    }

    /// The trailer frame for `fields`, base64-encoded in text mode.
    fn trailer_frame(&mut self, fields: &Metadata) -> Vec<u8> {
        trailer_frame(fields, self.text.as_mut())
    }
}

/// The trailer frame for `fields`; with an encoder, as its own base64 segment.
fn trailer_frame(fields: &Metadata, text: Option<&mut Base64Encoder>) -> Vec<u8> {
    let block = encode_trailer_block(fields).unwrap_or_else(|kind| {
        let error = kind.from(Peer::Upstream);
        log::warn!("{error}");
        encode_trailer_block(&error_fields(&error)).unwrap_or_default()
    });
    let mut frame = bytes::BytesMut::new();
    // A trailer block is far below 4 GiB; encoding cannot fail.
    let _ = encode_frame(false, true, &block, &mut frame);
    match text {
        None => frame.to_vec(),
        Some(encoder) => {
            let mut out = Vec::new();
            encoder.end_segment(&mut out);
            encoder.push(&frame, &mut out);
            encoder.end_segment(&mut out);
            out
        }
    }
}
