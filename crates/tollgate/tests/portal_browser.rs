//! The portal in a real browser: headless Chromium, driven over WebDriver
//! by chromedriver, against `tollgate dev` (an origin and two regions, TLS
//! from dev's own CA). A customer signs in through the form and sees their
//! plan; sees on the usage page a chart and the day's figure of renders a
//! region counted; releases a floating seat a region reports held
//! (accepting the page's confirmation); asks for an add-on, which the
//! vendor approves, and a region then allows its feature; issues a
//! license, downloads it, and `ctl license verify` accepts the file.
//!
//! The demo data is changed first, through the REST API: acme gets
//! floating seats (it has none) and loses its Early access add-on (so
//! there is one to ask for: it owns every other that fits its plan).
//!
//! Every page is checked through the browser's console (nothing SEVERE,
//! nothing about the Content Security Policy) and saved as a screenshot in
//! `<target>/portal-screenshots/<step>.png`; at the end the origin has
//! counted no CSP report.
//!
//! Needs `chromedriver` (and Chromium) on PATH, Debian's `chromium-driver`
//! and `chromium`: without it the test says "skipped" on stderr and passes,
//! unless TOLLGATE_BROWSER_TESTS=required (as in CI, which installs both).

mod browser;
mod common;

use anyhow::{bail, ensure, Context};
use browser::{poll, Browser};
use common::{endpoints, last_lines, one_dev_at_a_time, tollgate, Dev};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a region may take to apply an origin change, or to report its
/// usage and seats to the origin (every few seconds), on a loaded machine.
const REGION_DEADLINE: Duration = Duration::from_secs(60);
/// How often a page waiting for the regions is reloaded.
const RELOAD_EVERY: Duration = Duration::from_millis(500);
/// The metered feature of acme's plan, and how many units the test uses.
const METERED: &str = "render";
const RENDERS: u64 = 7;
/// The floating-seat entitlement the test grants acme, its feature (one
/// acme has no other grant of), and who takes the seat.
const FLOATING: &str = "acme-ai-floating";
const FLOATING_FEATURE: &str = "ai-assist";
const SEAT_HOLDER: &str = "carol";
/// The add-on asked for, the demo's entitlement of it the test revokes
/// first, and its feature.
const ADDON: &str = "beta-access";
const ADDON_NAME: &str = "Early access";
const ADDON_ENTITLEMENT: &str = "acme-beta";
const ADDON_FEATURE: &str = "beta-editor";
/// A German address: acme's plan is for Europe.
const IP_EU: &str = "192.0.2.10";

/// What the test reads from `tollgate dev`'s endpoints.json, and a client
/// of the origin's REST API with the admin key.
struct Deployment {
    ca: PathBuf,
    rest: String,
    portal: String,
    admin_key: String,
    credential: String,
    eu_check: String,
    customer: (String, String),
    vendor: (String, String),
    http: reqwest::Client,
}

impl Deployment {
    fn read(data: &Path) -> anyhow::Result<Deployment> {
        let listed = endpoints(data);
        let text = |v: &Value| -> anyhow::Result<String> {
            v.as_str()
                .map(str::to_string)
                .with_context(|| format!("endpoints.json: expected a string, found {v}"))
        };
        let sign_in = |who: &str| -> anyhow::Result<(String, String)> {
            let entry = listed["portal"]["sign_ins"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["who"] == who))
                .with_context(|| {
                    format!(
                        "endpoints.json names no {who} sign-in: {}",
                        listed["portal"]
                    )
                })?;
            Ok((text(&entry["email"])?, text(&entry["password"])?))
        };
        let ca = PathBuf::from(text(&listed["tls"]["ca"])?);
        let eu = listed["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "eu"))
            .context("endpoints.json lists no region eu")?;
        let credential_file = text(&listed["origin"]["app_credential_file"])?;
        Ok(Deployment {
            rest: text(&listed["origin"]["rest"])?,
            portal: text(&listed["portal"]["url"])?,
            admin_key: text(&listed["origin"]["admin_api_key"])?,
            credential: std::fs::read_to_string(&credential_file)
                .with_context(|| format!("reading {credential_file}"))?
                .trim()
                .to_string(),
            eu_check: text(&eu["nodes"][0]["check"])?,
            customer: sign_in("customer")?,
            vendor: sign_in("vendor")?,
            http: https_client(&ca),
            ca,
        })
    }

