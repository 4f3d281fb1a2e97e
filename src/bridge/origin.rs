//! The origin side: downstream gRPC-web → upstream native gRPC.
//!
//! The framing itself is Envoy's own `envoy.filters.http.grpc_web` filter,
//! placed right before the module and run only on requests that carry the
//! marker header (or on all requests when browsers are served). Only that
//! filter can append the trailer frame after trailers arrive with no body
//! to hold it: a Wasm filter gets no body buffer in its trailers callback
//! (docs/design.md). So the module sees native gRPC both ways and keeps
//! what only it can do:
//!
//! ```text
//! request:   gRPC-web Envoy's filter did not convert, or a malformed
//!            gRPC content type: refused (marked, or browsers served)
//!            marker verified (wrong → UNAUTHENTICATED), removed; the
//!            client's content type restored; deadline armed
//!            Checking ──(body end | bad frame → local reply)──► Done
//! response:  Waiting ──headers──► Streaming ──trailers | body end──► Done
//!               │                    ├─ a frame of up to 64 KiB leaves whole;
//!               │                    │  one the upstream never finishes never
//!               │                    │  does (the call ends INTERNAL)
//!               │                    └─ a larger one streams on as it comes;
//!               │                       one the upstream never finishes resets
//!               │                       the stream
//!               ├──(headers end the stream: trailers-only, status settled)──► Done
//!               ├──(non-200 or non-gRPC: Envoy's filter maps it)──► Done
//!               └──deadline──► local reply DEADLINE_EXCEEDED (trailers-only)
//! ```
//!
//! Whatever ends the call, the client reads one valid status: a missing or
//! malformed one becomes an error, a truncated message INTERNAL, and any
//! error after the deadline DEADLINE_EXCEEDED.

use std::borrow::Cow;
use std::rc::Rc;

use super::{
    Action, Body, Deadline, FrameReader, Host, Map, StreamBridge, check_marker,
    drop_failed_request, drop_request_chunk, error_fields, finish_trailers, finish_trailers_only,
    not_grpc, reply_error, report, scan_binary, shown,
};
use crate::abi::HeaderPairs;
use crate::codec::{
    Claim, ContentType, Error, ErrorKind, FrameScanner, Metadata, Peer, Piece, Protocol,
};
use crate::config::Config;
use crate::metrics::Counter;

enum Request {
    PassThrough,
    /// Guarded: the framing and the size limit are checked as it streams.
    Checking(FrameReader),
    /// The body broke the rules after the response had started, when a
    /// local reply would only reset the stream and leave the client no
    /// status. The rest of the body is dropped, its end still passes (so
    /// the server ends the call as after a client's half-close), and the
    /// error becomes the call's status when the response ends.
    Dropping,
    Done,
}

enum Response {
    /// Nothing to do for this response.
    PassThrough,
    /// Our local error reply is on its way out.
    LocalReply,
    /// A guarded call whose response headers have not come yet.
    Waiting,
    Streaming(Upstream),
    Done,
}

/// A frame whose prefix and payload together are at most this long is held
/// until it is whole, so that a message the upstream never finishes never
/// reaches the client and the call ends with a status. A larger message
/// streams on as it arrives (memory per stream must not grow with the
/// message); if the upstream ends inside one, the bytes that left cannot be
/// taken back, and only a reset keeps the client from reading half a
/// message as whole (docs/design.md, "Truncated messages").
pub const HELD_FRAME_BYTES: usize = 64 * 1024;

/// A guarded response body. A frame leaves whole or, if larger than
/// [`HELD_FRAME_BYTES`], as it comes; the trailer frame Envoy's gRPC-web
/// filter writes never lands inside one.
struct Upstream {
    scanner: FrameScanner,
    /// Bytes at the front of Envoy's response buffer that are the front of
    /// a message still arriving: held there (the body callback returned
    /// `Pause`), never copied into the module, and released with the
    /// callback that completes the message.
    held: usize,
    /// The front of a message that arrived behind whole frames. Envoy can
    /// only replace a buffer's prefix, so it is cut out, carried here, and
    /// put back in front of the next chunk.
    carried: Vec<u8>,
    /// What the scanner found in the current chunk (emptied after each;
    /// the allocation is reused).
    pieces: Vec<Piece>,
    /// A framing error, or a reply that was not gRPC: the rest of the body
    /// is dropped and the call ends with this status.
    failure: Option<Error>,
    /// The frame under way is larger than [`HELD_FRAME_BYTES`] and part of
    /// it has left: if the upstream ends inside it, the stream is reset.
    streaming: bool,
}

