//! A fake Envoy for the state-machine tests. It keeps the behaviour
//! measured in real Envoy that the machines depend on:
//! - body bytes can only be replaced as a prefix or appended to;
//! - a body callback that returns `Pause` holds the buffer: the next one
//!   sees it with the new bytes after it, and so does the trailers callback;
//! - trailers added in the last body callback become the response trailers;
//! - a local reply once response headers have left is a reset;
//! - a timer fires once, at or after its time, unless cancelled or re-armed.

use bytes::Bytes;

use super::{Action, Body, Host, Map, StreamBridge};
use crate::abi::HeaderPairs;
use crate::codec::Metadata;
use crate::metrics::Counter;

#[derive(Default)]
pub struct FakeHost {
    pub request_headers: Metadata,
    pub response_headers: Metadata,
    pub response_trailers: Metadata,
    request_buffer: Vec<u8>,
    response_buffer: Vec<u8>,
    /// What left toward the upstream.
    pub upstream_body: Vec<u8>,
    /// What left toward the client.
    pub downstream_headers: Option<Metadata>,
    pub downstream_body: Vec<u8>,
    pub downstream_trailers: Option<Metadata>,
    pub reply: Option<Metadata>,
    pub reset: bool,
    pub counters: Vec<Counter>,
    pub clock_millis: u64,
    /// When the armed timer fires.
    pub timer: Option<u64>,
    /// Envoy attributes by path.
    pub properties: std::collections::HashMap<&'static str, Vec<u8>>,
    /// How many body bytes the module copied out of Envoy's buffers, in
    /// how many reads.
    pub body_bytes_read: std::cell::Cell<usize>,
    pub body_reads: std::cell::Cell<usize>,
    /// The most body bytes the module held from one read.
    pub largest_body_read: std::cell::Cell<usize>,
    /// Hostcalls that bring data into the module (headers, maps, bodies,
    /// properties): each costs Envoy about 2 µs, more than the module's own
    /// work on a small call (docs/benchmarks.md).
    pub reads: std::cell::Cell<usize>,
    /// Changes to header maps (set, add, remove, replace all), each a
    /// hostcall.
    pub header_writes: usize,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn send_request_headers(
        &mut self,
        bridge: &mut dyn StreamBridge,
        fields: &[(&str, &str)],
        eos: bool,
    ) -> Action {
        self.request_headers = metadata(fields);
        bridge.on_request_headers(self, eos)
    }

    pub fn send_request_body(
        &mut self,
        bridge: &mut dyn StreamBridge,
        chunk: &[u8],
        eos: bool,
    ) -> Action {
        self.request_buffer.extend_from_slice(chunk);
        let size = self.request_buffer.len();
        let action = bridge.on_request_body(self, size, eos);
        if action == Action::Continue {
            self.upstream_body.append(&mut self.request_buffer);
        }
        action
    }

    pub fn send_response_headers(
        &mut self,
        bridge: &mut dyn StreamBridge,
        fields: &[(&str, &str)],
        eos: bool,
    ) -> Action {
        self.response_headers = metadata(fields);
        let action = bridge.on_response_headers(self, eos);
        if action == Action::Continue {
            self.downstream_headers = Some(self.response_headers.clone());
        }
        action
    }

    pub fn send_response_body(
        &mut self,
        bridge: &mut dyn StreamBridge,
        chunk: &[u8],
        eos: bool,
    ) -> Action {
        self.response_buffer.extend_from_slice(chunk);
        let size = self.response_buffer.len();
        let action = bridge.on_response_body(self, size, eos);
        // Pause holds the buffer: the next callback sees it, new bytes after.
        if action == Action::Continue {
            self.downstream_body.append(&mut self.response_buffer);
        }
        assert!(
            action == Action::Continue || !eos || self.reset,
            "the end of the stream is held"
        );
        if eos && !self.reset && !self.response_trailers.0.is_empty() {
            self.downstream_trailers = Some(self.response_trailers.clone());
        }
        action
    }

