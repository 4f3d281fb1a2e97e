//! The marker the edge puts on each request it converts, so the origin
//! converts back only those. Pure: no proxy-wasm inside.
//!
//! Signed (the default), one header value:
//!
//! ```text
//! v1.<key id>.<unix seconds>.<hex HMAC-SHA256(key, "v1\n<key id>\n<seconds>\n<method>\n<path>")>
//! ```
//!
//! The origin accepts it only if the key id is one of its keys, the time is
//! within `max_age_s` of its own clock (either way), and the MAC matches
//! this request's method and path. So a marker seen on the internal hop
//! cannot be replayed after `max_age_s`, nor on another method or path, nor
//! under a key that was retired; keys rotate without downtime by adding the
//! new key to every origin before any edge signs with it. Within the window
//! the same request line can be replayed: the window bounds that.
//!
//! The legacy mode sends one static secret (compared in constant time).

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Why a marker was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Present but empty.
    Empty,
    /// More than one marker header on the request.
    Duplicate,
    /// Not `v1.<id>.<seconds>.<hex>`.
    Malformed,
    /// A key id this origin does not hold (never had, or retired).
    UnknownKey,
    /// Signed more than `max_age_s` away from now.
    Expired,
    /// The MAC does not match this request (tampered, or another request's).
    BadSignature,
    /// Static mode: not the secret.
    WrongSecret,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Empty => "is empty",
            Refusal::Duplicate => "appears more than once",
            Refusal::Malformed => "is malformed",
            Refusal::UnknownKey => "names a key this origin does not accept",
            Refusal::Expired => "is outside its time window",
            Refusal::BadSignature => "does not match the request",
            Refusal::WrongSecret => "has a wrong secret",
        })
    }
}

/// What the request is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    /// Seconds since the Unix epoch, on this proxy's clock.
    pub now_s: u64,
}

/// The MAC of a marker's fields. HMAC takes keys of any length, so this is
/// `None` only in theory.
fn mac(key: &[u8], key_id: &str, seconds: &str, request: &Request) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for part in [
        VERSION.as_bytes(),
        key_id.as_bytes(),
        seconds.as_bytes(),
        request.method,
        request.path,
    ] {
        mac.update(part);
        mac.update(b"\n");
    }
    Some(mac)
}

/// The marker for `request`, signed with `key` under `key_id`.
pub fn sign(key_id: &str, key: &[u8], request: &Request) -> Option<String> {
    let seconds = request.now_s.to_string();
    let tag = mac(key, key_id, &seconds, request)?.finalize().into_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = format!("{VERSION}.{key_id}.{seconds}.");
    for byte in tag {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Some(out)
}

/// Checks a signed marker (`key` looks up an accepted key by its id);
/// returns the second it was signed at.
pub fn verify<'k>(
    value: &[u8],
    key: impl Fn(&str) -> Option<&'k [u8]>,
    max_age_s: u64,
    request: &Request,
) -> Result<u64, Refusal> {
    if value.is_empty() {
        return Err(Refusal::Empty);
    }
    let text = std::str::from_utf8(value).map_err(|_| Refusal::Malformed)?;
    let mut parts = text.split('.');
    let (Some(VERSION), Some(key_id), Some(seconds), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Refusal::Malformed);
    };
    let signed_at: u64 = match seconds.len() {
        1..=12 if seconds.bytes().all(|b| b.is_ascii_digit()) => {
            seconds.parse().map_err(|_| Refusal::Malformed)?
        }
        _ => return Err(Refusal::Malformed),
    };
    let tag = decode_hex(tag).ok_or(Refusal::Malformed)?;
    let key = key(key_id).ok_or(Refusal::UnknownKey)?;
    if signed_at.abs_diff(request.now_s) > max_age_s {
        return Err(Refusal::Expired);
    }
    mac(key, key_id, seconds, request)
        .ok_or(Refusal::BadSignature)?
        .verify_slice(&tag)
        .map_err(|_| Refusal::BadSignature)?;
    Ok(signed_at)
}

/// Most entries a cache below keeps (a worker's distinct calls per second).
const CACHE_ENTRIES: usize = 4096;

