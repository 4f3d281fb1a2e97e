//! The edge side: downstream native gRPC → upstream gRPC-web.
//!
//! ```text
//! request:   Checking ──(body end | error)──► Done       (PassThrough if not converted)
//! response:  Waiting ──headers──► Web ──(body end | trailers)──► Done
//!                        │          └──(bad frame)──► Failing ──(end)──► Done
//!                        ├──(non-200, non-gRPC)──► Failing
//!                        └──(headers end the stream: trailers-only)──► Done
//! ```
//!
//! Nothing is ever held: message bytes pass through in the chunk they came
//! in, the trailer frame is cut out, and at the end of the body its fields
//! are added as real HTTP/2 trailers (Envoy creates the trailer map when a
//! filter adds to it in the last body callback).

use std::borrow::Cow;
use std::io::Read;
use std::rc::Rc;

use bytes::Bytes;
use flate2::read::{GzDecoder, ZlibDecoder};

use super::{
    Action, Body, Deadline, FrameReader, Host, Map, StreamBridge, drop_failed_request,
    drop_request_chunk, error_fields, finish_trailers, finish_trailers_only, make_marker, not_grpc,
    reply_error, report, scan_binary, shown,
};
use crate::abi::HeaderPairs;
use crate::codec::{
    Claim, ContentType, Error, ErrorKind, Metadata, Peer, Protocol, decode_trailer_block,
};
use crate::config::Config;
use crate::metrics::Counter;

/// Response headers that stay in the headers when a gRPC-web trailers-only
/// reply (status in headers, body to follow) is turned into headers plus
/// trailers: HTTP-level fields, not gRPC metadata.
const HTTP_LEVEL_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "date",
    "server",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "vary",
    "via",
    "alt-svc",
];

enum Request {
    /// Not converted: the filter stays out of the way for the whole stream.
    PassThrough,
    /// Converted; the body's framing is checked as it streams.
    Checking(FrameReader),
    /// The body broke the rules after the response had started, when a
    /// local reply would only reset the stream and leave the client no
    /// status. The rest of the body is dropped, its end still passes (so
    /// the upstream ends the call as after a client's half-close), and the
    /// error becomes the call's status when the response ends.
    Dropping,
    Done,
}

enum Response {
    Waiting,
    /// A gRPC-web body: message bytes stream through, the trailer frame
    /// becomes trailers.
    Web(WebBody),
    /// The upstream failed; its body is dropped and the error becomes the
    /// trailers.
    Failing(Error),
    /// Our local error reply is on its way out.
    LocalReply,
    Done,
}

struct WebBody {
    reader: FrameReader,
    /// `grpc-encoding`, needed only for a compressed (0x81) trailer frame.
    encoding: Option<Vec<u8>>,
    /// The largest trailer block, compressed or not (`max_trailer_bytes`).
    trailer_limit: u32,
    /// Fields of a trailers-only reply whose body still follows (it crossed
    /// HTTP/1.1, which cannot end a stream on the headers).
    header_trailers: Option<Metadata>,
    frame_trailers: Option<Metadata>,
}

pub struct Edge {
    config: Rc<Config>,
    request: Request,
    response: Response,
    deadline: Option<Deadline>,
    /// The client's content type, the reply's unless the origin says the
    /// upstream answered with another.
    native_content_type: Cow<'static, str>,
    /// The client's request failed after the response had started: the
    /// call's status when the response ends.
    request_error: Option<Error>,
}

/// The plain native gRPC content type.
const GRPC: &str = "application/grpc";

