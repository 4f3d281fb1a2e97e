//! The body a body callback shows the state machines: Envoy's kept and
//! received buffers, read in place as one view.

use super::abi::{self, FilterEnvoy};
use super::filter::Phase;
use crate::bridge::Body;

/// The size of the body a body callback shows the state machine: what was
/// kept, then what was just received (or, where Envoy hands the kept body
/// over as received, that alone).
pub(super) fn body_size(envoy: FilterEnvoy, body: Body, phase: Phase) -> usize {
    body_views(envoy, body, phase)
        .iter()
        // SAFETY: called inside the body callback.
        .map(|&kind| unsafe { abi::envoy_dynamic_module_callback_http_get_body_size(envoy, kind) })
        .sum()
}

/// The Envoy buffers that make up the body the state machine sees, in order
/// (static slices: no allocation per hostcall).
pub(super) fn body_views(envoy: FilterEnvoy, body: Body, phase: Phase) -> &'static [u32] {
    let in_body_callback = matches!(
        (phase, body),
        (Phase::RequestBody, Body::Request)
            | (
                Phase::ResponseBody | Phase::LastResponseBody,
                Body::Response
            )
    );
    // SAFETY: called inside the body callback.
    let received_is_kept = in_body_callback
        && unsafe {
            match body {
                Body::Request => {
                    abi::envoy_dynamic_module_callback_http_received_buffered_request_body(envoy)
                }
                Body::Response => {
                    abi::envoy_dynamic_module_callback_http_received_buffered_response_body(envoy)
                }
            }
        };
    match (body, in_body_callback, received_is_kept) {
        (Body::Request, false, _) => &[abi::BUFFERED_REQUEST_BODY],
        (Body::Request, true, true) => &[abi::RECEIVED_REQUEST_BODY],
        (Body::Request, true, false) => &[abi::BUFFERED_REQUEST_BODY, abi::RECEIVED_REQUEST_BODY],
        (Body::Response, false, _) => &[abi::BUFFERED_RESPONSE_BODY],
        (Body::Response, true, true) => &[abi::RECEIVED_RESPONSE_BODY],
        (Body::Response, true, false) => {
            &[abi::BUFFERED_RESPONSE_BODY, abi::RECEIVED_RESPONSE_BODY]
        }
    }
}
