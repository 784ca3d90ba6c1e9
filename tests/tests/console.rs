//! The web console in a real browser: headless Chromium, driven through ChromeDriver,
//! against `fleet-producer serve --console` with a token, a worker replica and the local
//! stack. The console asks for the token (the API answers 401 without it), lists the
//! requests, follows one to 100%, shows exactly its failing jobs with their reasons, shows
//! the API's refusal of a bad limit, and cancels a running request (CANCELLED in the
//! ledger). Screenshots at 1280×800 go to `target/test-output/console/`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fantoccini::Locator;
use fantoccini::key::Key;
use fleet_tests::browser::Browser;
use fleet_tests::{
    Stack, call, echo_or_fail, http_request, repo_root, start_api_with, wait_for_every,
};
use serde_json::{Value, json};

const TOKEN: &str = "console-test-token-5f1c2a9e";
const JOBS: usize = 300;
const WAIT: Duration = Duration::from_secs(300);

fn fails(i: usize) -> bool {
    i % 20 == 3
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn submit(addr: &str, body: &Value) {
    let auth = bearer();
    let (status, report) = call(
        addr,
        "POST",
        "/v1/requests",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_follows_a_request_lists_its_failures_and_cancels_another() {
    let stack = Stack::with_init().await;
    let job = stack.testjob(&[]).await;
    let _worker = stack.worker("w0", &job, &[]);
    let (_api, addr) = start_api_with(&stack, &["--console"], &[("FLEET_API_TOKEN", TOKEN)]).await;
    let out_dir = repo_root().join("target/test-output/console");

    // Without the token the API answers 401; the console's files need none (they hold no
    // data); a state-changing call from another site is refused even with the token.
    let (status, headers, body) = http_request(&addr, "GET", "/v1/requests", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers.get("www-authenticate").unwrap(),
        "Bearer realm=\"fleet\""
    );
    let auth = bearer();
    let (status, _, body) = http_request(
        &addr,
        "GET",
        "/v1/requests",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, page) = http_request(&addr, "GET", "/console/", &[], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("/console/app.js"), "{page}");
    let csp = headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let (status, _, body) = http_request(
        &addr,
        "POST",
        "/v1/requests/none/cancel",
        &[("authorization", &auth), ("origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // A: 300 jobs, every twentieth failing for good. B: long jobs, two at a time.
    let jobs = echo_or_fail(JOBS, fails);
    submit(
        &addr,
        &json!({"request_id": "con-a", "job_type": "test", "jobs": jobs}),
    )
    .await;
    let slow: Vec<Value> = (0..40).map(|_| json!({"sleep_ms": 3000})).collect();
    submit(
        &addr,
        &json!({"request_id": "con-b", "job_type": "test", "jobs": slow,
                "options": {"max_concurrency": 2}}),
    )
    .await;

    let browser = Browser::start(1280, 800).await;
    let b = &browser;
    let console = format!("http://{addr}/console/");
    b.client.goto(&console).await.unwrap();

    // The console asks for the token, once.
    b.wait_displayed("the token form", "#token", WAIT).await;
    b.client
        .find(Locator::Id("token-input"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.click("#token-save").await;

    // Both requests listed, newest first; A reaches 100%.
    let row_a = "tr[data-request='con-a']";
    b.wait_displayed("con-a in the list", row_a, WAIT).await;
    let ids = wait_for_every(
        "both requests listed",
        WAIT,
        Duration::from_millis(250),
        || async {
            let rows = b
                .client
                .find_all(Locator::Css("#requests-body tr[data-request]"))
                .await
                .ok()?;
            let mut ids = Vec::new();
            for r in rows {
                ids.push(r.attr("data-request").await.ok()??);
            }
            (ids.len() >= 2).then_some(ids)
        },
    )
    .await;
    assert_eq!(&ids[..2], ["con-b", "con-a"], "newest first: {ids:?}");
    b.wait_text(
        "con-a at 100% in the list",
        &format!("{row_a} .pct"),
        WAIT,
        |t| t == "100%",
    )
    .await;
    b.wait_text(
        "con-a FINISHED in the list",
        &format!("{row_a} .state"),
        WAIT,
        |t| t == "FINISHED",
    )
    .await;
    let list_png = b.screenshot(&out_dir, "requests.png").await;

    // No layout shift while the list refreshes (con-b runs: its figures change): the
    // browser's own measure (the Layout Instability API), over two refreshes.
    b.client
        .execute(
            "window.fleetShift = 0; new PerformanceObserver((l) => { for (const e of l.getEntries()) \
             if (!e.hadRecentInput) window.fleetShift += e.value; }).observe({type: 'layout-shift'});",
            vec![],
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let before = b.text_of("#updated").await.unwrap_or_default();
        b.wait_text("a refresh", "#updated", WAIT, |t| t != before)
            .await;
    }
    let shift = b
        .client
        .execute("return window.fleetShift", vec![])
        .await
        .unwrap();
    assert_eq!(shift.as_f64(), Some(0.0), "layout shift over two refreshes");

    // A's page: its counts, and exactly its failing jobs with their reasons.
    b.click(&format!("{row_a} a")).await;
    b.wait_text("con-a's page", "#request-state", WAIT, |t| t == "FINISHED")
        .await;
    let failing: BTreeMap<String, ()> = (0..JOBS)
        .filter(|&i| fails(i))
        .map(|i| (format!("con-a:{i}"), ()))
        .collect();
    let shown = wait_for_every(
        "the failures table to list every failed job",
        WAIT,
        Duration::from_millis(250),
        || async {
            let rows = b
                .client
                .find_all(Locator::Css("#failures-body tr[data-job]"))
                .await
                .ok()?;
            let mut shown = BTreeMap::new();
            for r in rows {
                let job = r.attr("data-job").await.ok()??;
                let cells = r.find_all(Locator::Css("td")).await.ok()?;
                let mut text = Vec::new();
                for c in cells {
                    text.push(c.text().await.ok()?);
                }
                shown.insert(job, text);
            }
            (shown.len() == failing.len()).then_some(shown)
        },
    )
    .await;
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        failing.keys().collect::<Vec<_>>(),
        "exactly the failing jobs"
    );
    for (job, cells) in &shown {
        assert_eq!(cells[0], *job);
        assert_eq!(cells[1], "1", "{job}: one attempt (permanent failure)");
        assert_eq!(cells[2], "permanent", "{job}: {cells:?}");
        assert_eq!(
            cells[3],
            format!("Fleet.Permanent.RequestedPermanentFailure: {job} can never succeed"),
            "{job}: the reason the job gave"
        );
        assert_eq!(cells[4], "lambda", "{job}: {cells:?}");
    }
    // (The page redraws every few seconds: each read waits for the value it expects.)
    let succeeded = (JOBS - failing.len()).to_string();
    let failed = failing.len().to_string();
    for (state, want) in [
        ("SUCCEEDED", &succeeded),
        ("FAILED", &failed),
        ("RUNNING", &"0".to_owned()),
    ] {
        b.wait_text(
            &format!("{state} {want} on the request page"),
            &format!("#counts dd[data-state='{state}']"),
            WAIT,
            |t| t == want.as_str(),
        )
        .await;
    }
    b.wait_text("100% on the request page", "#summary .pct", WAIT, |t| {
        t == "100%"
    })
    .await;
    // Its chart is drawn from the API's throughput series.
    b.wait_displayed("the throughput chart", "#chart svg rect.ok", WAIT)
        .await;
    let page_png = b.screenshot(&out_dir, "request.png").await;

    // B's page: a refused limit shows the API's error text; cancel with the keyboard.
    b.client
        .goto(&format!("{console}#/requests/con-b"))
        .await
        .unwrap();
    b.wait_text("con-b running", "#request-state", WAIT, |t| t == "RUNNING")
        .await;
    wait_enabled(b, "#cancel").await;
    let limit = b.client.find(Locator::Id("limit-input")).await.unwrap();
    limit.send_keys("999999999").await.unwrap();
    b.click("#limit").await;
    b.wait_displayed("the confirmation", "#confirm", WAIT).await;
    b.click("#confirm-yes").await;
    let refused = b
        .wait_text("the refusal", "#action-result", WAIT, |t| {
            t.starts_with("Refused")
        })
        .await;
    assert!(refused.contains("400 invalid_request"), "{refused}");
    assert!(refused.contains("max_concurrency"), "{refused}");
    assert_eq!(
        stack.status("con-b").max_concurrency,
        Some(2),
        "the refused limit changed nothing"
    );
    // Keyboard: focus Cancel, Enter opens the dialog, whose Escape answers no.
    let cancel = b.client.find(Locator::Id("cancel")).await.unwrap();
    cancel
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    b.wait_displayed("the confirmation", "#confirm", WAIT).await;
    let focused = b
        .client
        .execute("return document.activeElement.id", vec![])
        .await
        .unwrap();
    assert_eq!(focused, "confirm-no", "the safe answer has the focus");
    b.client
        .find(Locator::Id("confirm-no"))
        .await
        .unwrap()
        .send_keys(&char::from(Key::Escape).to_string())
        .await
        .unwrap();
    wait_for_every(
        "the dialog to close",
        WAIT,
        Duration::from_millis(100),
        || async {
            let open = b
                .client
                .execute("return document.getElementById('confirm').open", vec![])
                .await
                .ok()?;
            (open == json!(false)).then_some(())
        },
    )
    .await;
    assert!(
        stack.status("con-b").cancelled_at_ms.is_none(),
        "Escape cancels nothing"
    );
    cancel
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    b.wait_displayed("the confirmation", "#confirm", WAIT).await;
    b.click("#confirm-yes").await;
    b.wait_text("the cancel's answer", "#action-result", WAIT, |t| {
        t.starts_with("Cancelled")
    })
    .await;
    let ledger = stack.status("con-b");
    assert_eq!(ledger.state, "CANCELLED", "{ledger:?}");
    assert!(ledger.cancelled_at_ms.is_some(), "{ledger:?}");
    b.wait_text("con-b CANCELLED", "#request-state", WAIT, |t| {
        t == "CANCELLED"
    })
    .await;

    // A narrow window: nothing wider than the window but the tables, which scroll.
    b.set_viewport(420, 800).await;
    b.client.goto(&console).await.unwrap();
    b.wait_displayed("the list again", row_a, WAIT).await;
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(0), "the page fits a narrow window");

    for png in [&list_png, &page_png] {
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{}", png.display());
        // Width and height from the IHDR chunk: 1280×800.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (1280, 800), "{}", png.display());
    }
    browser.close().await;
}

/// Waits until the element `css` matches is enabled.
async fn wait_enabled(b: &Browser, css: &str) {
    wait_for_every(
        &format!("{css} enabled"),
        WAIT,
        Duration::from_millis(250),
        || async {
            let el = b.client.find(Locator::Css(css)).await.ok()?;
            el.is_enabled().await.ok().filter(|e| *e)
        },
    )
    .await;
}
