//! A real browser for the portal's end-to-end test: headless Chromium
//! driven over WebDriver by chromedriver (Debian's `chromium` and
//! `chromium-driver`), through fantoccini.
//!
//! - chromedriver is started here, on a free 127.0.0.1 port, and killed
//!   when the [`Browser`] drops.
//! - Without chromedriver on PATH the test is skipped, saying so on stderr,
//!   unless `TOLLGATE_BROWSER_TESTS=required` (CI sets it): then that is a
//!   failure.
//! - Every page the test looks at is saved as `<target>/portal-screenshots/<step>.png`,
//!   and the browser's console is read after it: an entry at level SEVERE,
//!   or one that names the Content Security Policy, fails the test.
#![allow(dead_code)] // only the portal's browser test uses it

use anyhow::{anyhow, bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// `required`: a missing chromedriver fails the test instead of skipping it.
pub const REQUIRED_ENV: &str = "TOLLGATE_BROWSER_TESTS";
/// How long chromedriver may take to answer, and Chromium to start.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a page may take to load once navigation has begun.
const LOAD_DEADLINE: Duration = Duration::from_secs(30);

/// chromedriver's path, or `None` after printing why the test is skipped.
/// Panics instead when [`REQUIRED_ENV`] is `required`.
pub fn chromedriver_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(path) = on_path("chromedriver") {
        return Some(path);
    }
    let required = std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "required");
    assert!(
        !required,
        "{REQUIRED_ENV}=required, but chromedriver is not on PATH: install Debian's \
         `chromium` and `chromium-driver` (.ci/run does, as root)"
    );
    // Straight to the process's stderr: the test harness keeps what
    // `eprintln!` prints in a passing test to itself.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: chromedriver is not on PATH (install Debian's `chromium` and \
         `chromium-driver`; {REQUIRED_ENV}=required makes this a failure)"
    );
    None
}

/// The first executable file `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Polls `look` every `interval` until it returns `Ok(Ok(value))`.
/// `Ok(Err(seen))` means "not yet", and a timed-out wait reports the last
/// one; `Err` fails at once (a console error is not something to wait out).
pub async fn poll<T, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut look: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let outcome = tollgate_testkit::wait_until_every(what, deadline, interval, || {
        let look = look();
        async move {
            match look.await {
                Ok(Ok(value)) => Ok(Ok(value)),
                Ok(Err(seen)) => Err(seen),
                Err(fatal) => Ok(Err(fatal)),
            }
        }
    })
    .await?;
    outcome
}

/// The titles of the portal's error page (`web.rs`, `PageError`): a page
/// with one fails the step at once rather than when a wait runs out.
const ERROR_TITLES: [&str; 5] = [
    "Not found",
    "Form refused",
    "Not done",
    "Try again shortly",
    "Something went wrong",
];

impl Drop for Browser {
    /// Asks chromedriver to end the session (if [`Browser::close`] did
    /// not), then ends chromedriver's process group, Chromium included.
    fn drop(&mut self) {
        use std::io::Read;
        let address = self.driver_url.trim_start_matches("http://").to_string();
        if let Ok(address) = address.parse() {
            if let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
            {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n",
                    self.session
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.driver.id()))
            .stderr(Stdio::null())
            .status();
    }
}

/// One console entry, as chromedriver's log endpoint returns it.
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    pub step: String,
    pub level: String,
    pub message: String,
}

/// Headless Chromium with its chromedriver; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: tollgate_testkit::KillOnDrop,
    driver_url: String,
    session: String,
    http: reqwest::Client,
    shots: PathBuf,
    pub downloads: PathBuf,
    console: Mutex<Vec<ConsoleEntry>>,
    /// What chromedriver wrote (its stdout and stderr), for failures.
    driver_log: PathBuf,
}

