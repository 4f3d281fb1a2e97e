//! [`Host`] over Envoy's dynamic-module callbacks, for one callback of one stream.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use super::abi::{self, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoy, ModuleBuffer, ModuleHttpHeader};
use super::body::{body_size, body_views};
use super::config::FilterConfig;
use super::filter::Phase;
use super::timers::{TimerSlot, now_millis};
use crate::abi::HeaderPairs;
use crate::bridge::{Body, Host, Map};
use crate::codec::Metadata;
use crate::metrics::Counter;

pub(super) struct NativeHost<'a> {
    pub(super) envoy: FilterEnvoy,
    pub(super) config: &'a FilterConfig,
    pub(super) phase: Phase,
    pub(super) timer: &'a Arc<TimerSlot>,
    pub(super) held_trailers: &'a RefCell<Option<Metadata>>,
    /// Response headers have reached the module.
    pub(super) response_started: bool,
}

fn header_type(map: Map) -> u32 {
    match map {
        Map::RequestHeaders => abi::REQUEST_HEADER,
        Map::ResponseHeaders => abi::RESPONSE_HEADER,
        Map::ResponseTrailers => abi::RESPONSE_TRAILER,
    }
}

impl NativeHost<'_> {
    /// The trailers this callback adds to a response that has none, which
    /// the module holds and sends itself.
    fn held(&self, map: Map) -> Option<std::cell::RefMut<'_, Option<Metadata>>> {
        (map == Map::ResponseTrailers && self.phase == Phase::LastResponseBody)
            .then(|| self.held_trailers.borrow_mut())
    }

    /// Calls `visit` on every chunk of the body view, in order, until it
    /// returns false.
    fn visit_chunks(&self, body: Body, mut visit: impl FnMut(&[u8]) -> bool) {
        for &kind in body_views(self.envoy, body, self.phase) {
            // SAFETY: inside this callback; the list is sized as Envoy says.
            let count = unsafe {
                abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.envoy, kind)
            };
            if count == 0 {
                continue;
            }
            let stopped = with_list::<_, 16, _>(count, EnvoyBuffer::EMPTY, |buffers| {
                // SAFETY: as above; the chunks stay valid while it lasts.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_get_body_chunks(
                        self.envoy,
                        kind,
                        buffers.as_mut_ptr(),
                    ) && buffers.iter().any(|buffer| !visit(buffer.as_slice()))
                }
            });
            if stopped {
                return;
            }
        }
    }
}

/// Runs `fill` on a list of `count` entries for Envoy to fill in: on the
/// stack up to `N` (the usual map or body), else on the heap, so that a
/// read allocates nothing.
fn with_list<T: Copy, const N: usize, R>(
    count: usize,
    empty: T,
    fill: impl FnOnce(&mut [T]) -> R,
) -> R {
    match count <= N {
        true => fill(&mut [empty; N][..count]),
        false => fill(&mut vec![empty; count]),
    }
}

