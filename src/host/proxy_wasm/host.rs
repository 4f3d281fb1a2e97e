//! [`Host`] over raw proxy-wasm hostcalls, for one stream.

use std::cell::RefCell;
use std::rc::Weak;

use bytes::Bytes;

use super::hostcalls;
use super::{METRICS, TICK_MS, TIMED, TIMERS};
use crate::abi::{HeaderPairs, serialize_map};
use crate::bridge::{Body, Host, Map, StreamBridge};
use crate::codec::Metadata;
use crate::config::Side;
use crate::metrics::Counter;

pub(super) struct EnvoyHost {
    pub(super) id: u32,
    pub(super) side: Side,
    /// The stream's own state machine, registered while its timer is armed.
    pub(super) bridge: Weak<RefCell<Box<dyn StreamBridge>>>,
}

fn map_type(map: Map) -> u32 {
    match map {
        Map::RequestHeaders => 0,
        Map::ResponseHeaders => 2,
        Map::ResponseTrailers => 3,
    }
}

fn buffer_type(body: Body) -> u32 {
    match body {
        Body::Request => 0,
        Body::Response => 1,
    }
}

impl Host for EnvoyHost {
    fn headers(&self, map: Map) -> HeaderPairs {
        hostcalls::get_headers(map_type(map))
    }

    fn set_header(&mut self, map: Map, name: &str, value: &[u8]) {
        hostcalls::check(
            "replace header",
            hostcalls::replace_header(map_type(map), name, value),
        );
    }

    fn add_header(&mut self, map: Map, name: &str, value: &[u8]) {
        hostcalls::check(
            "add header",
            hostcalls::add_header(map_type(map), name, value),
        );
    }

    fn remove_header(&mut self, map: Map, name: &str) {
        hostcalls::check(
            "remove header",
            hostcalls::remove_header(map_type(map), name),
        );
    }

    fn set_headers(&mut self, map: Map, fields: &Metadata) {
        hostcalls::check(
            "set headers",
            hostcalls::set_headers(map_type(map), &serialize_map(fields)),
        );
    }

    fn body(&self, body: Body, start: usize, len: usize) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        Bytes::from(hostcalls::get_buffer(buffer_type(body), start, len).unwrap_or_default())
    }

    fn replace_body(&mut self, body: Body, len: usize, with: &[u8]) {
        hostcalls::check(
            "replace body",
            hostcalls::set_buffer(buffer_type(body), 0, len, with),
        );
    }

    fn drain_body(&mut self, body: Body, len: usize) {
        self.replace_body(body, len, &[]);
    }

    fn append_body(&mut self, body: Body, bytes: &[u8]) {
        // Envoy appends when the start is at or past the buffer's end.
        hostcalls::check(
            "append body",
            hostcalls::set_buffer(buffer_type(body), usize::MAX, 0, bytes),
        );
    }

    fn send_reply(&mut self, headers: &Metadata) {
        hostcalls::check(
            "local reply",
            hostcalls::send_local_response(200, "grpc_web_bridge", &serialize_map(headers)),
        );
    }

    fn reset(&mut self) {
        hostcalls::check("reset", hostcalls::close_response());
    }

    fn arm_timer(&mut self, at_millis: u64) {
        let Some(bridge) = self.bridge.upgrade() else {
            return;
        };
        TIMED.with(|timed| timed.borrow_mut().insert(self.id, bridge));
        let first = TIMERS.with(|timers| {
            let mut timers = timers.borrow_mut();
            timers.insert(self.id, at_millis);
            timers.len() == 1
        });
        if first {
            hostcalls::set_tick_period(TICK_MS);
        }
    }

    fn cancel_timer(&mut self) {
        TIMERS.with(|timers| timers.borrow_mut().remove(&self.id));
        TIMED.with(|timed| timed.borrow_mut().remove(&self.id));
    }

    fn property(&self, path: &str) -> Option<Vec<u8>> {
        hostcalls::get_property(path.as_bytes())
    }

    fn now_millis(&self) -> u64 {
        hostcalls::now_millis()
    }

    fn count(&mut self, counter: Counter) {
        let id = METRICS.with(|metrics| {
            let mut metrics = metrics.borrow_mut();
            if let Some(id) = metrics.get(&counter) {
                return Some(*id);
            }
            let id = hostcalls::define_counter(&counter.name(self.side))?;
            metrics.insert(counter, id);
            Some(id)
        });
        if let Some(id) = id {
            hostcalls::check("increment metric", hostcalls::increment_metric(id));
        }
    }
}
