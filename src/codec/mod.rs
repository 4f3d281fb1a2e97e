//! The pure gRPC / gRPC-web codec: bytes in, bytes or errors out. Nothing
//! here knows about Envoy or proxy-wasm, and every decoder is incremental
//! and indifferent to where chunk boundaries fall.

pub mod base64;
pub mod content_type;
pub mod error;
pub mod frame;
pub mod status;
pub mod trailers;

#[cfg(test)]
mod test_support;

pub use self::base64::{Base64Decoder, Base64Encoder};
pub use content_type::{Claim, ContentType, Protocol};
pub use error::{Error, ErrorKind, Peer};
pub use frame::{Frame, FrameDecoder, FrameHeader, FrameScanner, Piece, encode_frame};
pub use status::{
    Code, decode_grpc_message, encode_grpc_message, is_valid_status, parse_grpc_timeout,
};
pub use trailers::{Metadata, decode_trailer_block, encode_trailer_block};