impl Host for NativeHost<'_> {
    fn headers(&self, map: Map) -> HeaderPairs {
        if let Some(held) = self.held(map) {
            let fields = held.as_ref().map_or(&[][..], |fields| &fields.0[..]);
            return HeaderPairs::from_pairs(
                fields
                    .iter()
                    .map(|(name, value)| (name.as_bytes(), &value[..])),
            );
        }
        let kind = header_type(map);
        // SAFETY: inside this callback.
        let count =
            unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.envoy, kind) };
        if count == 0 {
            return HeaderPairs::default();
        }
        with_list::<_, 32, _>(count, EnvoyHttpHeader::EMPTY, |fields| {
            // SAFETY: the list is sized as Envoy says; the fields are
            // copied before the callback returns.
            unsafe {
                match abi::envoy_dynamic_module_callback_http_get_headers(
                    self.envoy,
                    kind,
                    fields.as_mut_ptr(),
                ) {
                    true => HeaderPairs::from_pairs(fields.iter().map(|f| (f.key(), f.value()))),
                    false => HeaderPairs::default(),
                }
            }
        })
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        if let Some(mut held) = self.held(map) {
            let fields = held.get_or_insert_with(Metadata::default);
            fields.0.retain(|(field, _)| field != name);
            fields.push(name, value);
            return;
        }
        // SAFETY: the buffers outlive the call, which copies them.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            );
        }
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        if let Some(mut held) = self.held(map) {
            held.get_or_insert_with(Metadata::default).push(name, value);
            return;
        }
        // SAFETY: the buffers outlive the call, which copies them.
        let added = unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        if !added && !value.is_empty() {
            log::warn!("grpc-web-bridge: could not add {name} to {map:?}");
        }
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        if let Some(mut held) = self.held(map) {
            if let Some(fields) = held.as_mut() {
                fields.0.retain(|(field, _)| field != name);
            }
            return;
        }
        // SAFETY: a null value removes the field; the name is copied.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::NULL,
            );
        }
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        if let Some(mut held) = self.held(map) {
            *held = Some(fields.clone());
            return;
        }
        let current = self.headers(map);
        let mut names: Vec<String> = current
            .iter()
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
            .collect();
        names.dedup();
        for name in names {
            self.remove_header(map, &name);
        }
        for (name, value) in fields.iter() {
            self.add_header(map, name, value);
        }
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len);
        let mut at = 0;
        self.visit_chunks(body, |chunk| {
            let (from, to) = (start.max(at), (start + len).min(at + chunk.len()));
            if from < to {
                out.extend_from_slice(&chunk[from - at..to - at]);
            }
            at += chunk.len();
            at < start + len
        });
        Bytes::from(out)
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        // Envoy can drain a buffer's front and append to its end: the
        // prefix is drained, the new one appended, and what followed the
        // prefix rotated behind it, a piece at a time.
        let total = body_size(self.envoy, body, self.phase);
        self.drain_body(body, len);
        self.append_body(body, with);
        crate::bridge::rotate_body(self, body, total.saturating_sub(len));
    }

    fn drain_body(&mut self, body: Body, mut len: usize) {
        for &kind in body_views(self.envoy, body, self.phase) {
            if len == 0 {
                break;
            }
            // SAFETY: inside this callback.
            let size =
                unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(self.envoy, kind) };
            let drained = size.min(len);
            // SAFETY: inside this callback.
            unsafe {
                abi::envoy_dynamic_module_callback_http_drain_body(self.envoy, kind, drained)
            };
            len -= drained;
        }
    }

    fn append_body(&mut self, body: Body, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(&last) = body_views(self.envoy, body, self.phase).last() {
            // SAFETY: the data outlives the call, which copies it.
            unsafe {
                abi::envoy_dynamic_module_callback_http_append_body(
                    self.envoy,
                    last,
                    ModuleBuffer::of(bytes),
                )
            };
        }
    }

    fn send_reply(&mut self, headers: &Metadata) {
        let status = [(":status", &b"200"[..])];
        let fields: Vec<ModuleHttpHeader> = status
            .into_iter()
            .chain(headers.iter())
            .map(|(name, value)| ModuleHttpHeader::of(name.as_bytes(), value))
            .collect();
        let before_response = match self.phase {
            Phase::RequestHeaders | Phase::RequestBody => true,
            Phase::Timer => !self.response_started,
            _ => false,
        };
        if before_response {
            // Before the response: the module's own trailers-only response,
            // exactly these headers (a local reply would drop a
            // content-type Envoy does not take for gRPC, and pass none of
            // the module's response hooks to put it back).
            // SAFETY: the fields borrow `headers`, which outlive the call.
            unsafe {
                abi::envoy_dynamic_module_callback_http_send_response_headers(
                    self.envoy,
                    fields.as_ptr(),
                    fields.len(),
                    true,
                );
            }
            return;
        }
        // Inside the response: a local reply, which Envoy writes past the
        // encoder chain.
        let fields = &fields[1..];
        // SAFETY: the fields borrow `headers`, which outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                200,
                fields.as_ptr(),
                fields.len(),
                ModuleBuffer::NULL,
                ModuleBuffer::of(b"grpc_web_bridge"),
            );
        }
    }

    fn reset(&mut self) {
        // SAFETY: resets this stream; the details are copied.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_reset_stream(
                self.envoy,
                0,
                ModuleBuffer::of(b"grpc_web_bridge"),
            );
        }
    }

    fn arm_timer(&mut self, at_millis: u64) {
        self.timer.arm(self.envoy, at_millis);
    }

    fn cancel_timer(&mut self) {
        self.timer.disarm();
    }

    fn count(&mut self, counter: Counter) {
        if let Some(&id) = self.config.counters.get(&counter) {
            // SAFETY: an id this configuration defined.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.envoy,
                    id,
                    std::ptr::null_mut(),
                    0,
                    1,
                );
            }
        }
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: inside this callback; the value is copied before it returns.
        let found = unsafe {
            match path {
                "xds\0cluster_name" => {
                    abi::envoy_dynamic_module_callback_http_get_cluster_name(self.envoy, &mut value)
                }
                "response\0code_details" => {
                    abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                        self.envoy,
                        abi::ATTRIBUTE_RESPONSE_CODE_DETAILS,
                        &mut value,
                    )
                }
                _ => false,
            }
        };
        // SAFETY: Envoy's buffer, valid in this callback.
        found.then(|| unsafe { value.as_slice() }.to_vec())
    }

    fn now_millis(&self) -> u64 {
        now_millis()
    }
}
