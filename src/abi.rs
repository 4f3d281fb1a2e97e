//! The proxy-wasm ABI's header-map wire format, kept free of hostcalls so
//! it is tested natively:
//!
//! ```text
//! count: u32 LE | (name_len: u32 LE, value_len: u32 LE) * count | (name \0 value \0) * count
//! ```

use crate::codec::Metadata;

/// Serializes fields for `proxy_set_header_map_pairs` and local replies.
pub fn serialize_map(fields: &Metadata) -> Vec<u8> {
    let size: usize = fields.iter().map(|(n, v)| 8 + n.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(fields.0.len() as u32).to_le_bytes());
    for (name, value) in fields.iter() {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in fields.iter() {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Parses what `proxy_get_header_map_pairs` returns; `None` if malformed.
pub fn deserialize_map(bytes: &[u8]) -> Option<Metadata> {
    let read_u32 = |at: usize| -> Option<usize> {
        let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(word) as usize)
    };
    if bytes.is_empty() {
        return Some(Metadata::default());
    }
    let count = read_u32(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut fields = Metadata(Vec::with_capacity(count.min(256)));
    for index in 0..count {
        let name_len = read_u32(4 + index * 8)?;
        let value_len = read_u32(8 + index * 8)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data += name_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len + 1;
        fields
            .0
            .push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Some(fields)
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
        assert_eq!(deserialize_map(&serialize_map(&fields)), Some(fields));
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
        assert_eq!(deserialize_map(&[5, 0, 0, 0, 1]), None);
        assert_eq!(
            deserialize_map(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a']),
            None
        );
        assert_eq!(deserialize_map(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
