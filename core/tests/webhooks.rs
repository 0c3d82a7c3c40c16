//! Webhook delivery against real local receivers: signatures, retries on a fake clock, 410,
//! redirects, timeouts, test dispatch, and the SSRF guard at registration and dispatch.

mod common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use latchkey::{Clock, Engine, EngineOptions, FakeClock, WebhookOptions, retry_delay};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

use common::{admin, other_store};

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// What the receiver answers to its n-th request (0-based): status, headers, body, delay.
type Script = dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, String, Duration) + Send + Sync;

/// A real HTTP server on loopback that records what it receives.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(script: Box<Script>) -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Acquire) {
                let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut body = String::new();
                request.as_reader().read_to_string(&mut body).unwrap();
                let headers = request
                    .headers()
                    .iter()
                    .map(|h| {
                        (
                            h.field.to_string().to_ascii_lowercase(),
                            h.value.to_string(),
                        )
                    })
                    .collect();
                let n = {
                    let mut log = log.lock();
                    log.push(Received { headers, body });
                    log.len() - 1
                };
                let (status, extra, text, delay) = script(n);
                std::thread::sleep(delay);
                let mut response = tiny_http::Response::from_string(text).with_status_code(status);
                for (name, value) in extra {
                    response.add_header(tiny_http::Header::from_bytes(name, value).unwrap());
                }
                let _ = request.respond(response);
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn answering(status: u16) -> Receiver {
        Self::start(Box::new(move |_| {
            (status, Vec::new(), "ok".into(), Duration::ZERO)
        }))
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn options(clock: &FakeClock, allow_private: bool) -> EngineOptions {
    EngineOptions {
        webhooks: WebhookOptions {
            allow_private,
            timeout: Duration::from_secs(2),
            ..WebhookOptions::default()
        },
        ..common::options(clock)
    }
}

fn engine(allow_private: bool) -> (Engine, FakeClock) {
    let clock = common::clock();
    (
        Engine::memory_with(options(&clock, allow_private)).unwrap(),
        clock,
    )
}

fn subscribe(engine: &Engine, store: &str, url: &str, events: &[&str]) -> (String, String) {
    let created = engine
        .create_webhook(store, &admin(), &json!({"url": url, "events": events}))
        .unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// The Standard Webhooks check, written out here apart from the engine's signer.
fn signature_valid(secret: &str, received: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{}",
        received.headers["webhook-id"], received.headers["webhook-timestamp"], received.body
    );
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    received.headers["webhook-signature"]
        .split(' ')
        .any(|sig| sig == format!("v1,{expected}"))
}

fn deliveries(engine: &Engine, store: &str, webhook: &str) -> Vec<Value> {
    engine
        .list_webhook_deliveries(store, webhook, None)
        .unwrap()
}

#[test]
fn key_events_are_delivered_signed_with_the_event_id_and_no_secret() {
    let (engine, clock) = engine(true);
    let receiver = Receiver::answering(204);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, secret) = subscribe(
        &engine,
        sid,
        &receiver.url,
        &[
            "api_key.created",
            "api_key.updated",
            "api_key.regenerated",
            "api_key.revoked",
        ],
    );
    let created = common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let off = latchkey::KeyPatch {
        active: Some(false),
        ..Default::default()
    };
    engine
        .update_key(sid, &admin(), &created.key.id, off)
        .unwrap();
    let regenerated = engine
        .regenerate_key(sid, &admin(), &created.key.id, time::Duration::ZERO)
        .unwrap();
    engine.revoke_key(sid, &admin(), &created.key.id).unwrap();
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!(
        (pass.queued, pass.attempted, pass.next_due_ms),
        (4, 4, None)
    );

    let got = receiver.received();
    assert_eq!(got.len(), 4);
    let mut types = Vec::new();
    for request in &got {
        assert!(signature_valid(&secret, request), "{request:?}");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(
            request.headers["webhook-timestamp"],
            clock.now_secs().to_string()
        );
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body["id"], request.headers["webhook-id"].as_str());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(body["data"]["id"], created.key.id.as_str());
        assert!(body["created_at"].is_string());
        for secret in [created.secret.expose(), regenerated.secret.expose()] {
            assert!(
                !request.body.contains(secret),
                "a key secret in a webhook body"
            );
        }
        if body["type"] == "api_key.updated" {
            // The key as it is now, and which fields the update set.
            assert_eq!(body["data"]["active"], false);
            assert_eq!(body["data"]["changes"], json!(["active"]));
        }
        types.push(body["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(
        types,
        [
            "api_key.created",
            "api_key.regenerated",
            "api_key.revoked",
            "api_key.updated"
        ]
    );
    let listed = deliveries(&engine, sid, &webhook);
    assert_eq!(listed.len(), 4);
    for delivery in &listed {
        assert_eq!(delivery["state"], "succeeded");
        assert_eq!(delivery["attempts"][0]["status_code"], 204);
        assert_eq!(delivery["next_attempt_at"], Value::Null);
    }
    // Nothing new: a second pass sends nothing again.
    assert_eq!(engine.deliver_webhooks().unwrap().attempted, 0);
    assert_eq!(receiver.received().len(), 4);
}

#[test]
fn order_events_reach_only_subscribed_active_endpoints_of_their_store() {
    let (engine, _clock) = engine(true);
    let orders = Receiver::answering(200);
    let keys_only = Receiver::answering(200);
    let disabled = Receiver::answering(200);
    let (store, _) = common::store(&engine);
    let (other, _) = other_store(&engine);
    let sid = store.id.as_str();
    subscribe(&engine, sid, &orders.url, &["order.created"]);
    subscribe(&engine, sid, &keys_only.url, &["api_key.created"]);
    let (off, _) = subscribe(&engine, sid, &disabled.url, &["api_key.created"]);
    engine
        .update_webhook(sid, &admin(), &off, &json!({"active": false}))
        .unwrap();
    // A key in another store is not this store's event.
    common::scoped(&engine, &other, json!({"Orders": ["View"]}));
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    engine.deliver_webhooks().unwrap();
    assert_eq!(orders.received().len(), 0);
    assert_eq!(disabled.received().len(), 0);
    let got = keys_only.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["data"]["store_id"], sid);
}

