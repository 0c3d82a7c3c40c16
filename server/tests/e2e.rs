//! The real binary on a loopback port, driven over HTTP: the flows of the seeds, and kill -9.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use latchkey_server::jwt;
use serde_json::{Value, json};

const SECRET: &str = "end-to-end-secret-of-32-bytes!!!";

struct Server {
    child: Child,
    base: String,
}

/// `latchkey serve` on a free loopback port and `db`, its errors piped.
fn serve(db: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stderr(Stdio::piped());
    command
}

impl Server {
    fn start(db: &Path) -> Server {
        Self::start_with(db, &[])
    }

    fn start_with(db: &Path, extra: &[&str]) -> Server {
        let mut command = serve(db);
        command
            .args(extra)
            .env("LATCHKEY_JWT_SECRET", SECRET)
            .stdout(Stdio::null());
        Self::listening(command.spawn().expect("start the server"))
    }

    /// `serve --dev` on `db` with the database's own management secret: the server and the
    /// banner's lines (`store`, `API key`, `admin token`).
    fn start_dev(db: &Path) -> (Server, std::collections::HashMap<String, String>) {
        let mut child = serve(db)
            .arg("--dev")
            .env_remove("LATCHKEY_JWT_SECRET")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut banner = std::collections::HashMap::new();
        while !banner.contains_key("admin token") {
            let line = lines.next().expect("the banner").expect("read stdout");
            if let Some((name, value)) = line.trim().split_once(": ") {
                banner.insert(name.to_owned(), value.trim().to_owned());
            }
        }
        // The rest of the banner too: a closed pipe would fail the server's next print.
        std::thread::spawn(move || for _ in lines {});
        (Self::listening(child), banner)
    }

    /// The server once it says where it listens.
    fn listening(mut child: Child) -> Server {
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .expect("read stderr");
            if let Some(address) = line.strip_prefix("latchkey: listening on ") {
                break address.trim().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
    admin: String,
}

struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Client {
    fn new(server: &Server) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let admin = jwt::issue(
            SECRET.as_bytes(),
            "e2e",
            &jwt::ALL_PERMISSIONS,
            json!("*"),
            now,
            600,
        )
        .expect("token");
        Client {
            agent,
            base: server.base.clone(),
            admin,
        }
    }

    fn send(&self, method: &str, path: &str, header: (&str, &str), body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header(header.0, header.1).call(),
            ("DELETE", _) => self.agent.delete(&url).header(header.0, header.1).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header(header.0, header.1)
                .send_json(body),
            ("POST", None) => self
                .agent
                .post(&url)
                .header(header.0, header.1)
                .send_empty(),
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header(header.0, header.1)
                .send_json(body),
            other => panic!("unsupported {other:?}"),
        };
        let mut response = response.expect("HTTP exchange");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .read_json::<Value>()
            .unwrap_or(Value::Null);
        Reply {
            status,
            body,
            retry_after,
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.with_token(method, path, &self.admin, body)
    }

    /// A management request with `token` as its bearer.
    fn with_token(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let bearer = format!("Bearer {token}");
        self.send(method, path, ("Authorization", &bearer), body)
    }

    fn with_key(&self, path: &str, key: &str) -> Reply {
        self.send("GET", path, ("X-Api-Key", key), None)
    }
}

fn key_of(reply: &Reply) -> String {
    let data = &reply.body["data"];
    match (
        data["key"].as_str(),
        data["consumer_key"].as_str(),
        data["consumer_secret"].as_str(),
    ) {
        (Some(key), _, _) => key.to_owned(),
        (None, Some(ck), Some(cs)) => format!("{ck}:{cs}"),
        _ => panic!("no secret in {}", reply.body),
    }
}

#[test]
fn the_seed_flows_over_http_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e2e.redb");
    let server = Server::start(&db);
    let client = Client::new(&server);

