//! A real browser in a lab namespace: Debian's headless Chromium, driven over WebDriver by
//! chromedriver, both running inside the namespace so the browser reaches only the lab. The
//! harness talks to chromedriver through sockets it opens in that namespace.

use std::{
    future::Future,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    pin::Pin,
    process::{Command, Stdio},
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use fantoccini::{
    elements::Element,
    wd::{Capabilities, WebDriverCompatibleCommand},
    Client, ClientBuilder, Locator,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::netns::{Netns, Topology};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver's port on the namespace's loopback.
const DRIVER_PORT: u16 = 9515;
const DRIVER_START: Duration = Duration::from_secs(20);
/// A laptop's window.
pub const LAPTOP: (u32, u32) = (1440, 900);
/// A phone's viewport (CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

/// Headless Chromium with one window, closed (and its profile directory removed) on drop.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver in `ns` and opens a browser session through it, keeping the
    /// browser's profile in `profile`: best inside a directory the caller removes anyway, so
    /// nothing is left if this fails half-way.
    pub fn start(topology: &mut Topology, ns: &Netns, profile: &Path) -> anyhow::Result<Browser> {
        for program in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(program).is_file() {
                bail!(
                    "{program} is missing: run `cargo xtask setup` \
                     (it installs Debian's chromium and chromium-driver)"
                );
            }
        }
        let mut driver = Command::new(CHROMEDRIVER);
        driver
            .arg(format!("--port={DRIVER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let driver = topology.spawn(ns, driver)?;
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], DRIVER_PORT));
        let deadline = Instant::now() + DRIVER_START;
        while ns.run(|| TcpStream::connect(driver_addr))?.is_err() {
            if let Some(output) = driver.wait_timeout(Duration::ZERO)? {
                bail!(
                    "chromedriver exited ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not listen within {DRIVER_START:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let (width, height) = LAPTOP;
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root cannot have Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime
            .block_on(
                ClientBuilder::new(NetnsConnector { ns: ns.clone() })
                    .capabilities(capabilities)
                    .connect(&format!("http://{driver_addr}")),
            )
            .map_err(|e| {
                anyhow!(
                    "no browser session: {e}\n{}",
                    String::from_utf8_lossy(&driver.stderr_snapshot())
                )
            })?;
        Ok(Browser {
            runtime,
            client: Some(client),
            profile: profile.to_path_buf(),
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open until dropped")
    }

    fn block_on<T, E: std::fmt::Display>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        self.runtime
            .block_on(future)
            .map_err(|e| anyhow!("{what}: {e}"))
    }

    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.block_on(&format!("opening {url}"), self.client().goto(url))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page, returning its
    /// value.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.block_on("running a script", self.client().execute(script, args))
    }

    /// The visible text of the first element matching `css`, or None if there is none.
    pub fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let found = self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )?;
        Ok(found.as_str().map(str::to_string))
    }

    /// Polls the text of `css` until `pred` holds of it; returns the text and how long it took.
    pub fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        loop {
            let text = self.text(css)?;
            if let Some(text) = text.as_deref().filter(|t| pred(t)) {
                return Ok((text.to_string(), started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!("{css} did not show what was awaited within {timeout:?}; it shows {text:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.block_on(
            &format!("finding {css}"),
            self.client().find(Locator::Css(css)),
        )
    }

    /// Clicks the element matching `css`, as a user would (it must be visible).
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.block_on(&format!("clicking {css}"), element.click())
    }

    /// Whether the element matching `css` exists and is displayed.
    pub fn displayed(&self, css: &str) -> anyhow::Result<bool> {
        let found = self.runtime.block_on(self.client().find(Locator::Css(css)));
        match found {
            Ok(element) => self.block_on(&format!("is {css} displayed"), element.is_displayed()),
            Err(e) if e.is_no_such_element() => Ok(false),
            Err(e) => Err(anyhow!("finding {css}: {e}")),
        }
    }

    /// Replaces the value of the input matching `css` by typing `text`, then Enter.
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.block_on(&format!("clearing {css}"), element.clear())?;
        self.block_on(
            &format!("typing into {css}"),
            element.send_keys(&format!("{text}\u{E007}")),
        )
    }

    /// Emulates a screen of `width` x `height` CSS pixels, as a phone's or a laptop's, with
    /// the device's pixel ratio and touch for a phone.
    pub fn set_viewport(&self, (width, height): (u32, u32)) -> anyhow::Result<()> {
        let mobile = width < 600;
        let metrics = json!({
            "width": width,
            "height": height,
            "deviceScaleFactor": if mobile { 3 } else { 1 },
            "mobile": mobile,
        });
        self.block_on(
            "resizing the viewport",
            self.client().issue_cmd(Cdp {
                cmd: "Emulation.setDeviceMetricsOverride",
                params: metrics,
            }),
        )
        .map(drop)
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.block_on("taking a screenshot", self.client().screenshot())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A Chrome DevTools command, through chromedriver's pass-through endpoint.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Connects to chromedriver from inside the namespace: the socket is made on a thread that
/// joined it, and stays there.
#[derive(Clone)]
struct NetnsConnector {
    ns: Netns,
}

impl tower_service::Service<http::Uri> for NetnsConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let ns = self.ns.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("127.0.0.1").to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = tokio::task::spawn_blocking(move || {
                ns.run(|| TcpStream::connect((host.as_str(), port)))
                    .map_err(std::io::Error::other)?
            })
            .await
            .map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            Ok(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
        })
    }
}
