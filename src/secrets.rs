//! Secrets at rest: AES-256-GCM under a key ring of a current and an optional previous key.
//!
//! An encrypted value is stored as text, `enc:v1:<key id>:<base64(nonce || ciphertext)>`, with
//! a random 96-bit nonce per value and additional authenticated data naming where the value
//! lives (e.g. `tenants/<id>/auth_token`), so a value copied to another row or column does not
//! decrypt. The key id is the first 8 hex digits of the SHA-256 of the key: it tells which key
//! a value needs without revealing the key. Without a current key, values are kept as they are
//! (in clear). This module imports nothing of the app.
use std::{borrow::Cow, fmt};

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use sha2::{Digest, Sha256};

/// The prefix of every encrypted value (of this format version).
pub const PREFIX: &str = "enc:v1:";

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Bytes of a nonce.
const NONCE_LEN: usize = 12;

/// Errors of encryption at rest. No variant carries a key or a plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key that is not standard base64.
    #[error("must be standard base64 (e.g. the output of `openssl rand -base64 32`)")]
    KeyEncoding,
    /// A key of the wrong length.
    #[error("must encode {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
    /// A value encrypted with a key the ring does not hold.
    #[error("encrypted with key {0}, which is not configured")]
    UnknownKey(String),
    /// A value with the prefix that is not in the stored form.
    #[error("not a well-formed encrypted value")]
    Malformed,
    /// The value does not decrypt: tampered with, or stored for another place.
    #[error("does not decrypt with key {0}: altered, or not the value stored here")]
    Decrypt(String),
    /// Encryption needs a current key.
    #[error("no current key is configured")]
    NoKey,
}

/// The id of a key: the first 8 hex digits of its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    fn of(key: &[u8]) -> Self {
        let digest = Sha256::digest(key);
        Self([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An AES-256-GCM key and its id. `Debug` shows only the id; the key is zeroed when dropped.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl Key {
    /// A key from its 32 bytes.
    pub fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            id: KeyId::of(bytes),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }

    /// A key from standard base64 of 32 bytes (surrounding whitespace ignored). The error never
    /// holds the input.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let mut bytes = STANDARD.decode(text.trim()).map_err(|_| Error::KeyEncoding)?;
        let key = <&[u8; KEY_LEN]>::try_from(bytes.as_slice())
            .map(Self::new)
            .map_err(|_| Error::KeyLength(bytes.len()));
        bytes.fill(0);
        key
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any value under 64 GiB");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}:{}", self.id, STANDARD.encode(sealed))
    }

    fn open(&self, body: &[u8], aad: &str) -> Result<String, Error> {
        let (nonce, ciphertext) = body.split_at_checked(NONCE_LEN).ok_or(Error::Malformed)?;
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::Decrypt(self.id.to_string()))?;
        String::from_utf8(plaintext).map_err(|_| Error::Malformed)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The keys values are encrypted under (the current one) and decrypted with (the current and
/// the previous one). An empty ring keeps values in clear.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    current: Option<Key>,
    previous: Option<Key>,
}

impl Keyring {
    /// A ring of the current key and, while values are rotated to it, the previous one.
    pub fn new(current: Option<Key>, previous: Option<Key>) -> Self {
        Self { current, previous }
    }

    /// The id of the key new values are encrypted under; `None` stores them in clear.
    pub fn current_id(&self) -> Option<KeyId> {
        self.current.as_ref().map(Key::id)
    }

    /// Whether a value encrypted under key `id` can be decrypted.
    pub fn holds(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &str) -> Option<&Key> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.id.to_string() == id)
    }

    /// `plaintext` as stored for the place `aad`: encrypted under the current key, or as it is
    /// without one.
    pub fn seal<'a>(&self, plaintext: &'a str, aad: &str) -> Cow<'a, str> {
        match &self.current {
            Some(key) => Cow::Owned(key.seal(plaintext, aad)),
            None => Cow::Borrowed(plaintext),
        }
    }

    /// The plaintext of a stored value of the place `aad`: decrypted when it is encrypted, as
    /// it is when it was stored in clear.
    pub fn open<'a>(&self, stored: &'a str, aad: &str) -> Result<Cow<'a, str>, Error> {
        let Some((id, body)) = split(stored)? else {
            return Ok(Cow::Borrowed(stored));
        };
        let key = self.key(id).ok_or_else(|| Error::UnknownKey(id.to_owned()))?;
        let body = STANDARD.decode(body).map_err(|_| Error::Malformed)?;
        key.open(&body, aad).map(Cow::Owned)
    }

    /// `stored` re-encrypted under the current key, or `None` when it already is.
    pub fn reseal(&self, stored: &str, aad: &str) -> Result<Option<String>, Error> {
        let current = self.current.as_ref().ok_or(Error::NoKey)?;
        if key_id(stored) == Some(current.id.to_string().as_str()) {
            return Ok(None);
        }
        let plaintext = self.open(stored, aad)?;
        Ok(Some(current.seal(&plaintext, aad)))
    }
}

/// The id of the key a stored value is encrypted under; `None` for a value in clear.
pub fn key_id(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .map(|(id, _)| id)
}

