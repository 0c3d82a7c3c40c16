//! The native part of the `latchkey` npm package. The typed layer (`index.js`, `index.d.ts`)
//! wraps this module; nothing here is meant to be required directly.
//!
//! Management calls are the core's named JSON operations ([`latchkey::ops`]): `call` answers on
//! the calling thread, `callAsync` runs the same operation on libuv's thread pool and returns
//! a Promise of its answer as JSON text, so a commit never blocks the event loop. `verify` is synchronous and returns a
//! `Decision` object that holds the engine's decision and builds each field when read.
//!
//! Errors cross as a JS `Error` whose message is [`ERROR_MARK`] followed by JSON
//! `{code, message, problems}`; the typed layer turns it into a `LatchkeyError`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;

use latchkey::ops::{self, Op};
use latchkey::{Action, Area, Permission, VerifyRequest};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::{Value, json};

/// Starts the message of every error this module throws (see the module documentation).
const ERROR_MARK: &str = "\u{1}latchkey:";

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

/// The verify decision (a denial is a decision, not an exception).
#[napi]
#[derive(Debug)]
pub struct Decision {
    inner: latchkey::Decision,
}

#[napi]
impl Decision {
    #[napi(getter)]
    pub fn allowed(&self) -> bool {
        self.inner.allowed()
    }

    /// `OK`, or the deny code of SPEC §4 (`MISSING`, `INVALID`, …, `RATE_LIMITED`).
    #[napi(getter)]
    pub fn code(&self) -> &'static str {
        self.inner.code_str()
    }

    /// The HTTP status to answer with: 200, 401, 403 or 429.
    #[napi(getter)]
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    #[napi(getter)]
    pub fn message(&self) -> String {
        self.inner.message().into_owned()
    }

    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` when a limit applied; `Retry-After` on 429.
    #[napi(getter)]
    pub fn headers(&self) -> HashMap<&'static str, String> {
        self.inner.headers().into_iter().collect()
    }

    #[napi(getter)]
    pub fn key_id(&self) -> Option<String> {
        self.inner.key_id().map(str::to_owned)
    }

    #[napi(getter)]
    pub fn store_id(&self) -> Option<String> {
        self.inner.store_id().map(|s| s.to_string())
    }

    #[napi(getter)]
    pub fn environment(&self) -> Option<String> {
        self.inner.environment().map(str::to_owned)
    }

    /// The server's body for this refusal (`{success: false, data: null, message, errors, code}`).
    #[napi]
    pub fn refusal_body(&self) -> Value {
        self.inner.refusal_body()
    }
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
    /// `None` once closed. Verify holds the read guard for its call; close takes the write
    /// guard, so it waits for running calls and every later call fails with `CLOSED`.
    engine: RwLock<Option<Arc<latchkey::Engine>>>,
}

fn closed() -> Error {
    let body = json!({"code": "CLOSED", "message": "the engine is closed", "problems": ["the engine is closed"]});
    Error::from_reason(format!("{ERROR_MARK}{body}"))
}

impl Engine {
    fn new(engine: latchkey::Engine) -> Self {
        Self {
            engine: RwLock::new(Some(Arc::new(engine))),
        }
    }

    fn shared(&self) -> Result<Arc<latchkey::Engine>> {
        self.engine.read().clone().ok_or_else(closed)
    }
}

#[napi]
impl Engine {
    /// Opens (or creates) a database file. Options come from the environment
    /// (`API_DEFAULT_RATE_LIMIT_PER_MINUTE`).
    #[napi(factory)]
    pub fn open(path: String) -> Result<Engine> {
        let options = latchkey::EngineOptions::from_env().map_err(|e| thrown(&e))?;
        let engine = latchkey::Engine::open_with(&path, options).map_err(|e| thrown(&e))?;
        Ok(Engine::new(engine))
    }

    /// An engine on an in-memory database (tests, embedding).
    #[napi(factory)]
    pub fn memory() -> Result<Engine> {
        let options = latchkey::EngineOptions::from_env().map_err(|e| thrown(&e))?;
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
        let engine = self.engine.write().take();
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

    /// Decides one request. Bad arguments (an unknown area or action, an unreadable IP) throw
    /// a validation error; a refused request is a `Decision`.
    #[napi]
    pub fn verify(
        &self,
        credential: Option<String>,
        area: Option<String>,
        action: Option<String>,
        ip: Option<String>,
        path: Option<String>,
    ) -> Result<Decision> {
        let mut problems = Vec::new();
        let area = area.and_then(|a| {
            Area::parse(&a).or_else(|| {
                problems.push(format!("area: unknown `{a}`"));
                None
            })
        });
        let action = action.and_then(|a| {
            Action::parse(&a).or_else(|| {
                problems.push(format!("action: unknown `{a}` (View, Edit or Delete)"));
                None
            })
        });
        let ip = ip.and_then(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| problems.push(format!("ip: `{text}` is not an IP address")))
                .ok()
        });
        let permission = match (area, action) {
            (Some(area), Some(action)) => Some(Permission::new(area, action)),
            (None, None) => None,
            _ if !problems.is_empty() => None,
            _ => {
                problems.push("area and action: give both or neither".into());
                None
            }
        };
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let engine = self.engine.read();
        let engine = engine.as_ref().ok_or_else(closed)?;
        let inner = engine.verify(&VerifyRequest {
            credential: credential.as_deref(),
            permission,
            ip,
            path: path.as_deref().unwrap_or("/"),
        });
        Ok(Decision { inner })
    }

    /// Records the request a decision answered in its store's request log (buffered; never
    /// blocks). Nothing is recorded for a credential that matched no key.
    #[napi]
    pub fn record_request(
        &self,
        decision: &Decision,
        method: String,
        path: String,
        status: u32,
        ip: Option<String>,
        latency_us: Option<f64>,
    ) -> Result<()> {
        let mut problems = Vec::new();
        let ip = ip.and_then(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| problems.push(format!("ip: `{text}` is not an IP address")))
                .ok()
        });
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .unwrap_or_else(|| {
                problems.push(format!("status: `{status}` is not an HTTP status"));
                0
            });
        let latency = latency_us.unwrap_or(0.0);
        if !latency.is_finite() || latency < 0.0 {
            problems.push("latencyUs: must be a number ≥ 0".to_owned());
        }
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        // Float to integer casts saturate; latency is checked finite and ≥ 0 above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let latency_us = latency as u64;
        self.shared()?
            .record_decision(&decision.inner, &method, &path, status, ip, latency_us);
        Ok(())
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
        let peer = peer.and_then(|p| p.parse::<IpAddr>().ok());
        latchkey::client_ip(peer, forwarded_for.as_deref(), &self.nets).map(|ip| ip.to_string())
    }
}

/// The credential a request carries (SPEC §7): `X-Api-Key` first, then `Authorization`
/// (Bearer, Basic `ck:cs`, or a bare base64 `ck:cs`). `null` when neither is present.
#[napi]
pub fn credential_from_headers(
    x_api_key: Option<String>,
    authorization: Option<String>,
) -> Option<String> {
    latchkey::credential_from_headers(x_api_key.as_deref(), authorization.as_deref())
        .map(|c| c.into_owned())
}

/// The action an HTTP method needs (GET/HEAD → View, POST/PUT/PATCH → Edit, DELETE → Delete).
#[napi]
pub fn action_for_method(method: String) -> Option<&'static str> {
    Action::for_method(&method).map(Action::as_str)
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