    let created = client.admin("POST", "/api/stores", Some(json!({"name": "E2E Shop"})));
    assert_eq!(created.status, 201, "{}", created.body);
    let sid = created.body["data"]["store"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = format!("/api/stores/{sid}/api-keys");

    // Keys of each format work as documented.
    let mut by_format = Vec::new();
    for format in ["token", "hex", "pair"] {
        let reply = client.admin(
            "POST",
            &keys,
            Some(json!({"name": format, "format": format, "permissions": {"Orders": ["View"]}})),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        let id = reply.body["data"]["id"].as_str().unwrap().to_owned();
        let credential = key_of(&reply);
        let ok = if format == "pair" {
            let basic = base64::engine::general_purpose::STANDARD.encode(&credential);
            client.send(
                "GET",
                "/api/v1/orders",
                ("Authorization", &format!("Basic {basic}")),
                None,
            )
        } else {
            client.with_key("/api/v1/orders", &credential)
        };
        assert_eq!(ok.status, 200, "{format}: {}", ok.body);
        by_format.push((id, credential));
    }
    let (token_id, token) = by_format[0].clone();

    // The 401 and 403 cases of SPEC §4, with their messages.
    let expect = |reply: Reply, status: u16, message: &str| {
        assert_eq!(
            (reply.status, reply.body["message"].as_str()),
            (status, Some(message)),
            "{}",
            reply.body
        );
    };
    expect(
        client.send("GET", "/api/v1/orders", ("X-Other", "x"), None),
        401,
        "API key required",
    );
    let mut wrong = token.clone();
    // One character of the secret changed (to something else than it was: 1 in 62 tokens
    // already has a `Z` there).
    let at = wrong.len() - 8;
    let other = if &wrong[at..=at] == "Z" { "Y" } else { "Z" };
    wrong.replace_range(at..=at, other);
    expect(
        client.with_key("/api/v1/orders", &wrong),
        401,
        "Invalid API key",
    );
    expect(
        client.with_key("/api/v1/packages", &token),
        403,
        "Missing permission Packages:View",
    );
    let fenced = client.admin(
        "POST",
        &keys,
        Some(json!({"name": "fenced", "permissions": "*", "ip_allowlist": ["10.0.0.0/8"]})),
    );
    expect(
        client.with_key("/api/v1/orders", &key_of(&fenced)),
        403,
        "IP address not allowed",
    );
    let slow = client.admin(
        "POST",
        &keys,
        Some(json!({"name": "slow", "permissions": "*", "rate_limit": {"limit": 2, "algorithm": "fixed_window"}})),
    );
    assert_eq!(slow.status, 201, "{}", slow.body);
    let slow_key = key_of(&slow);
    assert_eq!(client.with_key("/api/v1/orders", &slow_key).status, 200);
    assert_eq!(client.with_key("/api/v1/orders", &slow_key).status, 200);
    let limited = client.with_key("/api/v1/orders", &slow_key);
    assert!(limited.retry_after.is_some());
    expect(limited, 429, "Rate limit exceeded");

    // Deactivate, then regenerate and revoke: each takes effect on the very next request.
    let patch = client.admin(
        "PATCH",
        &format!("{keys}/{token_id}"),
        Some(json!({"active": false})),
    );
    assert_eq!(patch.status, 200);
    expect(
        client.with_key("/api/v1/orders", &token),
        403,
        "API key is inactive",
    );
    client.admin(
        "PATCH",
        &format!("{keys}/{token_id}"),
        Some(json!({"active": true})),
    );
    let regenerated = client.admin("POST", &format!("{keys}/{token_id}/regenerate"), None);
    assert_eq!(regenerated.status, 200, "{}", regenerated.body);
    let new_token = key_of(&regenerated);
    expect(
        client.with_key("/api/v1/orders", &token),
        401,
        "Invalid API key",
    );
    assert_eq!(client.with_key("/api/v1/orders", &new_token).status, 200);
    let (hex_id, hex) = by_format[1].clone();
    assert_eq!(
        client
            .admin("DELETE", &format!("{keys}/{hex_id}"), None)
            .status,
        200
    );
    expect(
        client.with_key("/api/v1/orders", &hex),
        401,
        "Invalid API key",
    );
    let disabled = client.admin(
        "PATCH",
        &format!("/api/stores/{sid}"),
        Some(json!({"api_enabled": false})),
    );
    assert_eq!(disabled.status, 200);
    expect(
        client.with_key("/api/v1/orders", &new_token),
        403,
        "REST API is disabled for this store",
    );
    client.admin(
        "PATCH",
        &format!("/api/stores/{sid}"),
        Some(json!({"api_enabled": true})),
    );

    // A key created just before kill -9 works after a restart.
    let last = client.admin(
        "POST",
        &keys,
        Some(json!({"name": "last", "permissions": {"Orders": ["View"]}})),
    );
    assert_eq!(last.status, 201);
    let last_key = key_of(&last);
    server.kill_9();
    let server = Server::start(&db);
    let client = Client::new(&server);
    assert_eq!(client.with_key("/api/v1/orders", &last_key).status, 200);
    assert_eq!(client.with_key("/api/v1/orders", &new_token).status, 200);
    assert_eq!(
        client.with_key("/api/v1/orders", &hex).status,
        401,
        "a revocation survives too"
    );
}

#[test]
fn the_auth_failure_limit_is_configurable_and_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "lk_abcdefgh_0000000000000000000000000000000000";
    // Two failures in the window, then 429 for that address, even with a good key.
    let server = Server::start_with(&dir.path().join("a.redb"), &["--auth-failures", "2/900"]);
    let client = Client::new(&server);
    let created = client.admin("POST", "/api/stores", Some(json!({"name": "Limits"})));
    let key = created.body["data"]["default_key"]["key"]
        .as_str()
        .expect("the default key")
        .to_owned();
    for _ in 0..2 {
        assert_eq!(client.with_key("/api/v1/packages", bad).status, 401);
    }
    let blocked = client.with_key("/api/v1/packages", &key);
    assert_eq!(blocked.status, 429, "{:?}", blocked.body);
    assert!(blocked.retry_after.is_some());
    drop(server);
    // Off: failures are answered 401 however many there are.
    let server = Server::start_with(&dir.path().join("b.redb"), &["--auth-failures", "off"]);
    let client = Client::new(&server);
    for _ in 0..150 {
        assert_eq!(client.with_key("/api/v1/packages", bad).status, 401);
    }
}

#[test]
fn serve_refuses_bad_configuration_naming_every_problem() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args([
            "serve",
            "--jwt-secret",
            "short",
            "--trusted-proxy",
            "nope,10.0.0.0/8",
            "--body-limit",
            "0",
            "--cache-mb",
            "0",
            "--webhook-timeout",
            "18446744073709551615",
            "--auth-failures",
            "ten",
        ])
        .env_remove("LATCHKEY_DB")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "--jwt-secret: must be at least 32 bytes",
        "--trusted-proxy: `nope`",
        "--body-limit",
        "--cache-mb: must be between 1 and",
        "--webhook-timeout: must be more than zero and at most 300 seconds",
        "--auth-failures: `ten` is not LIMIT/SECONDS or off",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

/// `admin-token` names every problem at once, and signs nothing then.
#[test]
fn admin_token_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args([
            "admin-token",
            "--ttl",
            "5 weeks",
            "--permissions",
            "Stores:Fly",
            "--db",
        ])
        .arg(dir.path().join("none.redb"))
        .env_remove("LATCHKEY_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "--ttl: `5 weeks` is not a lifetime",
        "--permissions: unknown Stores:Fly",
        "none.redb.jwt-secret: no management secret here",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    // Lifetimes with a unit, and a given secret without any database.
    let signs_with_ttl = |ttl: &str| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["admin-token", "--ttl", ttl])
            .env("LATCHKEY_JWT_SECRET", SECRET)
            .output()
            .unwrap()
            .status
            .success()
    };
    for ttl in ["90", "90s", "30m", "2h", "7d"] {
        assert!(signs_with_ttl(ttl), "{ttl}");
    }
    for ttl in ["59", "1m1", "367d", "h", "-5m"] {
        assert!(!signs_with_ttl(ttl), "{ttl}");
    }
}

