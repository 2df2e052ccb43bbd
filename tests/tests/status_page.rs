//! The status page in a real browser: headless Chromium in the lab's client namespace opens
//! `http://198.18.0.2:9180/`, served by `xlb run` in the director's namespace, in front of real
//! backends. Screenshots go to `target/test-output/status-page/`.

use std::time::Duration;

use lb_common::maps::Mode;
use serde_json::{json, Value};
use xlb_tests::{
    agent::{AgentTestbed, SteadyLoad},
    browser::{Browser, PHONE},
    lab::Family,
    require_privileged,
    servers::{tcp_spread, LongLived},
    test_output_dir,
};

/// The API off loopback, where the client's browser reaches it.
const API: &str = "198.18.0.2:9180";
const TOKEN: &str = "status-page-token-0123456789";
const BACKENDS: [&str; 3] = ["198.18.1.10:80", "198.18.1.11:80", "198.18.1.12:80"];
const WEIGHTS: [u16; 3] = [1, 2, 1];
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 100;
const FALL: u64 = 3;
/// The counting walk runs every 2 s and the page refreshes every 2 s by default.
const SETTLE: Duration = Duration::from_secs(8);

fn services() -> String {
    let mut text = format!(
        "[[service]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\nmode = \"dr\"\n\
         [service.health]\nkind = \"tcp\"\ninterval = \"{INTERVAL_MS}ms\"\n\
         timeout = \"{TIMEOUT_MS}ms\"\nrise = 2\nfall = {FALL}\n"
    );
    for (n, weight) in WEIGHTS.iter().enumerate() {
        text += &format!(
            "[[service.backend]]\naddress = \"198.18.1.{}\"\nweight = {weight}\n",
            10 + n
        );
    }
    text += "\n[[service]]\nname = \"dns\"\nvip = \"198.18.0.100\"\nport = 53\n\
             protocol = \"udp\"\n[[service.backend]]\naddress = \"198.18.1.10\"\n";
    text
}

const VRRP: &str = "\n[[vrrp.instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n\
                    priority = 150\nadvert_interval = \"100ms\"\n\
                    virtual_addresses = [\"198.18.0.100\"]\n";

/// The lab's agent with its API open to the client, and the page open in a browser there.
struct Page {
    // Fields drop in order: the browser closes before the lab goes.
    browser: Browser,
    lab: AgentTestbed,
}

impl Page {
    /// With `vrrp`, the director holds the VIP by VRRP (once it is master); else the VIP is
    /// static.
    fn open(tag: &str, vrrp: bool) -> Page {
        let mut lab = if vrrp {
            let lab = AgentTestbed::with_directors(tag, Mode::Dr, Family::V4, 3, 1).unwrap();
            lab.write_config_of(0, &(services() + VRRP)).unwrap();
            lab
        } else {
            AgentTestbed::new(tag, Mode::Dr, Family::V4, 3, &services()).unwrap()
        };
        lab.open_api(API, TOKEN).unwrap();
        lab.start().unwrap();
        let client = lab.testbed.client.clone();
        // In the director's directory, which goes with the lab whatever happens.
        let profile = lab.agent().dir.join("chromium");
        let browser = Browser::start(&mut lab.testbed.topology, &client, &profile).unwrap();
        browser.goto(&format!("http://{API}/")).unwrap();
        let page = Page { browser, lab };
        for addr in BACKENDS {
            page.wait(&cell(addr, "health"), Duration::from_secs(5), |t| t == "UP");
        }
        page
    }

    /// Waits for the text of `css` to satisfy `pred`; returns how long it took.
    fn wait(&self, css: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Duration {
        match self.browser.wait_text(css, timeout, pred) {
            Ok((_, took)) => took,
            Err(e) => panic!("{e}\nagent log:\n{}", self.lab.agent().logs()),
        }
    }

    fn text(&self, css: &str) -> String {
        self.browser
            .text(css)
            .unwrap()
            .unwrap_or_else(|| panic!("nothing matches {css}"))
    }

    fn backend(&self, n: usize) -> Value {
        self.lab.backend("web", n).unwrap()
    }

    /// The page's last refresh was shown whole: no request failed and no script broke.
    fn assert_live(&self) {
        let live = self.text("#live");
        assert!(live.starts_with("live, updated "), "{live}");
    }

    fn screenshot(&self, name: &str) {
        self.assert_live();
        let path = test_output_dir("status-page").unwrap().join(name);
        self.browser.screenshot(&path).unwrap();
        println!("screenshot: {}", path.display());
    }
}

/// A figure as the page abbreviates it: `950`, `3.6k`, `1.2M`, `2.0G`.
fn from_human(text: &str) -> f64 {
    let (number, scale) = match text.chars().last() {
        Some('k') => (&text[..text.len() - 1], 1e3),
        Some('M') => (&text[..text.len() - 1], 1e6),
        Some('G') => (&text[..text.len() - 1], 1e9),
        _ => (text, 1.0),
    };
    number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("{text:?} is not a figure"))
        * scale
}