impl Edge {
    pub fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            request: Request::PassThrough,
            response: Response::Done,
            deadline: None,
            native_content_type: Cow::Borrowed(GRPC),
            request_error: None,
        }
    }

    /// The native content type of a gRPC-web reply (`web`, its headers as
    /// read in `response`): the upstream's own, if the origin carried it;
    /// a gRPC-web server's subtype other than proto; else the request's.
    fn reply_content_type(
        &self,
        host: &mut dyn Host,
        response: &HeaderPairs,
        web: &ContentType,
    ) -> Cow<'static, str> {
        let carried = self.config.marker.content_type_header();
        if let Some(value) = response.get(carried) {
            host.remove_header(Map::ResponseHeaders, carried);
            let native = ContentType::parse(value).filter(|ct| ct.protocol == Protocol::Grpc);
            if let Some(native) = native {
                return Cow::Owned(native.render());
            }
        }
        match web.subtype.as_deref() {
            None | Some("proto") => self.native_content_type.clone(),
            Some(_) => Cow::Owned(web.with_protocol(Protocol::Grpc).render()),
        }
    }

    /// Whether the route leads to an origin (`origin_clusters`; empty: all).
    fn routed_to_an_origin(&self, host: &dyn Host) -> bool {
        let clusters = &self.config.origin_clusters;
        clusters.is_empty()
            || host
                .property("xds\0cluster_name")
                .is_some_and(|name| clusters.iter().any(|c| c.as_bytes() == name))
    }

    /// A request body that breaks the rules (see [`Request::Dropping`]).
    fn fail_request_body(&mut self, host: &mut dyn Host, error: Error, size: usize) -> Action {
        if !matches!(self.response, Response::Web(_) | Response::Failing(_)) {
            return self.fail_request(host, error);
        }
        self.request = Request::Dropping;
        drop_failed_request(host, &mut self.request_error, error, size)
    }

    fn fail_request(&mut self, host: &mut dyn Host, error: Error) -> Action {
        host.cancel_timer();
        reply_error(host, &error, &self.native_content_type);
        self.request = Request::Done;
        self.response = Response::LocalReply;
        Action::Pause
    }

    /// The trailer fields for the end of the response, or `None` if the
    /// response needs none (passed through, or already finished).
    fn final_trailers(
        &mut self,
        host: &mut dyn Host,
        upstream: Option<Metadata>,
    ) -> Option<Metadata> {
        let mut fields = match std::mem::replace(&mut self.response, Response::Done) {
            Response::Failing(error) => error_fields(&error),
            Response::Web(body) => match self.request_error.take() {
                Some(error) => error_fields(&error),
                None => {
                    let found = body
                        .frame_trailers
                        .or(body.header_trailers)
                        .or(upstream.filter(|t| !t.0.is_empty()));
                    match found {
                        Some(fields) => fields,
                        None => {
                            let error = ErrorKind::MissingTrailers.from(Peer::Upstream);
                            report(host, &error);
                            error_fields(&error)
                        }
                    }
                }
            },
            other => {
                self.response = other;
                return None;
            }
        };
        finish_trailers(
            host,
            &mut fields,
            self.deadline,
            self.config.max_trailer_bytes,
        );
        Some(fields)
    }

    fn fail_response(&mut self, host: &mut dyn Host, kind: ErrorKind) {
        // Past the deadline, a failing upstream is the deadline's doing.
        let kind = match Deadline::passed(self.deadline, host) {
            true => ErrorKind::DeadlineExceeded,
            false => kind,
        };
        let error = kind.from(Peer::Upstream);
        report(host, &error);
        self.response = Response::Failing(error);
    }
}

