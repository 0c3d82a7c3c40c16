//! `latchkey._native`: the engine for Python. The typed package `latchkey` (in `python/`) wraps
//! this module; nothing here is meant to be imported directly.
//!
//! Management calls take and return JSON text: the engine already reads and validates JSON
//! (naming every problem), so one well-tested path serves the server and both bindings.
//! Calls that commit release the GIL. `verify` takes plain arguments and returns a `Decision`
//! object, allocating nothing else.

mod fast;

use std::sync::Arc;

use latchkey::{Action, Actor, Area, Error, Scope, StoreId};
use pyo3::prelude::*;
use serde_json::{Value, json};

/// Raises the `latchkey.errors` class for an engine error, with its code and problems.
fn raise(py: Python<'_>, err: &Error) -> PyErr {
    let class = match err.code() {
        "VALIDATION" => "ValidationError",
        "NOT_FOUND" => "NotFoundError",
        "CONFLICT" => "ConflictError",
        "FORBIDDEN" => "ForbiddenError",
        "PLAN_REQUIRED" => "PlanRequiredError",
        "NOT_ALLOWED" => "NotAllowedError",
        _ => "StorageError",
    };
    let message = match err {
        Error::Validation(_) => "Validation failed".to_owned(),
        other => other.to_string(),
    };
    exception(py, class, &message, err.code(), err.problems())
}

/// `ClosedError` (code `CLOSED`): the engine was closed, as Node's `CLOSED`.
fn closed(py: Python<'_>) -> PyErr {
    let message = "the engine is closed";
    exception(
        py,
        "ClosedError",
        message,
        "CLOSED",
        vec![message.to_owned()],
    )
}

/// An instance of the `latchkey.errors` class `class` (or the error met making it).
fn exception(
    py: Python<'_>,
    class: &str,
    message: &str,
    code: &str,
    problems: Vec<String>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let class = py.import("latchkey.errors")?.getattr(class)?;
        Ok(PyErr::from_value(class.call1((message, code, problems))?))
    };
    build().unwrap_or_else(|e| e)
}

/// A validation error for a bad binding argument.
fn invalid(py: Python<'_>, problems: Vec<String>) -> PyErr {
    raise(py, &Error::Validation(problems))
}

/// A `str` argument; else its problem is added and an empty text stands in.
fn text_arg(value: &Bound<'_, PyAny>, name: &str, problems: &mut Vec<String>) -> String {
    value.extract::<String>().unwrap_or_else(|_| {
        problems.push(format!("{name}: expected a string"));
        String::new()
    })
}

/// A `bool` argument, `True` or `False` only (`bool` is a subclass of `int`, and `1` is not a
/// flag); else its problem is added and `false` stands in.
fn flag_arg(value: &Bound<'_, PyAny>, name: &str, problems: &mut Vec<String>) -> bool {
    match value.extract::<bool>() {
        Ok(flag) if value.is_instance_of::<pyo3::types::PyBool>() => flag,
        _ => {
            problems.push(format!("{name}: expected True or False"));
            false
        }
    }
}

fn parse_json(py: Python<'_>, text: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| invalid(py, vec![format!("input: not JSON ({e})")]))
}

/// A count argument (`limit`): a Python `int` ≥ 0, else a `ValidationError` worded as the Node
/// binding's (a negative or enormous `int` would otherwise be pyo3's `OverflowError`, and
/// `True` would count as 1). The range a call allows is the core's to check.
fn count(py: Python<'_>, name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let whole = value.is_instance_of::<pyo3::types::PyInt>()
        && !value.is_instance_of::<pyo3::types::PyBool>();
    match value.extract::<usize>() {
        Ok(n) if whole => Ok(Some(n)),
        _ => Err(invalid(
            py,
            vec![format!("{name}: expected a whole number ≥ 0")],
        )),
    }
}

fn to_text(value: &Value) -> String {
    value.to_string()
}

fn store_id(py: Python<'_>, text: &str) -> PyResult<StoreId> {
    StoreId::parse(text).ok_or_else(|| {
        raise(
            py,
            &Error::NotFound {
                what: "store",
                id: String::new(),
            },
        )
    })
}

