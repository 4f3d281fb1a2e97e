//! Per-stream state machines, one per side, written against [`Host`]: the
//! few things they need from Envoy. The proxy-wasm adapter implements
//! `Host` with hostcalls; the tests implement it with a fake that mimics the
//! measured Envoy behaviour.

use std::cell::RefCell;

use bytes::Bytes;

use crate::abi::HeaderPairs;
use crate::codec::{
    Base64Decoder, Code, Error, ErrorKind, FrameScanner, Metadata, Peer, Piece,
    encode_grpc_message, is_valid_status, parse_grpc_timeout,
};
use crate::config;
use crate::marker::{SignCache, VerifyCache};
use crate::metrics::Counter;

pub mod edge;
pub mod origin;

#[cfg(any(test, feature = "fake-host"))]
pub mod fake_host;
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
    /// Stop iteration: after a local reply, nothing more of the request
    /// goes upstream.
    Pause,
}

/// What a state machine needs from Envoy. Failures of the underlying
/// hostcalls are the adapter's to log; the machines carry on.
pub trait Host {
    /// Every field, duplicates included, in order, read in one hostcall
    /// (a read costs the same whether it brings one field or all).
    fn headers(&self, map: Map) -> HeaderPairs;
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
    /// Drops the first `len` bytes of the body buffer.
    fn drain_body(&mut self, body: Body, len: usize);
    /// Adds `bytes` at the end of the body buffer.
    fn append_body(&mut self, body: Body, bytes: &[u8]);
    /// Ends the stream with a local reply: HTTP 200, these headers, no body.
    /// Once response headers have left, Envoy can only reset the stream.
    fn send_reply(&mut self, headers: &Metadata);
    /// Resets the stream (both directions).
    fn reset(&mut self);
    /// Calls [`StreamBridge::on_timer`] once at `at_millis` on the host
    /// clock (re-arming moves it), unless cancelled or the stream ends.
    fn arm_timer(&mut self, at_millis: u64);
    fn cancel_timer(&mut self);
    fn count(&mut self, counter: Counter);
    /// An Envoy attribute by its path, segments joined by NUL (e.g.
    /// `"xds\0cluster_name"`).
    fn property(&self, path: &str) -> Option<Vec<u8>>;
    /// Milliseconds on a monotonic-enough clock (Envoy's wall clock).
    fn now_millis(&self) -> u64;
}

/// The callbacks of one HTTP stream, in the order Envoy calls them per
/// direction (the two directions interleave freely on streaming calls),
/// plus the timer armed through [`Host::arm_timer`].
pub trait StreamBridge {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action;
    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Action;
    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action;
    fn on_response_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool)
    -> Action;
    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action;
    fn on_timer(&mut self, host: &mut dyn Host);
}

/// A call's `grpc-timeout`, enforced by the bridge itself. Envoy's own
/// enforcement answers with a text/plain 504 (no grpc-status, no CORS) or
/// a bare reset; the bridge answers DEADLINE_EXCEEDED wherever a status can
/// still be sent.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    /// When the call's time runs out (host clock, ms).
    at: u64,
    /// The deadline passed while the response was already under way: the
    /// upstream, which got the same `grpc-timeout`, has until
    /// `deadline_grace_ms` later to end the call before it is reset.
    overdue: bool,
}

impl Deadline {
    /// Arms the timer for a request's `grpc-timeout` value, read at `now_millis`.
    fn start(host: &mut dyn Host, grpc_timeout: &[u8], now_millis: u64) -> Option<Self> {
        let at = now_millis.saturating_add(parse_grpc_timeout(grpc_timeout)?);
        host.arm_timer(at);
        Some(Self { at, overdue: false })
    }

    fn passed(deadline: Option<Self>, host: &dyn Host) -> bool {
        deadline.is_some_and(|deadline| host.now_millis() >= deadline.at)
    }

    /// The timer fired while the response was under way: the first time,
    /// waits `grace_ms` for the upstream to end the call; the second time,
    /// resets the stream (counted as a deadline error).
    fn expire_under_way(deadline: &mut Option<Self>, host: &mut dyn Host, grace_ms: u32) {
        match deadline {
            Some(deadline) if !deadline.overdue => {
                deadline.overdue = true;
                host.arm_timer(host.now_millis().saturating_add(u64::from(grace_ms)));
            }
            Some(_) => {
                report(host, &ErrorKind::DeadlineExceeded.from(Peer::Upstream));
                host.count(Counter::DeadlineReset);
                host.reset();
            }
            None => {}
        }
    }
}