/// Retry n of a delivery must fall in [0.8, 1.2] × its nominal delay after the failed attempt,
/// and not be sent a moment before it is due.
#[test]
fn retries_follow_the_backoff_schedule_on_a_fake_clock_then_give_up() {
    let (engine, clock) = engine(true);
    let receiver = Receiver::answering(503);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));

    let mut pass = engine.deliver_webhooks().unwrap();
    assert_eq!(pass.attempted, 1);
    for retry in 1..latchkey::MAX_WEBHOOK_ATTEMPTS as u32 {
        let due = pass.next_due_ms.expect("a retry is scheduled");
        let waited = due - clock.now_nanos() / 1_000_000;
        let nominal = retry_delay(retry).as_millis() as i64;
        assert!(
            waited >= nominal * 8 / 10 && waited <= nominal * 12 / 10,
            "retry {retry}: due in {waited} ms, nominal {nominal} ms"
        );
        // Just before it is due: nothing is sent.
        clock.advance(time::Duration::milliseconds(waited - 1));
        assert_eq!(engine.deliver_webhooks().unwrap().attempted, 0);
        assert_eq!(receiver.received().len(), retry as usize);
        clock.advance(time::Duration::milliseconds(1));
        pass = engine.deliver_webhooks().unwrap();
        assert_eq!(pass.attempted, 1, "retry {retry}");
    }
    assert_eq!(pass.next_due_ms, None, "eight attempts, then no more");
    let got = receiver.received();
    assert_eq!(got.len(), latchkey::MAX_WEBHOOK_ATTEMPTS);
    // The same event keeps its webhook-id on every attempt.
    assert!(
        got.iter()
            .all(|r| r.headers["webhook-id"] == got[0].headers["webhook-id"])
    );
    let listed = deliveries(&engine, sid, &webhook);
    assert_eq!(listed[0]["state"], "failed");
    let attempts = listed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), latchkey::MAX_WEBHOOK_ATTEMPTS);
    assert!(attempts.iter().all(|a| a["status_code"] == 503));
    // The schedule is the documented one: 5 s × 4^(n−1).
    assert_eq!(
        (1..=7)
            .map(|n| retry_delay(n).as_secs())
            .collect::<Vec<_>>(),
        [5, 20, 80, 320, 1_280, 5_120, 20_480]
    );
}

