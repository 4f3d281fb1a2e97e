//! The subset of Envoy's dynamic-module ABI the native host uses, declared
//! from `source/extensions/dynamic_modules/abi/abi.h` (Envoy 1.38-1.40).
//! A buffer passed by value is a `{pointer, length}` pair, which the x86-64
//! C ABI passes in two registers, as the header's older `(ptr, len)` forms.

use std::ffi::c_void;

/// The `DynamicModuleHttpFilter` of a stream, valid in its callbacks.
pub type FilterEnvoy = *mut c_void;

pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
pub const RESPONSE_TRAILER: u32 = 3;

pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;

/// `envoy_dynamic_module_type_attribute_id_ResponseCodeDetails`.
pub const ATTRIBUTE_RESPONSE_CODE_DETAILS: u32 = 16;

/// Bytes Envoy owns, valid for the current callback.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    len: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// # Safety
    /// Only inside the callback in which Envoy filled it.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        match self.ptr.is_null() {
            true => &[],
            // SAFETY: Envoy's pointer and length, as the caller promises.
            false => unsafe { std::slice::from_raw_parts(self.ptr, self.len) },
        }
    }
}

/// Bytes the module owns, lent for one call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    len: usize,
}

impl ModuleBuffer {
    pub const NULL: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    key: EnvoyBuffer,
    value: EnvoyBuffer,
}

impl EnvoyHttpHeader {
    pub const EMPTY: Self = Self {
        key: EnvoyBuffer::EMPTY,
        value: EnvoyBuffer::EMPTY,
    };

    /// # Safety
    /// Only inside the callback in which Envoy filled it.
    pub unsafe fn key<'a>(&self) -> &'a [u8] {
        // SAFETY: as the caller promises.
        unsafe { self.key.as_slice() }
    }

    /// # Safety
    /// Only inside the callback in which Envoy filled it.
    pub unsafe fn value<'a>(&self) -> &'a [u8] {
        // SAFETY: as the caller promises.
        unsafe { self.value.as_slice() }
    }
}

#[repr(C)]
pub struct ModuleHttpHeader {
    key: ModuleBuffer,
    value: ModuleBuffer,
}

impl ModuleHttpHeader {
    pub fn of(key: &[u8], value: &[u8]) -> Self {
        Self {
            key: ModuleBuffer::of(key),
            value: ModuleBuffer::of(value),
        }
    }
}

/// A stream's scheduler: commits an event from any thread, which Envoy
/// delivers on the stream's worker as `on_http_filter_scheduled`.
pub struct Scheduler(*mut c_void);

// SAFETY: Envoy documents the scheduler as usable from any thread.
unsafe impl Send for Scheduler {}

impl Scheduler {
    /// Only inside a callback of the stream `envoy`.
    pub fn new(envoy: FilterEnvoy) -> Option<Self> {
        // SAFETY: a live stream's pointer, inside its callback.
        let scheduler = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(envoy) };
        (!scheduler.is_null()).then_some(Self(scheduler))
    }

    pub fn commit(&self, event: u64) {
        // SAFETY: a scheduler not yet deleted (deleted only on drop).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted once, here.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        envoy: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        envoy: FilterEnvoy,
        kind: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        envoy: FilterEnvoy,
        kind: u32,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        envoy: FilterEnvoy,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        envoy: FilterEnvoy,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_body_size(envoy: FilterEnvoy, kind: u32)
    -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        envoy: FilterEnvoy,
        kind: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        envoy: FilterEnvoy,
        kind: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(
        envoy: FilterEnvoy,
        kind: u32,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        envoy: FilterEnvoy,
        kind: u32,
        bytes: usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        envoy: FilterEnvoy,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(
        envoy: FilterEnvoy,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        envoy: FilterEnvoy,
        status: u32,
        headers: *const ModuleHttpHeader,
        headers_length: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    /// Sends response headers through the whole encoder chain (as a filter
    /// that makes its own response does).
    pub fn envoy_dynamic_module_callback_http_send_response_headers(
        envoy: FilterEnvoy,
        headers: *const ModuleHttpHeader,
        headers_length: usize,
        end_stream: bool,
    );
    /// Ends the response with these trailers, through the whole encoder
    /// chain (as a filter that makes its own response does).
    pub fn envoy_dynamic_module_callback_http_send_response_trailers(
        envoy: FilterEnvoy,
        trailers: *const ModuleHttpHeader,
        trailers_length: usize,
    );
    pub fn envoy_dynamic_module_callback_http_filter_reset_stream(
        envoy: FilterEnvoy,
        reason: u32,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_get_cluster_name(
        envoy: FilterEnvoy,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        envoy: FilterEnvoy,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(envoy: FilterEnvoy) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
}