fn row(addr: &str) -> String {
    format!("section[data-service=\"web\"] tr[data-backend=\"{addr}\"]")
}

fn cell(addr: &str, field: &str) -> String {
    format!("{} td[data-field=\"{field}\"]", row(addr))
}

fn total(field: &str) -> String {
    format!("section[data-service=\"web\"] tr[data-total] td[data-field=\"{field}\"]")
}

#[test]
fn shows_every_backend_its_flows_and_rates_and_the_vrrp_state() {
    require_privileged!();
    let page = Page::open("pgshow", true);
    page.wait("tr[data-instance=\"VI_1\"]", Duration::from_secs(5), |t| {
        t.contains("MASTER") && t.contains("150")
    });
    let agent = page.text("#agent");
    assert!(
        agent.contains(&format!("version {}", env!("CARGO_PKG_VERSION")))
            && agent.contains("eth0")
            && agent.contains("flows counted "),
        "{agent}"
    );

    // Long-lived connections are active flows of the backend each reached.
    let long_lived = LongLived::open(&page.lab.testbed.client, page.lab.vip(), 16).unwrap();
    let reached = long_lived.backends();
    for (n, addr) in BACKENDS.iter().enumerate() {
        let expected = reached.get(&format!("b{}", n + 1)).copied().unwrap_or(0);
        page.wait(&cell(addr, "active"), SETTLE, |t| t == expected.to_string());
        let api = page.backend(n);
        assert_eq!(api["flows"]["active"], expected, "{api}");
        assert_eq!(page.text(&cell(addr, "admin")), "READY");
        assert_eq!(page.text(&cell(addr, "weight")), WEIGHTS[n].to_string());
        let share = format!("{:.1}%", 100.0 * api["ring_share"].as_f64().unwrap());
        assert_eq!(page.text(&cell(addr, "share")), share);
        let check = page.text(&cell(addr, "check"));
        assert!(
            check.starts_with("ok (") && check.ends_with(" s ago)"),
            "{check}"
        );
    }
    page.wait(&total("active"), SETTLE, |t| t == "16");
    page.wait(&total("backend"), SETTLE, |t| {
        t == "total (3 of 3 in service)"
    });

    // New connections show as packet, bit and flow rates, per backend and in total, near what
    // the agent's counters say.
    let load = SteadyLoad::start(
        &page.lab.testbed.client,
        page.lab.vip(),
        Duration::from_secs(10),
    );
    for field in ["pps", "bps", "fps"] {
        page.wait(&total(field), SETTLE, |t| t != "0");
    }
    for addr in BACKENDS {
        page.wait(&cell(addr, "pps"), SETTLE, |t| t != "0");
    }
    // The data plane's own counters, with rates.
    let rx = "#dataplane tr[data-counter=\"rx_packets\"]";
    page.wait(rx, SETTLE, |t| {
        t.starts_with("rx packets") && !t.ends_with("-") && !t.ends_with("\t0")
    });
    let packets = || {
        page.lab.agent().get("/api/v1/services/web").unwrap()["stats"]["packets"]
            .as_f64()
            .unwrap()
    };
    let (before, started) = (packets(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let counted = (packets() - before) / started.elapsed().as_secs_f64();
    let shown = from_human(&page.text(&total("pps")));
    assert!(
        (counted / 3.0..counted * 3.0).contains(&shown),
        "the page shows {shown} pkt/s, the counters gave {counted:.0} pkt/s"
    );
    page.screenshot("laptop.png");
    load.finish().unwrap();

    // A phone, with the token: every backend is a card inside the screen, with its state in
    // text and its actions at hand; nothing scrolls sideways.
    page.browser.type_into("#token", TOKEN).unwrap();
    page.browser.set_viewport(PHONE).unwrap();
    let fits = page
        .browser
        .eval(
            "const inside = (e) => { const r = e.getBoundingClientRect();
               return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth; };
             return {
               over: document.documentElement.scrollWidth - window.innerWidth,
               sections: [...document.querySelectorAll('section')]
                 .filter((s) => s.scrollWidth > s.clientWidth).map((s) => s.id || s.dataset.service),
               health: [...document.querySelectorAll('section[data-service=web] tbody td[data-field=health]')]
                 .map((c) => ({ text: c.innerText, inside: inside(c) })),
               buttons: [...document.querySelectorAll('section[data-service=web] button[data-action]')]
                 .map((b) => inside(b)),
             };",
            vec![],
        )
        .unwrap();
    assert!(
        fits["over"].as_i64().unwrap() <= 0,
        "wider than a phone: {fits}"
    );
    assert_eq!(
        fits["sections"],
        json!([]),
        "sections scroll sideways: {fits}"
    );
    let health = fits["health"].as_array().unwrap();
    assert_eq!(health.len(), 3, "{fits}");
    for cell in health {
        assert_eq!(cell, &json!({ "text": "UP", "inside": true }), "{fits}");
    }
    assert_eq!(
        fits["buttons"],
        json!(vec![true; 12]),
        "4 actions per backend: {fits}"
    );
    page.screenshot("phone.png");
}

#[test]
fn a_killed_backend_turns_down_within_the_health_window() {
    require_privileged!();
    let mut page = Page::open("pgdown", false);
    page.browser.click("#every option[value=\"1000\"]").unwrap();
    // Its server dies: its port refuses connections.
    drop(page.lab.testbed.servers.remove(0));
    // fall x interval + timeout, then the next refresh of the page (1 s).
    let bound = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS + 1000);
    let took = page.wait(
        &cell(BACKENDS[0], "health"),
        bound + Duration::from_secs(1),
        |t| t == "DOWN",
    );
    println!("the page showed b1 DOWN {took:?} after its server died (bound {bound:?} + 1 s)");
    let check = page.text(&cell(BACKENDS[0], "check"));
    assert!(check.starts_with("failed: "), "{check}");
    // Since when, on hover.
    let since = page
        .browser
        .eval(
            "return document.querySelector(arguments[0]).title;",
            vec![json!(cell(BACKENDS[0], "health"))],
        )
        .unwrap();
    let since = since.as_str().unwrap();
    assert!(
        since.starts_with("DOWN for ") && since.contains(", since "),
        "{since}"
    );
    assert_eq!(page.backend(0)["oper_state"], "down");
    page.wait(&total("backend"), Duration::from_secs(2), |t| {
        t == "total (2 of 3 in service)"
    });
    assert_eq!(page.text(&cell(BACKENDS[1], "health")), "UP");
    page.screenshot("backend-down.png");
}