#[test]
fn a_retry_that_succeeds_ends_the_delivery() {
    let (engine, clock) = engine(true);
    let receiver = Receiver::start(Box::new(|n| {
        let status = if n == 0 { 500 } else { 200 };
        (status, Vec::new(), String::new(), Duration::ZERO)
    }));
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let pass = engine.deliver_webhooks().unwrap();
    clock.set(
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(pass.next_due_ms.unwrap()) * 1_000_000,
        )
        .unwrap(),
    );
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!((pass.attempted, pass.next_due_ms), (1, None));
    let listed = deliveries(&engine, sid, &webhook);
    assert_eq!(listed[0]["state"], "succeeded");
    let statuses: Vec<&Value> = listed[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(200)]);
}

#[test]
fn gone_disables_the_endpoint_and_enabling_clears_the_reason() {
    let (engine, _clock) = engine(true);
    let receiver = Receiver::answering(410);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!(
        (pass.attempted, pass.next_due_ms),
        (1, None),
        "410 is not retried"
    );
    let endpoint = engine.get_webhook(sid, &webhook).unwrap();
    assert_eq!(endpoint["active"], false);
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410 Gone")
    );
    assert_eq!(deliveries(&engine, sid, &webhook)[0]["state"], "failed");
    // A disabled endpoint gets no new deliveries.
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    assert_eq!(engine.deliver_webhooks().unwrap().queued, 0);
    assert_eq!(receiver.received().len(), 1);
    let enabled = engine
        .update_webhook(sid, &admin(), &webhook, &json!({"active": true}))
        .unwrap();
    assert_eq!(enabled["disabled_reason"], Value::Null);
}

#[test]
fn redirects_are_not_followed_and_count_as_failures() {
    let (engine, _clock) = engine(true);
    let elsewhere = Receiver::answering(200);
    let target = elsewhere.url.clone();
    let redirecting = Receiver::start(Box::new(move |_| {
        (
            302,
            vec![("Location", target.clone())],
            String::new(),
            Duration::ZERO,
        )
    }));
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &redirecting.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let pass = engine.deliver_webhooks().unwrap();
    assert!(pass.next_due_ms.is_some(), "a redirect is retried later");
    assert_eq!(redirecting.received().len(), 1);
    assert_eq!(elsewhere.received().len(), 0, "the redirect was followed");
    let listed = deliveries(&engine, sid, &webhook);
    assert_eq!(listed[0]["state"], "pending");
    assert_eq!(listed[0]["attempts"][0]["status_code"], 302);
}

#[test]
fn a_slow_endpoint_times_out_and_is_retried() {
    let clock = common::clock();
    let mut options = options(&clock, true);
    options.webhooks.timeout = Duration::from_millis(300);
    let engine = Engine::memory_with(options).unwrap();
    let receiver = Receiver::start(Box::new(|_| {
        (200, Vec::new(), String::new(), Duration::from_millis(1_500))
    }));
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let pass = engine.deliver_webhooks().unwrap();
    assert!(pass.next_due_ms.is_some());
    let attempt = &deliveries(&engine, sid, &webhook)[0]["attempts"][0];
    assert_eq!(attempt["status_code"], Value::Null);
    assert!(
        attempt["error"].as_str().unwrap().contains("timeout"),
        "{attempt}"
    );
}

#[test]
fn test_dispatch_reports_status_truncated_body_and_errors() {
    let (engine, _clock) = engine(true);
    let receiver = Receiver::start(Box::new(|_| {
        (418, Vec::new(), "x".repeat(5_000), Duration::ZERO)
    }));
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, secret) = subscribe(&engine, sid, &receiver.url, &["order.created"]);
    // A test dispatch goes out even while the endpoint is disabled.
    engine
        .update_webhook(sid, &admin(), &webhook, &json!({"active": false}))
        .unwrap();
    let result = engine.test_webhook(sid, &webhook).unwrap();
    assert_eq!(result["status_code"], 418);
    assert_eq!(result["error"], Value::Null);
    assert_eq!(
        result["body"].as_str().unwrap().len(),
        latchkey::RESPONSE_KEEP
    );
    assert!(result["duration_ms"].is_u64());
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(signature_valid(&secret, &got[0]));
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], latchkey::WEBHOOK_TEST_EVENT);
    let listed = deliveries(&engine, sid, &webhook);
    assert_eq!(listed[0]["id"], result["delivery_id"]);
    assert_eq!(listed[0]["event_type"], latchkey::WEBHOOK_TEST_EVENT);

    // Nothing listening: an error in the result, not a failed call.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    engine
        .update_webhook(
            sid,
            &admin(),
            &webhook,
            &json!({"url": format!("http://127.0.0.1:{port}/")}),
        )
        .unwrap();
    let result = engine.test_webhook(sid, &webhook).unwrap();
    assert_eq!(result["status_code"], Value::Null);
    assert!(result["error"].as_str().unwrap().len() > 3, "{result}");
}