impl StreamBridge for Edge {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        // One read of the whole map serves every field below.
        let request = host.headers(Map::RequestHeaders);
        // A marker the client sent is never trusted, whatever the request.
        remove_if_present(
            host,
            Map::RequestHeaders,
            &request,
            &self.config.marker.header,
        );
        // Nor is the content type header only the edge may set.
        let carried = self.config.marker.content_type_header();
        remove_if_present(host, Map::RequestHeaders, &request, carried);
        let value = request.get("content-type").unwrap_or_default();
        let content_type = match ContentType::classify(value) {
            Claim::Grpc(ct) if ct.protocol == Protocol::Grpc => Some(ct),
            Claim::Malformed => None,
            // gRPC-web passes on untouched: the origin may serve browsers.
            Claim::Grpc(_) | Claim::Other => {
                host.count(Counter::PassedThrough);
                return Action::Continue;
            }
        };
        if !self.routed_to_an_origin(host) {
            host.count(Counter::PassedThrough);
            return Action::Continue;
        }
        let Some(content_type) = content_type else {
            let error = ErrorKind::MalformedContentType(shown(value)).from(Peer::Downstream);
            return self.fail_request(host, error);
        };
        let now = host.now_millis();
        let Some(marker) = make_marker(&request, &self.config.marker, now) else {
            log::error!("grpc-web-bridge: cannot sign the marker; the request passes unconverted");
            host.count(Counter::PassedThrough);
            return Action::Continue;
        };
        // Envoy's gRPC-web filter at the origin converts only these two
        // (with text mode, four) content types; any subtype is carried in
        // the bridge's own header and restored there (docs/design.md).
        let hop: &[u8] = match content_type.subtype.as_deref() {
            Some("proto") => b"application/grpc-web+proto",
            _ => b"application/grpc-web",
        };
        host.set_header(Map::RequestHeaders, "content-type", hop);
        put(host, Map::RequestHeaders, &request, "accept", hop);
        if content_type.subtype.is_some() {
            let native = content_type.render();
            host.set_header(Map::RequestHeaders, carried, native.as_bytes());
            self.native_content_type = Cow::Owned(native);
        }
        remove_if_present(host, Map::RequestHeaders, &request, "te");
        remove_if_present(host, Map::RequestHeaders, &request, "content-length");
        // Removed above if the client sent one: added, not set (cheaper
        // for Envoy: docs/benchmarks.md, "Instructions per call").
        host.add_header(
            Map::RequestHeaders,
            &self.config.marker.header,
            marker.as_bytes(),
        );
        host.count(Counter::Converted);
        self.deadline = request
            .get("grpc-timeout")
            .and_then(|timeout| Deadline::start(host, timeout, now));
        self.request = if end_of_stream {
            Request::Done
        } else {
            Request::Checking(FrameReader::new(false, self.config.max_frame_bytes))
        };
        self.response = Response::Waiting;
        Action::Continue
    }

    fn on_request_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool) -> Action {
        let reader = match &mut self.request {
            Request::Checking(reader) => reader,
            Request::Dropping => return drop_request_chunk(host, size),
            Request::PassThrough | Request::Done => return Action::Continue,
        };
        // Native gRPC and gRPC-web frame messages alike: only checked here.
        match reader.check_request(host, size, end_of_stream) {
            Err(kind) => self.fail_request_body(host, kind.from(Peer::Downstream), size),
            Ok(_) => {
                if end_of_stream {
                    self.request = Request::Done;
                }
                Action::Continue
            }
        }
    }

    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        match self.response {
            Response::Waiting => {}
            Response::LocalReply => {
                let reply = self.native_content_type.as_bytes();
                host.set_header(Map::ResponseHeaders, "content-type", reply);
                self.response = Response::Done;
                return Action::Continue;
            }
            _ => return Action::Continue,
        }
        // One read of the whole map serves every field below.
        let response = host.headers(Map::ResponseHeaders);
        let status = response.get(":status");
        remove_if_present(host, Map::ResponseHeaders, &response, "content-length");
        let status_in_headers = response.get("grpc-status").is_some();
        // A reply with grpc-status in its headers is gRPC even if a proxy
        // lost its content-type (Envoy's own local replies do).
        let content_type = response
            .get("content-type")
            .and_then(ContentType::parse)
            .or_else(|| {
                status_in_headers.then_some(ContentType {
                    protocol: Protocol::GrpcWeb,
                    subtype: None,
                })
            });
        let web = match (status, content_type) {
            (Some(b"200"), Some(ct)) if ct.protocol.is_web() => ct,
            (Some(b"200"), Some(_native)) => {
                // The upstream answered native gRPC itself: nothing to convert.
                host.cancel_timer();
                self.response = Response::Done;
                return Action::Continue;
            }
            (status, _) => {
                let kind = not_grpc(&response, status);
                host.set_header(Map::ResponseHeaders, ":status", b"200");
                let reply = self.native_content_type.as_bytes();
                host.set_header(Map::ResponseHeaders, "content-type", reply);
                self.fail_response(host, kind);
                if end_of_stream {
                    for (name, value) in self.final_trailers(host, None).unwrap_or_default().iter()
                    {
                        host.set_header(Map::ResponseHeaders, name, value);
                    }
                }
                return Action::Continue;
            }
        };
        let native = self.reply_content_type(host, &response, &web);
        host.set_header(Map::ResponseHeaders, "content-type", native.as_bytes());
        if end_of_stream {
            // Headers that end the stream are already a trailers-only reply.
            finish_trailers_only(host, &response, self.deadline);
            self.response = Response::Done;
            return Action::Continue;
        }
        let encoding = response.get("grpc-encoding").map(<[u8]>::to_vec);
        let header_trailers = status_in_headers.then(|| {
            let carried = self.config.marker.content_type_header();
            move_metadata_out_of_headers(host, &response, carried)
        });
        self.response = Response::Web(WebBody {
            reader: FrameReader::new(
                web.protocol == Protocol::GrpcWebText,
                self.config.max_frame_bytes,
            )
            .with_trailer_limit(self.config.max_trailer_bytes),
            encoding,
            trailer_limit: self.config.max_trailer_bytes,
            header_trailers,
            frame_trailers: None,
        });
        Action::Continue
    }

    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        match &mut self.response {
            Response::Web(body) => match body.pass(host, size, end_of_stream) {
                Ok(()) => {}
                Err(kind) => {
                    host.replace_body(Body::Response, size, &[]);
                    self.fail_response(host, kind);
                }
            },
            Response::Failing(_) => host.replace_body(Body::Response, size, &[]),
            Response::Waiting | Response::LocalReply | Response::Done => return Action::Continue,
        }
        if end_of_stream {
            for (name, value) in self.final_trailers(host, None).unwrap_or_default().iter() {
                host.add_header(Map::ResponseTrailers, name, value);
            }
        }
        Action::Continue
    }

    fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action {
        if let Response::Web(body) = &mut self.response {
            if let Err(kind) = body.forward(Bytes::new(), true) {
                self.fail_response(host, kind);
            }
        }
        let upstream = host.headers(Map::ResponseTrailers).to_metadata();
        if let Some(fields) = self.final_trailers(host, Some(upstream.clone())) {
            // Most often the upstream's own trailers, already right.
            if fields != upstream {
                host.set_headers(Map::ResponseTrailers, &fields);
            }
        }
        Action::Continue
    }

    fn on_timer(&mut self, host: &mut dyn Host) {
        match self.response {
            Response::Waiting => {
                self.fail_request(host, ErrorKind::DeadlineExceeded.from(Peer::Upstream));
            }
            Response::Web(_) | Response::Failing(_) => {
                Deadline::expire_under_way(&mut self.deadline, host, self.config.deadline_grace_ms)
            }
            Response::LocalReply | Response::Done => {}
        }
    }
}

