//! The web console: the files under `console/`, embedded in the binary at build time and served
//! at `/console/` with a strong ETag, revalidation (`no-cache` + 304) and a strict CSP. The
//! console reads and changes state only through the admin JSON API, with the bearer token the
//! user types in; these files need no token.

use super::ApiError;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Only the console's own files run: no inline script, no other origin, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: HeaderValue,
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        (
            $path,
            $content_type,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path)) as &[u8],
        )
    };
}

/// Every file of the console, by path under `/console/`.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    [
        asset!("index.html", "text/html; charset=utf-8"),
        asset!("style.css", "text/css; charset=utf-8"),
        asset!("app.js", "text/javascript; charset=utf-8"),
        asset!("api.js", "text/javascript; charset=utf-8"),
        asset!("format.js", "text/javascript; charset=utf-8"),
        asset!("board.js", "text/javascript; charset=utf-8"),
        asset!("compare.js", "text/javascript; charset=utf-8"),
        asset!("deploy.js", "text/javascript; charset=utf-8"),
        asset!("monitor.js", "text/javascript; charset=utf-8"),
        asset!(
            "vendor/htm-preact-standalone-3.1.1.mjs",
            "text/javascript; charset=utf-8"
        ),
        asset!(
            "vendor/uplot-1.6.32.iife.min.js",
            "text/javascript; charset=utf-8"
        ),
        asset!("vendor/uplot-1.6.32.min.css", "text/css; charset=utf-8"),
        asset!("vendor/LICENSES.md", "text/markdown; charset=utf-8"),
    ]
    .into_iter()
    .map(|(path, content_type, bytes)| Asset {
        path,
        content_type,
        bytes,
        etag: strong_etag(bytes),
    })
    .collect()
});

/// `"` + the first 16 bytes of the SHA-256 of the file, in hex + `"`.
fn strong_etag(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The console's routes: `/console` redirects to `/console/`, which is the page.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Result<Response, ApiError> {
    serve("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return Err(ApiError::NoRoute {
            method: "GET".into(),
            path: format!("/console/{path}"),
        });
    };
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == asset.etag.as_bytes());
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_embedded_with_a_distinct_strong_etag() {
        let tags: std::collections::HashSet<_> =
            ASSETS.iter().map(|asset| asset.etag.clone()).collect();
        assert_eq!(tags.len(), ASSETS.len());
        for asset in ASSETS.iter() {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.path);
            let tag = asset.etag.to_str().unwrap_or_default();
            assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        }
    }

    #[test]
    fn the_page_loads_only_its_own_scripts() {
        let index = ASSETS
            .iter()
            .find(|asset| asset.path == "index.html")
            .map(|asset| String::from_utf8_lossy(asset.bytes).into_owned())
            .unwrap_or_default();
        assert!(index.contains(r#"<script type="module" src="app.js"></script>"#));
        assert!(index.contains(r#"<script src="vendor/uplot-1.6.32.iife.min.js"></script>"#));
        assert_eq!(index.matches("<script").count(), 2, "no inline script");
    }
}