fn area(py: Python<'_>, text: &str) -> PyResult<Area> {
    Area::parse(text).ok_or_else(|| invalid(py, vec![format!("area: unknown `{text}`")]))
}

/// The verify decision (a denial is a decision, not an exception). It holds the engine's
/// decision as is; each field is built only when read, so `verify` allocates nothing but this
/// object. No pyo3 freelist: its pop and push each take a mutex, which measured 15 ns a call
/// slower than CPython's own small-object allocator (interleaved runs).
#[pyclass(frozen, module = "latchkey._native")]
struct Decision {
    inner: latchkey::Decision,
}

#[pymethods]
impl Decision {
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.allowed()
    }

    #[getter]
    fn code(&self) -> &'static str {
        self.inner.code_str()
    }

    #[getter]
    fn status(&self) -> u16 {
        self.inner.status()
    }

    #[getter]
    fn message(&self) -> String {
        self.inner.message().into_owned()
    }

    #[getter]
    fn headers(&self) -> Vec<(&'static str, String)> {
        self.inner.headers()
    }

    #[getter]
    fn key_id(&self) -> Option<&str> {
        self.inner.key_id()
    }

    #[getter]
    fn store_id(&self) -> Option<String> {
        self.inner.store_id().map(|s| s.to_string())
    }

    #[getter]
    fn environment(&self) -> Option<&str> {
        self.inner.environment()
    }

    /// The server's body for this refusal, as JSON text.
    fn refusal_json(&self) -> String {
        self.inner.refusal_body().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, code={:?}, status={}, key_id={:?})",
            if self.inner.allowed() {
                "True"
            } else {
                "False"
            },
            self.inner.code_str(),
            self.inner.status(),
            self.inner.key_id()
        )
    }
}

/// The engine's options: the environment's (`API_DEFAULT_RATE_LIMIT_PER_MINUTE`), then the
/// keyword arguments of `Engine.open` / `Engine.memory`, every problem named at once (with
/// `problems` found already). `None` (Python's) leaves a default.
fn options(
    py: Python<'_>,
    allow_private_webhooks: &Bound<'_, PyAny>,
    cache_mb: &Bound<'_, PyAny>,
    webhook_timeout: &Bound<'_, PyAny>,
    mut problems: Vec<String>,
) -> PyResult<latchkey::EngineOptions> {
    let mut options = latchkey::EngineOptions::from_env().unwrap_or_else(|e| {
        problems.extend(e.problems());
        latchkey::EngineOptions::default()
    });
    // `bool` is a subclass of `int` in Python: `cache_mb=True` is a mistake, not 1 MiB.
    let is_bool = |v: &Bound<'_, PyAny>| v.is_instance_of::<pyo3::types::PyBool>();
    let allow = flag_arg(
        allow_private_webhooks,
        "allow_private_webhooks",
        &mut problems,
    );
    options.webhooks.allow_private = allow;
    if !cache_mb.is_none() {
        if is_bool(cache_mb) || !cache_mb.is_instance_of::<pyo3::types::PyInt>() {
            problems.push("cache_mb: expected a whole number of MiB".to_owned());
        } else if let Err(problem) = options.set_cache_mb(cache_mb.extract::<u64>().unwrap_or(0)) {
            problems.push(format!("cache_mb: {problem}"));
        }
    }
    if !webhook_timeout.is_none() {
        match webhook_timeout.extract::<f64>() {
            Ok(seconds) if !is_bool(webhook_timeout) => {
                let timeout = std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default();
                match latchkey::WebhookOptions::timeout_problem(timeout) {
                    None => options.webhooks.timeout = timeout,
                    Some(problem) => problems.push(format!("webhook_timeout: {problem}")),
                }
            }
            _ => problems.push("webhook_timeout: expected a number of seconds".to_owned()),
        }
    }
    if problems.is_empty() {
        Ok(options)
    } else {
        Err(invalid(py, problems))
    }
}