/// Final fields of a call, as the client must see them: a `grpc-status`
/// that is exactly one code from 0 to 16 (a missing one is UNKNOWN, never
/// OK; an invalid one is UNKNOWN naming what came), and, once the call's
/// deadline has passed, DEADLINE_EXCEEDED instead of any other error (the
/// client has given up; tonic, for one, reports its own timeout as
/// CANCELLED).
fn settle_status(host: &mut dyn Host, fields: &mut Metadata, deadline_passed: bool) {
    let statuses: Vec<&[u8]> = fields
        .iter()
        .filter(|(name, _)| *name == "grpc-status")
        .map(|(_, value)| value)
        .collect();
    let kind = match statuses.as_slice() {
        [] => Some(ErrorKind::MissingStatus),
        [b"0"] | [b"4"] => None,
        [value] if is_valid_status(value) => deadline_passed.then_some(ErrorKind::DeadlineExceeded),
        values => {
            let seen: Vec<_> = values.iter().map(|v| String::from_utf8_lossy(v)).collect();
            Some(ErrorKind::InvalidStatus(seen.join(",")))
        }
    };
    if let Some(kind) = kind {
        let error = kind.from(Peer::Upstream);
        report(host, &error);
        fields
            .0
            .retain(|(name, _)| name != "grpc-status" && name != "grpc-message");
        fields.0.extend(error_fields(&error).0);
    }
}

/// Replaces trailers over `limit` (HTTP/2 header-list size) with an error:
/// a client's HTTP/2 stack would refuse the whole block (grpc-java and
/// grpc-core accept 8 KiB by default).
fn bound_trailers(host: &mut dyn Host, fields: &mut Metadata, limit: u32) {
    let size: usize = fields
        .iter()
        .map(|(name, value)| name.len() + value.len() + 32)
        .sum();
    if size > limit as usize {
        let error = ErrorKind::TrailersTooLarge { size, limit }.from(Peer::Upstream);
        report(host, &error);
        *fields = error_fields(&error);
    }
}

/// The fields that end a call, as the client must see them: the deadline
/// timer stops, trailers over `limit` become an error, and the status is
/// settled ([`settle_status`]).
fn finish_trailers(
    host: &mut dyn Host,
    fields: &mut Metadata,
    deadline: Option<Deadline>,
    limit: u32,
) {
    host.cancel_timer();
    bound_trailers(host, fields, limit);
    let passed = Deadline::passed(deadline, host);
    settle_status(host, fields, passed);
}

/// Ends a call whose response headers ended the stream (trailers-only):
/// the deadline timer stops and the status in `headers` (the response
/// headers as read) is settled, touching only `grpc-status` and
/// `grpc-message`.
fn finish_trailers_only(host: &mut dyn Host, headers: &HeaderPairs, deadline: Option<Deadline>) {
    host.cancel_timer();
    let passed = Deadline::passed(deadline, host);
    let before = headers.to_metadata();
    let mut after = before.clone();
    settle_status(host, &mut after, passed);
    if after == before {
        return;
    }
    for name in ["grpc-status", "grpc-message"] {
        host.remove_header(Map::ResponseHeaders, name);
        if let Some(value) = after.get(name) {
            host.add_header(Map::ResponseHeaders, name, value);
        }
    }
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

/// A header value as an error message shows it: lossy UTF-8, at most 64
/// characters (a hostile value can be 60 KiB).
fn shown(value: &[u8]) -> String {
    const MAX: usize = 64;
    let value = String::from_utf8_lossy(value);
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.into_owned(),
    }
}