#[test]
fn drain_and_weight_with_the_token_reach_the_data_plane() {
    require_privileged!();
    let page = Page::open("pgdrain", false);
    let mut long_lived = LongLived::open(&page.lab.testbed.client, page.lab.vip(), 12).unwrap();
    page.browser.type_into("#token", TOKEN).unwrap();
    assert!(page
        .browser
        .displayed(&format!(
            "{} button[data-action=\"drain\"]",
            row(BACKENDS[1])
        ))
        .unwrap());

    page.browser
        .click(&format!(
            "{} button[data-action=\"drain\"]",
            row(BACKENDS[1])
        ))
        .unwrap();
    page.wait("#message", Duration::from_secs(3), |t| {
        t == format!("{} of web: drain done", BACKENDS[1])
    });
    assert_eq!(page.backend(1)["admin_state"], "drain");
    page.wait(&cell(BACKENDS[1], "admin"), Duration::from_secs(3), |t| {
        t == "DRAIN"
    });
    let spread = tcp_spread(&page.lab.testbed.client, page.lab.vip(), 300).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    assert!(
        !spread.by_backend.contains_key("b2"),
        "new connections reached the drained b2: {spread:?}"
    );
    assert_eq!(spread.by_backend.len(), 2, "{spread:?}");
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "established connections moved"
    );
    // Drained, b2 holds no share of the ring but keeps its established flows.
    let b2_flows = long_lived.backends().get("b2").copied().unwrap_or(0);
    assert!(b2_flows > 0, "{:?}", long_lived.backends());
    let took = page.wait(&cell(BACKENDS[1], "active"), SETTLE, |t| {
        t == b2_flows.to_string()
    });
    println!("b2's {b2_flows} established flows shown {took:?} after the drain");
    assert_eq!(page.text(&cell(BACKENDS[1], "share")), "0.0%");

    let weight = format!("{} input.weight", row(BACKENDS[2]));
    page.browser.type_into(&weight, "3").unwrap();
    page.wait("#message", Duration::from_secs(3), |t| {
        t == format!("{} of web: weight 3 done", BACKENDS[2])
    });
    assert_eq!(page.backend(2)["weight"], 3);
    page.wait(&cell(BACKENDS[2], "weight"), Duration::from_secs(3), |t| {
        t == "3"
    });
    // The ring follows: b1 1, b2 drained, b3 3.
    page.wait(&cell(BACKENDS[2], "share"), Duration::from_secs(3), |t| {
        t == "75.0%"
    });
    page.wait(&total("backend"), Duration::from_secs(3), |t| {
        t == "total (2 of 3 in service)"
    });
    page.screenshot("drained.png");

    // A weight the agent refuses: the page says why, and nothing changes.
    page.browser.type_into(&weight, "70000").unwrap();
    page.wait("#message", Duration::from_secs(3), |t| {
        t.contains("refused")
    });
    let message = page.text("#message");
    assert!(
        message.starts_with(&format!(
            "{} of web: weight 70000 refused: 400 ",
            BACKENDS[2]
        )) && message.ends_with("weight: 70000 is out of range 0-65535"),
        "{message}"
    );
    assert_eq!(page.backend(2)["weight"], 3);
}