    /// A portal page's URL, from its path under /portal/.
    fn page(&self, path: &str) -> String {
        format!("{}{path}", self.portal)
    }

    /// `GET path` at the origin as the admin, as JSON.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.rest);
        let answer = self
            .http
            .get(&url)
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = answer.status();
        let body = answer.text().await?;
        ensure!(status.is_success(), "GET {url}: {status} {body}");
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// `POST path` at the origin as the admin, with `body` and a reason.
    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.rest);
        let mut request = self
            .http
            .post(&url)
            .bearer_auth(&self.admin_key)
            .header("x-tollgate-reason", "portal browser test");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = answer.status();
        let body = answer.text().await?;
        ensure!(status.is_success(), "POST {url}: {status} {body}");
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `tollgate ctl check` of `subject` at acme for `feature` at region
    /// eu's first node, from Germany: its exit code and JSON answer.
    async fn check(
        &self,
        subject: &str,
        feature: &str,
        consume: u64,
    ) -> anyhow::Result<(i32, Value)> {
        let mut command = tokio::process::Command::from(tollgate());
        command
            .env("TOLLGATE_CREDENTIAL", &self.credential)
            .args(["ctl", "check", "--output", "json", "--ca"])
            .arg(&self.ca)
            .args(["--endpoint", &self.eu_check, "--account", "acme"])
            .args(["--subject", subject, "--feature", feature, "--ip", IP_EU])
            .args(["--consume", &consume.to_string()]);
        let out = command.output().await.context("running ctl check")?;
        let code = out.status.code().unwrap_or(-1);
        let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            json!({
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
            })
        });
        Ok((code, answer))
    }

    /// Checks `feature` for `subject` until region eu answers with exit
    /// code `want` (0 allowed, 10 denied): the region applies origin
    /// changes within seconds.
    async fn wait_check(
        &self,
        what: &str,
        subject: &str,
        feature: &str,
        want: i32,
    ) -> anyhow::Result<Value> {
        poll(what, REGION_DEADLINE, RELOAD_EVERY, || async move {
            let (code, answer) = self.check(subject, feature, 0).await?;
            Ok(if code == want {
                Ok(answer)
            } else {
                Err(format!("exit {code}: {answer}"))
            })
        })
        .await
    }
}

impl Deployment {
    /// Takes a floating seat of `feature` for `subject` at acme, at region
    /// eu, as an application would (`ctl check` decides, but leases no
    /// seat): the SDK's acquire, until the region holds a seat to lend (its
    /// leader leases them from the origin as the new entitlement arrives).
    async fn take_seat(&self, subject: &str, feature: &str) -> anyhow::Result<tollgate_sdk::Seat> {
        let client = tollgate_sdk::Client::builder()
            .credential(self.credential.clone())
            .endpoints([self.eu_check.as_str()])
            .ca_file(&self.ca)
            .build()?;
        let account = tollgate_sdk::AccountId::try_from("acme".to_string())?;
        let subject = tollgate_sdk::SubjectId::try_from(subject.to_string())?;
        let feature = tollgate_sdk::FeatureId::try_from(feature.to_string())?;
        let (client, account, subject, feature) = (&client, &account, &subject, &feature);
        poll(
            "the region to lease a floating seat",
            REGION_DEADLINE,
            RELOAD_EVERY,
            || async move {
                Ok(match client.acquire_seat(account, subject, feature).await {
                    Ok(seat) if seat.status == tollgate_sdk::SeatStatus::Held => Ok(seat),
                    Ok(seat) => Err(format!("{seat:?}")),
                    Err(e) => Err(e.to_string()),
                })
            },
        )
        .await
    }
}