/// Whether a stored value is encrypted (has the prefix).
pub fn is_encrypted(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key id and the base64 body of an encrypted value; `None` for a value in clear.
fn split(stored: &str) -> Result<Option<(&str, &str)>, Error> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let (id, body) = rest.split_once(':').ok_or(Error::Malformed)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Malformed);
    }
    Ok(Some((id, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &str = "tenants/t1/auth_token";

    fn key(byte: u8) -> Key {
        Key::new(&[byte; KEY_LEN])
    }

    fn ring(current: u8) -> Keyring {
        Keyring::new(Some(key(current)), None)
    }

    #[test]
    fn a_sealed_value_opens_to_the_plaintext_and_is_not_it() {
        let ring = ring(1);
        let sealed = ring.seal("0123456789abcdef", AAD).into_owned();
        assert!(
            sealed.starts_with(&format!("{PREFIX}{}:", key(1).id())),
            "{sealed}"
        );
        assert!(!sealed.contains("0123456789abcdef"));
        assert_eq!(ring.open(&sealed, AAD).unwrap(), "0123456789abcdef");
        // A fresh nonce per value: the same plaintext never looks the same twice.
        assert_ne!(ring.seal("0123456789abcdef", AAD), sealed);
        assert_eq!(ring.open(&ring.seal("", AAD), AAD).unwrap(), "");
    }

    #[test]
    fn a_wrong_key_is_named_and_never_yields_a_value() {
        let sealed = ring(1).seal("token", AAD).into_owned();
        let err = ring(2).open(&sealed, AAD).unwrap_err();
        assert_eq!(err, Error::UnknownKey(key(1).id().to_string()));
        assert!(err.to_string().contains(&key(1).id().to_string()), "{err}");
        assert_eq!(
            Keyring::default().open(&sealed, AAD).unwrap_err(),
            Error::UnknownKey(key(1).id().to_string())
        );
    }

    #[test]
    fn tampered_ciphertext_does_not_decrypt() {
        let ring = ring(1);
        let sealed = ring.seal("token", AAD).into_owned();
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(body).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let tampered = format!("{head}:{}", STANDARD.encode(&bytes));
            assert_eq!(
                ring.open(&tampered, AAD).unwrap_err(),
                Error::Decrypt(key(1).id().to_string()),
                "byte {at}"
            );
            bytes[at] ^= 1;
        }
        for malformed in [
            format!("{head}:not base64!"),
            format!("{head}:{}", STANDARD.encode([0u8; 4])),
            format!("{PREFIX}nothex!!:{body}"),
            format!("{PREFIX}{body}"),
        ] {
            assert_eq!(
                ring.open(&malformed, AAD).unwrap_err(),
                Error::Malformed,
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_value_moved_to_another_row_or_column_does_not_decrypt() {
        let ring = ring(1);
        let sealed = ring.seal("token", "tenants/t1/auth_token").into_owned();
        for elsewhere in ["tenants/t2/auth_token", "tenants/t1/shared_key"] {
            assert_eq!(
                ring.open(&sealed, elsewhere).unwrap_err(),
                Error::Decrypt(key(1).id().to_string()),
                "{elsewhere}"
            );
        }
    }

    #[test]
    fn the_previous_key_still_decrypts_and_reseal_moves_values_to_the_current_one() {
        let old = ring(1).seal("token", AAD).into_owned();
        let rotated = Keyring::new(Some(key(2)), Some(key(1)));
        assert_eq!(rotated.open(&old, AAD).unwrap(), "token");
        assert!(rotated.holds(&key(1).id().to_string()) && rotated.holds(&key(2).id().to_string()));
        let new = rotated
            .reseal(&old, AAD)
            .unwrap()
            .expect("moved to the current key");
        assert_eq!(key_id(&new), Some(key(2).id().to_string().as_str()));
        assert_eq!(ring(2).open(&new, AAD).unwrap(), "token");
        assert_eq!(rotated.reseal(&new, AAD).unwrap(), None, "already current");
        // A value in clear is encrypted; without a current key nothing is.
        let clear = rotated.reseal("token", AAD).unwrap().unwrap();
        assert_eq!(rotated.open(&clear, AAD).unwrap(), "token");
        assert_eq!(Keyring::default().reseal("token", AAD), Err(Error::NoKey));
    }

    #[test]
    fn without_a_key_values_stay_in_clear() {
        let ring = Keyring::default();
        assert_eq!(ring.current_id(), None);
        assert_eq!(ring.seal("token", AAD), "token");
        assert_eq!(ring.open("token", AAD).unwrap(), "token");
        assert!(!is_encrypted("token") && key_id("token").is_none());
    }

    #[test]
    fn the_key_id_is_the_start_of_the_keys_sha256() {
        let bytes = [7u8; KEY_LEN];
        let expected = hex::encode(&Sha256::digest(bytes)[..4]);
        assert_eq!(Key::new(&bytes).id().to_string(), expected);
        assert_eq!(expected.len(), 8);
        assert_ne!(key(1).id(), key(2).id());
        let sealed = ring(7).seal("x", AAD).into_owned();
        assert_eq!(key_id(&sealed), Some(expected.as_str()));
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_and_never_show() {
        let text = STANDARD.encode([9u8; KEY_LEN]);
        let parsed = Key::from_base64(&format!("{text}\n")).unwrap();
        assert_eq!(parsed.id(), key(9).id());
        assert!(!format!("{parsed:?}").contains(&text));
        assert_eq!(format!("{parsed:?}"), format!("Key({})", key(9).id()));
        assert_eq!(
            Key::from_base64(&STANDARD.encode([9u8; 16])).unwrap_err(),
            Error::KeyLength(16)
        );
        assert_eq!(Key::from_base64("not base64!").unwrap_err(), Error::KeyEncoding);
        let shown = format!("{:?}", Keyring::new(Some(parsed), None));
        assert!(!shown.contains(&text), "{shown}");
    }
}