pub struct Origin {
    config: Rc<Config>,
    request: Request,
    response: Response,
    deadline: Option<Deadline>,
    /// The edge's marker was verified: the edge reads what the origin
    /// tells it in the content-type header (docs/design.md).
    marked: bool,
    /// The native content type the upstream got, when not `application/grpc`.
    native_content_type: Option<String>,
    /// The content-type of a local reply: the request's own when Envoy's
    /// gRPC-web filter will not give it one.
    reply_content_type: Cow<'static, str>,
    /// The client's request failed after the response had started: the
    /// call's status when the response ends.
    request_error: Option<Error>,
}

impl Origin {
    pub fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            request: Request::PassThrough,
            response: Response::PassThrough,
            deadline: None,
            marked: false,
            native_content_type: None,
            reply_content_type: Cow::Borrowed(GRPC),
            request_error: None,
        }
    }

    /// A request that claims gRPC-web (or gRPC) but will not be converted:
    /// refused with a clear status, never passed on half-converted.
    /// Unmarked gRPC-web is left alone unless browsers are served: it is
    /// not ours.
    fn refuse_unconverted(
        &mut self,
        host: &mut dyn Host,
        request: &HeaderPairs,
        claim: Claim,
        value: &[u8],
    ) -> Action {
        let marked = request.get(&self.config.marker.header).is_some();
        if !marked && !self.config.serve_browsers {
            host.count(Counter::PassedThrough);
            return Action::Continue;
        }
        let now = host.now_millis();
        if let Some(Err(refusal)) = check_marker(host, &self.config.marker, request, now) {
            return self.fail(
                host,
                ErrorKind::InvalidMarker(refusal).from(Peer::Downstream),
            );
        }
        let (kind, reply) = match claim {
            Claim::Grpc(content_type) => (
                ErrorKind::UnconvertedContentType(shown(value)),
                content_type.render(),
            ),
            Claim::Malformed | Claim::Other => (
                ErrorKind::MalformedContentType(shown(value)),
                reply_type_for_malformed(value).to_string(),
            ),
        };
        // Envoy's gRPC-web filter did not take this request, so it will not
        // set the reply's content-type either.
        self.reply_content_type = Cow::Owned(reply);
        self.fail(host, kind.from(Peer::Downstream))
    }

    /// Ends the stream with a trailers-only reply; Envoy's gRPC-web filter
    /// gives it the client's content-type.
    fn fail(&mut self, host: &mut dyn Host, error: Error) -> Action {
        host.cancel_timer();
        reply_error(host, &error, &self.reply_content_type);
        self.request = Request::Done;
        self.response = Response::LocalReply;
        Action::Pause
    }

    /// A request body that breaks the rules (see [`Request::Dropping`]).
    fn fail_request_body(&mut self, host: &mut dyn Host, error: Error, size: usize) -> Action {
        if !matches!(self.response, Response::Streaming(_)) {
            return self.fail(host, error);
        }
        self.request = Request::Dropping;
        drop_failed_request(host, &mut self.request_error, error, size)
    }

    /// The upstream ended inside a message part of which has already left
    /// (one larger than [`HELD_FRAME_BYTES`]): no status can follow it that
    /// the client would not read as part of the message, so the stream is
    /// reset, as a native gRPC stream cut short would be.
    fn reset_if_truncated_under_way(&mut self, host: &mut dyn Host) -> bool {
        let Response::Streaming(upstream) = &self.response else {
            return false;
        };
        let Some(error) = upstream.streaming.then(|| upstream.unfinished()).flatten() else {
            return false;
        };
        report(host, &error);
        host.cancel_timer();
        host.reset();
        self.response = Response::Done;
        true
    }

    /// The call's final fields, settled (see [`settle_status`]).
    fn settle(&mut self, host: &mut dyn Host, mut fields: Metadata) -> Metadata {
        if let Some(error) = self.request_error.take() {
            fields = error_fields(&error);
        }
        finish_trailers(
            host,
            &mut fields,
            self.deadline,
            self.config.max_trailer_bytes,
        );
        self.response = Response::Done;
        fields
    }
}