/// An HTTPS client trusting `ca` (dev's own CA).
fn https_client(ca: &Path) -> reqwest::Client {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let transport = tollgate_tls::Transport::Tls(
        tollgate_tls::Tls::client(Some(ca.to_path_buf()), None, None, now).unwrap(),
    );
    let config = transport
        .client_config(&tollgate_tls::Expect::HostName, tollgate_tls::Alpn::Http1)
        .unwrap()
        .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Where the screenshots go: `<target>/portal-screenshots` (beside the
/// `tmp` directory cargo gives integration tests).
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("portal-screenshots")
}

/// Signs `who` in through the sign-in form; the browser ends on their home
/// page, `home`.
async fn sign_in(
    b: &Browser,
    d: &Deployment,
    step: &str,
    who: &(String, String),
    home: &str,
) -> anyhow::Result<()> {
    b.open(&format!("{step}-sign-in"), &d.page("sign-in"))
        .await?;
    b.type_into("#email", &who.0).await?;
    b.type_into("#password", &who.1).await?;
    b.click("#sign-in").await?;
    let arrived = b.arrive(&format!("{step}-home"), home).await;
    if let Err(e) = arrived {
        let page = b.text("main").await.unwrap_or_default();
        bail!(
            "signing in {} did not reach {home}: {e:#}\nthe page says: {page}",
            who.0
        );
    }
    Ok(())
}

/// Signs out through the frame's button.
async fn sign_out(b: &Browser, step: &str) -> anyhow::Result<()> {
    b.submit(step, "#sign-out", "/portal/sign-in").await
}

/// The texts of the overview's holdings (their headings).
async fn holdings(b: &Browser) -> anyhow::Result<Vec<String>> {
    b.texts("section.card h2").await
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

#[test]
fn a_customer_and_the_vendor_use_the_portal_in_a_real_browser() {
    init_tracing();
    let Some(chromedriver) = browser::chromedriver_or_skip("portal_browser") else {
        return;
    };
    let _one = one_dev_at_a_time();
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(data.path(), &["--base-port", "0"]);
    dev.wait_ready();
    let shots = screenshot_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(journey(
        &chromedriver,
        data.path(),
        downloads.path(),
        &shots,
    ));
    if let Err(e) = outcome {
        panic!(
            "{e:#}\n(screenshots in {}; {:?} in)\ntollgate dev's log:\n{}",
            shots.display(),
            started.elapsed(),
            last_lines(&dev.stderr(), 30)
        );
    }
    // Straight to stderr, past the harness's capture: CI's log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "portal_browser: the journey took {:?}; screenshots in {}",
        started.elapsed(),
        shots.display()
    );
}

async fn journey(
    chromedriver: &Path,
    data: &Path,
    downloads: &Path,
    shots: &Path,
) -> anyhow::Result<()> {
    let d = Deployment::read(data)?;
    let b = Browser::start(chromedriver, downloads, shots).await?;
    let result = steps(&b, &d).await;
    if result.is_err() {
        eprintln!(
            "chromedriver's log (last lines):\n{}",
            last_lines(&b.driver_log(), 20)
        );
    }
    let closed = b.close().await;
    result?;
    closed.context("ending the browser session")
}

async fn steps(b: &Browser, d: &Deployment) -> anyhow::Result<()> {
    tracing::info!("set-up: acme gets floating seats and loses Early access (REST, as the admin)");
    // acme owns every add-on that fits its plan (sso-addon is for
    // Starter), so the demo's Early access entitlement is revoked, to be
    // asked for again; and acme has no floating seats in the demo, so it
    // is granted some, for a feature it has no other grant of.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    d.post(
        &format!("/v1/entitlements/{ADDON_ENTITLEMENT}/revoke"),
        None,
    )
    .await?;
    d.post(
        "/v1/entitlements",
        Some(json!({
            "id": FLOATING,
            "account": "acme",
            "grant": { "feature": { "feature": FLOATING_FEATURE } },
            "valid_from": now - 3600,
            "seats": { "count": 2, "mode": { "floating": { "lease_ttl_seconds": 300 } } },
        })),
    )
    .await?;

    tracing::info!("a: the customer signs in through the form and sees their plan");
    sign_in(b, d, "a1", &d.customer, "/portal/a/acme").await?;
    let owned = holdings(b).await?;
    ensure!(
        owned.iter().any(|h| h.contains("Pro")),
        "the overview shows acme's Pro plan: {owned:?}"
    );

    tracing::info!("b: usage a region counted is on the usage page: a chart and the day's figure");
    let (code, answer) = d.check("alice", METERED, RENDERS).await?;
    ensure!(
        code == 0,
        "a metered check is allowed: exit {code} {answer}"
    );
    let usage_path = format!("/v1/accounts/acme/usage?feature={METERED}");
    let daily_path = format!("/v1/accounts/acme/usage/daily?feature={METERED}&days=1");
    let day = poll(
        "the origin to have the region's usage report",
        REGION_DEADLINE,
        RELOAD_EVERY,
        || {
            let (usage_path, daily_path) = (&usage_path, &daily_path);
            async move {
                let usage = d.get(usage_path).await?;
                let consumed: u64 = usage["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["consumed"].as_u64())
                    .sum();
                if consumed < RENDERS {
                    return Ok(Err(format!("usage {usage}")));
                }
                let daily = d.get(daily_path).await?;
                Ok(match daily["items"].as_array().and_then(|i| i.last()) {
                    Some(row) if row["consumed"].as_u64() == Some(RENDERS) => {
                        Ok(row["day"].as_str().unwrap_or_default().to_string())
                    }
                    _ => Err(format!("usage {usage}, daily {daily}")),
                })
            }
        },
    )
    .await?;
    b.open("b1-usage", &d.page("a/acme/usage")).await?;
    let chart = b.find("section.card .chart svg[role=\"img\"]").await?;
    let label = chart.attr("aria-labelledby").await?.unwrap_or_default();
    ensure!(!label.is_empty(), "the chart is labelled");
    let used = b.text("section.card p").await?;
    ensure!(
        used.contains(&format!("Used this month: {RENDERS} renders")),
        "the usage page says what was used: {used}"
    );
    b.click("section.card details summary").await?;
    b.settle("b2-usage-daily").await?;
    let rows = b.texts("section.card details tbody tr").await?;
    ensure!(
        rows.iter()
            .any(|r| r.contains(&day) && r.ends_with(&RENDERS.to_string())),
        "the daily figures list {day} with {RENDERS}: {rows:?}"
    );

    tracing::info!("c: a floating seat a region reports held is released in the page");
    let taken = d.take_seat(SEAT_HOLDER, FLOATING_FEATURE).await?;
    let release = format!("#release-{SEAT_HOLDER}");
    let seats = d.page("a/acme/seats");
    let holders = format!("section[aria-labelledby=\"f-{FLOATING}\"]");
    b.open("c1-seats", &seats).await?;
    poll(
        "the seats page to list carol's seat",
        REGION_DEADLINE,
        RELOAD_EVERY,
        || {
            let (release, holders) = (&release, &holders);
            async move {
                b.reload("c1-seats").await?;
                Ok(if b.has(release).await? {
                    Ok(())
                } else {
                    Err(b.text(holders).await.unwrap_or_else(|e| e.to_string()))
                })
            }
        },
    )
    .await
    .with_context(|| format!("the region answered carol's seat request with {taken:?}"))?;
    b.click(&release).await?;
    let asked = poll(
        "the page to ask before releasing",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async move {
            Ok(match b.client.get_alert_text().await {
                Ok(text) => Ok(text),
                Err(e) => Err(e.to_string()),
            })
        },
    )
    .await?;
    ensure!(
        asked.contains(&format!("Release {SEAT_HOLDER}'s seat?")),
        "the confirmation names the seat: {asked}"
    );
    b.client.accept_alert().await?;
    b.arrive("c2-seat-released", "done=seat_released").await?;
    let notice = b.text("p.notice").await?;
    ensure!(notice.contains("The seat is released"), "{notice}");
    poll(
        "carol's seat to leave the seats page",
        REGION_DEADLINE,
        RELOAD_EVERY,
        || {
            let holders = &holders;
            async move {
                b.reload("c3-seats-after").await?;
                let listed = b.text(holders).await?;
                Ok(if listed.contains(SEAT_HOLDER) {
                    Err(listed)
                } else {
                    Ok(())
                })
            }
        },
    )
    .await?;

    tracing::info!("d: the customer asks for an add-on a region does not allow them yet");
    d.wait_check(
        "the region to apply the revoked add-on",
        "alice",
        ADDON_FEATURE,
        10,
    )
    .await?;
    b.open("d1-requests", &d.page("a/acme/requests")).await?;
    b.find("#target")
        .await?
        .select_by_value(&format!("addon:{ADDON}"))
        .await?;
    b.type_into("#justification", "The new editor, for the spring release.")
        .await?;
    b.submit("d2-request-filed", "#request", "done=request_filed")
        .await?;
    let filed = b.find("tbody tr").await?;
    let row = filed.text().await?;
    ensure!(
        row.contains(&format!("Add-on: {ADDON_NAME}")) && row.contains("Waiting for approval"),
        "the newest request is the add-on, waiting: {row}"
    );
    let request = filed
        .attr("id")
        .await?
        .and_then(|id| id.strip_prefix("request-").map(str::to_string))
        .context("the request's row has its id")?;

    tracing::info!("e: the vendor approves it in the console's request queue");
    sign_out(b, "e1-signed-out").await?;
    sign_in(b, d, "e2", &d.vendor, "/portal/vendor").await?;
    b.open("e3-vendor-requests", &d.page("vendor/requests"))
        .await?;
    let waiting = format!("#request-{request}");
    let row = b.text(&waiting).await?;
    ensure!(
        row.contains("acme") && row.contains(&format!("Add-on: {ADDON_NAME}")),
        "the vendor's queue shows acme's request: {row}"
    );
    b.type_into(&format!("#approve-reason-{request}"), "Spring release.")
        .await?;
    b.submit(
        "e4-approved",
        &format!("{waiting} form:has(input[name=\"decision\"][value=\"approve\"]) button[type=\"submit\"]"),
        "done=changed",
    )
    .await?;
    let decided = b.text(&format!("#decided-{request}")).await?;
    ensure!(
        decided.contains("Approved"),
        "the request is approved: {decided}"
    );
    sign_out(b, "e5-signed-out").await?;

    tracing::info!("f: the customer's overview lists it, and a region allows its feature");
    sign_in(b, d, "f1", &d.customer, "/portal/a/acme").await?;
    let owned = holdings(b).await?;
    ensure!(
        owned.iter().any(|h| h.contains(ADDON_NAME)),
        "the overview lists {ADDON_NAME}: {owned:?}"
    );
    d.wait_check(
        "the region to allow the add-on's feature",
        "alice",
        ADDON_FEATURE,
        0,
    )
    .await?;

    tracing::info!("g: a license is issued, downloaded, and verified offline by ctl");
    b.open("g1-licenses", &d.page("a/acme/licenses")).await?;
    b.click("#issue").await?;
    poll(
        "the issued license",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async move {
            Ok(if b.has("#download").await? {
                Ok(())
            } else {
                Err(b.path().await?)
            })
        },
    )
    .await?;
    b.settle("g2-license-issued").await?;
    let issued = b.text("#issued").await?;
    let id = issued
        .strip_prefix("License ")
        .with_context(|| format!("the issued license's heading: {issued}"))?
        .to_string();
    let audience = b
        .find("input[name=\"audience\"]")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    b.click("#download").await?;
    let file = poll(
        "the license file to be downloaded",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async move {
            let names: Vec<String> = std::fs::read_dir(&b.downloads)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            Ok(
                match names
                    .iter()
                    .find(|n| n.starts_with("license-") && n.ends_with(".tgl"))
                {
                    Some(name) => Ok(b.downloads.join(name)),
                    None => Err(format!("{names:?}")),
                },
            )
        },
    )
    .await?;
    b.settle("g3-license-downloaded").await?;
    ensure!(
        file.ends_with(format!("license-{id}.tgl")),
        "the file is license {id}'s: {}",
        file.display()
    );
    let mut verify = tokio::process::Command::from(tollgate());
    verify
        .args(["ctl", "--ca"])
        .arg(&d.ca)
        .args(["license", "verify"])
        .arg(format!("@{}", file.display()))
        .args(["--keys", &d.rest, "--audience", &audience]);
    let verified = verify.output().await?;
    ensure!(
        verified.status.code() == Some(0),
        "ctl license verify {} exits 0: {}\n{}\n{}",
        file.display(),
        verified.status,
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    tracing::info!("no browser reported a CSP violation to the origin");
    let metrics = d
        .http
        .get(format!("{}/metrics", d.rest))
        .send()
        .await?
        .text()
        .await?;
    let reports: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_portal_csp_reports_total"))
        .filter(|l| l.split_whitespace().last() != Some("0"))
        .collect();
    ensure!(
        reports.is_empty(),
        "the origin counted CSP reports: {reports:?}"
    );
    Ok(())
}