impl WebBody {
    /// Lets a chunk of `size` bytes pass, the trailer frame cut off its end
    /// and its fields kept for the end of the response. Binary, message
    /// payload is skipped by length and the rest read a window at a time
    /// (scan_binary); the kept front of a chunk past a piece's size is
    /// rotated, never copied into the module whole (`Scanned::truncate`).
    /// Text is decoded whole.
    fn pass(
        &mut self,
        host: &mut dyn Host,
        size: usize,
        end_of_stream: bool,
    ) -> Result<(), ErrorKind> {
        if self.reader.is_text() {
            let chunk = host.body(Body::Response, 0, size);
            if let Some(decoded) = self.forward(chunk, end_of_stream)? {
                host.replace_body(Body::Response, size, &decoded);
            }
            return Ok(());
        }
        let reader = &mut self.reader;
        let scanned = scan_binary(
            host,
            Body::Response,
            &mut reader.scanner,
            &mut reader.pieces,
            0,
            size,
        )?;
        if end_of_stream {
            reader.scanner.finish()?;
        }
        if let Some((compressed, block)) = &scanned.trailers {
            self.frame_trailers = Some(self.read_trailers(*compressed, block)?);
        }
        if let Some(keep) = scanned.trailers_at {
            scanned.truncate(host, Body::Response, size, keep);
        }
        Ok(())
    }