/// What a reply that is not gRPC means for the client: its HTTP status
/// (mapped as grpc/doc/http-grpc-status-mapping.md says) or its content
/// type, and who wrote it (`server`, else `via`), so that an intermediary's
/// own page (a WAF's 403, a proxy's 502) names the intermediary.
fn not_grpc(response: &HeaderPairs, status: Option<&[u8]>) -> ErrorKind {
    let by = response
        .get("server")
        .or_else(|| response.get("via"))
        .map(shown);
    match status {
        Some(b"200") => ErrorKind::NotGrpc {
            content_type: response.get("content-type").map(shown),
            by,
        },
        status => ErrorKind::HttpStatus {
            status: status
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                .unwrap_or(0),
            by,
        },
    }
}

/// A request body that broke the rules once the response was under way
/// (each side's `Request::Dropping`): the error is reported and kept as the
/// call's status (the first one wins), and this chunk goes nowhere.
fn drop_failed_request(
    host: &mut dyn Host,
    kept: &mut Option<Error>,
    error: Error,
    size: usize,
) -> Action {
    report(host, &error);
    kept.get_or_insert(error);
    drop_request_chunk(host, size)
}

/// The most a body rewrite copies into the module at once.
const ROTATE_PIECE: usize = 64 * 1024;

/// Moves the first `len` bytes of a body buffer to its end, a piece at a
/// time: Envoy can only drain a buffer's front and add at its end, and the
/// module never holds more than [`ROTATE_PIECE`] of it, whatever its size.
pub(crate) fn rotate_body(host: &mut dyn Host, body: Body, len: usize) {
    let mut moved = 0;
    while moved < len {
        let piece = host.body(body, 0, (len - moved).min(ROTATE_PIECE));
        host.drain_body(body, piece.len());
        host.append_body(body, &piece);
        moved += piece.len();
        if piece.is_empty() {
            break;
        }
    }
}

/// Drops a request chunk of a failed request; its end still passes.
fn drop_request_chunk(host: &mut dyn Host, size: usize) -> Action {
    if size > 0 {
        host.replace_body(Body::Request, size, &[]);
    }
    Action::Continue
}

/// Logs and counts an error; every error passes through here once.
fn report(host: &mut dyn Host, error: &Error) {
    log::log!(log_level(error), "{error}");
    host.count(Counter::error(error));
}

/// How loudly an error is logged. Counters carry every error; a warning is
/// for what an operator should act on: a server or hop that breaks the
/// protocol, a marker the origin refuses (keys out of step, or a forgery),
/// the module itself. A deadline is an ordinary outcome, and a client's own
/// malformed request is its problem: it gets a status, the log a debug line
/// (so a hostile client cannot flood it). docs/design.md, "Metrics".
fn log_level(error: &Error) -> log::Level {
    match (&error.kind, error.peer) {
        (ErrorKind::Panic, _) => log::Level::Error,
        (ErrorKind::DeadlineExceeded, _) => log::Level::Debug,
        (ErrorKind::InvalidMarker(_), _) => log::Level::Warn,
        (_, Peer::Downstream) => log::Level::Debug,
        (_, Peer::Upstream) => log::Level::Warn,
    }
}

/// Ends the stream with a trailers-only gRPC reply of `content_type`.
/// Envoy's Wasm host drops the content-type of a local reply without a
/// body, so the caller sets it again when the reply passes through its
/// `on_response_headers`; the native host keeps it.
fn reply_error(host: &mut dyn Host, error: &Error, content_type: &str) {
    report(host, error);
    let mut fields = error_fields(error);
    fields.push("content-type", content_type.as_bytes().to_vec());
    host.send_reply(&fields);
}

thread_local! {
    /// This worker's signatures of the current second (edge).
    static SIGNED: RefCell<SignCache> = RefCell::new(SignCache::default());
    /// Markers this worker verified (origin).
    static VERIFIED: RefCell<VerifyCache> = RefCell::new(VerifyCache::default());
}

/// The edge's marker for this request (`request`: its header map as read),
/// signed as of `now_millis`.
fn make_marker(request: &HeaderPairs, marker: &config::Marker, now_millis: u64) -> Option<String> {
    if let Some(secret) = &marker.static_secret {
        return Some(secret.clone());
    }
    let id = marker.sign_with.as_deref()?;
    let key = marker.key(id)?;
    let request = crate::marker::Request {
        method: request.get(":method").unwrap_or_default(),
        path: request.get(":path").unwrap_or_default(),
        now_s: now_millis / 1000,
    };
    SIGNED.with(|cache| cache.borrow_mut().sign(id, key, &request))
}

