//! The native part of the `latchkey` npm package. The typed layer (`index.js`, `index.d.ts`)
//! wraps this module; nothing here is meant to be required directly.
//!
//! Management calls are the core's named JSON operations ([`latchkey::ops`]): `call` answers on
//! the calling thread, `callAsync` runs the same operation on libuv's thread pool and returns
//! a Promise of its answer as JSON text, so a commit never blocks the event loop. `verify` is
//! synchronous and lives in [`fast`]: a raw Node-API function per engine that answers with
//! numbers, from which the typed layer builds its `Decision` (asking this module for names,
//! messages and refusal bodies, so every rule stays in the core).
//!
//! Errors cross as a JS `Error` whose message is [`ERROR_MARK`] followed by JSON
//! `{code, message, problems}`; the typed layer turns it into a `LatchkeyError`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use latchkey::ops::{self, Op};
use latchkey::{Action, Area, DenyCode, Permission};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::{Value, json};

mod fast;

/// Starts the message of every error this module throws (see the module documentation).
pub(crate) const ERROR_MARK: &str = "\u{1}latchkey:";

/// The JS error for an engine error: its code, message and every problem, never a secret
/// (engine errors carry none).
fn thrown(err: &latchkey::Error) -> Error {
    let message = match err {
        latchkey::Error::Validation(_) => "Validation failed".to_owned(),
        other => other.to_string(),
    };
    let body = json!({"code": err.code(), "message": message, "problems": err.problems()});
    Error::from_reason(format!("{ERROR_MARK}{body}"))
}

fn invalid(problems: Vec<String>) -> Error {
    thrown(&latchkey::Error::Validation(problems))
}

fn operation(name: &str) -> Result<Op> {
    Op::parse(name).ok_or_else(|| invalid(vec![format!("unknown operation `{name}`")]))
}

/// A management operation run on libuv's thread pool (see `Engine.callAsync`). Its `Debug`
/// names the operation only: the arguments may carry a secret (a gift card code).
pub struct Call {
    engine: Arc<latchkey::Engine>,
    op: Op,
    args: Value,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

#[napi]
impl Task for Call {
    // JSON text: the answer is built on the pool thread, and the typed layer parses it.
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        ops::call(&self.engine, self.op, &self.args)
            .map(|answer| answer.to_string())
            .map_err(|e| thrown(&e))
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

#[napi]
#[derive(Debug)]
pub struct Engine {
    engine: Shared,
}

/// An engine as the class and its bound `verify` functions share it: `None` once closed.
///
/// Not a lock: the class and its `verify` functions are only ever used on the JS thread of
/// the environment that made them (Node-API's rule for values and wrapped objects), so a
/// `RefCell` suffices, and a verify pays no locked instruction for it (a `parking_lot` read
/// guard cost two, ≈ 10 ns of a call). Work on the thread pool holds its own `Arc` of the
/// engine, taken on the JS thread; close drops the class's, so the file is released once
/// such work finishes, and every later call fails with `CLOSED`.
pub(crate) type Shared = Rc<RefCell<Option<Arc<latchkey::Engine>>>>;

fn closed() -> Error {
    let body = json!({"code": "CLOSED", "message": "the engine is closed", "problems": ["the engine is closed"]});
    Error::from_reason(format!("{ERROR_MARK}{body}"))
}

impl Engine {
    fn new(engine: latchkey::Engine) -> Self {
        Self {
            engine: Rc::new(RefCell::new(Some(Arc::new(engine)))),
        }
    }

    fn shared(&self) -> Result<Arc<latchkey::Engine>> {
        self.engine.borrow().clone().ok_or_else(closed)
    }
}

/// How `Engine.open` and `Engine.memory` set the engine up (checked in the typed layer for
/// types, here for ranges).
#[napi(object)]
#[derive(Debug, Default)]
pub struct OpenOptions {
    /// Let webhooks target internal addresses (refused by default).
    pub allow_private_webhooks: Option<bool>,
    /// The database's page cache in MiB (default 64, from 1 to 1048576).
    pub cache_mb: Option<f64>,
    /// The limit on one webhook delivery attempt in milliseconds (default 10,000; at most
    /// 300,000).
    pub webhook_timeout_ms: Option<f64>,
}

/// The engine's options: the environment's (`API_DEFAULT_RATE_LIMIT_PER_MINUTE`), then
/// `given`. Every problem is reported at once.
fn options(given: Option<OpenOptions>) -> Result<latchkey::EngineOptions> {
    let given = given.unwrap_or_default();
    let mut problems = Vec::new();
    let mut options = latchkey::EngineOptions::from_env().unwrap_or_else(|e| {
        problems.extend(e.problems());
        latchkey::EngineOptions::default()
    });
    options.webhooks.allow_private = given.allow_private_webhooks.unwrap_or(false);
    if let Some(mb) = given.cache_mb {
        // A fraction or a value past u64 is out of range as much as 0 is.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole =
            (mb.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&mb)).then_some(mb as u64);
        if let Err(problem) = options.set_cache_mb(whole.unwrap_or(0)) {
            problems.push(format!("cacheMb: {problem}"));
        }
    }
    if let Some(ms) = given.webhook_timeout_ms {
        let timeout = (ms.fract() == 0.0 && ms >= 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(ms / 1000.0).ok())
            .flatten()
            .unwrap_or_default();
        match latchkey::WebhookOptions::timeout_problem(timeout) {
            None => options.webhooks.timeout = timeout,
            Some(_) => problems.push(format!(
                "webhookTimeoutMs: must be a whole number from 1 to {}",
                latchkey::WebhookOptions::MAX_TIMEOUT.as_millis()
            )),
        }
    }
    if problems.is_empty() {
        Ok(options)
    } else {
        Err(invalid(problems))
    }
}

#[napi]
impl Engine {
    /// Opens (or creates) a database file with `options`.
    #[napi(factory)]
    pub fn open(path: String, options: Option<OpenOptions>) -> Result<Engine> {
        let options = self::options(options)?;
        let engine = latchkey::Engine::open_with(&path, options).map_err(|e| thrown(&e))?;
        Ok(Engine::new(engine))
    }

