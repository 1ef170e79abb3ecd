//! Attachments: which types chatd accepts, and what a file's bytes say it is.
//!
//! The type is sniffed from the bytes, never trusted from a header: images (PNG, JPEG, GIF,
//! WebP) and PDF by their signatures, text as valid UTF-8 without NUL (its declared `text/*`
//! subtype is kept, e.g. `text/markdown`; anything else is `text/plain`). Everything else is
//! refused.

/// Standard, padded base64 that also takes non-canonical trailing bits (as most encoders
/// and decoders do): what `data` parts are read with.
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The image types models accept.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// What the bytes are, or `None` when chatd does not accept them. `declared` is the type the
/// client named (a header or a part's `media_type`); only a `text/*` subtype is taken from it.
pub fn sniff(bytes: &[u8], declared: Option<&str>) -> Option<String> {
    let signature = |prefix: &[u8]| bytes.starts_with(prefix);
    if signature(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png".into());
    }
    if signature(b"\xff\xd8\xff") {
        return Some("image/jpeg".into());
    }
    if signature(b"GIF87a") || signature(b"GIF89a") {
        return Some("image/gif".into());
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp".into());
    }
    if signature(b"%PDF-") {
        return Some("application/pdf".into());
    }
    if !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok() {
        let declared = declared
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|value| {
                value.starts_with("text/")
                    && value.len() <= 64
                    && value[5..]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && value.len() > 5
            });
        return Some(declared.unwrap_or_else(|| "text/plain".into()));
    }
    None
}

pub fn is_image(media_type: &str) -> bool {
    IMAGE_TYPES.contains(&media_type)
}

/// The sentence of a 415: what chatd accepts.
pub const ACCEPTED: &str =
    "images (PNG, JPEG, GIF, WebP), PDF and UTF-8 text; the type is read from the bytes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\nrest", Some("text/plain")).as_deref(),
            Some("image/png")
        );
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0", None).as_deref(),
            Some("image/jpeg")
        );
        assert_eq!(sniff(b"GIF89a....", None).as_deref(), Some("image/gif"));
        assert_eq!(
            sniff(b"RIFF\0\0\0\0WEBPVP8 ", None).as_deref(),
            Some("image/webp")
        );
        assert_eq!(
            sniff(b"%PDF-1.7\n", None).as_deref(),
            Some("application/pdf")
        );
        assert_eq!(
            sniff("# Title\n".as_bytes(), Some("text/markdown; charset=utf-8")).as_deref(),
            Some("text/markdown")
        );
        assert_eq!(
            sniff(b"plain words", Some("image/png")).as_deref(),
            Some("text/plain"),
            "a header does not make text an image"
        );
        assert_eq!(
            sniff(b"x", Some("text/../evil")).as_deref(),
            Some("text/plain")
        );
        assert_eq!(sniff(b"\0\x01\x02binary", Some("text/plain")), None);
        assert_eq!(sniff(&[0xc3, 0x28], None), None, "not UTF-8");
        assert!(is_image("image/webp") && !is_image("application/pdf"));
    }
}