    /// Returns the bytes to forward (`None`: the chunk passes unchanged) and
    /// keeps the trailer frame's fields for the end.
    fn forward(&mut self, chunk: Bytes, end_of_stream: bool) -> Result<Option<Vec<u8>>, ErrorKind> {
        let read = self.reader.read(chunk, end_of_stream)?;
        if let Some((compressed, block)) = read.trailers {
            self.frame_trailers = Some(self.read_trailers(compressed, &block)?);
        }
        Ok(read.forward)
    }

    fn read_trailers(&self, compressed: bool, block: &[u8]) -> Result<Metadata, ErrorKind> {
        if !compressed {
            return decode_trailer_block(block);
        }
        let mut plain = Vec::new();
        let cap = u64::from(self.trailer_limit) + 1;
        let read = match self.encoding.as_deref() {
            Some(b"gzip") => GzDecoder::new(block).take(cap).read_to_end(&mut plain),
            Some(b"deflate") => ZlibDecoder::new(block).take(cap).read_to_end(&mut plain),
            _ => return Err(ErrorKind::UnsupportedTrailerCompression),
        };
        match read {
            Err(_) => Err(ErrorKind::UnsupportedTrailerCompression),
            Ok(n) if n as u64 >= cap => Err(ErrorKind::TrailersTooLarge {
                size: n,
                limit: self.trailer_limit,
            }),
            Ok(_) => decode_trailer_block(&plain),
        }
    }
}

/// Sets `name` if the map as read (`fields`) has it, else adds it: adding
/// an absent field costs Envoy about a fifth of setting it
/// (docs/benchmarks.md, "Instructions per call").
fn put(host: &mut dyn Host, map: Map, fields: &HeaderPairs, name: &str, value: &[u8]) {
    match fields.get(name) {
        Some(_) => host.set_header(map, name, value),
        None => host.add_header(map, name, value),
    }
}

/// Removes `name` from `map` if the map as read (`fields`) has it: each
/// change to a header map is a hostcall.
fn remove_if_present(host: &mut dyn Host, map: Map, fields: &HeaderPairs, name: &str) {
    if fields.get(name).is_some() {
        host.remove_header(map, name);
    }
}

/// Moves the gRPC metadata of a trailers-only reply out of the response
/// headers; it becomes the trailers at the end of the body.
/// (`carried`: the bridge's content-type header, already dealt with).
fn move_metadata_out_of_headers(
    host: &mut dyn Host,
    headers: &HeaderPairs,
    carried: &str,
) -> Metadata {
    let mut moved = Metadata::default();
    for (name, value) in headers.to_metadata().0 {
        let http_level = name.starts_with(':')
            || name == carried
            || name.starts_with("x-envoy-")
            || HTTP_LEVEL_HEADERS.contains(&name.as_str());
        if !http_level {
            moved.0.push((name, value));
        }
    }
    let mut removed: Vec<&str> = moved.iter().map(|(name, _)| name).collect();
    removed.sort_unstable();
    removed.dedup();
    for name in removed {
        host.remove_header(Map::ResponseHeaders, name);
    }
    moved
}
