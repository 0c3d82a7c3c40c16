//! `latchkey`: the engine as an HTTP server and admin CLI (SPEC §9).

// The CLI's output is its interface: results go to stdout, diagnostics to stderr.
#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use latchkey::{Actor, Clock, Engine, EngineOptions, LeakShape, NewKey, NewStore, WebhookOptions};
use latchkey_server::leak_client::LeakClient;
use latchkey_server::scan::{Excludes, ScanFormat, ScanReport};
use latchkey_server::{AppState, Config, app, jwt, secret_file};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "latchkey",
    version,
    about = "API keys for commerce platforms: server and admin CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server.
    Serve(Serve),
    /// Print a management-API token signed with the database's secret (or LATCHKEY_JWT_SECRET).
    AdminToken(AdminToken),
    /// List or create stores in a database file.
    Stores {
        #[command(subcommand)]
        command: StoresCommand,
    },
    /// Create, list, revoke or regenerate keys in a database file.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Find Latchkey credentials in files; with --db say which are live, with --revoke stop them.
    Scan(Scan),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Environment only (read by the server and the bindings alike):
  API_DEFAULT_RATE_LIMIT_PER_MINUTE  per-key limit when neither key nor store sets one (1-10000; default 60)
  LATCHKEY_DIGEST_MEMO               off (the server's default) or on: remember the SHA-256 of recently
                                     presented secrets per thread, so a busy key is hashed once per
                                     thread. Under HTTP load its entries fall out of the CPU's caches
                                     between a key's requests and a hit costs more than hashing
                                     (the bindings default to on)")]
struct Serve {
    /// Database file (created if missing), with its management secret beside it in
    /// PATH.jwt-secret (created on the first start, unless --jwt-secret is given).
    #[arg(long, env = "LATCHKEY_DB", default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Development mode: create the store `devstore` (once) and print a working key for it
    /// (a new secret for its default key on each start) and an admin token.
    #[arg(long)]
    dev: bool,
    /// HS256 secret for management tokens (at least 32 bytes), instead of the database's own.
    #[arg(long, env = "LATCHKEY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<SecretArg>,
    /// Proxies whose X-Forwarded-For is believed (CIDRs or addresses, comma-separated).
    #[arg(long, env = "LATCHKEY_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxy: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, env = "LATCHKEY_BODY_LIMIT", default_value_t = 1 << 20)]
    body_limit: usize,
    /// Seconds before a request is answered 503.
    #[arg(long, env = "LATCHKEY_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a connection has to send each request's line and headers (1 to 300), counted
    /// from when it may send one, so this also closes a keep-alive connection left idle.
    #[arg(long, env = "LATCHKEY_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Per-client-IP limits by route prefix, replacing the defaults: PREFIX=LIMIT/SECONDS
    /// (e.g. /api/v1/=1000/900); repeat for several, longest prefix wins.
    #[arg(long, env = "LATCHKEY_IP_SCOPES", value_delimiter = ',')]
    ip_scope: Vec<String>,
    /// No per-client-IP route limits at all.
    #[arg(long, conflicts_with = "ip_scope")]
    no_ip_scopes: bool,
    /// Failed authentications (401s) a client address may make before it is answered 429
    /// until the window passes: LIMIT/SECONDS (default 100/900), or `off`.
    #[arg(long, env = "LATCHKEY_AUTH_FAILURES")]
    auth_failures: Option<String>,
    /// Let webhooks target loopback, private, link-local and other internal addresses (refused
    /// by default, at registration and at every dispatch).
    #[arg(long, env = "LATCHKEY_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Seconds one webhook delivery attempt may take, name lookup included (1 to 300).
    #[arg(long, env = "LATCHKEY_WEBHOOK_TIMEOUT", default_value_t = 10)]
    webhook_timeout: u64,
    /// Memory for the database's page cache, in MiB (at least 1). Verify never reads the
    /// database; entity and log reads beyond the cache go to the operating system's file cache.
    #[arg(long, env = "LATCHKEY_CACHE_MB", default_value_t = (latchkey::DEFAULT_CACHE_BYTES >> 20) as u64)]
    cache_mb: u64,
}

/// Reads `PREFIX=LIMIT/SECONDS`.
fn ip_scope(text: &str) -> Result<latchkey::IpScope, String> {
    let bad = || format!("--ip-scope: `{text}` is not PREFIX=LIMIT/SECONDS");
    let (prefix, rate) = text.split_once('=').ok_or_else(bad)?;
    Ok(latchkey::IpScope::new(
        prefix.trim(),
        per_window(rate).ok_or_else(bad)?,
    ))
}

/// `LIMIT/SECONDS[/ALGORITHM]`: the two numbers, and the algorithm's name when given.
fn rate_parts(text: &str) -> Option<(u64, u64, Option<&str>)> {
    let mut parts = text.trim().splitn(3, '/');
    let limit = parts.next()?.trim().parse().ok()?;
    let window = parts.next()?.trim().parse().ok()?;
    Some((limit, window, parts.next().map(str::trim)))
}

/// `LIMIT/SECONDS` as a fixed-window limit (ranges are checked with the other rate options).
fn per_window(text: &str) -> Option<latchkey::RateLimit> {
    let (limit, window, None) = rate_parts(text)? else {
        return None;
    };
    Some(latchkey::RateLimit {
        limit: limit.try_into().ok()?,
        window_seconds: window.try_into().ok()?,
        algorithm: latchkey::Algorithm::FixedWindow,
    })
}

#[derive(Args, Debug)]
struct AdminToken {
    /// The database whose secret signs the token (its PATH.jwt-secret; the database may be
    /// in use by a running server).
    #[arg(long, env = "LATCHKEY_DB", default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Sign with this secret instead of the database's (the one the server was given).
    #[arg(long, env = "LATCHKEY_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<SecretArg>,
    /// Who the token is for (recorded in the audit trail).
    #[arg(long, default_value = "admin")]
    sub: String,
    /// Permissions (comma-separated); default all of Stores:Create,Stores:Edit,Stores:View.
    #[arg(long, value_delimiter = ',')]
    permissions: Vec<String>,
    /// Store ids the token covers (comma-separated), or `*`.
    #[arg(long, alias = "store", value_delimiter = ',', default_value = "*")]
    stores: Vec<String>,
    /// Lifetime: seconds, or a number with s, m, h or d (1 minute to 366 days).
    #[arg(long, default_value = "1h")]
    ttl: String,
}

/// A secret given on the command line or in the environment: its `Debug` (the arguments')
/// says only that there is one.
#[derive(Clone)]
struct SecretArg(String);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The database file when none is named (SPEC §9).
const DEFAULT_DB: &str = "latchkey.redb";

/// A lifetime as `--ttl` takes it: seconds, or a whole number with `s`, `m`, `h` or `d`.
fn lifetime(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.parse::<i64>().ok()?.checked_mul(scale)
}

/// The database file a `stores` or `keys` command works on.
#[derive(Args, Debug)]
struct Db {
    /// Database file: `stores create` creates it if missing, every other command needs it to
    /// exist (the server may not be running on it: a database is open in one process at a time).
    #[arg(long = "db", env = "LATCHKEY_DB", default_value = DEFAULT_DB)]
    path: PathBuf,
}

#[derive(Subcommand, Debug)]
enum StoresCommand {
    /// Print every store (JSON).
    List {
        #[command(flatten)]
        db: Db,
    },
    /// Create a store; prints it and its default key (shown this once).
    Create {
        /// The store's name.
        name: String,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a scoped key; prints it with its secret (shown this once).
    Create {
        #[command(flatten)]
        db: Db,
        /// The store's id.
        #[arg(long)]
        store: String,
        /// The key's name, as lists show it.
        #[arg(long)]
        name: String,
        /// Permissions as JSON (`{"Orders":["View"]}`), scopes (`orders:read,packages:read`)
        /// or `*`.
        #[arg(long)]
        permissions: String,
        /// token, hex or pair.
        #[arg(long, default_value = "token")]
        format: String,
        /// A note on what the key is for.
        #[arg(long)]
        description: Option<String>,
        /// The store environment the key works in (default `live`).
        #[arg(long)]
        environment: Option<String>,
        /// LIMIT/SECONDS, LIMIT/SECONDS/ALGORITHM (fixed_window, sliding_window,
        /// token_bucket) or a JSON object; the store's default when absent.
        #[arg(long)]
        rate_limit: Option<String>,
        /// Addresses or CIDRs the key may be used from (comma-separated).
        #[arg(long, value_delimiter = ',')]
        ip_allowlist: Vec<String>,
        /// When the key stops working (RFC 3339), or `never`; the store's default TTL when
        /// absent.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Print a store's keys (JSON, secrets masked).
    List {
        #[command(flatten)]
        db: Db,
        /// The store's id.
        #[arg(long)]
        store: String,
    },
    /// Revoke a key: it stops working at once.
    Revoke {
        #[command(flatten)]
        db: Db,
        /// The store's id.
        #[arg(long)]
        store: String,
        /// The key's id (`key_…`).
        #[arg(long)]
        key: String,
    },
    /// Give a key a new secret (printed this once); the old secret stops working at once, or
    /// after --overlap-seconds.
    Regenerate {
        #[command(flatten)]
        db: Db,
        /// The store's id.
        #[arg(long)]
        store: String,
        /// The key's id (`key_…`).
        #[arg(long)]
        key: String,
        /// How long the old secret keeps working beside the new one (0 to 604800, a week), so
        /// clients can switch over without a refused request.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        overlap_seconds: i64,
    },
}

#[derive(Args, Debug)]
#[command(after_help = "\
What is found: tokens ({prefix}_{store}_{secret}, by their checksum) and pair secrets (cs_ and 32
hex; the consumer key ck_... is public and not reported) always; hex keys (64 hex characters)
only with --db or --server and only when they are live keys, as most such strings are digests
(lockfiles, checksums). Each is printed as file:line and its masked form, never in full.

With --server, only the credential-shaped words are sent to the server (one a line, to POST
/api/leaks with the admin token of LATCHKEY_ADMIN_TOKEN), never the files; live credentials of
stores the token does not cover are reported as such, not named or stopped.

With --fail the exit status is 1 when a live credential is left (with --db or --server) or any
credential was found (without either), as on any error; 0 otherwise.")]
#[command(group(clap::ArgGroup::new("checker").args(["db", "server"])))]
struct Scan {
    /// Files or directories to scan (directories recursively; symbolic links are not followed);
    /// `-` reads standard input (`git diff --cached -U0 | grep '^+' | latchkey scan --fail -`).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Check each credential found against this database file: which key it is and whether it
    /// is live. Only this flag names it (LATCHKEY_DB is not read), so a scan never opens a
    /// database unasked; a database a running server has open cannot be checked.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Check each credential found with the running server at this address instead
    /// (https://host[:port], or http to a loopback address), through its management API.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The management token for --server (Stores:View; Stores:Edit with --revoke). Better set
    /// in the environment than on a command line other users can list.
    #[arg(long, env = "LATCHKEY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stop every live credential found (needs --db or --server): a key is revoked; an old
    /// secret still in its regeneration's overlap has the overlap ended; a store's default key,
    /// which cannot be revoked, gets a new secret that is not shown.
    #[arg(long, requires = "checker")]
    revoke: bool,
    /// Exit with status 1 when a credential found is still live at the end (with --db or
    /// --server), or when any is found (without either): for a pre-commit hook or a CI step.
    #[arg(long)]
    fail: bool,
    /// How to report: lines for people, JSON Lines for scripts, or a SARIF 2.1.0 log for
    /// code scanning (GitHub's upload-sarif takes it as is). The summary goes to stderr.
    #[arg(long, value_enum, default_value_t = ScanFormat::Text)]
    format: ScanFormat,
    /// Skip files and directories below the paths given that match this glob (repeatable):
    /// without a `/` it matches a name at any depth (`node_modules`, `*.min.js`), with one the
    /// path from the directory given (`vendor/**/*.json`); `*` stops at `/`, `**` does not.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Files larger than this many MiB are skipped, and named: each file is read whole.
    #[arg(long, value_name = "MIB", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_file_mib: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::AdminToken(args) => admin_token(args),
        Command::Stores { command } => stores(command),
        Command::Keys { command } => keys(command),
        Command::Scan(args) => scan(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("latchkey: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Opens the database at `path`, creating it if missing: for `stores create` only.
fn open(path: &Path) -> Result<Engine, String> {
    let options = EngineOptions::from_env().map_err(|e| e.to_string())?;
    Engine::open_with(path, options).map_err(|e| format!("{}: {e}", path.display()))
}

/// Opens a database that must exist already. Every command but `stores create` reads or
/// changes what is there, so a mistyped path is an error rather than a new, empty file that
/// answers `[]` as if the database had no stores.
fn open_existing(path: &Path) -> Result<Engine, String> {
    match std::fs::metadata(path) {
        Ok(_) => open(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{}: no database here (`latchkey stores create --db PATH NAME` or `latchkey serve --db PATH` creates one)",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn cli_actor() -> Actor {
    Actor::admin("cli")
}

/// The engine options `serve` starts from, before the environment and its flags: the digest
/// memo off (the environment may turn it on). Measured under load, a hit waited on memory for
/// longer than hashing takes (BENCHMARKS.md, twenty-second session).
fn serve_defaults() -> EngineOptions {
    EngineOptions {
        digest_memo: false,
        ..EngineOptions::default()
    }
}

fn serve(args: Serve) -> Result<(), String> {
    let mut problems = Vec::new();
    let given_secret = given_secret(args.jwt_secret.as_ref(), &mut problems);
    let entries: Vec<String> = args
        .trusted_proxy
        .iter()
        .filter(|p| !p.trim().is_empty())
        .cloned()
        .collect();
    let trusted: Vec<IpNet> = latchkey::parse_cidrs(&entries).unwrap_or_else(|bad| {
        problems.extend(bad.into_iter().map(|p| format!("--trusted-proxy: {p}")));
        Vec::new()
    });
    if args.body_limit == 0 {
        problems.push("--body-limit: must be more than 0".into());
    }
    if args.request_timeout == 0 {
        problems.push("--request-timeout: must be more than 0".into());
    }
    if !(1..=300).contains(&args.header_timeout) {
        problems.push("--header-timeout: must be between 1 and 300".into());
    }
    let webhook_timeout = Duration::from_secs(args.webhook_timeout);
    if let Some(problem) = WebhookOptions::timeout_problem(webhook_timeout) {
        problems.push(format!("--webhook-timeout: {problem}"));
    }
    let mut options = EngineOptions::from_env_over(serve_defaults()).unwrap_or_else(|e| {
        problems.push(e.to_string());
        serve_defaults()
    });
    if let Err(problem) = options.set_cache_mb(args.cache_mb) {
        problems.push(format!("--cache-mb: {problem}"));
    }
    options.webhooks.allow_private = args.allow_private_webhooks;
    options.webhooks.timeout = webhook_timeout;
    if args.no_ip_scopes {
        options.rates.ip_scopes.clear();
    } else if !args.ip_scope.is_empty() {
        options.rates.ip_scopes = args
            .ip_scope
            .iter()
            .filter_map(|text| ip_scope(text).map_err(|p| problems.push(p)).ok())
            .collect();
    }
    match args.auth_failures.as_deref().map(str::trim) {
        None => {}
        Some("off") => options.rates.brute_force = None,
        Some(text) => match per_window(text) {
            Some(limit) => options.rates.brute_force = Some(limit),
            None => problems.push(format!(
                "--auth-failures: `{text}` is not LIMIT/SECONDS or off"
            )),
        },
    }
    problems.extend(
        options
            .rates
            .problems()
            .into_iter()
            .map(|p| format!("rate limits: {p}")),
    );
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    // Only now that every flag is good: nothing is created for a refused start.
    let secret = match given_secret {
        Some(secret) => secret,
        None => secret_file::ensure(&args.db)?,
    };
    let engine =
        Engine::open_with(&args.db, options).map_err(|e| format!("{}: {e}", args.db.display()))?;
    let engine = Arc::new(engine);
    engine.start_webhook_worker().map_err(|e| e.to_string())?;
    let dev = args.dev.then(|| (engine.clone(), secret.clone()));
    let config = Config {
        trusted_proxies: trusted,
        body_limit: args.body_limit,
        request_timeout: Duration::from_secs(args.request_timeout),
        ..Config::new(secret)
    };
    let request_timeout = config.request_timeout;
    let header_timeout = Duration::from_secs(args.header_timeout);
    let state = AppState::new(engine.clone(), config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("cannot listen: {e}"))?;
        if let Some((engine, secret)) = dev {
            // After binding, so the commands it prints name the port actually bound.
            dev_banner(&engine, &secret, reachable(bound))?;
        }
        // Tests and scripts read the bound address (the port may have been 0) from this line,
        // and take the banner above as complete once it appears.
        eprintln!("latchkey: listening on http://{bound}");
        // Requests in flight get their own timeout's worth to finish after SIGTERM.
        let drain = request_timeout.saturating_add(Duration::from_secs(1));
        latchkey_server::serve::serve(listener, app(state), header_timeout, drain, shutdown())
            .await;
        Ok::<(), String>(())
    })?;
    // Requests are drained; write what is buffered before exiting.
    engine.flush().map_err(|e| format!("final flush: {e}"))?;
    eprintln!("latchkey: stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The address a local client reaches `bound` at: loopback for a wildcard address.
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    }
}

/// `--dev`'s store (SPEC §9): made on the first `--dev` start on a database.
const DEV_STORE: &str = "devstore";

/// The development store and a working key for it: on the first start the store is created
/// with its default key; on later ones the default key gets a new secret (the old one is not
/// kept anywhere to be shown again), or, if it was deleted, a full-access key is made.
fn dev_store(engine: &Engine) -> Result<(latchkey::Store, latchkey::CreatedKey), String> {
    let actor = Actor::admin("dev");
    let id = latchkey::StoreId::parse(DEV_STORE).ok_or("the development store's id")?;
    match engine.create_store_with_id(&actor, id, NewStore::named("Dev Store")) {
        Ok(created) => return Ok(created),
        Err(latchkey::Error::Conflict(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let store = engine.get_store(DEV_STORE).map_err(|e| e.to_string())?;
    let keys = engine.list_keys(DEV_STORE).map_err(|e| e.to_string())?;
    let key = match keys.iter().find(|k| k.kind == latchkey::KeyKind::Default) {
        Some(default) => {
            engine.regenerate_key(DEV_STORE, &actor, &default.id, time::Duration::ZERO)
        }
        None => engine.create_key(
            DEV_STORE,
            &actor,
            NewKey::new("Development key", latchkey::PermissionSet::all()),
        ),
    };
    Ok((store, key.map_err(|e| e.to_string())?))
}

fn dev_banner(engine: &Engine, secret: &[u8], listen: SocketAddr) -> Result<(), String> {
    let (store, default_key) = dev_store(engine)?;
    let token = jwt::issue(
        secret,
        "dev",
        &jwt::ALL_PERMISSIONS,
        json!("*"),
        engine.clock().now_secs(),
        24 * 3600,
    )?;
    let key = default_key.credential();
    let id = store.id;
    // A later start keeps what was set on the key since; it says so when that stops the key.
    let expired = default_key.key.has_expired(engine.clock().now());
    let caveat = match (default_key.key.active, expired) {
        (false, _) => "  note:         it is deactivated; activate it in the console to use it\n",
        (true, true) => "  note:         it has expired; give it a later expiry in the console\n",
        (true, false) => "",
    };
    let banner = format!(
        "Latchkey development server
  store:        {id}
  API key:      {key}
{caveat}  admin token:  {token}
  console:      http://{listen}/dashboard/ (sign in with the admin token)

  curl -H 'X-Api-Key: {key}' http://{listen}/api/v1/packages
  curl -H 'Authorization: Bearer {token}' http://{listen}/api/stores/{id}
"
    );
    // Written, not `print!`ed: a reader that goes away (`serve --dev | head -3`) must not
    // stop the server with a panic over its banner.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

/// `--jwt-secret` when given and long enough (a problem when too short); `None` when absent.
fn given_secret(given: Option<&SecretArg>, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    let SecretArg(secret) = given?;
    if secret.len() < jwt::MIN_SECRET {
        problems.push(format!(
            "--jwt-secret: must be at least {} bytes",
            jwt::MIN_SECRET
        ));
    }
    Some(secret.as_bytes().to_vec())
}

fn admin_token(args: AdminToken) -> Result<(), String> {
    let mut problems = Vec::new();
    let given_secret = given_secret(args.jwt_secret.as_ref(), &mut problems);
    let permissions: Vec<&str> = if args.permissions.is_empty() {
        jwt::ALL_PERMISSIONS.to_vec()
    } else {
        args.permissions.iter().map(String::as_str).collect()
    };
    let unknown: Vec<&str> = permissions
        .iter()
        .filter(|p| !jwt::ALL_PERMISSIONS.contains(p))
        .copied()
        .collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "--permissions: unknown {} (expected {})",
            unknown.join(", "),
            jwt::ALL_PERMISSIONS.join(", ")
        ));
    }
    let ttl = lifetime(&args.ttl).filter(|ttl| (60..=366 * 24 * 3600).contains(ttl));
    if ttl.is_none() {
        problems.push(format!(
            "--ttl: `{}` is not a lifetime from 60 seconds to 366 days (seconds, or a number with s, m, h or d)",
            args.ttl
        ));
    }
    let secret = match given_secret {
        Some(secret) => Some(secret),
        None => secret_file::read(&args.db)
            .map_err(|problem| problems.push(problem))
            .ok(),
    };
    let (Some(secret), Some(ttl), true) = (secret, ttl, problems.is_empty()) else {
        return Err(problems.join("\n"));
    };
    let stores = if args.stores.iter().any(|s| s == "*") {
        json!("*")
    } else {
        json!(args.stores)
    };
    let now = latchkey::SystemClock.now_secs();
    println!(
        "{}",
        jwt::issue(&secret, &args.sub, &permissions, stores, now, ttl)?
    );
    Ok(())
}

fn stores(command: StoresCommand) -> Result<(), String> {
    match command {
        StoresCommand::List { db } => {
            let engine = open_existing(&db.path)?;
            print_json(&json!(engine.list_stores().map_err(|e| e.to_string())?));
        }
        StoresCommand::Create { name, db } => {
            let engine = open(&db.path)?;
            let (store, key) = engine
                .create_store(&cli_actor(), NewStore::named(name))
                .map_err(|e| e.problems().join("\n"))?;
            print_json(&json!({"store": store, "default_key": key.to_json()}));
        }
    }
    Ok(())
}

fn keys(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Create {
            db,
            store,
            name,
            permissions,
            format,
            description,
            environment,
            rate_limit,
            ip_allowlist,
            expires_at,
        } => {
            // The flags become the body of `POST …/api-keys`, so the core checks them as it
            // checks the API's, every problem named at once (by its flag).
            let mut problems = Vec::new();
            let mut body = json!({
                "name": name,
                "permissions": permissions_flag(&permissions),
                "format": format,
            });
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(environment) = environment {
                body["environment"] = json!(environment);
            }
            if let Some(text) = rate_limit {
                match rate_limit_flag(&text) {
                    Some(limit) => body["rate_limit"] = limit,
                    None => problems.push(format!(
                        "--rate-limit: `{text}` is not LIMIT/SECONDS[/ALGORITHM] or a JSON object"
                    )),
                }
            }
            if !ip_allowlist.is_empty() {
                body["ip_allowlist"] = json!(ip_allowlist);
            }
            match expires_at.as_deref() {
                None => {}
                Some("never") => body["expires_at"] = serde_json::Value::Null,
                Some(text) => body["expires_at"] = json!(text),
            }
            let key = NewKey::from_json(&body);
            if let Err(err) = &key {
                problems.extend(err.problems().iter().map(|p| flag_problem(p)));
            }
            let key = match key {
                Ok(key) if problems.is_empty() => key,
                _ => return Err(problems.join("\n")),
            };
            let engine = open_existing(&db.path)?;
            let created = engine
                .create_key(&store, &cli_actor(), key)
                .map_err(|e| e.problems().join("\n"))?;
            print_json(&created.to_json());
        }
        KeysCommand::List { db, store } => {
            let engine = open_existing(&db.path)?;
            print_json(&json!(engine.list_keys(&store).map_err(|e| e.to_string())?));
        }
        KeysCommand::Revoke { db, store, key } => {
            let engine = open_existing(&db.path)?;
            engine
                .revoke_key(&store, &cli_actor(), &key)
                .map_err(|e| e.to_string())?;
            print_json(&json!({"id": key, "revoked": true}));
        }
        KeysCommand::Regenerate {
            db,
            store,
            key,
            overlap_seconds,
        } => {
            let engine = open_existing(&db.path)?;
            let options = json!({ "overlap_seconds": overlap_seconds });
            let created = engine
                .regenerate_key_from_json(&store, &cli_actor(), &key, &options)
                .map_err(|e| match e {
                    latchkey::Error::Validation(problems) => problems
                        .iter()
                        .map(|p| flag_problem(p))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    other => other.to_string(),
                })?;
            print_json(&created.to_json());
        }
    }
    Ok(())
}

/// A body field's problem (`ip_allowlist.0: …`) as its flag's (`--ip-allowlist.0: …`).
fn flag_problem(problem: &str) -> String {
    let field_end = problem.find([':', '.']).unwrap_or(problem.len());
    let (field, rest) = problem.split_at(field_end);
    format!("--{}{rest}", field.replace('_', "-"))
}

/// `--permissions`: a JSON object or list as is, else scope strings separated by commas
/// (`orders:read,packages:read`) or `*`.
fn permissions_flag(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => value,
        _ => json!(text.split(',').map(str::trim).collect::<Vec<_>>()),
    }
}

/// `--rate-limit`: `LIMIT/SECONDS`, `LIMIT/SECONDS/ALGORITHM` or a JSON object, as the
/// `rate_limit` field of a new key (whose ranges the core checks).
fn rate_limit_flag(text: &str) -> Option<serde_json::Value> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).ok();
    }
    let (limit, window, algorithm) = rate_parts(text)?;
    let mut value = json!({"limit": limit, "window_seconds": window});
    if let Some(algorithm) = algorithm {
        value["algorithm"] = json!(algorithm);
    }
    Some(value)
}

/// A report that could not be written (its reader went away, a full disk): the scan stops.
fn written(e: std::io::Error) -> String {
    format!("standard output: {e}")
}

fn scan(args: Scan) -> Result<(), String> {
    // Every bad argument named at once, before anything is read or opened.
    let excludes = Excludes::new(&args.exclude);
    let remote = args.server.as_deref().map(|server| {
        let token = args.token.as_deref().unwrap_or_default();
        LeakClient::new(server, token, Duration::from_secs(60))
    });
    let mut problems: Vec<String> = args
        .paths
        .iter()
        .filter(|path| path.as_os_str() != "-" && !path.exists())
        .map(|path| format!("{}: no such file or directory", path.display()))
        .collect();
    problems.extend(excludes.as_ref().err().cloned());
    problems.extend(remote.as_ref().and_then(|r| r.as_ref().err()).cloned());
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let (excludes, remote) = (excludes?, remote.transpose()?);
    let (mut paths, mut unreadable) = (Vec::new(), Vec::new());
    for path in &args.paths {
        if path.as_os_str() == "-" {
            paths.push(path.clone());
        } else {
            latchkey_server::scan::files(path, &excludes, &mut paths, &mut unreadable);
        }
    }
    // Said, not fatal, as for files: one unreadable directory should not hide the rest.
    for problem in &unreadable {
        eprintln!("latchkey scan: {problem}");
    }
    let engine = args.db.as_deref().map(open_existing).transpose()?;
    let checked = engine.is_some() || remote.is_some();
    let actor = Actor::admin("scan");
    let mut report = ScanReport::new(args.format);
    let mut out = std::io::stdout().lock();
    let mut unchecked = 0;
    for path in paths {
        let stdin = path.as_os_str() == "-";
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if !stdin && size > args.max_file_mib << 20 {
            eprintln!(
                "latchkey scan: {}: skipped, {} MiB (over --max-file-mib {})",
                path.display(),
                size >> 20,
                args.max_file_mib
            );
            continue;
        }
        let read = if stdin {
            let mut bytes = Vec::new();
            let limit = args.max_file_mib << 20;
            let read = std::io::stdin().take(limit).read_to_end(&mut bytes);
            if bytes.len() as u64 == limit {
                eprintln!(
                    "latchkey scan: -: only the first {} MiB of standard input read \
                     (--max-file-mib)",
                    args.max_file_mib
                );
            }
            read.map(|_| bytes)
        } else {
            std::fs::read(&path)
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                // Said, not fatal: one unreadable file should not hide the leaks in the rest.
                eprintln!("latchkey scan: {}: not read: {e}", path.display());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let findings = match (&engine, &remote) {
            (Some(engine), _) => engine.check_leaks(&text, args.revoke, &actor),
            (None, Some(remote)) => {
                let leaks: Vec<_> = latchkey::find_leaks(&text).collect();
                if leaks.is_empty() {
                    continue;
                }
                remote
                    .check(&leaks, args.revoke)
                    .map_err(|e| format!("{}: not checked: {e}", path.display()))?
            }
            (None, None) => {
                for leak in latchkey::find_leaks(&text) {
                    // A hex key cannot be told from a digest by its shape: only the index can.
                    if leak.shape == LeakShape::Hex {
                        unchecked += 1;
                    } else {
                        report
                            .found(&mut out, &path, leak.line, leak.shape, &leak.masked(), None)
                            .map_err(written)?;
                    }
                }
                continue;
            }
        };
        for finding in &findings {
            report
                .found(
                    &mut out,
                    &path,
                    finding.line,
                    finding.shape,
                    &finding.masked,
                    Some(finding),
                )
                .map_err(written)?;
        }
    }
    let (found, live, stopped) = (report.found, report.live, report.stopped);
    report.finish(&mut out).map_err(written)?;
    let mut summary = format!("latchkey scan: {found} credential(s) found");
    if checked {
        summary.push_str(&format!(", {live} live"));
    }
    if args.revoke {
        summary.push_str(&format!(", {stopped} stopped"));
    }
    if unchecked > 0 {
        summary.push_str(&format!(
            "; {unchecked} string(s) of 64 hex characters not checked (a hex key looks like any \
             SHA-256 digest: --db or --server tells them apart)"
        ));
    }
    eprintln!("{summary}");
    let failing = if checked { live } else { found };
    if args.fail && failing > 0 {
        return Err(format!(
            "{failing} {} credential(s) found (--fail)",
            if checked { "live" } else { "Latchkey" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_flags_read_limit_window_and_algorithm() {
        assert_eq!(rate_parts(" 10 / 60 "), Some((10, 60, None)));
        assert_eq!(
            rate_parts("10/60/token_bucket"),
            Some((10, 60, Some("token_bucket")))
        );
        for bad in ["", "10", "10/", "x/60", "10/-1", "10/60x"] {
            assert_eq!(rate_parts(bad), None, "{bad:?}");
        }
        // An IP scope is a fixed window: an algorithm is not part of its form.
        let scope = per_window("5/1").unwrap();
        assert_eq!((scope.limit, scope.window_seconds), (5, 1));
        assert!(per_window("5/1/sliding_window").is_none());
        assert_eq!(
            rate_limit_flag("100/60/sliding_window"),
            Some(json!({"limit": 100, "window_seconds": 60, "algorithm": "sliding_window"}))
        );
        assert_eq!(
            rate_limit_flag(r#"{"limit": 3}"#),
            Some(json!({"limit": 3}))
        );
        assert_eq!(rate_limit_flag("{not json"), None);
    }

    #[test]
    fn lifetimes_read_seconds_or_a_unit_and_secrets_never_show_in_debug() {
        for (text, seconds) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            (" 1h ", 3600),
            ("7d", 604_800),
        ] {
            assert_eq!(lifetime(text), Some(seconds), "{text:?}");
        }
        for bad in ["", "h", "1m1", "1w", "-5m", "1.5h", "99999999999999999999d"] {
            assert_eq!(lifetime(bad), None, "{bad:?}");
        }
        let args = Cli::try_parse_from([
            "latchkey",
            "admin-token",
            "--jwt-secret",
            "a-secret-that-must-not-be-printed!!",
        ])
        .unwrap();
        let shown = format!("{args:?}");
        assert!(!shown.contains("must-not-be-printed"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_server_starts_from_the_digest_memo_off_and_the_engines_other_defaults() {
        let (served, engine) = (serve_defaults(), EngineOptions::default());
        assert!(!served.digest_memo && engine.digest_memo);
        assert_eq!(served.cache_bytes, engine.cache_bytes);
        assert_eq!(served.log_flush_at, engine.log_flush_at);
    }
}