impl StreamBridge for Origin {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        // One read of the whole map serves every field below: each read
        // costs more than the module's own work (docs/benchmarks.md).
        let request = host.headers(Map::RequestHeaders);
        let value = request.get("content-type").unwrap_or_default();
        match ContentType::classify(value) {
            Claim::Other => {
                host.count(Counter::PassedThrough);
                return Action::Continue;
            }
            Claim::Grpc(content_type) if content_type.protocol == Protocol::Grpc => {}
            // Envoy's gRPC-web filter did not convert it: a content type it
            // does not know, or a configuration without that filter.
            claim => return self.refuse_unconverted(host, &request, claim, value),
        }
        let now = host.now_millis();
        match check_marker(host, &self.config.marker, &request, now) {
            Some(Ok(())) => {
                host.count(Counter::Converted);
                self.marked = true;
            }
            Some(Err(refusal)) => {
                let error = ErrorKind::InvalidMarker(refusal).from(Peer::Downstream);
                return self.fail(host, error);
            }
            // Served browsers reach the module already converted by Envoy's
            // filter; `x-grpc-web` is what their libraries send.
            None if self.config.serve_browsers => match request.get("x-grpc-web") {
                Some(_) => host.count(Counter::BrowserConverted),
                None => host.count(Counter::PassedThrough),
            },
            None => {
                host.count(Counter::PassedThrough);
                return Action::Continue;
            }
        }
        let carried = self.config.marker.content_type_header();
        if let Some(value) = request.get(carried) {
            host.remove_header(Map::RequestHeaders, carried);
            if self.marked {
                // The client's own content type, which Envoy's gRPC-web
                // filter could not have carried.
                let native = ContentType::parse(value).filter(|ct| ct.protocol == Protocol::Grpc);
                let Some(native) = native else {
                    let kind = ErrorKind::MalformedContentType(shown(value));
                    return self.fail(host, kind.from(Peer::Downstream));
                };
                let native = native.render();
                host.set_header(Map::RequestHeaders, "content-type", native.as_bytes());
                self.native_content_type = Some(native);
            }
        }
        self.deadline = request
            .get("grpc-timeout")
            .and_then(|timeout| Deadline::start(host, timeout, now));
        if !end_of_stream {
            self.request = Request::Checking(FrameReader::new(false, self.config.max_frame_bytes));
        }
        self.response = Response::Waiting;
        Action::Continue
    }

    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Action {
        let reader = match &mut self.request {
            Request::Checking(reader) => reader,
            Request::Dropping => return drop_request_chunk(host, size),
            Request::PassThrough | Request::Done => return Action::Continue,
        };
        match reader.check_request(host, size, end_of_stream) {
            Ok(_) => {
                if end_of_stream {
                    self.request = Request::Done;
                }
                Action::Continue
            }
            Err(kind) => self.fail_request_body(host, kind.from(Peer::Downstream), size),
        }
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        match self.response {
            Response::Waiting => {}
            Response::LocalReply => {
                // Envoy drops the content-type of a local reply without a body.
                let reply = self.reply_content_type.as_bytes();
                host.set_header(Map::ResponseHeaders, "content-type", reply);
                self.response = Response::Done;
                return Action::Continue;
            }
            _ => return Action::Continue,
        }
        let response = host.headers(Map::ResponseHeaders);
        let status = response.get(":status");
        let native = response
            .get("content-type")
            .and_then(ContentType::parse)
            .filter(|ct| ct.protocol == Protocol::Grpc);
        let failure = (status != Some(b"200") || native.is_none())
            .then(|| not_grpc_reply(host, &response, status));
        if let (None, Some(native), true) = (&failure, native, self.marked) {
            // Envoy's gRPC-web filter writes `application/grpc-web+proto`
            // whatever the upstream said: the edge learns the real one here
            // when it is not the request's.
            let native = native.render();
            let requested = self.native_content_type.as_deref().unwrap_or(GRPC);
            if native != requested {
                let carried = self.config.marker.content_type_header();
                host.add_header(Map::ResponseHeaders, carried, native.as_bytes());
            }
        }
        if let Some(error) = &failure {
            // A gRPC error instead, body dropped (Envoy's gRPC-web filter
            // would keep the HTTP status, which clients read as a network
            // error, not the status in the headers).
            host.set_header(Map::ResponseHeaders, ":status", b"200");
            host.set_header(Map::ResponseHeaders, "content-type", b"application/grpc");
            host.remove_header(Map::ResponseHeaders, "content-length");
            if end_of_stream {
                report(host, error);
                let fields = self.settle(host, error_fields(error));
                for (name, value) in fields.iter() {
                    host.set_header(Map::ResponseHeaders, name, value);
                }
                return Action::Continue;
            }
        }
        if end_of_stream {
            // Trailers-only stays trailers-only, with a valid status.
            finish_trailers_only(host, &response, self.deadline);
            self.response = Response::Done;
            return Action::Continue;
        }
        self.response = Response::Streaming(Upstream {
            scanner: FrameScanner::new(self.config.max_frame_bytes),
            held: 0,
            carried: Vec::new(),
            pieces: Vec::new(),
            failure,
            streaming: false,
        });
        Action::Continue
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        let Response::Streaming(upstream) = &mut self.response else {
            return Action::Continue;
        };
        let action = upstream.forward(host, size);
        if !end_of_stream {
            return action;
        }
        if self.reset_if_truncated_under_way(host) {
            return Action::Pause;
        }
        let Response::Streaming(upstream) = &mut self.response else {
            return Action::Continue;
        };
        // The upstream ended without trailers: Envoy creates the trailer map
        // when a filter adds to it in the last body callback.
        let ending = upstream.ending(ErrorKind::MissingTrailers);
        upstream.drop_unfinished(host);
        report(host, &ending);
        let fields = self.settle(host, error_fields(&ending));
        for (name, value) in fields.iter() {
            host.add_header(Map::ResponseTrailers, name, value);
        }
        Action::Continue
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action {
        if self.reset_if_truncated_under_way(host) {
            return Action::Pause;
        }
        let Response::Streaming(upstream) = &mut self.response else {
            return Action::Continue;
        };
        let (fields, read) = match upstream.unfinished() {
            Some(error) => {
                upstream.drop_unfinished(host);
                report(host, &error);
                (error_fields(&error), None)
            }
            None => {
                let read = host.headers(Map::ResponseTrailers);
                (read.to_metadata(), Some(read))
            }
        };
        let settled = self.settle(host, fields);
        // The server's trailers are written back only if settling changed them.
        let unchanged = read.is_some_and(|read| {
            read.iter()
                .eq(settled.iter().map(|(name, value)| (name.as_bytes(), value)))
        });
        if !unchanged {
            host.set_headers(Map::ResponseTrailers, &settled);
        }
        Action::Continue
    }

    fn on_timer(&mut self, host: &mut dyn Host) {
        match self.response {
            Response::Waiting => {
                self.fail(host, ErrorKind::DeadlineExceeded.from(Peer::Upstream));
            }
            Response::Streaming(_) => {
                Deadline::expire_under_way(&mut self.deadline, host, self.config.deadline_grace_ms)
            }
            _ => {}
        }
    }
}

