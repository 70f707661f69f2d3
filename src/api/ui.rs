//! The review dashboard at `/ui`: hand-written HTML, CSS and JavaScript
//! modules (`assets/ui/`), compiled into the binary and served from it, so
//! there is no other server, no CDN and no build step.
//!
//! The page shows what agents wrote (tasks, logs, reports, diffs): hostile
//! text. Its scripts insert such text as text only, and every answer here
//! carries a Content-Security-Policy that allows scripts, styles and
//! connections from this origin alone and no inline script, so a string that
//! slipped into markup still could not run. Assets are answered with a
//! strong `ETag` (the SHA-256 of their bytes) and revalidated on each load,
//! so a new binary's page is never mixed with an old cached script.
//!
//! `/` sends a browser (one whose `Accept` prefers HTML) here; API clients
//! keep getting the service's JSON (`meta::root`).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Where the dashboard is.
pub const PATH: &str = "/ui";

/// Scripts, styles, images and connections from this origin only (`'self'`
/// covers the page's own WebSocket); no inline script or style, no plugin,
/// no framing, forms posting nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../assets/ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the page; anything else under `/ui/` is a 404.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("jobs.js", JS),
    asset!("new-job.js", JS),
    asset!("job.js", JS),
    asset!("terminal.js", JS),
    asset!("audit.js", JS),
    asset!("review.js", JS),
    asset!("diff.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// `/ui`, `/ui/` and `/ui/{file}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some((index, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == name) else {
        return ApiError::NotFound(format!("{PATH} has no file {name}")).into_response();
    };
    let etag = etag(index);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let content_type = [(header::CONTENT_TYPE, asset.content_type)];
        (content_type, asset.bytes).into_response()
    };
    let set = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        set.insert(header::ETAG, value);
    }
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        set.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The quoted SHA-256 of the asset at `index` in [`ASSETS`], computed once.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| format!("\"{:x}\"", Sha256::digest(asset.bytes)))
            .collect()
    });
    tags.get(index).map_or("", String::as_str)
}

/// Whether a request for `/` comes from a browser: its `Accept` names HTML
/// before (or without) JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    let position = |kind: &str| accept.find(kind);
    match (position("text/html"), position("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `303 See Other` to the dashboard.
pub fn to_dashboard() -> Response {
    Redirect::to(PATH).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_browser_asks_for_html_and_api_clients_for_json_or_anything() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(browser)));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("application/json, text/html")));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn every_asset_has_its_own_etag() {
        let tags: Vec<&str> = (0..ASSETS.len()).map(etag).collect();
        assert!(tags.iter().all(|tag| tag.len() == 66));
        let mut unique = tags.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
    }

    #[test]
    fn the_page_loads_no_inline_script_and_nothing_from_another_origin() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!html.contains("<script>"), "an inline script");
        assert!(!html.contains("style="), "an inline style");
        assert!(!html.contains("//"), "a URL of another origin");
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let code = std::str::from_utf8(asset.bytes).unwrap();
            assert!(!code.contains("innerHTML"), "{} sets innerHTML", asset.name);
            assert!(!code.contains("insertAdjacentHTML"), "{}", asset.name);
            assert!(!code.contains("eval("), "{} evaluates text", asset.name);
        }
    }
}