/// `<key id or marker>\0<method>\0<path>`: what a marker is bound to.
fn cache_key(first: &[u8], request: &Request) -> Vec<u8> {
    [first, request.method, request.path].join(&0)
}

/// The edge's markers of the current second. A marker is a function of
/// the key, the method, the path and the second, so within a second each
/// (key, method, path) is signed once.
#[derive(Debug, Default)]
pub struct SignCache {
    second: u64,
    markers: HashMap<Vec<u8>, String>,
}

impl SignCache {
    pub fn sign(&mut self, key_id: &str, key: &[u8], request: &Request) -> Option<String> {
        if request.now_s != self.second || self.markers.len() >= CACHE_ENTRIES {
            self.markers.clear();
            self.second = request.now_s;
        }
        let cache_key = cache_key(key_id.as_bytes(), request);
        if let Some(marker) = self.markers.get(&cache_key) {
            return Some(marker.clone());
        }
        let marker = sign(key_id, key, request)?;
        self.markers.insert(cache_key, marker.clone());
        Some(marker)
    }
}

/// Markers the origin has verified, by (marker, method, path), with the
/// second each was signed at. A hit is still checked against the window
/// and the accepted keys, so a cached marker expires and a retired key
/// stops working exactly as without the cache.
#[derive(Debug, Default)]
pub struct VerifyCache {
    verified: HashMap<Vec<u8>, u64>,
}

impl VerifyCache {
    pub fn verify<'k>(
        &mut self,
        value: &[u8],
        key: impl Fn(&str) -> Option<&'k [u8]>,
        max_age_s: u64,
        request: &Request,
    ) -> Result<(), Refusal> {
        let cache_key = cache_key(value, request);
        let fresh = |signed_at: u64| signed_at.abs_diff(request.now_s) <= max_age_s;
        if let Some(&signed_at) = self.verified.get(&cache_key) {
            let key_id = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.split('.').nth(1));
            match key_id.and_then(&key) {
                Some(_) if fresh(signed_at) => return Ok(()),
                _ => {
                    self.verified.remove(&cache_key);
                }
            }
        }
        let signed_at = verify(value, key, max_age_s, request)?;
        if self.verified.len() >= CACHE_ENTRIES {
            self.verified.retain(|_, signed_at| fresh(*signed_at));
            if self.verified.len() >= CACHE_ENTRIES {
                self.verified.clear();
            }
        }
        self.verified.insert(cache_key, signed_at);
        Ok(())
    }
}

