//! Headless Chromium driven through ChromeDriver (Debian's `chromium` and `chromium-driver`,
//! which `deploy/local/test.sh` installs), with the WebDriver client `fantoccini`. The
//! driver runs in its own process group, so dropping a [`Browser`] stops the driver and
//! every browser process it started, also when the test failed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session and the driver behind it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a headless Chromium session with a
    /// window of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (deploy/local/test.sh does)"
            );
        }
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a browser profile folder");
        let mut browser_args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        browser_args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps: serde_json::Map<String, Value> = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": browser_args},
        })
        .as_object()
        .cloned()
        .expect("an object");
        let url = format!("http://127.0.0.1:{port}");
        let mut guard = DriverGuard(Some(driver));
        let client = crate::wait_for(
            "ChromeDriver to start a session",
            Duration::from_secs(60),
            || {
                let caps = caps.clone();
                let url = url.clone();
                async move {
                    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                    ClientBuilder::new(connector)
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .ok()
                }
            },
        )
        .await;
        let browser = Browser {
            client,
            driver: guard.0.take().expect("the driver"),
            _profile: profile,
        };
        browser.set_viewport(width, height).await;
        browser
    }

    /// Sizes the window so that its page area (what a screenshot shows) is `width`×`height`:
    /// the window's size less what the browser's own frame takes.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let frame = self
            .client
            .execute(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .expect("the window's frame");
        let d = |i: usize| frame[i].as_u64().unwrap_or(0) as u32;
        self.client
            .set_window_size(width + d(0), height + d(1))
            .await
            .expect("the window's size");
    }

    /// The text of the first element `css` matches, once there is one.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// Waits until the first element `css` matches has a text that `ok` accepts; that text.
    pub async fn wait_text(
        &self,
        what: &str,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        crate::wait_for_every(what, timeout, Duration::from_millis(250), || async {
            self.text_of(css).await.filter(|t| ok(t))
        })
        .await
    }

    /// Waits until `css` matches an element that is displayed.
    pub async fn wait_displayed(&self, what: &str, css: &str, timeout: Duration) {
        crate::wait_for_every(what, timeout, Duration::from_millis(250), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.is_displayed().await.ok().filter(|d| *d)
        })
        .await;
    }

    /// Clicks the first element `css` matches.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Saves a screenshot of the window as `dir/name` (PNG); its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(dir).expect("the screenshot folder");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session (the browser quits) and stops the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop_group(&mut self.driver);
    }
}

/// Stops the driver's process group when dropped (a session that never started).
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            stop_group(&mut c);
        }
    }
}

fn stop_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
}