    /// An engine on an in-memory database (tests, embedding).
    #[napi(factory)]
    pub fn memory(options: Option<OpenOptions>) -> Result<Engine> {
        let options = self::options(options)?;
        let engine = latchkey::Engine::memory_with(options).map_err(|e| thrown(&e))?;
        Ok(Engine::new(engine))
    }

    /// Runs the named operation (`createStore`, `listKeys`, …) on this thread.
    #[napi]
    pub fn call(&self, op: String, args: Value) -> Result<Value> {
        let engine = self.shared()?;
        ops::call(&engine, operation(&op)?, &args).map_err(|e| thrown(&e))
    }

    /// Writes what is buffered and releases the database file (once calls already running on
    /// the thread pool finish). Every later call throws `CLOSED`; closing twice is harmless.
    #[napi]
    pub fn close(&self) -> Result<()> {
        let engine = self.engine.borrow_mut().take();
        match engine {
            Some(engine) => engine.flush().map_err(|e| thrown(&e)),
            None => Ok(()),
        }
    }

    /// Runs the named operation off the event loop; the Promise settles with its answer as
    /// JSON text.
    #[napi]
    pub fn call_async(&self, op: String, args: Value) -> Result<AsyncTask<Call>> {
        Ok(AsyncTask::new(Call {
            engine: self.shared()?,
            op: operation(&op)?,
            args,
        }))
    }

    /// A `record(storeId, keyId, code, method, path, status, latencyUs, ip?)` function bound
    /// to this engine; see `src/fast.rs`.
    #[napi(
        ts_return_type = "(storeId: string, keyId: string | null, code: number, method: string, path: string, status: number, latencyUs: number, ip?: string | null) => void"
    )]
    pub fn bind_record<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let function = fast::bind_record(env.raw(), self.engine.clone())?;
        // SAFETY: `function` was just created in this call's environment.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), function) })
    }

    /// A `verify(credential, permissionNumber, path, ip?)` function bound to this engine that
    /// writes the decision's limit fields into `out` (a `Float64Array` of 6); see `src/fast.rs`.
    #[napi(
        ts_args_type = "out: Float64Array",
        ts_return_type = "(credential?: string | null, permission?: number, path?: string | null, ip?: string | null) => number | [number, string, string, string]"
    )]
    pub fn bind_verify<'env>(&self, env: &'env Env, out: Unknown<'env>) -> Result<Unknown<'env>> {
        let function = fast::bind(env.raw(), self.engine.clone(), out.raw())?;
        // SAFETY: `function` was just created in this call's environment.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), function) })
    }
}

/// The decision codes as `verify` numbers them: `[name, status, message]` for 0 (allowed)
/// and each deny code of SPEC §4 in check order.
#[napi]
pub fn decision_codes() -> Value {
    json!(fast::codes())
}

/// How many numbers the bound `verify` gives key identities (0 to this, exclusive): the size
/// of the typed layer's table of their strings.
#[napi]
pub fn key_slots() -> u32 {
    fast::KEY_SLOTS
}

/// `{area: {action: number}}` for every permission of the table, as `verify` takes them.
#[napi]
pub fn permission_numbers() -> Value {
    let mut table = serde_json::Map::new();
    for &area in Area::ALL {
        let actions: serde_json::Map<String, Value> = Action::ALL
            .iter()
            .map(|&action| {
                (
                    action.as_str().to_owned(),
                    json!(Permission::new(area, action).index()),
                )
            })
            .collect();
        table.insert(area.as_str().to_owned(), Value::Object(actions));
    }
    Value::Object(table)
}