#[test]
fn deleting_an_endpoint_drops_its_pending_deliveries() {
    let (engine, _clock) = engine(true);
    let receiver = Receiver::answering(500);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    assert!(engine.deliver_webhooks().unwrap().next_due_ms.is_some());
    engine.delete_webhook(sid, &admin(), &webhook).unwrap();
    assert_eq!(engine.deliver_webhooks().unwrap().next_due_ms, None);
    assert_eq!(
        engine
            .list_webhook_deliveries(sid, &webhook, None)
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    assert_eq!(
        engine
            .list_webhook_deliveries(sid, "wh_nope", Some(0))
            .unwrap_err()
            .code(),
        "VALIDATION"
    );
}

#[test]
fn the_background_worker_delivers_soon_after_a_commit() {
    let engine = Engine::memory_with(EngineOptions {
        webhooks: WebhookOptions {
            allow_private: true,
            // Far longer than the test waits: only the commit's wake-up can explain a delivery.
            poll_interval: Duration::from_secs(3600),
            ..WebhookOptions::default()
        },
        ..EngineOptions::default()
    })
    .unwrap();
    engine.start_webhook_worker().unwrap();
    engine.start_webhook_worker().unwrap();
    let receiver = Receiver::answering(200);
    let (store, _) = common::store(&engine);
    subscribe(
        &engine,
        store.id.as_str(),
        &receiver.url,
        &["api_key.created"],
    );
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(receiver.received().len(), 1);
    drop(engine);
}

/// Internal targets written to look harmless. Each must be refused at registration, and at
/// dispatch (when it was registered under `allow_private`) without any connection being made.
fn disguised(port: u16) -> Vec<String> {
    let mut urls: Vec<String> = [
        "http://127.0.0.1:{p}/",
        "http://localhost:{p}/",
        "http://LOCALHOST:{p}/",
        "http://localhost.:{p}/",
        "http://hooks.localhost:{p}/",
        "http://2130706433:{p}/",
        "http://0x7f000001:{p}/",
        "http://0x7f.0x0.0x0.0x1:{p}/",
        "http://0177.0.0.1:{p}/",
        "http://0177.0000.0000.0001:{p}/",
        "http://127.1:{p}/",
        "http://127.0.1:{p}/",
        "http://127.000.000.001:{p}/",
        "http://%31%32%37.0.0.1:{p}/",
        "http://①②⑦.0.0.1:{p}/",
        "http://[::1]:{p}/",
        "http://[0:0:0:0:0:0:0:1]:{p}/",
        "http://[::ffff:127.0.0.1]:{p}/",
        "http://[::ffff:7f00:1]:{p}/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
        "http://[::127.0.0.1]:{p}/",
        "http://[64:ff9b::127.0.0.1]:{p}/",
        "http://[2002:7f00:1::]:{p}/",
        "http://0.0.0.0:{p}/",
        "http://0:{p}/",
        "http://[::]:{p}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://0xa9fea9fe/latest/meta-data/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://10.0.0.1/",
        "http://0x0a000001/",
        "http://172.16.0.1/",
        "http://172.31.255.254/",
        "http://192.168.0.1/",
        "http://3232235521/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fd12:3456:789a::1]/",
        "https://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ]
    .iter()
    .map(|u| u.replace("{p}", &port.to_string()))
    .collect();
    // A name that DNS (here /etc/hosts) resolves to this machine: its own host name.
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        let internal = std::net::ToSocketAddrs::to_socket_addrs(&(name, port))
            .map(|mut found| found.all(|a| latchkey::refused_address(a.ip()).is_some()))
            .unwrap_or(false);
        if !name.is_empty() && internal {
            urls.push(format!("http://{name}:{port}/"));
        }
    }
    urls
}

#[test]
fn disguised_internal_addresses_are_refused_at_registration() {
    let (engine, _clock) = engine(false);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let urls = disguised(8080);
    assert!(urls.len() >= 30);
    for url in &urls {
        let err = engine
            .create_webhook(
                sid,
                &admin(),
                &json!({"url": url, "events": ["order.created"]}),
            )
            .unwrap_err();
        let problems = err.problems().join("; ");
        assert!(problems.contains("refused"), "{url}: {problems}");
        assert!(problems.contains("--allow-private-webhooks"), "{url}");
    }
    assert!(
        engine.list_webhooks(sid).unwrap().is_empty(),
        "nothing written"
    );
    // An update to an internal URL is refused the same way.
    let created = engine
        .create_webhook(
            sid,
            &admin(),
            &json!({"url": "https://hooks.example.com/x", "events": ["order.created"]}),
        )
        .unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(
        engine
            .update_webhook(
                sid,
                &admin(),
                id,
                &json!({"url": "http://[::ffff:127.0.0.1]/"})
            )
            .is_err()
    );
    assert_eq!(
        engine.get_webhook(sid, id).unwrap()["url"],
        "https://hooks.example.com/x"
    );
}

#[test]
fn disguised_internal_addresses_are_refused_at_dispatch_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.redb");
    let clock = common::clock();
    // A listener on loopback that must never see a connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let urls = disguised(port);

    // (url, store, webhook), registered while private targets were allowed; a store holds at
    // most MAX_WEBHOOKS endpoints, so the corpus is spread over several.
    let registered: Vec<(String, String, String)> = {
        let engine = Engine::open_with(&path, options(&clock, true)).unwrap();
        let mut registered = Vec::new();
        for chunk in urls.chunks(latchkey::MAX_WEBHOOKS) {
            let (store, _) = common::store(&engine);
            for url in chunk {
                let created = engine
                    .create_webhook(
                        store.id.as_str(),
                        &admin(),
                        &json!({"url": url, "events": ["api_key.created"]}),
                    )
                    .unwrap();
                let id = created["id"].as_str().unwrap().to_owned();
                registered.push((url.clone(), store.id.as_str().to_owned(), id));
            }
        }
        registered
    };
    let engine = Engine::open_with(&path, options(&clock, false)).unwrap();
    for (url, store, id) in &registered {
        let result = engine.test_webhook(store, id).unwrap();
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("refused:"), "{url}: {result}");
        assert_eq!(result["status_code"], Value::Null);
    }
    // Queued deliveries meet the same guard.
    for store in engine.list_stores().unwrap() {
        common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    }
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!(pass.attempted, registered.len());
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a refused target was connected to: {other:?}"),
    }
}