/// Checks the origin's request marker(s) in `request`, the request's
/// header map as read once: `None` if there is none, else whether the one
/// marker is valid, as of `now_millis`. Every value counts: two markers are
/// refused, whatever they say. The marker leaves the request either way.
fn check_marker(
    host: &mut dyn Host,
    marker: &config::Marker,
    request: &HeaderPairs,
    now_millis: u64,
) -> Option<Result<(), crate::marker::Refusal>> {
    use crate::marker::{Refusal, Request, verify_static};
    let mut values = request
        .iter()
        .filter(|(name, _)| *name == marker.header.as_bytes())
        .map(|(_, value)| value);
    let value = values.next()?;
    let duplicate = values.next().is_some();
    host.remove_header(Map::RequestHeaders, &marker.header);
    if duplicate {
        return Some(Err(Refusal::Duplicate));
    }
    if let Some(secret) = &marker.static_secret {
        return Some(verify_static(value, secret.as_bytes()));
    }
    let bound = Request {
        method: request.get(":method").unwrap_or_default(),
        path: request.get(":path").unwrap_or_default(),
        now_s: now_millis / 1000,
    };
    let max_age = u64::from(marker.max_age_s);
    Some(VERIFIED.with(|cache| {
        cache
            .borrow_mut()
            .verify(value, |id| marker.key(id), max_age, &bound)
    }))
}

/// The most body bytes read into the module at once to find frames: after
/// a flow-control pause Envoy hands over all it read (megabytes), and only
/// frame prefixes and trailer frames need reading.
const READ_WINDOW: usize = 64 * 1024;

/// The first read at a frame whose size is not known yet, and after a
/// skipped payload: enough for a prefix and a few small frames, while a
/// full window would copy most of a large message's payload only to read
/// its five-byte prefix.
const PEEK_WINDOW: usize = 1024;

/// What [`scan_binary`] found in a body buffer.
#[derive(Default)]
struct Scanned {
    /// Where the last message frame that ended in the buffer ends.
    whole: Option<usize>,
    /// Where the first trailer-frame byte in the buffer is.
    trailers_at: Option<usize>,
    /// The trailer frame, if it completed here: (compressed, block).
    trailers: Option<(bool, Bytes)>,
    /// The last bytes read and where they start in the buffer.
    last_read: (usize, Bytes),
}

impl Scanned {
    /// Bytes `from..to` of the buffer, from the last read if it holds them.
    fn bytes(&self, host: &dyn Host, body: Body, from: usize, to: usize) -> Bytes {
        let (start, read) = &self.last_read;
        match from >= *start && to <= start + read.len() {
            true => read.slice(from - start..to - start),
            false => host.body(body, from, to - from),
        }
    }

    /// Cuts the scanned buffer of `size` bytes to its first `keep` (the
    /// edge cutting off the trailer frame, the origin carrying a frame's
    /// front). Up to [`ROTATE_PIECE`] kept bytes are written back in one
    /// rewrite; more (after a flow-control pause a chunk can be megabytes)
    /// are rotated to the end and the rest drained, never copied into the
    /// module whole.
    fn truncate(&self, host: &mut dyn Host, body: Body, size: usize, keep: usize) {
        if keep <= ROTATE_PIECE {
            let kept = self.bytes(host, body, 0, keep);
            host.replace_body(body, size, &kept);
        } else {
            rotate_body(host, body, keep);
            host.drain_body(body, size - keep);
        }
    }
}

