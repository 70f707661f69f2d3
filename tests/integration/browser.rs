//! The dashboard (`/ui`) in a real browser: Debian's `chromium`, headless,
//! driven through `chromedriver` (WebDriver) against the real `icarus serve`
//! binary with the reference agents on the real Docker engine. Each test
//! writes screenshots of the pages it saw under the target directory
//! (`browser-screenshots/`, not committed), for a person to look at.
//!
//! `scripts/test` installs the browser and its driver when they are missing;
//! where neither can be found (a machine without them, outside
//! `scripts/test`) each test says so and passes without running.

mod webdriver;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::git::Remote;
use crate::process::Process;
use crate::support::eventually;
use webdriver::Browser;

const APPROVER: &str = "approver-ann-0123456789";
const VIEWER: &str = "viewer-vic-0123456789";

/// A server, a browser on it, and where the screenshots go.
struct Ui {
    process: Process,
    browser: Browser,
    test: &'static str,
}

impl Ui {
    /// `None` (having said why) when no browser is installed.
    async fn open(test: &'static str, settings: &[(&str, &str)]) -> Option<Ui> {
        let Some((chromium, driver)) = webdriver::installed() else {
            eprintln!(
                "SKIPPED browser::{test}: chromium and chromedriver were not found \
                 (scripts/test installs them: apt-get install chromium chromium-driver)"
            );
            return None;
        };
        crate::docker::ensure_agent_images().await;
        let process = Process::start_with(settings).await;
        let browser = Browser::start(&chromium, &driver, 1280, 900).await;
        Some(Ui {
            process,
            browser,
            test,
        })
    }

    fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    /// Saves the window as `<test>-<page>.png`.
    async fn screenshot(&self, page: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{page}.png", self.test));
        self.browser.screenshot(&path).await;
    }

    /// No script error or policy violation was logged (refused requests,
    /// which the page shows, aside).
    async fn assert_no_script_errors(&self) {
        let errors: Vec<String> = self
            .browser
            .console_errors()
            .await
            .into_iter()
            .filter(|e| !e.contains("Failed to load resource"))
            .collect();
        assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    }

    /// Waits until the page shows the job at `phase` (its badge).
    async fn see_phase(&self, phase: &str) {
        let label = phase.replace('_', " ");
        self.browser
            .find_text(".job-head .badge", &label)
            .await;
    }

    /// The page's window is no wider than the viewport (nothing to scroll sideways).
    async fn assert_fits_its_width(&self, page: &str) {
        let sizes = self
            .browser
            .run(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                json!([]),
            )
            .await;
        assert!(
            sizes[0].as_i64() <= sizes[1].as_i64(),
            "{page} scrolls sideways: {sizes}"
        );
    }
}

/// `POST /jobs/spawn` as `token` (none: authentication off); the job's id.
async fn spawn(ui: &Ui, token: Option<&str>, body: Value) -> String {
    let mut request = ui.process.client.post(ui.url("/jobs/spawn")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 201);
    let created: Value = answer.json().await.unwrap();
    created["job_id"].as_str().unwrap().to_owned()
}