/// The engine, or `None` once closed.
///
/// A call takes its own `Arc` under the read lock and lets the lock go before it releases
/// the GIL, so `close` never waits for a commit: it empties the slot, and the database file
/// is released when the last call in flight drops its `Arc`. Every later call raises
/// `ClosedError`.
#[pyclass(frozen, module = "latchkey._native")]
struct Engine {
    engine: parking_lot::RwLock<Option<Arc<latchkey::Engine>>>,
}

impl Engine {
    fn new(engine: latchkey::Engine) -> Self {
        Self {
            engine: parking_lot::RwLock::new(Some(Arc::new(engine))),
        }
    }

    fn shared(&self, py: Python<'_>) -> PyResult<Arc<latchkey::Engine>> {
        self.engine.read().clone().ok_or_else(|| closed(py))
    }

    /// Runs `op` without the GIL and maps its error.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        op: impl FnOnce(&latchkey::Engine) -> latchkey::Result<T> + Send,
    ) -> PyResult<T> {
        let engine = self.shared(py)?;
        py.detach(move || op(&engine)).map_err(|e| raise(py, &e))
    }
}

#[pymethods]
impl Engine {
    /// `allow_private_webhooks` lets webhooks target internal addresses (the server's
    /// `--allow-private-webhooks`); off, they are refused at registration and dispatch.
    /// `cache_mb` sizes the database's page cache; `webhook_timeout` (seconds) limits one
    /// delivery attempt.
    #[staticmethod]
    #[pyo3(signature = (path, allow_private_webhooks, cache_mb, webhook_timeout))]
    fn open(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        allow_private_webhooks: &Bound<'_, PyAny>,
        cache_mb: &Bound<'_, PyAny>,
        webhook_timeout: &Bound<'_, PyAny>,
    ) -> PyResult<Engine> {
        let mut problems = Vec::new();
        // `str` or `os.PathLike`, as `open()` takes; anything else would be str()-ed into a
        // file name ("None", "123") rather than refused.
        const NO_PATH: &str = "path: expected a file path (str or os.PathLike)";
        let path = path
            .extract::<std::path::PathBuf>()
            .ok()
            .filter(|path| !path.as_os_str().is_empty());
        if path.is_none() {
            problems.push(NO_PATH.to_owned());
        }
        let options = options(
            py,
            allow_private_webhooks,
            cache_mb,
            webhook_timeout,
            problems,
        )?;
        // `options` has refused a missing path with the other problems already.
        let path = path.ok_or_else(|| invalid(py, vec![NO_PATH.to_owned()]))?;
        let engine = py
            .detach(|| latchkey::Engine::open_with(&path, options))
            .map_err(|e| raise(py, &e))?;
        Ok(Engine::new(engine))
    }

    #[staticmethod]
    #[pyo3(signature = (allow_private_webhooks, cache_mb, webhook_timeout))]
    fn memory(
        py: Python<'_>,
        allow_private_webhooks: &Bound<'_, PyAny>,
        cache_mb: &Bound<'_, PyAny>,
        webhook_timeout: &Bound<'_, PyAny>,
    ) -> PyResult<Engine> {
        let options = options(
            py,
            allow_private_webhooks,
            cache_mb,
            webhook_timeout,
            Vec::new(),
        )?;
        let engine = latchkey::Engine::memory_with(options).map_err(|e| raise(py, &e))?;
        Ok(Engine::new(engine))
    }

