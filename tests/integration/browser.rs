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
    /// `http://127.0.0.1:<port>`.
    base: String,
    http: reqwest::Client,
    browser: Browser,
    test: &'static str,
    /// The `icarus serve` process, when the test runs one.
    _process: Option<Process>,
}

impl Ui {
    /// A browser on a real `icarus serve` with `settings`; `None` (having
    /// said why) when no browser is installed.
    async fn open(test: &'static str, settings: &[(&str, &str)]) -> Option<Ui> {
        let browser = start_browser(test).await?;
        crate::docker::ensure_agent_images().await;
        let process = Process::start_with(settings).await;
        Some(Ui {
            base: process.url(""),
            http: reqwest::Client::new(),
            browser,
            test,
            _process: Some(process),
        })
    }

    /// A browser on a server whose agents the in-memory runtime plays, and
    /// a job of `task` there whose builder runs; `None` (having said why)
    /// when no browser is installed.
    async fn on_a_building_job(
        test: &'static str,
        task: &str,
    ) -> Option<(Ui, crate::support::TestServer, icarus::job::JobId)> {
        let browser = start_browser(test).await?;
        let server = crate::support::TestServer::sqlite().await;
        let ui = Ui {
            base: server.base.clone(),
            http: reqwest::Client::new(),
            browser,
            test,
            _process: None,
        };
        let id = server.spawn(task).await;
        server.wait_for_builder(id).await;
        Some((ui, server, id))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
        self.browser.find_text(".job-head .badge", &label).await;
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

/// A headless browser, or `None` (having said why) when none is installed.
async fn start_browser(test: &str) -> Option<Browser> {
    let Some((chromium, driver)) = webdriver::installed() else {
        eprintln!(
            "SKIPPED browser::{test}: chromium and chromedriver were not found \
             (scripts/test installs them: apt-get install chromium chromium-driver)"
        );
        return None;
    };
    Some(Browser::start(&chromium, &driver, 1280, 900).await)
}

/// `POST /jobs/spawn` as `token` (none: authentication off); the job's id.
async fn spawn(ui: &Ui, token: Option<&str>, body: Value) -> String {
    let mut request = ui.http.post(ui.url("/jobs/spawn")).json(&body);
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
        let mut request = ui.http.get(ui.url(&format!("/jobs/{id}/status")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status: Value = request.send().await.ok()?.json().await.ok()?;
        (status["status"] == phase).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_job_submitted_from_the_form_is_followed_live_reviewed_approved_and_published_again_to_its_branch()
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
    assert!(
        browser.url().await.ends_with("/ui"),
        "the root sent the browser to /ui"
    );
    browser.click("#nav-new").await;

    browser
        .find("#task")
        .await
        .type_text("Add a greeting [builder:sleep=2]")
        .await;
    browser
        .find("#repository")
        .await
        .type_text(&remote.url())
        .await;
    browser.find("#ref").await.type_text("-bad").await;
    browser.click("#submit").await;
    let error = browser.find_text("#ref-error", "source.ref").await;
    assert!(error.text().await.contains("-bad"));
    ui.screenshot("form-error").await;
    browser.find("#ref").await.clear().await;
    browser.find("#ref").await.type_text("main").await;
    browser.click("#submit").await;

    let id = browser
        .wait_for("the job's page", || async {
            let url = browser.url().await;
            let id = url.split("#/jobs/").nth(1)?.to_owned();
            (!id.is_empty()).then_some(id)
        })
        .await;
    browser.find_text("#terminal-title", "Live log").await;
    let height = "return document.querySelector('.lines').getBoundingClientRect().height;";
    let before = browser.run(height, json!([])).await;
    browser
        .find_text(".lines .line .text", &format!("builder for job {id}"))
        .await;
    let after = browser.run(height, json!([])).await;
    assert_eq!(
        before, after,
        "the terminal keeps its height as lines arrive"
    );
    ui.screenshot("job-live").await;

    browser.find_text("#review-link", "Review and decide").await;
    browser.find_text("#audit .summary", "files checked").await;
    browser.find_text("#timeline", "awaiting approval").await;
    ui.screenshot("job-awaiting-approval").await;
    browser.click("#review-link").await;

    browser.find("#file-list li").await;
    let summary = browser.find("#diff-summary").await.text().await;
    assert!(summary.contains("changed"), "{summary}");
    assert!(!browser.all(".file-status.added").await.is_empty());
    browser.find(".dl.add .code").await;
    let first_new_line = browser.find(".dl.add .ln:nth-child(2)").await.text().await;
    assert_eq!(
        first_new_line, "1",
        "an added file's lines are numbered from 1"
    );
    browser.find_text("#bound-to", "snapshot").await;
    browser
        .find_text(".review-audit .summary", "files checked")
        .await;
    ui.screenshot("review").await;

    browser
        .find("#comment")
        .await
        .type_text("Looks right")
        .await;
    // The first push is refused: the page says so and offers to publish again.
    remote.refuse_pushes();
    browser.click("#approve").await;
    ui.see_phase("failed").await;
    browser.find_text("#failure", "PublishFailed").await;
    ui.screenshot("job-publish-failed").await;
    remote.accept_pushes();
    browser.click("#publish").await;
    ui.see_phase("completed").await;
    let branch = browser.find("#published #branch").await.text().await;
    assert!(
        remote.tip(&branch).is_some(),
        "the branch {branch} is on the remote"
    );
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
    browser
        .goto(&ui.url(&format!("/ui#/jobs/{id}/review")))
        .await;
    browser.find("#file-list li").await;
    ui.assert_fits_its_width("the review at 375 px").await;
    ui.screenshot("review-375px").await;
    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    browser.find("#published").await;
    ui.assert_fits_its_width("the job at 375 px").await;
    ui.screenshot("job-375px").await;
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

    browser
        .goto(&ui.url(&format!("/ui#/jobs/{id}/review")))
        .await;
    browser.find("#file-list li").await;
    browser.click("#reject").await;
    browser.find_text("#decision-error", "why").await;
    browser
        .find("#comment")
        .await
        .type_text("Not what was asked for")
        .await;
    // From the top of the page, by keyboard alone, with the focus in sight.
    browser
        .run(
            "document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        )
        .await;
    let mut reached = false;
    for _ in 0..80 {
        browser.press(webdriver::TAB).await;
        let focused = browser
            .run(
                "const e = document.activeElement; \
                 return [e.id, getComputedStyle(e).outlineStyle];",
                json!([]),
            )
            .await;
        if focused[0] == "reject" {
            assert_ne!(focused[1], "none", "the focused button shows no outline");
            reached = true;
            break;
        }
    }
    assert!(reached, "the reject button cannot be reached with Tab");
    ui.screenshot("review-keyboard-focus").await;
    browser.press(webdriver::ENTER).await;

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
async fn a_viewer_follows_a_job_but_cannot_decide_submit_or_cancel_and_its_submitter_can_cancel_it()
{
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let entry = |name: &str, role: &str, secret: &str| {
        let token = crate::support::token(name, icarus::config::AccessRole::Viewer, secret);
        format!(
            "  - {{name: {name}, role: {role}, sha256: {}}}\n",
            token.sha256
        )
    };
    let listing = format!(
        "tokens:\n{}{}",
        entry("ann", "approver", APPROVER),
        entry("vic", "viewer", VIEWER)
    );
    std::fs::write(&tokens, listing).unwrap();
    let file = tokens.display().to_string();
    let settings = [
        ("auth.enabled", "true"),
        ("auth.tokens_file", file.as_str()),
    ];
    let Some(ui) = Ui::open("viewer", &settings).await else {
        return;
    };
    let browser = &ui.browser;
    let id = spawn(
        &ui,
        Some(APPROVER),
        json!({"task": "Tidy the README [builder:sleep=3]"}),
    )
    .await;

    browser.goto(&ui.url("/ui")).await;
    browser
        .find("#login-token")
        .await
        .type_text("a-guess")
        .await;
    browser.click("#login button[type=submit]").await;
    browser.find_text("#login-error", "not valid").await;
    ui.screenshot("sign-in-refused").await;
    browser.find("#login-token").await.type_text(VIEWER).await;
    browser.click("#login button[type=submit]").await;
    browser.find_text("#who", "vic").await;
    browser.find_text("#who .role", "viewer").await;
    let hidden = browser
        .run(
            "return document.getElementById('nav-new').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, true, "a viewer is not offered the form");

    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    browser
        .find_text(".lines .line .text", &format!("builder for job {id}"))
        .await;
    assert!(
        browser.all("#cancel").await.is_empty(),
        "a viewer cannot cancel"
    );
    wait_for(&ui, Some(VIEWER), &id, "awaiting_approval").await;
    browser.click("#review-link").await;
    browser.find("#file-list li").await;
    browser.find_text("#cannot-decide", "approver role").await;
    assert!(
        browser.all("#approve").await.is_empty(),
        "a viewer cannot approve"
    );
    ui.screenshot("review-as-viewer").await;

    browser.goto(&ui.url("/ui#/new")).await;
    browser
        .find_text(".notice", "needs the submitter role")
        .await;
    let stored = browser
        .run("return sessionStorage.length;", json!([]))
        .await;
    assert_eq!(stored, 1, "the token is kept for this tab");
    assert!(
        !browser.url().await.contains(VIEWER),
        "no token in the address"
    );

    // Signed out, the page asks again; the job's submitter may cancel it.
    browser.click("#who button").await;
    browser.find("#login-token").await.type_text(APPROVER).await;
    browser.click("#login button[type=submit]").await;
    browser.find_text("#who", "ann").await;
    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    browser.click("#cancel").await;
    browser.find_text("#cancel", "Really cancel?").await;
    browser.click("#cancel").await;
    ui.see_phase("cancelled").await;
    ui.screenshot("job-cancelled").await;
    ui.assert_no_script_errors().await;
}

#[tokio::test]
async fn a_failed_job_shows_its_reason_and_message_and_its_markup_stays_text() {
    let Some(ui) = Ui::open("failed", &[]).await else {
        return;
    };
    let browser = &ui.browser;
    let task =
        "<img src=x onerror=\"document.title='pwned'\"><b id=\"pwned\">bold</b> [builder:fail]";
    let id = spawn(&ui, None, json!({"task": task})).await;
    let failed = wait_for(&ui, None, &id, "failed").await;

    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    let failure = browser.find("#failure").await.text().await;
    assert!(
        failure.contains(failed["reason"].as_str().unwrap()),
        "{failure}"
    );
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
    assert_eq!(
        injected,
        json!([false, "Jobs · Icarus", 0]),
        "the task was shown as markup"
    );
    ui.screenshot("jobs-failed-filter").await;
    ui.assert_no_script_errors().await;
}

#[tokio::test]
async fn a_diff_cut_at_two_mebibytes_lists_its_files_at_once_and_draws_each_when_opened() {
    // The agents are played by the in-memory runtime: the test writes the
    // builder's work itself, more than the 2 MiB a diff keeps.
    let Some((ui, server, id)) = Ui::on_a_building_job("large-diff", "Generate a lot").await else {
        return;
    };
    let workspace = server.config.workspace.base_path.join(id.to_string());
    std::fs::create_dir_all(workspace.join("src")).unwrap();
    std::fs::write(workspace.join("assets.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
    let line = "x".repeat(80);
    for n in 0..300 {
        let text: String = (0..100).map(|i| format!("{line} {i}\n")).collect();
        std::fs::write(workspace.join(format!("src/file_{n:03}.rs")), text).unwrap();
    }
    server.pass_build_and_check(id).await;

    let browser = &ui.browser;
    let started = std::time::Instant::now();
    browser
        .goto(&ui.url(&format!("/ui#/jobs/{id}/review")))
        .await;
    browser.find("#diff-truncated").await;
    let listed = browser.all("#file-list li").await.len();
    let shown = started.elapsed();
    assert!((200..=301).contains(&listed), "{listed} files listed");
    browser.find_text("#file-list li", "binary").await;
    let drawn = browser.all(".dl").await.len();
    assert!(
        drawn < 4000,
        "{drawn} lines drawn before any file was opened"
    );
    ui.screenshot("review").await;

    let opening = std::time::Instant::now();
    let index = listed - 1;
    browser
        .click(&format!("#file-list li:nth-child({listed}) a"))
        .await;
    browser.find(&format!("#file-{index} .dl.add")).await;
    let opened = opening.elapsed();
    browser
        .find_text(&format!("#file-{index}"), "cut off")
        .await;
    ui.screenshot("review-last-file").await;
    eprintln!(
        "a 2 MiB diff of {listed} files: listed {shown:?} after navigating; its last file drawn {opened:?} after the click"
    );
    ui.assert_no_script_errors().await;
}

/// Egress is shown and governed on the job page: a destination the builder
/// was refused as unlisted is listed, and an approver allows it there.
#[tokio::test]
async fn a_pending_egress_request_is_shown_on_the_job_page_and_allowed_from_it() {
    let Some((ui, server, id)) = Ui::on_a_building_job("egress", "Needs a mirror").await else {
        return;
    };
    let now = icarus::job::timestamp_now();
    let refused = icarus::store::EgressTally {
        job: id,
        traffic: icarus::store::EgressTraffic {
            role: icarus::job::Role::Builder,
            attempt: 1,
            host: "mirror.example".to_owned(),
            port: 443,
            verdict: icarus::store::EgressVerdict::Unlisted,
            reason: Some("mirror.example:443 is not on the allow-list".to_owned()),
            connections: 1,
            bytes_sent: 0,
            bytes_received: 0,
            cut_at_budget: 0,
            first_at: now,
            last_at: now,
        },
    };
    let store = server.orchestrator.as_ref().unwrap().store();
    store.add_egress_traffic(&refused).await.unwrap();

    let browser = &ui.browser;
    browser.goto(&ui.url(&format!("/ui#/jobs/{id}"))).await;
    browser
        .find_text("#egress-requests", "mirror.example:443")
        .await;
    browser.find_text("#details", "1 refused").await;
    ui.screenshot("job-egress-request").await;
    browser.click("#egress-requests button").await;
    eventually(Duration::from_secs(10), || async {
        let (_, egress) = server.get(&format!("/jobs/{id}/egress")).await;
        (egress["allowances"][0]["rule"] == "mirror.example:443").then_some(())
    })
    .await;
    browser
        .wait_for("the request no longer pending", || async {
            let script = "return document.getElementById('egress-requests') === null;";
            (browser.run(script, json!([])).await == json!(true)).then_some(())
        })
        .await;
    ui.screenshot("job-egress-allowed").await;
    ui.assert_no_script_errors().await;
}

/// Past the newest 1,000 (what the list reads again), "Show older jobs"
/// pages on by the API's cursor, to the last job.
#[tokio::test]
async fn the_jobs_list_shows_older_jobs_past_the_first_thousand_page_by_page() {
    let Some((ui, server, _)) = Ui::on_a_building_job("older-jobs", "the newest but one").await
    else {
        return;
    };
    let store = server.orchestrator.as_ref().unwrap().store();
    let created = 1059;
    for n in 0..created {
        let mut job = crate::support::new_job(&format!("an old job {n}"));
        job.created_at -= chrono::TimeDelta::seconds(created - n);
        job.status.phase = icarus::job::Phase::Cancelled;
        store.create_job(&job).await.unwrap();
    }
    let browser = &ui.browser;
    browser.goto(&ui.url("/ui#/jobs")).await;
    let rows_reach = |count: usize| async move {
        browser
            .wait_for(&format!("{count} rows"), || async {
                let script = "return document.querySelectorAll('#job-rows tr[data-job]').length;";
                let rows = browser.run(script, json!([])).await.as_u64()? as usize;
                (rows == count).then_some(())
            })
            .await
    };
    rows_reach(50).await;
    for shown in (100..=1000).step_by(50).chain([1050, 1060]) {
        browser.click("#more").await;
        rows_reach(shown).await;
    }
    browser
        .find_text("#job-rows tr:last-child", "an old job 0")
        .await;
    let hidden = browser
        .run("return document.getElementById('more').hidden;", json!([]))
        .await;
    assert_eq!(hidden, json!(true), "nothing older to show");
    ui.screenshot("jobs-older").await;
    ui.assert_no_script_errors().await;
}
