//! A small W3C WebDriver client over reqwest, for Debian's `chromium` driven
//! by its `chromedriver`: start a headless browser, open pages, find
//! elements by CSS selector (waiting for them), click, type, read text, run
//! a script, take screenshots. Only what the dashboard's tests use; the
//! protocol is plain JSON over HTTP (<https://www.w3.org/TR/webdriver2/>).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// How long a lookup or a condition is waited for.
const WAIT: Duration = Duration::from_secs(30);
/// WebDriver's codes for the keys of those names.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs the browser and its driver (or `ICARUS_CHROMIUM`
/// and `ICARUS_CHROMEDRIVER`); `None` if either is missing.
pub fn installed() -> Option<(PathBuf, PathBuf)> {
    let find = |variable: &str, names: &[&str]| -> Option<PathBuf> {
        if let Ok(path) = std::env::var(variable) {
            return Some(PathBuf::from(path)).filter(|p| p.exists());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        names.iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    Some((
        find("ICARUS_CHROMIUM", &["chromium", "chromium-browser"])?,
        find("ICARUS_CHROMEDRIVER", &["chromedriver"])?,
    ))
}

/// One headless browser, with its driver process and profile directory.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the driver and a headless browser in a window of `width` x `height`.
    pub async fn start(binary: &Path, driver: &Path, width: u32, height: u32) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        crate::support::eventually(Duration::from_secs(20), || async {
            let ready = http.get(format!("{base}/status")).send().await.ok()?;
            let body: Value = ready.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await;
        let id = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            _profile: profile,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.send(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        let url = self.send(reqwest::Method::GET, "/url", None).await;
        url.as_str().unwrap_or_default().to_owned()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        self.send(reqwest::Method::POST, "/window/rect", Some(rect))
            .await;
    }

    /// Presses and releases `key` (a WebDriver key code such as
    /// [`TAB`] or [`ENTER`]) on whatever has the focus.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key},
        ]}]});
        self.send(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        let body = json!({"script": script, "args": args});
        self.send(reqwest::Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// The elements matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element<'_>> {
        let query = json!({"using": "css selector", "value": css});
        let found = self
            .send(reqwest::Method::POST, "/elements", Some(query))
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_owned(),
            })
            .collect()
    }

    /// The first element matching `css`, once there is one that is shown.
    pub async fn find(&self, css: &str) -> Element<'_> {
        self.wait_for(&format!("an element shown for {css}"), || async {
            for element in self.all(css).await {
                if element.displayed().await {
                    return Some(element);
                }
            }
            None
        })
        .await
    }

    /// Clicks the first shown element matching `css`, finding it again if
    /// the page redrew it between the finding and the click.
    pub async fn click(&self, css: &str) {
        self.wait_for(&format!("a click on {css}"), || async {
            for element in self.all(css).await {
                if element.displayed().await {
                    let url = format!("{}/element/{}/click", self.session, element.id);
                    let body = Some(json!({}));
                    return try_call(&self.http, reqwest::Method::POST, &url, body)
                        .await
                        .ok()
                        .map(|_| ());
                }
            }
            None
        })
        .await
    }

    /// The first element matching `css` whose text contains `text`.
    pub async fn find_text(&self, css: &str, text: &str) -> Element<'_> {
        self.wait_for(&format!("{css} with the text {text:?}"), || async {
            for element in self.all(css).await {
                if element.text().await.contains(text) {
                    return Some(element);
                }
            }
            None
        })
        .await
    }

    /// Waits until `probe` gives something, saying what was awaited if it never does.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.url().await;
                let text = self.run("return document.body.innerText;", json!([])).await;
                panic!("waited {WAIT:?} for {what} at {url}; the page said:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.send(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The page's console messages at level SEVERE (script errors, policy
    /// violations, failed requests) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let body = json!({"type": "browser"});
        let url = format!("{}/se/log", self.session);
        let Ok(answer) = self.http.post(url).json(&body).send().await else {
            return Vec::new();
        };
        let entries: Value = answer.json().await.unwrap_or_default();
        entries["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .filter_map(|entry| entry["message"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Browser {
    /// Ends the session (the driver then stops its browser, which killing
    /// the driver alone would leave running), then the driver.
    fn drop(&mut self) {
        if let Some((authority, path)) = self
            .session
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            && let Ok(mut stream) = std::net::TcpStream::connect(authority)
        {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    async fn send(&self, method: reqwest::Method, what: &str, body: Option<Value>) -> Value {
        let path = format!("/element/{}{what}", self.id);
        self.browser.send(method, &path, body).await
    }

    /// Types `text` into it.
    pub async fn type_text(&self, text: &str) {
        let body = json!({"text": text});
        self.send(reqwest::Method::POST, "/value", Some(body)).await;
    }

    pub async fn clear(&self) {
        self.send(reqwest::Method::POST, "/clear", Some(json!({})))
            .await;
    }

    /// What the driver says of it, or `None` if the page has replaced it since.
    async fn read(&self, what: &str) -> Option<Value> {
        let url = format!("{}/element/{}{what}", self.browser.session, self.id);
        try_call(&self.browser.http, reqwest::Method::GET, &url, None)
            .await
            .ok()
    }

    /// Its rendered text (empty if the page has replaced it).
    pub async fn text(&self) -> String {
        let text = self.read("/text").await.unwrap_or_default();
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Whether it is shown (not if the page has replaced it).
    pub async fn displayed(&self) -> bool {
        self.read("/displayed").await == Some(Value::Bool(true))
    }
}

/// One WebDriver command; its `value`, or a panic with the driver's error.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    try_call(http, method.clone(), url, body)
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error}"))
}

/// One WebDriver command; its `value`, or the driver's error.
async fn try_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body["value"].clone())
    } else {
        Err(format!("{status} {}", body["value"]))
    }
}