/// Checks a static-secret marker, in constant time.
pub fn verify_static(value: &[u8], secret: &[u8]) -> Result<(), Refusal> {
    match value {
        [] => Err(Refusal::Empty),
        _ if bool::from(value.ct_eq(secret)) => Ok(()),
        _ => Err(Refusal::WrongSecret),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_800_000_000;

    fn check<'k>(
        value: &[u8],
        key: impl Fn(&str) -> Option<&'k [u8]>,
        max_age_s: u64,
        request: &Request,
    ) -> Result<(), Refusal> {
        verify(value, key, max_age_s, request).map(drop)
    }

    const KEYS: [(&str, &[u8]); 2] = [
        ("old", b"old-key-old-key-old-key-old-key!"),
        ("new", b"new-key-new-key-new-key-new-key!"),
    ];

    fn keys(id: &str) -> Option<&'static [u8]> {
        KEYS.iter().find(|(k, _)| *k == id).map(|(_, key)| *key)
    }

    fn request(path: &'static str, now_s: u64) -> Request<'static> {
        Request {
            method: b"POST",
            path: path.as_bytes(),
            now_s,
        }
    }

    fn signed(key_id: &str, at: u64) -> String {
        sign(key_id, keys(key_id).unwrap(), &request("/svc/Method", at)).unwrap()
    }

    #[test]
    fn a_fresh_marker_for_this_request_under_any_accepted_key_passes() {
        for key_id in ["old", "new"] {
            let marker = signed(key_id, NOW);
            assert!(
                marker.starts_with(&format!("v1.{key_id}.{NOW}.")),
                "{marker}"
            );
            assert_eq!(
                check(
                    marker.as_bytes(),
                    keys,
                    30,
                    &request("/svc/Method", NOW + 30)
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn replay_outside_the_window_is_expired_either_way() {
        let marker = signed("new", NOW);
        for now in [NOW + 31, NOW - 31, NOW + 86_400] {
            assert_eq!(
                check(marker.as_bytes(), keys, 30, &request("/svc/Method", now)),
                Err(Refusal::Expired)
            );
        }
    }

    #[test]
    fn another_path_method_or_time_does_not_match() {
        let marker = signed("new", NOW);
        assert_eq!(
            check(marker.as_bytes(), keys, 30, &request("/svc/Other", NOW)),
            Err(Refusal::BadSignature)
        );
        let get = Request {
            method: b"GET",
            ..request("/svc/Method", NOW)
        };
        assert_eq!(
            check(marker.as_bytes(), keys, 30, &get),
            Err(Refusal::BadSignature)
        );
        let moved = marker.replace(&format!(".{NOW}."), &format!(".{}.", NOW + 1));
        assert_eq!(
            check(moved.as_bytes(), keys, 30, &request("/svc/Method", NOW)),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_retired_key_is_refused() {
        let marker = signed("old", NOW);
        let only_new = |id: &str| keys(id).filter(|_| id == "new");
        assert_eq!(
            check(
                marker.as_bytes(),
                only_new,
                30,
                &request("/svc/Method", NOW)
            ),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn malformed_and_empty_markers_are_refused() {
        let good = signed("new", NOW);
        let cases = [
            ("".to_string(), Refusal::Empty),
            ("the-old-static-secret".into(), Refusal::Malformed),
            (good.replacen("v1.", "v2.", 1), Refusal::Malformed),
            (format!("{good}.extra"), Refusal::Malformed),
            (good[..good.len() - 2].to_string(), Refusal::Malformed),
            (good.replacen(&NOW.to_string(), "-1", 1), Refusal::Malformed),
            (format!("{}zz", &good[..good.len() - 2]), Refusal::Malformed),
        ];
        for (marker, refusal) in cases {
            assert_eq!(
                check(marker.as_bytes(), keys, 30, &request("/svc/Method", NOW)),
                Err(refusal),
                "{marker:?}"
            );
        }
    }

    #[test]
    fn caches_give_the_same_answers_as_the_plain_functions() {
        let mut signer = SignCache::default();
        let at = request("/svc/Method", NOW);
        let first = signer.sign("new", keys("new").unwrap(), &at).unwrap();
        assert_eq!(first, signed("new", NOW));
        assert_eq!(
            signer.sign("new", keys("new").unwrap(), &at).unwrap(),
            first
        );
        let later = signer
            .sign(
                "new",
                keys("new").unwrap(),
                &request("/svc/Method", NOW + 1),
            )
            .unwrap();
        assert_eq!(later, signed("new", NOW + 1));

        let mut cache = VerifyCache::default();
        let marker = first.as_bytes();
        assert_eq!(cache.verify(marker, keys, 30, &at), Ok(()));
        assert_eq!(cache.verify(marker, keys, 30, &at), Ok(()));
        // A cached marker still binds its path, expires, and dies with its key.
        let other = request("/svc/Other", NOW);
        assert_eq!(
            cache.verify(marker, keys, 30, &other),
            Err(Refusal::BadSignature)
        );
        let late = request("/svc/Method", NOW + 31);
        assert_eq!(cache.verify(marker, keys, 30, &late), Err(Refusal::Expired));
        assert_eq!(cache.verify(marker, keys, 30, &at), Ok(()));
        let only_old = |id: &str| keys(id).filter(|_| id == "old");
        assert_eq!(
            cache.verify(marker, only_old, 30, &at),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn static_secret_must_match_in_length_and_every_byte() {
        assert_eq!(verify_static(b"s3cret-s3cret", b"s3cret-s3cret"), Ok(()));
        for wrong in [&b"s3cret-s3creT"[..], b"s3cret", b"s3cret-s3cret-and-more"] {
            assert_eq!(
                verify_static(wrong, b"s3cret-s3cret"),
                Err(Refusal::WrongSecret)
            );
        }
        assert_eq!(verify_static(b"", b"s3cret-s3cret"), Err(Refusal::Empty));
    }
}
