//! A fake Envoy for the state-machine tests. It keeps the behaviour
//! measured in real Envoy that the machines depend on:
//! - a paused body chunk stays in the buffer and the next callback sees the
//!   old bytes followed by the new ones;
//! - body bytes can only be replaced as a prefix or appended to;
//! - paused response headers leave with the first released chunk;
//! - in the trailers callback, bytes appended to the body survive only if a
//!   chunk was still held, or if the callback pauses and is released.

use bytes::Bytes;

use super::{Action, Body, Host, Map, StreamBridge};
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
    pub counters: Vec<Counter>,
    pub clock_millis: u64,
    release_queued: bool,
    /// The header timer's delay, while armed.
    pub header_timer: Option<u32>,
    released: bool,
    headers_held: bool,
    body_held: bool,
    in_trailers: bool,
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
        match action {
            Action::Continue => self.downstream_headers = Some(self.response_headers.clone()),
            Action::Pause => self.headers_held = true,
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
        match action {
            Action::Continue => self.flush_response(),
            Action::Pause => self.body_held = true,
        }
        action
    }

    pub fn send_response_trailers(
        &mut self,
        bridge: &mut dyn StreamBridge,
        fields: &[(&str, &str)],
    ) -> Action {
        self.response_trailers = metadata(fields);
        self.in_trailers = true;
        let action = bridge.on_response_trailers(self);
        if action == Action::Continue {
            if !self.body_held {
                // Measured: appending with no held chunk, then continuing, loses the bytes.
                self.response_buffer.clear();
            }
            self.flush_response();
            self.downstream_trailers = Some(self.response_trailers.clone());
        }
        action
    }

    /// Runs the worker's queue: resumes a response whose release is queued.
    pub fn run_queue(&mut self) {
        if std::mem::take(&mut self.release_queued) {
            self.released = true;
            self.flush_response();
            if self.in_trailers {
                self.downstream_trailers = Some(self.response_trailers.clone());
            }
        }
    }

    /// The header timer fires: held headers (and any held chunk) leave.
    pub fn fire_header_timer(&mut self) {
        if self.header_timer.take().is_some() {
            self.released = true;
            self.flush_response();
        }
    }

    pub fn release_queued(&self) -> bool {
        self.release_queued
    }

    fn flush_response(&mut self) {
        if std::mem::take(&mut self.headers_held) {
            self.downstream_headers = Some(self.response_headers.clone());
        }
        self.body_held = false;
        self.downstream_body.append(&mut self.response_buffer);
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
    fn header(&self, map: Map, name: &str) -> Option<Vec<u8>> {
        let fields = match map {
            Map::RequestHeaders => &self.request_headers,
            Map::ResponseHeaders => &self.response_headers,
            Map::ResponseTrailers => &self.response_trailers,
        };
        fields.get(name).map(<[u8]>::to_vec)
    }

    fn headers(&self, map: Map) -> Metadata {
        match map {
            Map::RequestHeaders => self.request_headers.clone(),
            Map::ResponseHeaders => self.response_headers.clone(),
            Map::ResponseTrailers => self.response_trailers.clone(),
        }
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        self.remove_header(map, name);
        self.map(map).push(name, value);
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        self.map(map).push(name, value);
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        self.map(map).0.retain(|(n, _)| n != name);
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        *self.map(map) = fields.clone();
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        let buffer = match body {
            Body::Request => &self.request_buffer,
            Body::Response => &self.response_buffer,
        };
        Bytes::copy_from_slice(&buffer[start..start + len])
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        let buffer = self.buffer(body);
        assert!(len <= buffer.len(), "replace past the end of the buffer");
        buffer.splice(..len, with.iter().copied());
    }

    fn append_body(&mut self, body: Body, data: &[u8]) {
        self.buffer(body).extend_from_slice(data);
    }

    fn send_reply(&mut self, headers: &Metadata) {
        assert!(self.reply.is_none(), "two local replies");
        self.reply = Some(headers.clone());
    }

    fn release_later(&mut self) {
        assert!(!self.release_queued, "release queued twice");
        self.release_queued = true;
    }

    fn release_headers_after(&mut self, millis: u32) {
        self.header_timer = Some(millis);
    }

    fn cancel_header_release(&mut self) {
        self.header_timer = None;
    }

    fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.released)
    }

    fn count(&mut self, counter: Counter) {
        self.counters.push(counter);
    }

    fn now_millis(&self) -> u64 {
        self.clock_millis
    }
}