/// Scans bytes `from..size` of a binary body with `scanner`: message
/// payload is skipped by length, never read; the rest is read a window of
/// at most [`READ_WINDOW`] at a time, the first after a skip a peek.
fn scan_binary(
    host: &dyn Host,
    body: Body,
    scanner: &mut FrameScanner,
    pieces: &mut Vec<Piece>,
    from: usize,
    size: usize,
) -> Result<Scanned, ErrorKind> {
    let mut scanned = Scanned::default();
    let mut at = from;
    let mut want = PEEK_WINDOW;
    while at < size {
        let skipped = scanner.skip_payload(size - at);
        if skipped > 0 {
            at += skipped;
            if scanner.at_frame_boundary() {
                scanned.whole = Some(at);
            }
            want = PEEK_WINDOW;
            continue;
        }
        let window = host.body(body, at, (size - at).min(want));
        // What the peek did not finish is small frames or a trailer
        // frame: read on a full window at a time.
        want = READ_WINDOW;
        if window.is_empty() {
            break;
        }
        pieces.clear();
        scanner.push(window.clone(), pieces)?;
        let mut seen = 0;
        for piece in pieces.iter() {
            match piece {
                Piece::Message(bytes) => seen += bytes.len(),
                Piece::MessageEnd => scanned.whole = Some(at + seen),
                Piece::Trailers { compressed, block } => {
                    scanned.trailers = Some((*compressed, block.clone()))
                }
            }
        }
        // Message bytes come first; all after them is the trailer frame.
        if seen < window.len() {
            scanned.trailers_at.get_or_insert(at + seen);
        }
        pieces.clear();
        at += window.len();
        scanned.last_read = (at - window.len(), window);
    }
    Ok(scanned)
}

/// Reads a gRPC or gRPC-web body as it streams: undoes text mode, checks
/// the framing, and cuts out the trailer frame.
struct FrameReader {
    text: Option<Base64Decoder>,
    scanner: FrameScanner,
    /// What the scanner found in the current chunk; emptied after each,
    /// kept to reuse its allocation.
    pieces: Vec<Piece>,
}

/// What one chunk of a body became.
struct Read {
    /// The decoded bytes to forward (text), or `None` (binary: unchanged).
    forward: Option<Vec<u8>>,
    /// The trailer frame, if it completed in this chunk: (compressed, block).
    trailers: Option<(bool, Bytes)>,
}

impl FrameReader {
    fn new(text: bool, limit: u32) -> Self {
        Self {
            text: text.then(Base64Decoder::new),
            scanner: FrameScanner::new(limit),
            pieces: Vec::new(),
        }
    }

    /// Refuses trailer frames longer than `limit`, before gathering them.
    fn with_trailer_limit(mut self, limit: u32) -> Self {
        self.scanner = self.scanner.with_trailer_limit(limit);
        self
    }

    /// Whether the body is grpc-web-text (decoded here, so rewritten whole).
    fn is_text(&self) -> bool {
        self.text.is_some()
    }

    /// Reads one chunk of a grpc-web-text body, decoded and rewritten whole;
    /// with `end_of_stream`, also checks that nothing is left half-read. A
    /// binary body is scanned in place ([`scan_binary`]) and comes here only
    /// to end: an empty last chunk is how a trailers callback ends a body.
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
        let pieces = &mut self.pieces;
        pieces.clear();
        self.scanner.push(binary, pieces)?;
        if end_of_stream {
            self.scanner.finish()?;
        }
        let mut trailers = None;
        let mut forwarded = 0;
        for piece in pieces.iter() {
            match piece {
                Piece::Message(bytes) => forwarded += bytes.len(),
                Piece::MessageEnd => {}
                Piece::Trailers { compressed, block } => {
                    trailers = Some((*compressed, block.clone()))
                }
            }
        }
        let forward = self.text.is_some().then(|| {
            let mut forward = Vec::with_capacity(forwarded);
            for piece in pieces.iter() {
                if let Piece::Message(bytes) = piece {
                    forward.extend_from_slice(bytes);
                }
            }
            forward
        });
        // The pieces borrow the chunk: let it go now, keep the allocation.
        pieces.clear();
        Ok(Read { forward, trailers })
    }

    /// Checks one chunk of a request body (native gRPC at the edge; binary
    /// gRPC-web, after Envoy's filter, at the origin): frame prefixes and
    /// limits are read, message payload is skipped without being copied
    /// into the module.
    fn check_request(
        &mut self,
        host: &dyn Host,
        size: usize,
        end_of_stream: bool,
    ) -> Result<(), ErrorKind> {
        let scanned = scan_binary(
            host,
            Body::Request,
            &mut self.scanner,
            &mut self.pieces,
            0,
            size,
        )?;
        if scanned.trailers_at.is_some() {
            return Err(ErrorKind::UnexpectedTrailerFrame);
        }
        if end_of_stream {
            self.scanner.finish()?;
        }
        Ok(())
    }
}
