//! The trailer-block parser never panics, never yields a field that could
//! inject a header (CR, LF, NUL, or a pseudo-header), and what it reads
//! encodes and reads back the same.
#![no_main]

use grpc_web_bridge::codec::{decode_trailer_block, encode_trailer_block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|block: &[u8]| {
    let Ok(fields) = decode_trailer_block(block) else {
        return;
    };
    for (name, value) in fields.iter() {
        assert!(!name.is_empty() && !name.starts_with(':'), "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
            "{name:?}"
        );
        assert!(
            !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{value:?}"
        );
    }
    let encoded = encode_trailer_block(&fields).expect("a parsed block encodes");
    assert_eq!(decode_trailer_block(&encoded), Ok(fields));
});