#[test]
fn a_private_target_is_allowed_when_the_engine_allows_it() {
    let (engine, _clock) = engine(true);
    let (store, _) = common::store(&engine);
    let created = engine
        .create_webhook(
            store.id.as_str(),
            &admin(),
            &json!({"url": "http://2130706433:9/x", "events": ["order.created"]}),
        )
        .unwrap();
    // Stored as the address it means.
    assert_eq!(created["url"], "http://127.0.0.1:9/x");
}

#[test]
fn key_events_are_written_in_the_key_change_commit_and_only_then() {
    let (engine, _clock) = engine(false);
    let (store, default_key) = common::store(&engine);
    let sid = store.id.as_str();
    let start = engine.outbox_events(0, 100).unwrap().last().unwrap().seq;
    // Refused changes write no event.
    assert!(
        engine
            .revoke_key(sid, &admin(), &default_key.key.id)
            .is_err()
    );
    assert!(
        engine
            .regenerate_key(sid, &admin(), "key_missing", time::Duration::ZERO)
            .is_err()
    );
    assert!(engine.outbox_events(start, 10).unwrap().is_empty());
    let created = common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    engine.revoke_key(sid, &admin(), &created.key.id).unwrap();
    let events = engine.outbox_events(start, 10).unwrap();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("api_key.created", created.key.id.as_str()),
            ("api_key.revoked", created.key.id.as_str())
        ]
    );
    assert_eq!(events[0].data["masked"], created.key.masked.as_str());
    assert!(
        events[1].data.get("reason").is_none(),
        "a routine revocation"
    );
    // A key stopped as leaked says so in its event, for receivers that alert on it.
    let leaked = common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    let start = engine.outbox_events(0, 100).unwrap().last().unwrap().seq;
    let (_, stopped) = engine.stop_leaked(&leaked.credential(), &admin()).unwrap();
    stopped.unwrap();
    let events = engine.outbox_events(start, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "api_key.revoked");
    assert_eq!(events[0].data["reason"], "leaked");
}