impl Upstream {
    /// Lets the whole frames in Envoy's buffer go, and a frame larger than
    /// [`HELD_FRAME_BYTES`] as it comes; keeps the front of a smaller
    /// unfinished one back. `size` is the buffer's length, held bytes
    /// included. Message payload that only passes through is skipped, not
    /// read: nothing is copied into the module but frame prefixes, and the
    /// front of a held frame that arrived behind whole ones.
    fn forward(&mut self, host: &mut dyn Host, mut size: usize) -> Action {
        if self.failure.is_some() {
            self.drop_buffer(host, size);
            return Action::Continue;
        }
        if !self.carried.is_empty() {
            let carried = std::mem::take(&mut self.carried);
            host.replace_body(Body::Response, 0, &carried);
            size += carried.len();
            self.held = carried.len();
        }
        if size == self.held {
            return match self.held {
                0 => Action::Continue,
                _ => Action::Pause,
            };
        }
        let scanned = scan_binary(
            host,
            Body::Response,
            &mut self.scanner,
            &mut self.pieces,
            self.held,
            size,
        )
        .and_then(|scanned| match scanned.trailers_at {
            Some(_) => Err(ErrorKind::UnexpectedTrailerFrame),
            None => Ok(scanned),
        });
        let scanned = match scanned {
            Ok(scanned) => scanned,
            Err(kind) => {
                // The bad chunk is dropped; the error becomes the status.
                self.failure = Some(kind.from(Peer::Upstream));
                self.drop_buffer(host, size);
                return Action::Continue;
            }
        };
        // Where the last frame in the buffer ends (0: none ends in it).
        let whole = scanned.whole.unwrap_or(0);
        if whole > 0 || self.scanner.at_frame_boundary() {
            // The frame that was streaming, if any, has ended.
            self.streaming = false;
        }
        if whole == size {
            self.held = 0;
            return Action::Continue;
        }
        // The buffer ends inside a frame: from `whole` (or from before this
        // callback) `size - whole` bytes of it are here, and the scanner
        // knows how much of its payload is still to come.
        if !self.streaming {
            let to_come = self.scanner.message_remaining().unwrap_or(0) as usize;
            self.streaming = size - whole + to_come > HELD_FRAME_BYTES;
        }
        if self.streaming {
            self.held = 0;
            return Action::Continue;
        }
        if whole == 0 {
            self.held = size;
            return Action::Pause;
        }
        // Whole frames, then the front of the next (under HELD_FRAME_BYTES):
        // the frames go, the front is carried.
        self.carried = scanned.bytes(host, Body::Response, whole, size).to_vec();
        scanned.truncate(host, Body::Response, size, whole);
        self.held = 0;
        Action::Continue
    }

