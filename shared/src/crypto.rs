//! Secrets at rest (provider API keys): AES-256-GCM, stored as `nonce (12 bytes) || ciphertext`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use rand::RngCore;

/// Parses a key given as base64 (standard or URL-safe) of exactly 32 bytes.
pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .context("the encryption key must be base64")?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        anyhow::anyhow!("the encryption key must be 32 bytes, got {}", bytes.len())
    })
}

/// A new random key, base64.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

pub fn seal(key: &[u8; 32], plaintext: &str) -> anyhow::Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
        .map_err(|_| anyhow::anyhow!("encrypt the secret"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend(ciphertext);
    Ok(sealed)
}

pub fn open(key: &[u8; 32], sealed: &[u8]) -> anyhow::Result<String> {
    anyhow::ensure!(sealed.len() > 12, "sealed secret too short");
    let cipher = Aes256Gcm::new(key.into());
    let plaintext = cipher
        .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
        .map_err(|_| anyhow::anyhow!("decrypt the secret (wrong key?)"))?;
    String::from_utf8(plaintext).context("secret is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key_fails() {
        let key = parse_key(&generate_key()).unwrap();
        let sealed = seal(&key, "sk-test").unwrap();
        assert_eq!(open(&key, &sealed).unwrap(), "sk-test");
        let other = parse_key(&generate_key()).unwrap();
        assert!(open(&other, &sealed).is_err());
        assert!(parse_key("short").is_err());
    }
}
