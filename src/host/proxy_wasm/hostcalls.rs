//! Hostcalls that report failure as a status instead of panicking (the
//! SDK's wrappers panic on any non-OK status, which traps the whole VM).

use std::ptr::null_mut;

use crate::abi::HeaderPairs;

pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const STREAM_HTTP_RESPONSE: u32 = 1;
const METRIC_COUNTER: u32 = 0;
const OK: u32 = 0;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, len: usize) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: *const u8,
        len: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(id: u32) -> u32;
    fn proxy_close_stream(stream: u32) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_len: usize,
        value: *mut *mut u8,
        value_len: *mut usize,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_len: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

pub fn now_millis() -> u64 {
    let mut nanos = 0;
    // SAFETY: a pointer to a live local.
    unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    nanos / 1_000_000
}

/// Sets the root context's tick period; 0 stops the ticks.
pub fn set_tick_period(millis: u32) {
    // SAFETY: no pointers.
    check("set tick period", unsafe {
        proxy_set_tick_period_milliseconds(millis)
    });
}

/// Logs a failed hostcall; the stream carries on.
pub fn check(what: &str, status: u32) {
    if status != OK {
        log::debug!("grpc-web-bridge: {what} returned status {status}");
    }
}

/// Takes ownership of memory the host allocated through the SDK's
/// `proxy_on_memory_allocate`.
/// An OK status with no data is an empty value (a header present but
/// empty must not read as absent).
fn owned(status: u32, data: *mut u8, len: usize) -> Option<Vec<u8>> {
    if status != OK {
        return None;
    }
    if data.is_null() || len == 0 {
        return Some(Vec::new());
    }
    // SAFETY: the host wrote `len` bytes into an allocation of exactly
    // `len` bytes made by this module's allocator, and hands it over.
    Some(unsafe { Vec::from_raw_parts(data, len, len) })
}

pub fn get_headers(map: u32) -> HeaderPairs {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: pointers to live locals.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut len) };
    owned(status, data, len)
        .and_then(HeaderPairs::parse)
        .unwrap_or_default()
}

pub fn set_headers(map: u32, serialized: &[u8]) -> u32 {
    // SAFETY: a live slice.
    unsafe { proxy_set_header_map_pairs(map, serialized.as_ptr(), serialized.len()) }
}

pub fn replace_header(map: u32, name: &str, value: &[u8]) -> u32 {
    // SAFETY: live slices.
    unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    }
}

pub fn add_header(map: u32, name: &str, value: &[u8]) -> u32 {
    // SAFETY: live slices.
    unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    }
}

pub fn remove_header(map: u32, name: &str) -> u32 {
    // SAFETY: a live &str.
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) }
}

pub fn get_buffer(buffer: u32, start: usize, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: pointers to live locals.
    let status = unsafe { proxy_get_buffer_bytes(buffer, start, max, &mut data, &mut len) };
    owned(status, data, len)
}

pub fn set_buffer(buffer: u32, start: usize, size: usize, data: &[u8]) -> u32 {
    // SAFETY: a live slice.
    unsafe { proxy_set_buffer_bytes(buffer, start, size, data.as_ptr(), data.len()) }
}

pub fn send_local_response(status: u32, details: &str, headers: &[u8]) -> u32 {
    // SAFETY: live slices; a null body of length 0 is no body.
    unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            std::ptr::null(),
            0,
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    }
}

pub fn set_effective_context(id: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_effective_context(id) == OK }
}

/// A property by its path (segments joined by NUL).
pub fn get_property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: a live slice and pointers to live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut len) };
    owned(status, data, len)
}

/// Resets the current stream; Envoy ends both directions.
pub fn close_response() -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_close_stream(STREAM_HTTP_RESPONSE) }
}

pub fn define_counter(name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: a live &str and local.
    let status = unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, 1) }
}
