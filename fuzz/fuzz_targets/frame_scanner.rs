//! The streaming frame scanner, fed the input in arbitrary chunks, agrees
//! with the one-shot decoder: same message bytes, same trailer frame, same
//! verdict, whatever the chunking; it never panics.
#![no_main]

use bytes::{Bytes, BytesMut};
use grpc_web_bridge::codec::{FrameDecoder, FrameScanner, Piece};
use libfuzzer_sys::fuzz_target;

const LIMIT: u32 = 4096;

/// (message bytes with prefixes, trailer block, error) of a whole stream.
type Outcome = (Vec<u8>, Option<(bool, Bytes)>, bool);

fn one_shot(data: &[u8]) -> Outcome {
    let mut decoder = FrameDecoder::new(LIMIT);
    let mut buf = BytesMut::from(data);
    let (mut messages, mut trailers) = (Vec::new(), None);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) if trailers.is_some() => {
                let _ = frame;
                return (messages, trailers, true);
            }
            Ok(Some(frame)) if frame.header.is_trailers() => {
                trailers = Some((frame.header.is_compressed(), frame.payload));
            }
            Ok(Some(frame)) => {
                messages.extend_from_slice(&frame.header.to_bytes());
                messages.extend_from_slice(&frame.payload);
            }
            Ok(None) => return (messages, trailers, decoder.finish(&buf).is_err()),
            Err(_) => return (messages, trailers, true),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let expected = one_shot(data);
    let step = usize::from(cut % 17) + 1;
    let mut scanner = FrameScanner::new(LIMIT);
    let (mut messages, mut trailers, mut failed) = (Vec::new(), None, false);
    for chunk in data.chunks(step) {
        let mut pieces = Vec::new();
        let result = scanner.push(Bytes::copy_from_slice(chunk), &mut pieces);
        for piece in pieces {
            match piece {
                Piece::Message(bytes) => messages.extend_from_slice(&bytes),
                Piece::MessageEnd => {}
                Piece::Trailers { compressed, block } => trailers = Some((compressed, block)),
            }
        }
        if result.is_err() {
            failed = true;
            break;
        }
    }
    failed |= !failed && scanner.finish().is_err();
    assert_eq!(failed, expected.2, "verdict differs");
    assert_eq!(trailers, expected.1, "trailer frame differs");
    if !failed {
        assert_eq!(messages, expected.0, "message bytes differ");
    } else {
        // Forwarded bytes are always a prefix of what the stream holds.
        assert!(data.starts_with(&messages) || expected.0.starts_with(&messages));
    }
});