#[test]
fn a_timeout_past_the_limit_is_refused_at_open() {
    let clock = common::clock();
    for bad in [Duration::ZERO, Duration::from_secs(u64::MAX)] {
        let mut options = options(&clock, false);
        options.webhooks.timeout = bad;
        let err = Engine::memory_with(options).unwrap_err();
        assert!(
            err.problems()
                .iter()
                .any(|p| p.starts_with("webhooks.timeout: must be more than zero")),
            "{err}"
        );
    }
    let mut options = options(&clock, false);
    options.webhooks.timeout = WebhookOptions::MAX_TIMEOUT;
    Engine::memory_with(options).unwrap();
}

#[test]
fn the_cache_is_set_in_mib_within_range() {
    let mut options = EngineOptions::default();
    options.set_cache_mb(3).unwrap();
    assert_eq!(options.cache_bytes, 3 << 20);
    for bad in [0, latchkey::CACHE_MB.end() + 1, u64::MAX] {
        let err = options.set_cache_mb(bad).unwrap_err();
        assert!(err.contains("between 1 and 1048576"), "{err}");
        assert_eq!(
            options.cache_bytes,
            3 << 20,
            "a refused size changes nothing"
        );
    }
}

/// A delivery that ended (here a 410, which also disables the endpoint) can be sent again by
/// hand: one attempt, no schedule after it, the same event id; refused while pending or
/// while the endpoint is disabled.
#[test]
fn a_finished_delivery_is_resent_once_by_hand() {
    let (engine, _clock) = engine(true);
    let receiver = Receiver::start(Box::new(|n| {
        let status = [410, 500, 200][n.min(2)];
        (status, Vec::new(), String::new(), Duration::ZERO)
    }));
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    engine.deliver_webhooks().unwrap();
    let delivery = deliveries(&engine, sid, &webhook)[0].clone();
    let id = delivery["id"].as_str().unwrap();
    assert_eq!(delivery["state"], "failed");

    let code = |r: latchkey::Result<Value>| r.unwrap_err().code();
    assert_eq!(
        code(engine.retry_webhook_delivery(sid, &webhook, id)),
        "CONFLICT"
    );
    let on = json!({"active": true});
    engine.update_webhook(sid, &admin(), &webhook, &on).unwrap();
    let queued = engine.retry_webhook_delivery(sid, &webhook, id).unwrap();
    assert_eq!(queued["state"], "pending");
    assert!(queued["next_attempt_at"].is_string());
    assert_eq!(
        code(engine.retry_webhook_delivery(sid, &webhook, id)),
        "CONFLICT"
    );

    // The resend fails (500): the delivery is failed again, with nothing scheduled.
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!((pass.attempted, pass.next_due_ms), (1, None));
    let after = &deliveries(&engine, sid, &webhook)[0];
    assert_eq!(after["state"], "failed");
    assert_eq!(after["attempts"].as_array().unwrap().len(), 2);

    // Resent again, it succeeds; every attempt carried the same event id.
    engine.retry_webhook_delivery(sid, &webhook, id).unwrap();
    engine.deliver_webhooks().unwrap();
    let done = &deliveries(&engine, sid, &webhook)[0];
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 3);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|r| r.headers["webhook-id"] == got[0].headers["webhook-id"])
    );

    for missing in ["whd_9999999999999999", "whd_1", "nope"] {
        assert_eq!(
            code(engine.retry_webhook_delivery(sid, &webhook, missing)),
            "NOT_FOUND"
        );
    }
    assert_eq!(
        code(engine.retry_webhook_delivery(sid, "wh_missing", id)),
        "NOT_FOUND"
    );
}

