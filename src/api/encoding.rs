//! Content coding for answers worth compressing: whether the client accepts
//! gzip (RFC 9110 `Accept-Encoding`), and the compression itself.
//!
//! Only kept list pages are compressed, once each (see
//! [`crate::store::view::pages`]): a dashboard's page of 1,000 rows is about
//! 350 KiB of JSON and about a ninth of that gzipped, read every few seconds
//! per tab.

use std::io::Write;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Below this a body is sent as it is: compressing would save too little.
pub const MIN_GZIP_BYTES: usize = 1024;

/// Whether `Accept-Encoding` admits gzip: `gzip` (or `x-gzip`, or `*`) with
/// a quality above zero; an explicit `gzip;q=0` refuses it whatever `*`
/// says. No header: no compression.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut named = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for coding in value.split(',') {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let accepted = parts.all(|param| !is_zero_quality(param));
            match name.as_str() {
                "gzip" | "x-gzip" => named = Some(named.unwrap_or(true) && accepted),
                "*" => any = Some(accepted),
                _ => {}
            }
        }
    }
    named.or(any).unwrap_or(false)
}

/// `q=0`, `q=0.0`, `q=0.000`: the coding is refused.
fn is_zero_quality(param: &str) -> bool {
    let Some((key, value)) = param.trim().split_once('=') else {
        return false;
    };
    key.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
}

/// `body` gzip-compressed at the default level (it is done once per page).
pub fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accepting(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn gzip_is_used_only_where_the_client_admits_it() {
        for (values, expected) in [
            (&[][..], false),
            (&["gzip"][..], true),
            (&["gzip, deflate, br"][..], true),
            (&["br;q=1.0, GZIP;q=0.5"][..], true),
            (&["x-gzip"][..], true),
            (&["*"][..], true),
            (&["identity"][..], false),
            (&["gzip;q=0"][..], false),
            (&["gzip; q=0.000"][..], false),
            (&["*, gzip;q=0"][..], false),
            (&["*;q=0"][..], false),
            (&["deflate", "gzip"][..], true),
        ] {
            assert_eq!(accepts_gzip(&accepting(values)), expected, "{values:?}");
        }
    }

    #[test]
    fn a_gzipped_body_reads_back_as_the_body() {
        use std::io::Read;
        let body = br#"[{"job_id":"a","task":"t"}]"#.repeat(100);
        let compressed = gzip(&body);
        assert!(compressed.len() < body.len() / 4);
        let mut read = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, body);
    }
}