    /// Drops the front of an unfinished message, held or carried: the call
    /// ends with an error instead.
    fn drop_unfinished(&mut self, host: &mut dyn Host) {
        let held = self.held;
        self.drop_buffer(host, held);
    }

    fn drop_buffer(&mut self, host: &mut dyn Host, size: usize) {
        if size > 0 {
            host.replace_body(Body::Response, size, &[]);
        }
        self.held = 0;
        self.carried.clear();
    }

    /// Why the body cannot end here, if it cannot: a framing error, or a
    /// message the upstream did not finish.
    fn unfinished(&self) -> Option<Error> {
        self.failure.clone().or_else(|| {
            let kind = self.scanner.finish().err()?;
            Some(kind.from(Peer::Upstream))
        })
    }

    /// The error a body ending without trailers reports.
    fn ending(&self, otherwise: ErrorKind) -> Error {
        self.unfinished()
            .unwrap_or_else(|| otherwise.from(Peer::Upstream))
    }
}

/// The plain native gRPC content type.
const GRPC: &str = "application/grpc";

/// A reply's content-type for a request whose content-type is malformed:
/// the protocol it seems to speak, so its client can read the status.
fn reply_type_for_malformed(value: &[u8]) -> &'static str {
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    if value.contains("grpc-web-text") {
        "application/grpc-web-text+proto"
    } else if value.contains("grpc-web") {
        "application/grpc-web+proto"
    } else {
        GRPC
    }
}

/// What a reply that is not gRPC means for the client: Envoy's gRPC-web
/// filter refusing the client's base64, or what [`not_grpc`] says.
fn not_grpc_reply(host: &dyn Host, response: &HeaderPairs, status: Option<&[u8]>) -> Error {
    if host
        .property("response\0code_details")
        .is_some_and(|details| details.starts_with(b"grpc_base_64_decode_failed"))
    {
        return ErrorKind::InvalidBase64Text.from(Peer::Downstream);
    }
    not_grpc(response, status).from(Peer::Upstream)
}