/// Without LATCHKEY_JWT_SECRET the server signs with the database's own secret, made on its
/// first start; `admin-token` signs with the same while the server runs, and it survives a
/// restart. `--dev` makes `devstore` once: a restart gives its default key a new secret.
#[test]
fn the_database_secret_signs_admin_tokens_and_dev_makes_its_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("own.redb");
    let admin_token = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["admin-token", "--ttl", "2h", "--db"])
            .arg(&db)
            .args(extra)
            .env_remove("LATCHKEY_JWT_SECRET")
            .env_remove("LATCHKEY_DB")
            .output()
            .unwrap()
    };
    let before = admin_token(&[]);
    assert!(!before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("no management secret here"),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let (server, first) = Server::start_dev(&db);
    assert_eq!(first["store"], "devstore");
    let secret_file = std::fs::read_to_string(dir.path().join("own.redb.jwt-secret")).unwrap();
    assert_eq!(secret_file.trim().len(), 64);
    let client = Client::new(&server);
    let token = admin_token(&["--store", "devstore"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let reply = client.with_token("GET", "/api/stores/devstore", &token, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = client.with_token("GET", "/api/stores", &first["admin token"], None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The e2e secret is not this server's.
    assert_eq!(client.admin("GET", "/api/stores", None).status, 401);
    assert_eq!(
        client
            .with_key("/api/v1/packages", &first["API key"])
            .status,
        200
    );
    drop(server);

    let (server, second) = Server::start_dev(&db);
    let client = Client::new(&server);
    assert_eq!(second["store"], "devstore");
    assert_ne!(second["API key"], first["API key"]);
    assert_eq!(
        client
            .with_key("/api/v1/packages", &second["API key"])
            .status,
        200
    );
    assert_eq!(
        client
            .with_key("/api/v1/packages", &first["API key"])
            .status,
        401
    );
    let reply = client.with_token("GET", "/api/stores/devstore", &token, None);
    assert_eq!(
        reply.status, 200,
        "the token made before the restart: {}",
        reply.body
    );
    // One store and one key, however many starts.
    let listed = ["/api/stores", "/api/stores/devstore/api-keys"]
        .map(|path| client.with_token("GET", path, &token, None));
    for list in &listed {
        assert_eq!(
            list.body["data"].as_array().map(Vec::len),
            Some(1),
            "{}",
            list.body
        );
    }
    let [_, keys] = listed;
    assert!(!second.contains_key("note"));
    // What was set on the key since is kept, and the banner says when it stops the key.
    let key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/stores/devstore/api-keys/{key_id}");
    let off = json!({"active": false});
    let reply = client.with_token("PATCH", &path, &token, Some(off));
    assert_eq!(reply.status, 200, "{}", reply.body);
    drop(server);
    let (server, third) = Server::start_dev(&db);
    assert!(third["note"].contains("deactivated"), "{third:?}");
    let client = Client::new(&server);
    let refused = client.with_key("/api/v1/packages", &third["API key"]);
    assert_eq!(refused.body["code"], "INACTIVE", "{}", refused.body);
}

#[test]
fn scan_finds_credentials_of_every_format_and_stops_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scan.redb");
    let latchkey = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env_remove("LATCHKEY_DB")
            .output()
            .unwrap()
    };
    let run = |args: &[&str]| {
        let output = latchkey(args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let db_arg = db.to_str().unwrap();
    let store: Value =
        serde_json::from_str(&run(&["stores", "create", "Scan Shop", "--db", db_arg])).unwrap();
    let sid = store["store"]["id"].as_str().unwrap();
    let create = |format: &str| -> Value {
        serde_json::from_str(&run(&[
            "keys",
            "create",
            "--db",
            db_arg,
            "--store",
            sid,
            "--name",
            "leaky",
            "--permissions",
            "orders:read",
            "--format",
            format,
        ]))
        .unwrap()
    };
    let token = create("token")["key"].as_str().unwrap().to_owned();
    let hex = create("hex")["key"].as_str().unwrap().to_owned();
    let pair = create("pair");
    let consumer_secret = pair["consumer_secret"].as_str().unwrap();
    let default_key = store["default_key"]["key"].as_str().unwrap();
    let mut fake = token.clone();
    fake.replace_range(
        fake.len() - 1..,
        if fake.ends_with('A') { "B" } else { "A" },
    );
    let digest = "0123456789abcdef".repeat(4);
    let source = dir.path().join("src");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(
        source.join("config.env"),
        format!(
            "# settings\nAPI_KEY={token}\nOTHER={fake}\nADMIN_KEY={default_key}\n\
             HEX_KEY={hex}\nWC_SECRET={consumer_secret}\nSHA256={digest}\n"
        ),
    )
    .unwrap();
    let source_arg = source.to_str().unwrap();
    let secrets = [&token, &hex, consumer_secret, default_key];
    let never_repeated = |report: &str| {
        for secret in secrets {
            assert!(!report.contains(secret), "the report repeats a secret");
        }
    };

    // Without a database: tokens and pair secrets by their shape; 64-hex strings are not
    // reported (most are digests) but counted.
    let output = latchkey(&["scan", source_arg]);
    let (report, summary) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{summary}");
    never_repeated(&report);
    for line in ["config.env:2: ", "config.env:4: ", "config.env:6: cs_…"] {
        assert!(report.contains(line), "{line}: {report}");
    }
    assert!(
        !report.contains("config.env:3:"),
        "a bad checksum is not a token: {report}"
    );
    assert_eq!(report.lines().count(), 3, "{report}");
    assert!(
        summary.contains("3 credential(s) found")
            && summary.contains("2 string(s) of 64 hex characters not checked"),
        "{summary}"
    );
    // A file over --max-file-mib is skipped, and said to be.
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(
        big.join("dump.log"),
        format!("{}\n{token}\n", "x".repeat(1 << 20)),
    )
    .unwrap();
    let big_arg = big.to_str().unwrap();
    let output = latchkey(&["scan", big_arg, "--max-file-mib", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.stdout.is_empty() && stderr.contains("dump.log: skipped, 1 MiB"),
        "{stderr}"
    );
    assert!(run(&["scan", big_arg]).contains("dump.log:2: "));
    // `-` reads standard input, as from `git diff --cached`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["scan", "--fail", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        write!(stdin, "@@ -1 +1,2 @@\n+API_KEY={token}\n").unwrap();
    }
    let piped = child.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), Some(1));
    let report = String::from_utf8_lossy(&piped.stdout);
    assert!(
        report.starts_with("-:2: ") && !report.contains(&token),
        "{report}"
    );
    // Every bad argument is named at once, and nothing is scanned.
    let output = latchkey(&[
        "scan",
        source_arg,
        "missing-dir",
        "--exclude",
        "a[",
        "--exclude",
        "/",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{stderr}");
    for problem in [
        "missing-dir: no such file",
        "\"a[\"",
        "\"/\": an empty pattern",
    ] {
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
    // --exclude leaves out what it matches below the paths given.
    let report = run(&["scan", source_arg, "--exclude", "*.env"]);
    assert!(report.is_empty(), "{report}");
    // --fail turns a finding into a failing exit status, for a pre-commit hook.
    let output = latchkey(&["scan", source_arg, "--fail"]);
    assert_eq!(output.status.code(), Some(1));

    // With --db: which key each is; the hex key is told from the digest; nothing is changed.
    let report = run(&["scan", source_arg, "--db", db_arg]);
    never_repeated(&report);
    assert_eq!(report.matches(" live key key_").count(), 4, "{report}");
    assert!(report.contains("config.env:5: …") && !report.contains("config.env:7:"));
    let listed: Value =
        serde_json::from_str(&run(&["keys", "list", "--db", db_arg, "--store", sid])).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        4,
        "a report revokes nothing"
    );
    // The same for scripts (JSON Lines) and code scanning (SARIF), secrets still masked.
    let lines = run(&["scan", source_arg, "--db", db_arg, "--format", "json"]);
    never_repeated(&lines);
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 4, "{lines}");
    assert!(
        entries
            .iter()
            .all(|e| e["status"] == "live" && e["path"].as_str().unwrap().ends_with("config.env"))
    );
    let sarif = run(&["scan", source_arg, "--db", db_arg, "--format", "sarif"]);
    never_repeated(&sarif);
    let log: Value = serde_json::from_str(&sarif).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    let lines: Vec<_> = results
        .iter()
        .map(|r| r["locations"][0]["physicalLocation"]["region"]["startLine"].clone())
        .collect();
    assert_eq!(lines, [json!(2), json!(4), json!(5), json!(6)], "{sarif}");
    assert!(results.iter().all(|r| r["level"] == "error"), "{sarif}");

    let report = run(&["scan", source_arg, "--revoke", "--db", db_arg]);
    never_repeated(&report);
    assert_eq!(report.matches(" revoked key_").count(), 3, "{report}");
    // The default key cannot be revoked: its leaked secret is replaced by one nobody has seen.
    assert!(
        report.contains("config.env:4: ") && report.contains("has a new secret, not shown"),
        "{report}"
    );
    let listed: Value =
        serde_json::from_str(&run(&["keys", "list", "--db", db_arg, "--store", sid])).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the default key is left"
    );
    // No leaked secret authenticates any more: a second pass finds nothing live, and --fail
    // passes. (The hex key, no longer live, is no longer told from a digest.)
    let again = run(&["scan", source_arg, "--revoke", "--db", db_arg, "--fail"]);
    assert_eq!(again.matches(" not live").count(), 3, "{again}");
}

/// `scan --server`: the same check through a running server's management API (whose database
/// file `--db` cannot open), limited to the stores the admin token covers.
#[test]
fn scan_against_a_running_server_checks_and_stops_within_the_tokens_stores() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("served.redb"));
    let client = Client::new(&server);
    let store = |name: &str| {
        let created = client.admin("POST", "/api/stores", Some(json!({ "name": name })));
        assert_eq!(created.status, 201, "{}", created.body);
        created.body["data"]["store"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ours, theirs) = (store("Ours"), store("Theirs"));
    let mut credentials = Vec::new();
    for (sid, format) in [
        (&ours, "token"),
        (&ours, "hex"),
        (&ours, "pair"),
        (&theirs, "token"),
    ] {
        let reply = client.admin(
            "POST",
            &format!("/api/stores/{sid}/api-keys"),
            Some(json!({"name": "leaky", "format": format, "permissions": {"Orders": ["View"]}})),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        credentials.push(key_of(&reply));
    }
    let digest = "0123456789abcdef".repeat(4);
    let source = dir.path().join("repo");
    std::fs::create_dir(&source).unwrap();
    // More words than one request carries: lines are mapped back across requests.
    let lock = format!(
        "{}{}\n",
        format!("{digest}\n").repeat(1_500),
        credentials[0]
    );
    std::fs::write(source.join("lock.txt"), lock).unwrap();
    std::fs::write(
        source.join("deploy.sh"),
        format!(
            "#!/bin/sh\nexport A={}\nexport B={}\n# sha256 {digest}\nexport C={}\n\nexport D={}\n",
            credentials[0], credentials[1], credentials[2], credentials[3]
        ),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = |permissions: &[&str]| {
        jwt::issue(
            SECRET.as_bytes(),
            "ci",
            permissions,
            json!([ours]),
            now,
            600,
        )
        .unwrap()
    };
    let scan = |token: &str, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["scan", "--server", &server.base])
            .args(extra)
            .arg(&source)
            .env("LATCHKEY_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        let report = String::from_utf8(output.stdout).unwrap();
        for credential in &credentials {
            let secret = credential.rsplit(':').next().unwrap();
            assert!(!report.contains(secret), "the report repeats a secret");
        }
        (
            output.status.code(),
            report,
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let viewer = token(&["Stores:View"]);

    // Reported at the lines they are on; the digest is not a key; another tenant's key is
    // live but neither named nor stopped.
    let (code, report, summary) = scan(&viewer, &[]);
    assert_eq!(code, Some(0), "{summary}");
    for line in ["deploy.sh:2: ", "deploy.sh:3: …", "deploy.sh:5: cs_…"] {
        assert!(
            report
                .lines()
                .any(|l| l.contains(line) && l.contains(" live key key_")),
            "{line}: {report}"
        );
    }
    assert!(
        report.contains("deploy.sh:7: ")
            && report.contains("a store the admin token does not cover"),
        "{report}"
    );
    assert!(!report.contains("deploy.sh:4:"), "{report}");
    assert!(report.contains("lock.txt:1501: "), "{report}");
    assert!(
        summary.contains("5 credential(s) found, 5 live"),
        "{summary}"
    );

    // Stopping needs Stores:Edit: refused with the server's reason, and nothing is stopped.
    let (code, _, refused) = scan(&viewer, &["--revoke"]);
    assert_eq!(code, Some(1), "{refused}");
    assert!(
        refused.contains("403") && refused.contains("deploy.sh: not checked"),
        "{refused}"
    );
    assert_eq!(
        client.with_key("/api/v1/orders", &credentials[0]).status,
        200
    );

    let editor = token(&["Stores:View", "Stores:Edit"]);
    let (code, report, summary) = scan(&editor, &["--revoke", "--fail"]);
    assert_eq!(code, Some(1), "their key is still live: {summary}");
    assert_eq!(report.matches(" revoked key_").count(), 3, "{report}");
    assert_eq!(
        client.with_key("/api/v1/orders", &credentials[0]).status,
        401
    );
    assert_eq!(
        client.with_key("/api/v1/orders", &credentials[3]).status,
        200
    );

    // A token the server does not accept, and no token at all, are said to be the problem.
    let (code, _, refused) = scan("not.a.token", &[]);
    assert_eq!(code, Some(1));
    assert!(refused.contains("401"), "{refused}");
    let (code, _, refused) = scan("", &[]);
    assert_eq!(code, Some(1));
    assert!(refused.contains("LATCHKEY_ADMIN_TOKEN"), "{refused}");
    // One checker at a time.
    let (code, _, refused) = scan(&viewer, &["--db", "x.redb"]);
    assert_eq!(code, Some(2), "{refused}");
}

/// A delivery in flight when the server is killed is delivered after the restart, with the
/// same `webhook-id`: the outcome was never recorded, so the delivery is still due.
#[test]
fn a_webhook_in_flight_at_kill_9_is_delivered_after_restart() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let receiver = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = receiver.server_addr().to_ip().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        // The first request is held unanswered (the server dies waiting); later ones get 200.
        let mut held = Vec::new();
        for request in receiver.incoming_requests() {
            let id = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("webhook-id"))
                .map(|h| h.value.to_string())
                .unwrap_or_default();
            let first = {
                let mut log = log.lock().unwrap();
                log.push(id);
                log.len() == 1
            };
            if first {
                held.push(request);
            } else {
                let _ = request.respond(tiny_http::Response::empty(200));
            }
        }
    });
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().len() < count {
            assert!(Instant::now() < deadline, "no delivery {count}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hooks.redb");
    let private = ["--allow-private-webhooks"];
    let server = Server::start_with(&db, &private);
    let client = Client::new(&server);
    let store = client.admin("POST", "/api/stores", Some(json!({"name": "Hooks"})));
    let sid = store.body["data"]["store"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hook = client.admin(
        "POST",
        &format!("/api/stores/{sid}/webhooks"),
        Some(json!({"url": format!("http://127.0.0.1:{port}/in"), "events": ["api_key.created"]})),
    );
    assert_eq!(hook.status, 201, "{}", hook.body);
    let hid = hook.body["data"]["id"].as_str().unwrap().to_owned();
    let key = client.admin(
        "POST",
        &format!("/api/stores/{sid}/api-keys"),
        Some(json!({"name": "ERP", "permissions": {"Orders": ["View"]}})),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    wait_for(1);
    server.kill_9();

    let server = Server::start_with(&db, &private);
    wait_for(2);
    let ids = seen.lock().unwrap().clone();
    assert_eq!(ids[0], ids[1], "the same event keeps its webhook-id");
    assert!(ids[0].starts_with("evt_"));
    let client = Client::new(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client.admin(
            "GET",
            &format!("/api/stores/{sid}/webhooks/{hid}/deliveries"),
            None,
        );
        let delivery = &listed.body["data"][0];
        if delivery["state"] == "succeeded" {
            assert_eq!(delivery["event_id"], ids[0].as_str());
            assert_eq!(delivery["attempts"][0]["status_code"], 200);
            break;
        }
        assert!(Instant::now() < deadline, "{}", listed.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keys_create_takes_the_api_settings_and_names_every_bad_flag() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.redb");
    let db_arg = db.to_str().unwrap();
    let latchkey = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .env_remove("LATCHKEY_DB")
            .output()
            .unwrap()
    };
    let store = latchkey(&["stores", "create", "CLI Shop", "--db", db_arg]);
    let store: Value = serde_json::from_slice(&store.stdout).unwrap();
    let sid = store["store"]["id"].as_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--db", db_arg, "--store", sid];
        args.extend_from_slice(extra);
        latchkey(&args)
    };

    let made = create(&[
        "--name",
        "ERP",
        "--permissions",
        "orders:read, packages:read",
        "--description",
        "the ERP",
        "--environment",
        "test",
        "--rate-limit",
        "30/60/fixed_window",
        "--ip-allowlist",
        "203.0.113.0/24,2001:db8::/32",
        "--expires-at",
        "2031-06-01T00:00:00Z",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(
        key["permissions"],
        json!({"Orders": ["View"], "Packages": ["View"]})
    );
    assert_eq!(
        (&key["description"], &key["environment"], &key["expires_at"]),
        (
            &json!("the ERP"),
            &json!("test"),
            &json!("2031-06-01T00:00:00Z")
        )
    );
    assert_eq!(
        key["rate_limit"],
        json!({"limit": 30, "window_seconds": 60, "algorithm": "fixed_window"})
    );
    assert_eq!(
        key["ip_allowlist"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    let never = create(&["--name", "n", "--permissions", "*", "--expires-at", "never"]);
    let never: Value = serde_json::from_slice(&never.stdout).unwrap();
    assert_eq!(never["expires_at"], Value::Null);

    // Every bad flag is named by its flag, at once, and no key is made.
    let refused = create(&[
        "--name",
        "",
        "--permissions",
        "{\"Nope\": [\"View\"]}",
        "--format",
        "morse",
        "--rate-limit",
        "lots",
        "--ip-allowlist",
        "10.0.0.0/33",
        "--expires-at",
        "tomorrow",
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for flag in [
        "--name:",
        "--permissions:",
        "--format:",
        "--rate-limit:",
        "--ip-allowlist:",
        "--expires-at:",
    ] {
        assert!(stderr.contains(flag), "{flag} in {stderr}");
    }
    let listed = latchkey(&["keys", "list", "--db", db_arg, "--store", sid]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "default, ERP and `n` only"
    );

    // `keys regenerate --overlap-seconds`: the old secret keeps working until the overlap
    // ends; a bad overlap is named by its flag.
    let kid = key["id"].as_str().unwrap();
    let regenerate = |overlap: &str| {
        latchkey(&[
            "keys",
            "regenerate",
            "--db",
            db_arg,
            "--store",
            sid,
            "--key",
            kid,
            "--overlap-seconds",
            overlap,
        ])
    };
    let refused = regenerate("-5");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--overlap-seconds: must be from 0 to 604800 seconds"),
        "{stderr}"
    );
    let rolled = regenerate("600");
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    let rolled: Value = serde_json::from_slice(&rolled.stdout).unwrap();
    assert_ne!(rolled["key"], key["key"]);
    assert!(rolled["previous_expires_at"].is_string(), "{rolled}");
    {
        let engine = latchkey::Engine::open(&db).unwrap();
        for credential in [&key["key"], &rolled["key"]] {
            let found = engine
                .identify(credential.as_str().unwrap())
                .expect("both live");
            assert_eq!(found.key_id, kid);
        }
    }

    // `scan --revoke` on a leak of the old secret ends the overlap rather than revoking the
    // key: the new secret keeps working.
    let leak = dir.path().join("leak.env");
    std::fs::write(&leak, format!("API_KEY={}\n", key["key"].as_str().unwrap())).unwrap();
    let scanned = latchkey(&["scan", leak.to_str().unwrap(), "--revoke", "--db", db_arg]);
    let report = String::from_utf8_lossy(&scanned.stdout);
    assert!(
        report.contains(&format!("stopped: old secret of {kid}, its overlap ended")),
        "{report}"
    );
    let engine = latchkey::Engine::open(&db).unwrap();
    assert!(engine.identify(key["key"].as_str().unwrap()).is_none());
    let found = engine
        .identify(rolled["key"].as_str().unwrap())
        .expect("still live");
    assert!(!found.replaced);
}

#[test]
fn admin_commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.redb");
    let db_arg = db.to_str().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir(&source).unwrap();
    let source_arg = source.to_str().unwrap();
    for args in [
        vec!["stores", "list", "--db", db_arg],
        vec!["keys", "list", "--db", db_arg, "--store", "abcd1234"],
        vec![
            "keys",
            "create",
            "--db",
            db_arg,
            "--store",
            "abcd1234",
            "--name",
            "n",
            "--permissions",
            "*",
        ],
        vec![
            "keys", "revoke", "--db", db_arg, "--store", "abcd1234", "--key", "key_x",
        ],
        vec![
            "keys",
            "regenerate",
            "--db",
            db_arg,
            "--store",
            "abcd1234",
            "--key",
            "key_x",
        ],
        vec!["scan", source_arg, "--revoke", "--db", db_arg],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(&args)
            .env_remove("LATCHKEY_DB")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no database here"), "{args:?}: {stderr}");
        assert!(!db.exists(), "{args:?} created the file");
    }
    // Creating a store is what makes a database.
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["stores", "create", "Shop", "--db", db_arg])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(db.exists());
}

/// True when the server closes `stream` within `limit` (anything it sends is read past).
fn closed_within(stream: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed() < limit,
            Ok(_) => {}
            // The read timed out: still open after `limit`.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            // Reset, aborted, or any other end of the connection: closed, by the server.
            Err(e) => {
                eprintln!("closed with {:?} after {:?}", e.kind(), started.elapsed());
                return started.elapsed() < limit;
            }
        }
    }
}

#[test]
fn a_slow_or_idle_connection_is_closed_and_sigterm_still_drains() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("slow.redb"), &["--header-timeout", "1"]);
    let address = server.base.trim_start_matches("http://").to_owned();

    // Half a request head, as a slowloris client sends it.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "a partial head is cut off"
    );
    // Nothing at all.
    let mut silent = TcpStream::connect(&address).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "a silent connection is closed"
    );
    // A keep-alive connection after its request: answered, then closed when left idle.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection is closed"
    );
    let client = Client::new(&server);
    assert_eq!(
        client
            .send("GET", "/healthz", ("Accept", "*/*"), None)
            .status,
        200,
        "other clients are served"
    );

    // SIGTERM with a slow client connected: the server stops within its drain.
    let mut hanging = TcpStream::connect(&address).unwrap();
    hanging.write_all(b"GET /healthz HT").unwrap();
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "SIGTERM did not stop the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