    /// `{"store": Store, "default_key": CreatedKey}` as JSON.
    fn create_store(&self, py: Python<'_>, actor: &str, input: &str) -> PyResult<String> {
        let input = parse_json(py, input)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let new = latchkey::NewStore::from_json(&input)?;
            let (store, key) = e.create_store(&actor, new)?;
            Ok(to_text(
                &json!({"store": store, "default_key": key.to_json()}),
            ))
        })
    }

    fn get_store(&self, py: Python<'_>, store_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&json!(e.get_store(store_id)?))))
    }

    fn list_stores(&self, py: Python<'_>) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&json!(e.list_stores()?))))
    }

    fn update_store(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        patch: &str,
    ) -> PyResult<String> {
        let patch = parse_json(py, patch)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let patch = latchkey::StorePatch::from_json(&patch)?;
            Ok(to_text(&json!(e.update_store(store_id, &actor, patch)?)))
        })
    }

    fn create_key(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        input: &str,
    ) -> PyResult<String> {
        let input = parse_json(py, input)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let key = latchkey::NewKey::from_json(&input)?;
            Ok(to_text(&e.create_key(store_id, &actor, key)?.to_json()))
        })
    }

    fn get_key(&self, py: Python<'_>, store_id: &str, key_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&json!(e.get_key(store_id, key_id)?))))
    }

    fn list_keys(&self, py: Python<'_>, store_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&json!(e.list_keys(store_id)?))))
    }

    fn update_key(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        key_id: &str,
        patch: &str,
    ) -> PyResult<String> {
        let patch = parse_json(py, patch)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let patch = latchkey::KeyPatch::from_json(&patch)?;
            Ok(to_text(&json!(
                e.update_key(store_id, &actor, key_id, patch)?
            )))
        })
    }

    fn regenerate_key(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        key_id: &str,
        input: &str,
    ) -> PyResult<String> {
        let input = parse_json(py, input)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let created = e.regenerate_key_from_json(store_id, &actor, key_id, &input)?;
            Ok(to_text(&created.to_json()))
        })
    }

    fn revoke_key(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        key_id: &str,
    ) -> PyResult<()> {
        let actor = Actor::admin(actor);
        self.call(py, move |e| e.revoke_key(store_id, &actor, key_id))
    }

    /// The credentials in `text` checked against the keys (and stopped, with `stop`), as a
    /// JSON array of findings; every problem with the arguments named at once.
    fn check_leaks(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        stop: &Bound<'_, PyAny>,
        actor: &str,
    ) -> PyResult<String> {
        let mut problems = Vec::new();
        let text = text_arg(text, "text", &mut problems);
        let stop = flag_arg(stop, "stop", &mut problems);
        if !problems.is_empty() {
            return Err(invalid(py, problems));
        }
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            Ok(to_text(&json!(e.check_leaks(&text, stop, &actor))))
        })
    }

    #[pyo3(signature = (store_id, limit=None))]
    fn audit(
        &self,
        py: Python<'_>,
        store_id: &str,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let limit = count(py, "limit", limit)?.unwrap_or(100);
        self.call(py, |e| Ok(to_text(&json!(e.audit(store_id, limit)?))))
    }

    /// The entity as JSON and whether an earlier create with the key made it.
    #[pyo3(signature = (store_id, environment, area_name, input, idempotency_key=None))]
    fn create_entity(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        area_name: &str,
        input: &str,
        idempotency_key: Option<&str>,
    ) -> PyResult<(String, bool)> {
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let area = area(py, area_name)?;
        let input = parse_json(py, input)?;
        self.call(py, move |e| {
            let created = e.create_entity_once(&scope, area, &input, idempotency_key)?;
            Ok((to_text(&created.value), created.replayed))
        })
    }

    /// `{token, expires_at}` as JSON: the token this once.
    fn create_portal_session(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        input: &str,
    ) -> PyResult<String> {
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let input = parse_json(py, input)?;
        self.call(py, move |e| {
            Ok(to_text(
                &e.create_portal_session_from_json(&scope, &input)?.to_json(),
            ))
        })
    }

    /// `{store_id, environment, customer_id}` as JSON, or `None` when the token opens no
    /// live session.
    fn portal_customer(&self, py: Python<'_>, token: &str) -> PyResult<Option<String>> {
        self.call(py, |e| {
            Ok(e.portal_customer(token)?.map(|c| to_text(&c.to_json())))
        })
    }

    /// A page of the token's customer's orders or subscriptions as JSON, or `None` as
    /// `portal_customer`.
    #[pyo3(signature = (token, area_name, limit=None, cursor=None))]
    fn portal_list(
        &self,
        py: Python<'_>,
        token: &str,
        area_name: &str,
        limit: Option<&Bound<'_, PyAny>>,
        cursor: Option<&str>,
    ) -> PyResult<Option<String>> {
        let area = area(py, area_name)?;
        let limit = count(py, "limit", limit)?;
        self.call(py, move |e| {
            Ok(e.portal_page(token, area, limit, cursor)?
                .map(|page| to_text(&Value::from(page))))
        })
    }

    /// The store's live portal sessions (never their tokens) as a JSON array.
    fn portal_sessions(&self, py: Python<'_>, store_id: &str) -> PyResult<String> {
        self.call(py, |e| {
            let sessions = e.portal_sessions(store_id)?;
            Ok(to_text(&Value::Array(
                sessions.iter().map(|s| s.to_json()).collect(),
            )))
        })
    }

    /// Ends one live session (`session_id`) or every live session of `customer_id` (exactly
    /// one of the two); the ids ended.
    #[pyo3(signature = (store_id, actor, session_id=None, customer_id=None))]
    fn end_portal_sessions(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        session_id: Option<&str>,
        customer_id: Option<&str>,
    ) -> PyResult<Vec<String>> {
        let which = match (session_id, customer_id) {
            (Some(id), None) => latchkey::EndPortalSessions::One(id),
            (None, Some(customer)) => latchkey::EndPortalSessions::OfCustomer(customer),
            _ => {
                let problem = "session_id and customer_id: give exactly one".to_owned();
                return Err(raise(py, &latchkey::Error::Validation(vec![problem])));
            }
        };
        let actor = Actor::admin(actor);
        self.call(py, |e| e.end_portal_sessions(store_id, &actor, which))
    }

    fn get_entity(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        area_name: &str,
        id: &str,
    ) -> PyResult<String> {
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let area = area(py, area_name)?;
        self.call(py, move |e| Ok(to_text(&e.get_entity(&scope, area, id)?)))
    }

    #[pyo3(signature = (store_id, environment, area_name, limit=None, cursor=None))]
    fn list_entities(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        area_name: &str,
        limit: Option<&Bound<'_, PyAny>>,
        cursor: Option<&str>,
    ) -> PyResult<String> {
        let limit = count(py, "limit", limit)?;
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let area = area(py, area_name)?;
        // The page as stored JSON (no record decoded): the same text `list_entities` gives.
        self.call(py, move |e| {
            Ok(e.list_entities_json(&scope, area, limit, cursor)?.to_json())
        })
    }

    fn update_entity(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        area_name: &str,
        id: &str,
        input: &str,
    ) -> PyResult<String> {
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let area = area(py, area_name)?;
        let input = parse_json(py, input)?;
        self.call(py, move |e| {
            Ok(to_text(&e.update_entity(&scope, area, id, &input)?))
        })
    }

    fn delete_entity(
        &self,
        py: Python<'_>,
        store_id: &str,
        environment: &str,
        area_name: &str,
        id: &str,
    ) -> PyResult<()> {
        let scope = Scope::new(self::store_id(py, store_id)?, environment);
        let area = area(py, area_name)?;
        self.call(py, move |e| e.delete_entity(&scope, area, id))
    }

    /// `verify(credential, *, area=None, action=None, ip=None, path="/")`: decides one request.
    /// Bad arguments (an unknown area or action, an unreadable IP) are a `ValidationError`; a
    /// refused request is a `Decision`. A function bound to this engine (see `fast`), read
    /// once by the typed layer.
    #[getter]
    fn verify<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        fast::bound_verify(slf)
    }

    /// A store's request log, newest first, filtered by a JSON object of `LogQuery` fields.
    fn logs(&self, py: Python<'_>, store_id: &str, query: &str) -> PyResult<String> {
        let query = parse_json(py, query)?;
        self.call(py, move |e| {
            let query = latchkey::LogQuery::from_json(&query)?;
            Ok(to_text(&json!(e.logs(store_id, &query)?)))
        })
    }

    /// Requests per key in a period, from a JSON object of `UsageQuery` fields.
    fn usage(&self, py: Python<'_>, store_id: &str, query: &str) -> PyResult<String> {
        let query = parse_json(py, query)?;
        self.call(py, move |e| {
            let query = latchkey::UsageQuery::from_json(&query)?;
            Ok(to_text(&json!(e.usage(store_id, &query)?)))
        })
    }

    /// Records the request a decision answered in the store's request log (buffered; never
    /// blocks). Nothing is recorded for a credential that matched no key.
    #[pyo3(signature = (decision, method, path, status, ip=None, latency_us=0))]
    #[allow(clippy::too_many_arguments)] // one per Python argument
    fn record_request(
        &self,
        py: Python<'_>,
        decision: &Decision,
        method: &str,
        path: &str,
        status: i64,
        ip: Option<&str>,
        latency_us: i64,
    ) -> PyResult<()> {
        // The core checks the method, status and address; the latency's sign is Python's.
        let mut problems = Vec::new();
        let latency_us = u64::try_from(latency_us).unwrap_or_else(|_| {
            problems.push("latency_us: must be a whole number ≥ 0".to_owned());
            0
        });
        self.shared(py)?
            .record_checked(
                &decision.inner,
                method,
                path,
                status,
                ip,
                latency_us,
                problems,
            )
            .map_err(|e| raise(py, &e))
    }

    /// Writes buffered last-use times and log entries now.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.flush())
    }

    /// Writes what is buffered and lets the database file go (once calls already running
    /// finish). Every later call raises `ClosedError`; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(engine) = self.engine.write().take() else {
            return Ok(());
        };
        // Dropping the last `Arc` joins the engine's background threads: no GIL for that.
        py.detach(move || {
            let flushed = engine.flush();
            drop(engine);
            flushed
        })
        .map_err(|e| raise(py, &e))
    }

    // ---- webhooks (SPEC §8) ---------------------------------------------------------------

    /// The endpoint with its `secret`, this once.
    fn create_webhook(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        input: &str,
    ) -> PyResult<String> {
        let input = parse_json(py, input)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            Ok(to_text(&e.create_webhook(store_id, &actor, &input)?))
        })
    }

    fn list_webhooks(&self, py: Python<'_>, store_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&json!(e.list_webhooks(store_id)?))))
    }

    fn get_webhook(&self, py: Python<'_>, store_id: &str, webhook_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&e.get_webhook(store_id, webhook_id)?)))
    }

    fn update_webhook(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        webhook_id: &str,
        patch: &str,
    ) -> PyResult<String> {
        let patch = parse_json(py, patch)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            Ok(to_text(
                &e.update_webhook(store_id, &actor, webhook_id, &patch)?,
            ))
        })
    }

    fn delete_webhook(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        webhook_id: &str,
    ) -> PyResult<()> {
        let actor = Actor::admin(actor);
        self.call(py, |e| e.delete_webhook(store_id, &actor, webhook_id))
    }

    /// The delivery queued for one more attempt, now, as JSON.
    fn retry_webhook_delivery(
        &self,
        py: Python<'_>,
        store_id: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> PyResult<String> {
        self.call(py, |e| {
            Ok(to_text(&e.retry_webhook_delivery(
                store_id,
                webhook_id,
                delivery_id,
            )?))
        })
    }

    /// The endpoint with its new `secret`, this once; `input` is `{overlap_seconds?}`.
    fn rotate_webhook_secret(
        &self,
        py: Python<'_>,
        store_id: &str,
        actor: &str,
        webhook_id: &str,
        input: &str,
    ) -> PyResult<String> {
        let input = parse_json(py, input)?;
        let actor = Actor::admin(actor);
        self.call(py, move |e| {
            let rotated = e.rotate_webhook_secret(store_id, &actor, webhook_id, &input)?;
            Ok(to_text(&rotated))
        })
    }

    #[pyo3(signature = (store_id, webhook_id, limit=None))]
    fn list_webhook_deliveries(
        &self,
        py: Python<'_>,
        store_id: &str,
        webhook_id: &str,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let limit = count(py, "limit", limit)?;
        self.call(py, |e| {
            Ok(to_text(&json!(
                e.list_webhook_deliveries(store_id, webhook_id, limit)?
            )))
        })
    }

    /// `{status_code, body, error, duration_ms, delivery_id}` of a signed `webhook.test` POST.
    fn test_webhook(&self, py: Python<'_>, store_id: &str, webhook_id: &str) -> PyResult<String> {
        self.call(py, |e| Ok(to_text(&e.test_webhook(store_id, webhook_id)?)))
    }

    /// One delivery pass on this thread (without the GIL): `(queued, attempted, next_due_ms)`.
    fn deliver_webhooks(&self, py: Python<'_>) -> PyResult<(usize, usize, Option<i64>)> {
        self.call(py, |e| {
            let pass = e.deliver_webhooks()?;
            Ok((pass.queued, pass.attempted, pass.next_due_ms))
        })
    }

    /// Starts the background delivery thread (once); it stops when the engine is dropped.
    fn start_webhook_worker(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.start_webhook_worker())
    }
}

