//! The dashboard's server side, over real HTTP on the in-memory runtime: the
//! page and its assets with their security headers, the root's redirect for
//! browsers, and the two small routes the page reads (`/auth/me`,
//! `/images`). The page itself is driven in a real browser in `browser`.

use icarus::config::AccessRole;
use serde_json::json;

use crate::support::{TestServer, token};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test]
async fn the_dashboard_and_its_scripts_come_with_a_policy_that_allows_no_inline_or_foreign_script()
{
    let server = TestServer::sqlite().await;
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            let value = response.headers().get(name);
            value
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-eval"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn an_asset_is_revalidated_by_its_checksum() {
    let server = TestServer::sqlite().await;
    let first = server
        .client
        .get(server.url("/ui/app.js"))
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let again = server
        .client
        .get(server.url("/ui/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let stale = server
        .client
        .get(server.url("/ui/app.js"))
        .header("if-none-match", "\"an-older-one\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
}

#[tokio::test]
async fn a_file_the_dashboard_does_not_have_is_not_found() {
    let server = TestServer::sqlite().await;
    for path in ["/ui/nope.js", "/ui/..%2FCargo.toml", "/ui/app.js.map"] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 404, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_browser_opening_the_root_is_sent_to_the_dashboard_and_api_clients_keep_the_json() {
    let server = TestServer::sqlite().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let browser = no_redirects
        .get(server.url("/"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 303);
    assert_eq!(browser.headers()["location"], "/ui");
    for accept in ["application/json", "*/*"] {
        let (code, body) = server
            .send(server.client.get(server.url("/")).header("accept", accept))
            .await;
        assert_eq!(
            (code, body["name"].as_str()),
            (200, Some("icarus")),
            "{accept}"
        );
    }
}

#[tokio::test]
async fn the_dashboard_is_not_answered_for_a_foreign_host_with_authentication_off() {
    let server = TestServer::sqlite().await;
    let request = server
        .client
        .get(server.url("/ui"))
        .header("host", "attacker.example");
    let (code, _) = server.send(request).await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn who_am_i_names_the_tokens_holder_and_role() {
    let server = TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![token("vic", AccessRole::Viewer, "viewer-secret-0123456789")];
    })
    .await;
    let (code, body) = server.get("/auth/me").await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = server.as_holder_of("a-guess").get("/auth/me").await;
    assert_eq!(code, 401, "{body}");
    let (code, me) = server
        .as_holder_of("viewer-secret-0123456789")
        .get("/auth/me")
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        me,
        json!({"name": "vic", "role": "viewer", "authentication": true})
    );
}

#[tokio::test]
async fn without_authentication_everyone_is_the_anonymous_admin() {
    let server = TestServer::sqlite().await;
    let (code, me) = server.get("/auth/me").await;
    assert_eq!(code, 200);
    assert_eq!(
        me,
        json!({"name": "anonymous", "role": "admin", "authentication": false})
    );
}

#[tokio::test]
async fn the_images_a_job_may_name_are_listed() {
    let server = TestServer::sqlite_with(|c| {
        c.agents.allowed_images = vec!["registry.example/agents/*".to_owned()];
    })
    .await;
    let (code, images) = server.get("/images").await;
    assert_eq!(code, 200);
    assert_eq!(
        images,
        json!({
            "builder": "icarus-builder:latest",
            "checker": "icarus-checker:latest",
            "allowed": ["registry.example/agents/*"],
        })
    );
}

#[tokio::test]
async fn the_job_list_says_who_submitted_each_job_and_why_a_pending_one_waits() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    let running = server.spawn("first").await;
    server.wait_for_builder(running).await;
    let queued = server.spawn("second").await;
    let listed = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let (_, jobs) = server.get("/jobs").await;
        let row = jobs
            .as_array()?
            .iter()
            .find(|j| j["job_id"] == queued.to_string())?
            .clone();
        (row["reason"] == "ConcurrencyLimit").then_some(row)
    })
    .await;
    assert_eq!(listed["status"], "pending");
    assert_eq!(listed["submitted_by"], "anonymous");
    let (_, status) = server.get(&format!("/jobs/{queued}/status")).await;
    assert_eq!(listed["reason"], status["reason"]);
}

#[tokio::test]
async fn with_authentication_on_the_page_loads_without_a_token_to_ask_for_one() {
    let server = TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![token("vic", AccessRole::Viewer, "viewer-secret-0123456789")];
    })
    .await;
    for path in ["/ui", "/ui/app.js", "/ui/api.js"] {
        let answer = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    let (code, _) = server.get("/jobs").await;
    assert_eq!(code, 401, "the API behind it still asks");
}
