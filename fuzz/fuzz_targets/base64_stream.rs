//! Streaming base64 (grpc-web-text), fed the input in arbitrary chunks,
//! gives exactly what one push of the whole input gives: the same bytes or
//! the same error. It never panics.
#![no_main]

use grpc_web_bridge::codec::Base64Decoder;
use libfuzzer_sys::fuzz_target;

fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Option<String>) {
    let mut decoder = Base64Decoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        if let Err(error) = decoder.push(chunk, &mut out) {
            return (out, Some(format!("{error:?}")));
        }
    }
    let error = decoder.finish(&mut out).err().map(|e| format!("{e:?}"));
    (out, error)
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, text)) = input.split_first() else {
        return;
    };
    let whole = decode(std::iter::once(text));
    let step = usize::from(cut % 7) + 1;
    let chunked = decode(text.chunks(step));
    assert_eq!(chunked.1, whole.1, "verdicts differ");
    if whole.1.is_none() {
        assert_eq!(chunked.0, whole.0, "bytes differ");
    }
});