/// Waits for the job's phase through the API, as `token`.
async fn wait_for(ui: &Ui, token: Option<&str>, id: &str, phase: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let mut request = ui.process.client.get(ui.url(&format!("/jobs/{id}/status")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status: Value = request.send().await.ok()?.json().await.ok()?;
        (status["status"] == phase).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_job_submitted_from_the_form_is_followed_live_reviewed_on_its_diff_and_approved_to_its_branch()
{
    let remote = Remote::new();
    let root = PathBuf::from(remote.url()).parent().unwrap().to_owned();
    let roots = format!("[\"{}\"]", root.display());
    let settings = [("workspace.allowed_source_roots", roots.as_str())];
    let Some(ui) = Ui::open("approve", &settings).await else {
        return;
    };
    let browser = &ui.browser;

    browser.goto(&ui.url("/")).await;
    browser.find_text("#who", "anonymous").await;
    assert!(browser.url().await.ends_with("/ui"), "the root sent the browser to /ui");
    browser.find("#nav-new").await.click().await;

    browser
        .find("#task")
        .await
        .type_text("Add a greeting [builder:sleep=2]")
        .await;
    browser.find("#repository").await.type_text(&remote.url()).await;
    browser.find("#ref").await.type_text("-bad").await;
    browser.find("#submit").await.click().await;
    let error = browser.find_text("#ref-error", "source.ref").await;
    assert!(error.text().await.contains("-bad"));
    ui.screenshot("form-error").await;
    browser.find("#ref").await.clear().await;
    browser.find("#ref").await.type_text("main").await;
    browser.find("#submit").await.click().await;

    let id = browser
        .wait_for("the job's page", || async {
            let url = browser.url().await;
            let id = url.split("#/jobs/").nth(1)?.to_owned();
            (!id.is_empty()).then_some(id)
        })
        .await;
    browser
        .find_text("#terminal-title", "Live log")
        .await;
    browser
        .find_text(".lines .line .text", &format!("builder for job {id}"))
        .await;
    ui.screenshot("job-live").await;

    let review = browser.find_text("#review-link", "Review and decide").await;
    browser.find_text("#audit .summary", "files checked").await;
    browser.find_text("#timeline", "awaiting approval").await;
    ui.screenshot("job-awaiting-approval").await;
    review.click().await;

    browser.find("#file-list li").await;
    let summary = browser.find("#diff-summary").await.text().await;
    assert!(summary.contains("changed"), "{summary}");
    assert!(!browser.all(".file-status.added").await.is_empty());
    browser.find(".dl.add .code").await;
    let first_new_line = browser.find(".dl.add .ln:nth-child(2)").await.text().await;
    assert_eq!(first_new_line, "1", "an added file's lines are numbered from 1");
    browser.find_text("#bound-to", "snapshot").await;
    browser.find_text(".review-audit .summary", "files checked").await;
    ui.screenshot("review").await;

    browser.find("#comment").await.type_text("Looks right").await;
    browser.find("#approve").await.click().await;
    ui.see_phase("completed").await;
    let branch = browser.find("#published #branch").await.text().await;
    assert!(remote.tip(&branch).is_some(), "the branch {branch} is on the remote");
    browser.find_text("#decision", "Looks right").await;
    ui.screenshot("job-completed").await;

    browser.goto(&ui.url("/ui#/jobs")).await;
    let row = browser
        .find_text(&format!("tr[data-job=\"{id}\"]"), "completed")
        .await;
    assert!(row.text().await.contains("anonymous"));
    ui.screenshot("jobs").await;
    browser.resize(375, 800).await;
    browser.find_text("#list-status", "shown").await;
    ui.assert_fits_its_width("the list at 375 px").await;
    ui.screenshot("jobs-375px").await;
    browser.goto(&ui.url(&format!("/ui#/jobs/{id}/review"))).await;
    browser.find("#file-list li").await;
    ui.assert_fits_its_width("the review at 375 px").await;
    ui.screenshot("review-375px").await;
    ui.assert_no_script_errors().await;
}

#[tokio::test]
async fn a_reviewer_rejects_with_a_comment_and_the_job_shows_the_rejection() {
    let Some(ui) = Ui::open("reject", &[]).await else {
        return;
    };
    let browser = &ui.browser;
    let id = spawn(&ui, None, json!({"task": "Write a poem"})).await;
    wait_for(&ui, None, &id, "awaiting_approval").await;

    browser.goto(&ui.url(&format!("/ui#/jobs/{id}/review"))).await;
    browser.find("#file-list li").await;
    browser.find("#reject").await.click().await;
    browser.find_text("#decision-error", "why").await;
    browser
        .find("#comment")
        .await
        .type_text("Not what was asked for")
        .await;
    browser.find("#reject").await.click().await;

    ui.see_phase("rejected").await;
    browser
        .find_text("#decision", "Rejected by anonymous")
        .await;
    browser
        .find_text("#decision", "Not what was asked for")
        .await;
    ui.screenshot("job-rejected").await;
    ui.assert_no_script_errors().await;
}

#[tokio::test]
async fn a_viewer_signs_in_once_follows_a_job_and_cannot_approve_submit_or_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let entry = |name: &str, role: &str, secret: &str| {
        let token = crate::support::token(name, icarus::config::AccessRole::Viewer, secret);
        format!("  - {{name: {name}, role: {role}, sha256: {}}}\n", token.sha256)
    };
    let listing = format!(
        "tokens:\n{}{}",
        entry("ann", "approver", APPROVER),
        entry("vic", "viewer", VIEWER)
    );
    std::fs::write(&tokens, listing).unwrap();
    let file = tokens.display().to_string();
    let settings = [("auth.enabled", "true"), ("auth.tokens_file", file.as_str())];
    let Some(ui) = Ui::open("viewer", &settings).await else {
        return;
    };
    let browser = &ui.browser;
    let id = spawn(&ui, Some(APPROVER), json!({"task": "Tidy the README [builder:sleep=3]"})).await;

    browser.goto(&ui.url("/ui")).await;
    browser.find("#login-token").await.type_text("a-guess").await;
    browser.find("#login button[type=submit]").await.click().await;
    browser.find_text("#login-error", "not valid").await;
    ui.screenshot("sign-in-refused").await;
    browser.find("#login-token").await.type_text(VIEWER).await;
    browser.find("#login button[type=submit]").await.click().await;
    browser.find_text("#who", "vic").await;
    browser.find_text("#who .role", "viewer").await;
    let hidden = browser
        .run("return document.getElementById('nav-new').hidden;", json!([]))
        .await;
    assert_eq!(hidden, true, "a viewer is not offered the form");

    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    browser
        .find_text(".lines .line .text", &format!("builder for job {id}"))
        .await;
    assert!(browser.all("#cancel").await.is_empty(), "a viewer cannot cancel");
    wait_for(&ui, Some(VIEWER), &id, "awaiting_approval").await;
    browser.find("#review-link").await.click().await;
    browser.find("#file-list li").await;
    browser.find_text("#cannot-decide", "approver role").await;
    assert!(browser.all("#approve").await.is_empty(), "a viewer cannot approve");
    ui.screenshot("review-as-viewer").await;

    browser.goto(&ui.url("/ui#/new")).await;
    browser.find_text(".notice", "needs the submitter role").await;
    let stored = browser
        .run("return sessionStorage.length;", json!([]))
        .await;
    assert_eq!(stored, 1, "the token is kept for this tab");
    assert!(!browser.url().await.contains(VIEWER), "no token in the address");
    ui.assert_no_script_errors().await;
}

#[tokio::test]
async fn a_failed_job_shows_its_reason_and_message_and_its_markup_stays_text() {
    let Some(ui) = Ui::open("failed", &[]).await else {
        return;
    };
    let browser = &ui.browser;
    let task = "<img src=x onerror=\"document.title='pwned'\"><b id=\"pwned\">bold</b> [builder:fail]";
    let id = spawn(&ui, None, json!({"task": task})).await;
    let failed = wait_for(&ui, None, &id, "failed").await;

    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    let failure = browser.find("#failure").await.text().await;
    assert!(failure.contains(failed["reason"].as_str().unwrap()), "{failure}");
    assert!(failure.contains("builder was asked to fail"), "{failure}");
    browser.find_text("h1", "<b id=\"pwned\">bold</b>").await;
    ui.screenshot("job-failed").await;

    browser.goto(&ui.url("/ui#/jobs?status=failed")).await;
    browser.find_text(".task-link", "<img src=x").await;
    let injected = browser
        .run(
            "return [document.getElementById('pwned') !== null, document.title, document.images.length];",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!([false, "Jobs · Icarus", 0]), "the task was shown as markup");
    ui.screenshot("jobs-failed-filter").await;
    ui.assert_no_script_errors().await;
}