/// The proxies whose `X-Forwarded-For` is believed, parsed once (CIDRs or addresses).
#[pyclass(frozen, module = "latchkey._native")]
struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
}

#[pymethods]
impl TrustedProxies {
    #[new]
    fn new(py: Python<'_>, proxies: Vec<String>) -> PyResult<Self> {
        latchkey::parse_cidrs(&proxies)
            .map(|nets| Self { nets })
            .map_err(|problems| invalid(py, problems))
    }

    /// The client address (SPEC §7): the peer, or — only when the peer is one of these
    /// proxies — the nearest untrusted hop of `X-Forwarded-For`. `None` when the peer is not
    /// an IP address (test clients, unix sockets).
    #[pyo3(signature = (peer, forwarded_for=None))]
    fn client_ip(&self, peer: Option<&str>, forwarded_for: Option<&str>) -> Option<String> {
        let peer = peer.and_then(latchkey::parse_ip);
        latchkey::client_ip(peer, forwarded_for, &self.nets).map(|ip| ip.to_string())
    }
}

/// A header as the ASGI helpers pass it: its value, or every line of it.
#[derive(FromPyObject)]
enum Lines {
    One(String),
    Many(Vec<String>),
}

impl Lines {
    fn all(header: Option<&Lines>) -> &[String] {
        match header {
            None => &[],
            Some(Lines::One(one)) => std::slice::from_ref(one),
            Some(Lines::Many(all)) => all,
        }
    }
}