    pub fn send_response_trailers(
        &mut self,
        bridge: &mut dyn StreamBridge,
        fields: &[(&str, &str)],
    ) -> Action {
        self.response_trailers = metadata(fields);
        // A held body is the filter's to change in the trailers callback.
        let action = bridge.on_response_trailers(self);
        if self.reset {
            // Nothing more reaches the client.
            return action;
        }
        assert_eq!(action, Action::Continue, "trailers are never held");
        self.downstream_body.append(&mut self.response_buffer);
        self.downstream_trailers = Some(self.response_trailers.clone());
        action
    }

    /// Moves the clock to `millis` and fires the timer if it is due.
    pub fn advance_to(&mut self, bridge: &mut dyn StreamBridge, millis: u64) {
        self.clock_millis = millis;
        if self.timer.is_some_and(|at| at <= millis) {
            self.timer = None;
            bridge.on_timer(self);
        }
    }

    fn map(&mut self, map: Map) -> &mut Metadata {
        match map {
            Map::RequestHeaders => &mut self.request_headers,
            Map::ResponseHeaders => &mut self.response_headers,
            Map::ResponseTrailers => &mut self.response_trailers,
        }
    }

    fn buffer(&mut self, body: Body) -> &mut Vec<u8> {
        match body {
            Body::Request => &mut self.request_buffer,
            Body::Response => &mut self.response_buffer,
        }
    }
}

pub fn metadata(fields: &[(&str, &str)]) -> Metadata {
    Metadata(
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
    )
}

impl Host for FakeHost {
    fn headers(&self, map: Map) -> HeaderPairs {
        self.reads.set(self.reads.get() + 1);
        HeaderPairs::from_metadata(match map {
            Map::RequestHeaders => &self.request_headers,
            Map::ResponseHeaders => &self.response_headers,
            Map::ResponseTrailers => &self.response_trailers,
        })
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        self.header_writes += 1;
        self.map(map).0.retain(|(n, _)| n != name);
        self.map(map).push(name, value);
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        self.header_writes += 1;
        self.map(map).push(name, value);
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        self.header_writes += 1;
        self.map(map).0.retain(|(n, _)| n != name);
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        self.header_writes += 1;
        *self.map(map) = fields.clone();
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        let buffer = match body {
            Body::Request => &self.request_buffer,
            Body::Response => &self.response_buffer,
        };
        // Like the adapter, an empty read makes no hostcall.
        if len > 0 {
            self.body_bytes_read.set(self.body_bytes_read.get() + len);
            self.body_reads.set(self.body_reads.get() + 1);
            self.largest_body_read
                .set(self.largest_body_read.get().max(len));
            self.reads.set(self.reads.get() + 1);
        }
        Bytes::copy_from_slice(&buffer[start..start + len])
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        let buffer = self.buffer(body);
        assert!(len <= buffer.len(), "replace past the end of the buffer");
        buffer.splice(..len, with.iter().copied());
    }

    fn drain_body(&mut self, body: Body, len: usize) {
        let buffer = self.buffer(body);
        assert!(len <= buffer.len(), "drain past the end of the buffer");
        buffer.drain(..len);
    }

    fn append_body(&mut self, body: Body, bytes: &[u8]) {
        self.buffer(body).extend_from_slice(bytes);
    }

    fn send_reply(&mut self, headers: &Metadata) {
        if self.downstream_headers.is_some() {
            self.reset = true;
            return;
        }
        assert!(self.reply.is_none(), "two local replies");
        self.reply = Some(headers.clone());
    }

    fn reset(&mut self) {
        self.reset = true;
    }

    fn arm_timer(&mut self, at_millis: u64) {
        self.timer = Some(at_millis);
    }

    fn cancel_timer(&mut self) {
        self.timer = None;
    }

    fn count(&mut self, counter: Counter) {
        self.counters.push(counter);
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        self.reads.set(self.reads.get() + 1);
        self.properties.get(path).cloned()
    }

    fn now_millis(&self) -> u64 {
        self.clock_millis
    }
}