/// After its overlap a rotated-out secret is no longer shown as signing, nor used.
#[test]
fn a_rotation_overlap_ends_on_time() {
    let (engine, clock) = engine(true);
    let receiver = Receiver::answering(200);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, old) = subscribe(&engine, sid, &receiver.url, &["api_key.created"]);
    let rotated = engine
        .rotate_webhook_secret(sid, &admin(), &webhook, &json!({"overlap_seconds": 60}))
        .unwrap();
    let expires = rotated["previous_secret_expires_at"].clone();
    assert!(expires.is_string());
    assert_eq!(
        engine.get_webhook(sid, &webhook).unwrap()["previous_secret_expires_at"],
        expires
    );
    clock.advance(time::Duration::seconds(60));
    assert_eq!(
        engine.get_webhook(sid, &webhook).unwrap()["previous_secret_expires_at"],
        Value::Null
    );
    let listed = engine.list_webhooks(sid).unwrap();
    assert_eq!(listed[0]["previous_secret_expires_at"], Value::Null);
    // A delivery now carries the new secret's signature only.
    common::scoped(&engine, &store, json!({"Orders": ["View"]}));
    engine.deliver_webhooks().unwrap();
    let got = receiver.received();
    let signatures = &got[0].headers["webhook-signature"];
    assert_eq!(signatures.split(' ').count(), 1);
    let new = rotated["secret"].as_str().unwrap();
    assert!(signature_valid(new, &got[0]));
    assert!(!signature_valid(&old, &got[0]));
}

/// `api_key.expiring`: once per expiry, a week ahead, for active keys only; the delivery
/// passes look for them by themselves, at most once a minute.
#[test]
fn keys_about_to_expire_are_announced_once_a_week_ahead() {
    let (engine, clock) = engine(true);
    let receiver = Receiver::answering(200);
    let (store, _) = common::store(&engine);
    let sid = store.id.as_str();
    let (webhook, _) = subscribe(&engine, sid, &receiver.url, &["api_key.expiring"]);
    let in_days = |days: i64| {
        (clock.now() + time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let create = |name: &str, expires: Value| {
        let body = json!({"name": name, "permissions": "*", "expires_at": expires});
        let key = latchkey::NewKey::from_json(&body).unwrap();
        engine.create_key(sid, &admin(), key).unwrap().key.id
    };
    let soon = create("soon", json!(in_days(10)));
    create("never", Value::Null);
    let off = create("inactive", json!(in_days(8)));
    let patch = latchkey::KeyPatch {
        active: Some(false),
        ..Default::default()
    };
    engine.update_key(sid, &admin(), &off, patch).unwrap();
    let gone = create("revoked", json!(in_days(8)));
    engine.revoke_key(sid, &admin(), &gone).unwrap();

    // Ten days out: nothing yet (the first pass scans, and finds nothing due).
    assert_eq!(engine.deliver_webhooks().unwrap().queued, 0);
    clock.advance(time::Duration::days(3) + time::Duration::seconds(1));
    let pass = engine.deliver_webhooks().unwrap();
    assert_eq!((pass.queued, pass.attempted), (1, 1));
    let got = receiver.received();
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], "api_key.expiring");
    assert_eq!(body["data"]["id"], soon.as_str());
    assert!(body["data"]["expires_at"].is_string());
    // Once per expiry.
    assert_eq!(engine.notify_expiring_keys().unwrap(), 0);
    // A new expiry, also within the week, is announced again: by the first pass a minute
    // after the last scan, not by one within the minute.
    let sooner = latchkey::KeyPatch::from_json(&json!({"expires_at": in_days(2)})).unwrap();
    engine.update_key(sid, &admin(), &soon, sooner).unwrap();
    clock.advance(time::Duration::seconds(59));
    assert_eq!(engine.deliver_webhooks().unwrap().queued, 0);
    clock.advance(time::Duration::seconds(1));
    assert_eq!(engine.deliver_webhooks().unwrap().queued, 1);
    assert_eq!(engine.notify_expiring_keys().unwrap(), 0);
    assert_eq!(deliveries(&engine, sid, &webhook).len(), 2);
}
