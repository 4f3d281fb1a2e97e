//! The proxy-wasm ABI's header-map wire format, kept free of hostcalls so
//! it is tested natively (a name or value is followed by a NUL that its
//! length does not count):
//!
//! ```text
//! count: u32 LE | (name_len: u32 LE, value_len: u32 LE) * count | (name \0 value \0) * count
//! ```

use crate::codec::Metadata;

/// Serializes fields for `proxy_set_header_map_pairs` and local replies.
pub fn serialize_map(fields: &Metadata) -> Vec<u8> {
    HeaderPairs::from_metadata(fields).bytes
}

/// A header map as `proxy_get_header_map_pairs` returns it, read in place:
/// looking a field up allocates nothing. Parsing every field into owned
/// strings cost Envoy's worker about 1.5 µs per map read, as much as the
/// read itself (docs/benchmarks.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPairs {
    bytes: Vec<u8>,
    count: usize,
}

impl HeaderPairs {
    /// Checks the layout once, so that [`HeaderPairs::iter`] cannot fail;
    /// `None` if malformed.
    pub fn parse(bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let count = read_u32(&bytes, 0)?;
        let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
        for index in 0..count {
            let name_len = read_u32(&bytes, 4 + index * 8)?;
            let value_len = read_u32(&bytes, 8 + index * 8)?;
            data = data
                .checked_add(name_len)?
                .checked_add(value_len)?
                .checked_add(2)?;
        }
        (data <= bytes.len()).then_some(Self { bytes, count })
    }

    /// Every field, duplicates included, in order: (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut data = 4 + self.count * 8;
        (0..self.count).map(move |index| {
            let length = |at| read_u32(&self.bytes, at).unwrap_or(0);
            let (name_len, value_len) = (length(4 + index * 8), length(8 + index * 8));
            let name = &self.bytes[data..data + name_len];
            let value = &self.bytes[data + name_len + 1..data + name_len + 1 + value_len];
            data += name_len + value_len + 2;
            (name, value)
        })
    }

    /// The first value of `name` (lowercase). A call reads a dozen maps'
    /// fields this way: it compares lengths before bytes and slices the
    /// data only for a match.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        let mut data = 4 + self.count * 8;
        for index in 0..self.count {
            let name_len = read_u32(&self.bytes, 4 + index * 8)?;
            let value_len = read_u32(&self.bytes, 8 + index * 8)?;
            if name_len == name.len() && self.bytes.get(data..data + name_len)? == name {
                let value = data + name_len + 1;
                return self.bytes.get(value..value + value_len);
            }
            data += name_len + value_len + 2;
        }
        None
    }

    /// Owned fields, for a map the module goes on to change.
    pub fn to_metadata(&self) -> Metadata {
        Metadata(
            self.iter()
                .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.to_vec()))
                .collect(),
        )
    }

    /// From (name, value) pairs, as a host that hands out fields one by one
    /// reads them (the native host).
    pub fn from_pairs<'a>(
        pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Self {
        let count = pairs.len();
        let size: usize = pairs.clone().map(|(n, v)| 8 + n.len() + v.len() + 2).sum();
        let mut bytes = Vec::with_capacity(4 + size);
        bytes.extend_from_slice(&(count as u32).to_le_bytes());
        for (name, value) in pairs.clone() {
            bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(value);
            bytes.push(0);
        }
        Self { bytes, count }
    }

    pub fn from_metadata(fields: &Metadata) -> Self {
        Self::from_pairs(
            fields
                .0
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_slice())),
        )
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trips_fields_with_binary_values_and_duplicates() {
        let fields = Metadata(vec![
            (":status".into(), b"200".to_vec()),
            ("x-dup".into(), b"1".to_vec()),
            ("x-dup".into(), vec![0xff, 0x00, 0x80]),
            ("empty".into(), vec![]),
        ]);
        let pairs = HeaderPairs::parse(serialize_map(&fields)).unwrap();
        assert_eq!(pairs.to_metadata(), fields);
        assert_eq!(pairs, HeaderPairs::from_metadata(&fields));
        assert_eq!(pairs.get("x-dup"), Some(&b"1"[..]));
        assert_eq!(pairs.get("empty"), Some(&b""[..]));
        assert_eq!(pairs.get("absent"), None);
    }

    #[rustfmt::skip]
    #[test]
    fn matches_the_abi_layout() {
        let fields = Metadata(vec![("a".into(), b"bc".to_vec())]);
        assert_eq!(serialize_map(&fields), [
            1, 0, 0, 0,              // one pair
            1, 0, 0, 0, 2, 0, 0, 0,  // name length 1, value length 2
            b'a', 0, b'b', b'c', 0,  // "a\0bc\0"
        ]);
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        let parse = |bytes: &[u8]| HeaderPairs::parse(bytes.to_vec());
        assert_eq!(parse(&[5, 0, 0, 0, 1]), None);
        assert_eq!(parse(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a']), None);
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0xff]), None);
        // Lengths whose sum overflows.
        let mut huge = vec![1, 0, 0, 0];
        huge.extend([0xff; 8]);
        assert_eq!(parse(&huge), None);
    }

    #[test]
    fn every_truncation_of_a_valid_map_is_refused() {
        let fields = Metadata(vec![
            ("content-type".into(), b"application/grpc".to_vec()),
            ("x".into(), vec![]),
        ]);
        let bytes = serialize_map(&fields);
        for len in 1..bytes.len() {
            assert_eq!(HeaderPairs::parse(bytes[..len].to_vec()), None, "{len}");
        }
    }
}
