//! Records the flag byte of every gRPC frame a body carries, so a peer can
//! tell whether a message arrived compressed: the proof that the bridge
//! kept the compression flag byte-exact. Frames are read with the bridge's
//! own scanner.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use grpc_web_bridge::codec::{FrameScanner, Piece};
use http_body::{Body, Frame};

/// The flags seen so far, in order: `true` for a compressed message.
#[derive(Clone, Default, Debug)]
pub struct SeenFlags(Arc<Mutex<Vec<bool>>>);

impl SeenFlags {
    pub fn get(&self, index: usize) -> Option<bool> {
        self.0.lock().ok()?.get(index).copied()
    }

    pub fn all(&self) -> Vec<bool> {
        self.0.lock().map(|flags| flags.clone()).unwrap_or_default()
    }
}

/// A body that records its frames' compression flags as it is read.
pub struct RecordingBody<B> {
    inner: B,
    scanner: FrameScanner,
    pending_header: Vec<u8>,
    seen: SeenFlags,
}

impl<B> RecordingBody<B> {
    pub fn new(inner: B, seen: SeenFlags) -> Self {
        Self {
            inner,
            scanner: FrameScanner::new(u32::MAX),
            pending_header: Vec::new(),
            seen,
        }
    }

    fn record(&mut self, data: &Bytes) {
        let mut pieces = Vec::new();
        if self.scanner.push(data.clone(), &mut pieces).is_err() {
            return;
        }
        for piece in pieces {
            match piece {
                Piece::Message(bytes) => {
                    if self.pending_header.len() < 5 {
                        let take = (5 - self.pending_header.len()).min(bytes.len());
                        self.pending_header.extend_from_slice(&bytes[..take]);
                    }
                }
                Piece::MessageEnd => {
                    let compressed = self
                        .pending_header
                        .first()
                        .is_some_and(|flag| flag & 1 == 1);
                    if let Ok(mut flags) = self.seen.0.lock() {
                        flags.push(compressed);
                    }
                    self.pending_header.clear();
                }
                Piece::Trailers { .. } => {}
            }
        }
    }
}

impl<B> Body for RecordingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let data = data.clone();
            self.record(&data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