/// The credential a request carries (SPEC §7): `X-Api-Key` first, then `Authorization`
/// (Bearer, Basic `ck:cs`, or a bare base64 `ck:cs`). `None` when neither is present. Each
/// header is its value or a list of every line of it: one sent twice answers `INVALID`, as
/// on the server.
#[pyfunction]
#[pyo3(signature = (x_api_key=None, authorization=None))]
fn credential_from_headers(
    x_api_key: Option<Lines>,
    authorization: Option<Lines>,
) -> Option<String> {
    latchkey::credential_from_headers(
        Lines::all(x_api_key.as_ref()).iter().map(String::as_str),
        Lines::all(authorization.as_ref())
            .iter()
            .map(String::as_str),
    )
    .map(|c| c.into_owned())
}

/// `text` with every credential in it masked (`latchkey::redact`); with `hex`, every 64-hex
/// word too. Every problem with the arguments named at once.
#[pyfunction]
fn redact(py: Python<'_>, text: &Bound<'_, PyAny>, hex: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut problems = Vec::new();
    let text = text_arg(text, "text", &mut problems);
    let hex = flag_arg(hex, "hex", &mut problems);
    if !problems.is_empty() {
        return Err(invalid(py, problems));
    }
    Ok(latchkey::redact(&text, hex).into_owned())
}

/// The server's body for 405 (a method an area's routes do not serve), as JSON text.
#[pyfunction]
fn method_not_allowed_json() -> String {
    latchkey::method_not_allowed_body().to_string()
}

/// The action an HTTP method needs (GET/HEAD → View, POST/PUT/PATCH → Edit, DELETE → Delete).
#[pyfunction]
fn action_for_method(method: &str) -> Option<&'static str> {
    Action::for_method(method).map(Action::as_str)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(credential_from_headers, m)?)?;
    m.add_function(wrap_pyfunction!(action_for_method, m)?)?;
    m.add_function(wrap_pyfunction!(method_not_allowed_json, m)?)?;
    m.add_function(wrap_pyfunction!(redact, m)?)?;
    m.add_class::<Engine>()?;
    m.add_class::<Decision>()?;
    m.add_class::<TrustedProxies>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