impl Browser {
    /// Starts chromedriver at `chromedriver` on a free port and opens a
    /// session: headless, 1280×1000, certificates from `tollgate dev`'s
    /// own CA accepted (it is in no browser's store), the console kept
    /// and downloads saved to `downloads` without asking. Screenshots go to
    /// `shots` (emptied first), with chromedriver's own log.
    pub async fn start(
        chromedriver: &Path,
        downloads: &Path,
        shots: &Path,
    ) -> anyhow::Result<Browser> {
        let _ = std::fs::remove_dir_all(shots);
        std::fs::create_dir_all(shots).with_context(|| format!("creating {}", shots.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver_log = shots.join("chromedriver.log");
        let log = std::fs::File::create(&driver_log)?;
        let child = Command::new(chromedriver)
            // Its own process group: Chromium's processes are in it too,
            // so the drop can end them all, even when chromedriver could
            // not (it was killed first, or the test panicked).
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut driver = tollgate_testkit::KillOnDrop(child);
        let driver_url = format!("http://127.0.0.1:{port}");
        // chromedriver speaks plain HTTP on 127.0.0.1.
        let http = reqwest::Client::builder().timeout(START_DEADLINE).build()?;
        let status_url = format!("{driver_url}/status");
        let ready = tollgate_testkit::wait_until_every(
            "chromedriver to answer /status",
            START_DEADLINE,
            Duration::from_millis(100),
            || {
                let exited = driver.try_wait().ok().flatten();
                let asked = http.get(&status_url).send();
                async move {
                    if let Some(status) = exited {
                        return Ok(Err(format!("chromedriver exited: {status}")));
                    }
                    let answer: Value = asked
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    if answer["value"]["ready"] == true {
                        Ok(Ok(()))
                    } else {
                        Err(answer.to_string())
                    }
                }
            },
        )
        .await;
        let driver_said = || std::fs::read_to_string(&driver_log).unwrap_or_default();
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(exited)) => bail!("{exited}; it said:\n{}", driver_said()),
            Err(timed_out) => bail!("{timed_out}; it said:\n{}", driver_said()),
        }

        let mut chrome = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            },
        });
        // Debian's chromedriver finds /usr/bin/chromium itself; name it
        // anyway where it is on PATH, so another chromedriver does too.
        if let Some(binary) = on_path("chromium") {
            chrome["binary"] = json!(binary);
        }
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": chrome,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .map_err(|e| {
                anyhow!(
                    "opening a Chromium session: {e}; chromedriver said:\n{}",
                    driver_said()
                )
            })?;
        let session = client
            .session_id()
            .await?
            .ok_or_else(|| anyhow!("chromedriver gave the session no id"))?;
        Ok(Browser {
            client,
            driver,
            driver_url,
            session,
            http,
            shots: shots.to_path_buf(),
            downloads: downloads.to_path_buf(),
            console: Mutex::new(Vec::new()),
            driver_log,
        })
    }

    /// Ends the session: chromedriver quits Chromium and removes its
    /// profile. The drop ends both anyway, but less tidily.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }

    /// A chromedriver command fantoccini has no call for (the console log,
    /// Chrome DevTools commands), under this session.
    pub async fn driver_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}/{path}", self.driver_url, self.session);
        let answer: Value = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .json()
            .await
            .with_context(|| format!("POST {url}: not JSON"))?;
        if answer["value"]["error"].is_string() {
            bail!("POST {url}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url`, then [`Browser::settle`]s as `step`.
    pub async fn open(&self, step: &str, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("{step}: opening {url}"))?;
        self.settle(step).await
    }

    /// Reloads the page, then [`Browser::settle`]s as `step`.
    pub async fn reload(&self, step: &str) -> anyhow::Result<()> {
        self.client
            .refresh()
            .await
            .with_context(|| format!("{step}: reloading"))?;
        self.settle(step).await
    }

    /// After a page loaded: waits for it to be complete, saves a
    /// screenshot as `<step>.png`, and fails on what the console holds.
    pub async fn settle(&self, step: &str) -> anyhow::Result<()> {
        poll(
            &format!("{step}: the page to load"),
            LOAD_DEADLINE,
            Duration::from_millis(50),
            || async move {
                let state = self
                    .client
                    .execute("return document.readyState", vec![])
                    .await?;
                Ok(if state == "complete" {
                    Ok(())
                } else {
                    Err(format!("document.readyState {state}"))
                })
            },
        )
        .await?;
        let png = self
            .client
            .screenshot()
            .await
            .with_context(|| format!("{step}: screenshot"))?;
        let file = self.shots.join(format!("{step}.png"));
        std::fs::write(&file, png).with_context(|| format!("writing {}", file.display()))?;
        self.check_console(step).await?;
        let title = self.client.title().await?;
        if ERROR_TITLES
            .iter()
            .any(|t| title.starts_with(&format!("{t} ·")))
        {
            bail!(
                "{step}: the portal answered {} with its error page \"{title}\": {}",
                self.path().await?,
                self.text("main").await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Reads (and so empties) the browser's console log; fails on an entry
    /// at level SEVERE or one that names the Content Security Policy.
    pub async fn check_console(&self, step: &str) -> anyhow::Result<()> {
        let entries = self
            .driver_post("se/log", json!({ "type": "browser" }))
            .await?;
        let entries: Vec<ConsoleEntry> = entries
            .as_array()
            .ok_or_else(|| anyhow!("{step}: the console log is not a list: {entries}"))?
            .iter()
            .map(|e| ConsoleEntry {
                step: step.to_string(),
                level: e["level"].as_str().unwrap_or("?").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let bad: Vec<String> = entries
            .iter()
            .filter(|e| e.level == "SEVERE" || e.message.contains("Content Security Policy"))
            .map(|e| format!("{} {}", e.level, e.message))
            .collect();
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        self.console
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(entries);
        if !bad.is_empty() {
            bail!(
                "{step}: the browser's console at {url} (screenshot {}):\n{}",
                self.shots.join(format!("{step}.png")).display(),
                bad.join("\n")
            );
        }
        Ok(())
    }

    /// Every console entry read so far (none of them SEVERE).
    pub fn console(&self) -> Vec<ConsoleEntry> {
        self.console
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// What chromedriver wrote so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    /// The element `css` selects (the first), failing with the page's path.
    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(e) => bail!("no {css} on {}: {e}", self.path().await.unwrap_or_default()),
        }
    }

    /// Whether the page has an element `css` selects.
    pub async fn has(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// The rendered text of the first element `css` selects.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// The rendered text of every element `css` selects.
    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await? {
            texts.push(element.text().await?);
        }
        Ok(texts)
    }

    /// Types `text` into the field `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Clicks what `css` selects.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// The current page's path and query.
    pub async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }

    /// Clicks the submit button `css` selects, waits for the browser to
    /// arrive at a page whose path and query contain `arrive`, and
    /// [`Browser::settle`]s there as `step`.
    pub async fn submit(&self, step: &str, css: &str, arrive: &str) -> anyhow::Result<()> {
        self.click(css).await?;
        self.arrive(step, arrive).await
    }

    /// Waits for the browser to be at a page whose path and query contain
    /// `arrive`, then settles as `step`.
    pub async fn arrive(&self, step: &str, arrive: &str) -> anyhow::Result<()> {
        poll(
            &format!("{step}: the browser to arrive at {arrive}"),
            LOAD_DEADLINE,
            Duration::from_millis(50),
            || async move {
                let path = self.path().await?;
                // An error page is where the browser arrived: settling
                // there fails with what it says.
                let title = self.client.title().await?;
                let error_page = ERROR_TITLES
                    .iter()
                    .any(|t| title.starts_with(&format!("{t} ·")));
                Ok(if path.contains(arrive) || error_page {
                    Ok(())
                } else {
                    Err(path)
                })
            },
        )
        .await?;
        self.settle(step).await
    }
}