#[test]
fn without_the_token_the_page_is_read_only_and_actions_are_refused() {
    require_privileged!();
    let mut page = Page::open("pgro", false);
    let drain = format!("{} button[data-action=\"drain\"]", row(BACKENDS[0]));
    assert!(
        !page.browser.displayed(&drain).unwrap(),
        "admin actions offered without a token"
    );
    assert!(page.text("#mode").contains("read-only"));
    // The API itself refuses a change with no token, from this page as from anywhere.
    let status = page
        .browser
        .eval(
            "return fetch(arguments[0], { method: 'PATCH', headers: { 'Content-Type': 'application/json' },
               body: JSON.stringify({ admin_state: 'drain' }) }).then((r) => r.status);",
            vec![json!(format!("/api/v1/services/web/backends/{}", BACKENDS[0]))],
        )
        .unwrap();
    assert_eq!(status, 401);

    page.browser
        .type_into("#token", "not-the-token-0123456789")
        .unwrap();
    page.browser.click(&drain).unwrap();
    let took = page.wait("#message", Duration::from_secs(3), |t| {
        t.contains("refused")
    });
    let message = page.text("#message");
    assert!(
        message.starts_with(&format!("{} of web: drain refused: 401 ", BACKENDS[0])),
        "{message} (after {took:?})"
    );
    assert_eq!(page.backend(0)["admin_state"], "ready", "nothing changed");
    let spread = tcp_spread(&page.lab.testbed.client, page.lab.vip(), 300).unwrap();
    assert_eq!(
        spread.by_backend.len(),
        3,
        "b1 still takes new connections: {spread:?}"
    );
    assert_eq!(page.text(&cell(BACKENDS[0], "admin")), "READY");
    page.screenshot("refused.png");

    // Another page's form cannot make changes, token or not: the browser says where it
    // comes from.
    let form = format!(
        "data:text/html,<form method=post action=http://{API}/api/v1/reload></form>\
         <script>document.forms[0].submit()</script>"
    );
    page.browser.goto(&form).unwrap();
    page.wait("body", Duration::from_secs(5), |t| {
        t.contains("refused a change sent from the page at \\\"null\\\"")
    });
    page.browser.goto(&format!("http://{API}/")).unwrap();
    page.wait(&cell(BACKENDS[1], "health"), Duration::from_secs(5), |t| {
        t == "UP"
    });

    // The agent gone: the page says so and keeps the last figures.
    page.lab.agent_mut().stop().unwrap();
    page.wait("#live", Duration::from_secs(5), |t| {
        t.starts_with("cannot reach the agent") && t.contains("figures from")
    });
    assert_eq!(page.text(&cell(BACKENDS[1], "health")), "UP");
}
