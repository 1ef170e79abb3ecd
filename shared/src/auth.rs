//! API tokens: `chatd_<prefix>_<secret>`. The prefix (public, unique) finds the row; only
//! `sha256(secret)` is stored, compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A freshly minted token: show `token` once, store `prefix` and `secret_hash`.
pub struct MintedToken {
    pub token: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
}

pub fn mint_token() -> MintedToken {
    let mut prefix_bytes = [0u8; 6];
    let mut secret_bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut prefix_bytes);
    rand::thread_rng().fill_bytes(&mut secret_bytes);
    let prefix = hex::encode(prefix_bytes);
    let secret = hex::encode(secret_bytes);
    MintedToken {
        token: format!("chatd_{prefix}_{secret}"),
        secret_hash: hash_secret(&secret),
        prefix,
    }
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Splits a presented token into `(prefix, secret)`; `None` when it is not shaped like one.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("chatd_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let is_hex = |text: &str| text.bytes().all(|byte| byte.is_ascii_hexdigit());
    if prefix.len() == 12 && secret.len() == 48 && is_hex(prefix) && is_hex(secret) {
        Some((prefix, secret))
    } else {
        None
    }
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_and_others_do_not() {
        let minted = mint_token();
        let (prefix, secret) = split_token(&minted.token).expect("well-formed");
        assert_eq!(prefix, minted.prefix);
        assert!(hashes_equal(&hash_secret(secret), &minted.secret_hash));
        assert!(!hashes_equal(&hash_secret("x"), &minted.secret_hash));
        assert!(split_token("chatd_zz_yy").is_none());
        assert!(split_token("Bearer abc").is_none());
    }
}