/// Checks `verify`'s area, action and address as the core reads them (names in any case),
/// naming every problem; answers the permission's number, or `null` when neither area nor
/// action was given.
#[napi]
pub fn verify_arguments(
    area: Option<String>,
    action: Option<String>,
    ip: Option<String>,
) -> Result<Option<u32>> {
    latchkey::verify_arguments(area.as_deref(), action.as_deref(), ip.as_deref())
        .map(|(permission, _)| permission.map(Permission::index))
        .map_err(|e| thrown(&e))
}

/// The deny code numbered `n` as `verify` numbers them (0 = allowed, `None`).
pub(crate) fn decision_code(n: u32, problems: &mut Vec<String>) -> Option<DenyCode> {
    match n {
        0 => None,
        n => DenyCode::from_index(n - 1).or_else(|| {
            problems.push(format!("code: no decision code numbered {n}"));
            None
        }),
    }
}

fn denial(code: u32, missing: Option<u32>) -> Result<(Option<DenyCode>, Option<Permission>)> {
    let mut problems = Vec::new();
    let code = decision_code(code, &mut problems);
    let missing = missing.and_then(|m| {
        Permission::from_index(m).or_else(|| {
            problems.push(format!("missing: no permission numbered {m}"));
            None
        })
    });
    if problems.is_empty() {
        Ok((code, missing))
    } else {
        Err(invalid(problems))
    }
}

/// The message of decision code `code` (0 = allowed), naming `missing` for `FORBIDDEN`.
#[napi]
pub fn decision_message(code: u32, missing: Option<u32>) -> Result<String> {
    Ok(match denial(code, missing)? {
        (None, _) => "OK".to_owned(),
        (Some(code), missing) => code.message_for(missing).into_owned(),
    })
}

/// The server's body for a refusal (`{success: false, data: null, message, errors, code}`).
#[napi]
pub fn refusal_body(code: u32, missing: Option<u32>) -> Result<Value> {
    match denial(code, missing)? {
        (Some(code), missing) => Ok(code.refusal_body(missing)),
        (None, _) => Err(invalid(vec!["code: 0 is not a refusal".to_owned()])),
    }
}

/// The proxies whose `X-Forwarded-For` is believed, parsed once (CIDRs or addresses).
#[napi]
#[derive(Debug)]
pub struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
}

#[napi]
impl TrustedProxies {
    #[napi(constructor)]
    pub fn new(proxies: Vec<String>) -> Result<Self> {
        latchkey::parse_cidrs(&proxies)
            .map(|nets| Self { nets })
            .map_err(invalid)
    }

    /// The client address (SPEC §7): the peer, or — only when the peer is one of these
    /// proxies — the nearest untrusted hop of `X-Forwarded-For`. `null` when the peer is not
    /// an IP address.
    #[napi]
    pub fn client_ip(&self, peer: Option<String>, forwarded_for: Option<String>) -> Option<String> {
        let peer = peer.as_deref().and_then(latchkey::parse_ip);
        latchkey::client_ip(peer, forwarded_for.as_deref(), &self.nets).map(|ip| ip.to_string())
    }
}

/// The credential a request carries (SPEC §7): `X-Api-Key` first, then `Authorization`
/// (Bearer, Basic `ck:cs`, or a bare base64 `ck:cs`). `null` when neither is present. Each
/// header is its value or every line of it (`req.headersDistinct`): one sent twice answers
/// `INVALID`, as on the server.
#[napi]
pub fn credential_from_headers(
    x_api_key: Option<Either<String, Vec<String>>>,
    authorization: Option<Either<String, Vec<String>>>,
) -> Option<String> {
    fn lines(header: Option<&Either<String, Vec<String>>>) -> &[String] {
        match header {
            None => &[],
            Some(Either::A(one)) => std::slice::from_ref(one),
            Some(Either::B(all)) => all,
        }
    }
    latchkey::credential_from_headers(
        lines(x_api_key.as_ref()).iter().map(String::as_str),
        lines(authorization.as_ref()).iter().map(String::as_str),
    )
    .map(|c| c.into_owned())
}

/// The server's body for 405: a method an area's routes do not serve.
#[napi]
pub fn method_not_allowed_body() -> Value {
    latchkey::method_not_allowed_body()
}

/// The action an HTTP method needs (GET/HEAD → View, POST/PUT/PATCH → Edit, DELETE → Delete).
#[napi]
pub fn action_for_method(method: String) -> Option<&'static str> {
    Action::for_method(&method).map(Action::as_str)
}

/// `text` with every credential in it masked (`latchkey::redact`); with `hex`, every 64-hex
/// word too. (`index.js` checks the arguments.)
#[napi]
pub fn redact(text: String, hex: bool) -> String {
    latchkey::redact(&text, hex).into_owned()
}

/// The engine version.
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The area a keyed API route belongs to (`/api/v1/gift-cards/…` → `GiftCards`), as the server
/// maps its routes; `null` for any other path.
#[napi]
pub fn area_for_path(path: String) -> Option<&'static str> {
    Area::for_path(&path).map(Area::as_str)
}
