//! Chunkings every streaming decoder is tested against: one shot, one byte
//! at a time, and every split into two pieces.

/// Yields `input` cut into chunks in every way the tests care about.
pub fn chunkings(input: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![input], input.chunks(1).collect()];
    for cut in 1..input.len() {
        let (a, b) = input.split_at(cut);
        all.push(vec![a, b]);
    }
    all
}

/// Cuts `input` at the given offsets (sorted, deduplicated, clamped).
#[cfg(not(target_arch = "wasm32"))]
pub fn cut_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks
}
