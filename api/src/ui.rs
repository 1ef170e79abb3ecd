//! The web UI: plain ES modules and one stylesheet from `api/ui/`, embedded in the binary and
//! served by every API replica. It talks only to the public API, so any replica serves any
//! page and nothing needs stickiness.
//!
//! `GET /` is the page (`Cache-Control: no-cache` with an `ETag`); its assets live under
//! `/ui/<build>/…`, where `<build>` is a hash of every embedded file, so they are cached
//! `immutable` and a new binary's assets get new URLs. Every answer carries a strict
//! Content-Security-Policy: scripts, styles and requests only from this origin, images also
//! from `blob:` (attachments are fetched with the bearer token and shown as object URLs), no
//! inline script or style, no frames.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file: its path under `api/ui/` and its bytes.
struct Asset {
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, bytes: include_bytes!(concat!("../ui/", $path)) }),*]
    };
}

/// Every file of `api/ui/` (a unit test checks the list against the folder).
const ASSETS: &[Asset] = assets![
    "index.html",
    "app.css",
    "admin.css",
    "favicon.svg",
    "js/main.js",
    "js/api.js",
    "js/sse.js",
    "js/dom.js",
    "js/markdown.js",
    "js/chats.js",
    "js/chat.js",
    "js/messages.js",
    "js/composer.js",
    "js/usage.js",
    "js/admin.js",
    "js/admin_forms.js",
    "js/admin/shared.js",
    "js/admin/providers.js",
    "js/admin/models.js",
    "js/admin/users.js",
    "js/admin/limits.js",
    "js/admin/system_prompt.js",
    "js/admin/mcp.js",
    "js/admin/advisor.js",
];

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The build id (a hash of every asset) and the page with it filled in.
struct Built {
    build: String,
    index: String,
    index_etag: String,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut hash = Sha256::new();
        for asset in ASSETS {
            hash.update(asset.path.as_bytes());
            hash.update((asset.bytes.len() as u64).to_le_bytes());
            hash.update(asset.bytes);
        }
        let build = hex::encode(&hash.finalize()[..8]);
        let page = std::str::from_utf8(find("index.html").expect("index.html is embedded"))
            .expect("index.html is UTF-8");
        let index = page.replace("{{BUILD}}", &build);
        Built {
            index_etag: format!("\"{build}\""),
            build,
            index,
        }
    })
}

fn find(path: &str) -> Option<&'static [u8]> {
    ASSETS
        .iter()
        .find(|asset| asset.path == path)
        .map(|asset| asset.bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// Headers every UI answer carries.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /`: the page. Revalidated on every load (`no-cache` + `ETag`), so a new build's page,
/// naming the new asset URLs, is picked up at once.
pub async fn index(headers: HeaderMap) -> Response {
    let built = built();
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == built.index_etag));
    let response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type("index.html"))],
            built.index.clone(),
        )
            .into_response()
    };
    let mut response = secure(response);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&built.index_etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// `GET /ui/{build}/{*path}`: an asset of this build, cached for a year. Another build's URL
/// (a page loaded before a rolling upgrade, served by a newer replica) is 404 with
/// `no-store`; the page reloads itself when a module fails to load.
pub async fn asset(Path((build, path)): Path<(String, String)>) -> Response {
    let current = built();
    let found = (build == current.build)
        .then(|| find(&path))
        .flatten()
        .filter(|_| path != "index.html");
    let Some(bytes) = found else {
        let mut response = crate::error::ApiError::NotFound("asset").into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return secure(response);
    };
    secure(
        (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
    )
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says.
pub async fn favicon() -> Response {
    let bytes = find("favicon.svg").unwrap_or_default();
    secure(
        (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            bytes,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `api/ui/` is embedded, and nothing embedded is missing there.
    #[test]
    fn every_ui_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    on_disk.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_page_names_this_builds_assets() {
        let built = built();
        assert_eq!(built.build.len(), 16);
        assert!(built
            .index
            .contains(&format!("/ui/{}/js/main.js", built.build)));
        assert!(!built.index.contains("{{BUILD}}"));
    }

    /// No inline script or style anywhere: the CSP forbids them, so one would silently not run.
    #[test]
    fn no_inline_script_or_style() {
        let page = std::str::from_utf8(find("index.html").unwrap()).unwrap();
        for (at, _) in page.match_indices("<script") {
            let tag = &page[at..at + page[at..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains("style=\""), "inline style attribute");
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(
                !text.contains("innerHTML") && !text.contains("outerHTML"),
                "{} writes HTML from strings",
                asset.path
            );
            assert!(!text.contains("eval("), "{} evaluates strings", asset.path);
        }
    }
}
