//! Fuzz harnesses: each takes arbitrary bytes and must never panic; each also checks a
//! property that must hold for every input (a crash is a broken property, too).

use latchkey::{
    Action, Actor, Area, DenyCode, Engine, EngineOptions, KeyPatch, LogQuery, NewKey, NewStore,
    Permission, PermissionSet, Scope, StorePatch, VerifyRequest,
};
use serde_json::Value;

/// The harnesses, by name (the first argument of the `fuzz` binary and of `make fuzz`).
pub const TARGETS: [&str; 5] = ["credentials", "headers", "cidrs", "permissions", "bodies"];

pub fn run(target: &str, data: &[u8]) {
    match target {
        "credentials" => credentials(data),
        "headers" => headers(data),
        "cidrs" => cidrs(data),
        "permissions" => permissions(data),
        "bodies" => bodies(data),
        other => panic!("unknown target {other}"),
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

thread_local! {
    /// One engine per thread with a store and a key of each format; fuzz inputs are verified
    /// against it, so the parser, checksum and lookup all run.
    static ENGINE: (Engine, Vec<String>) = {
        // Private webhook targets allowed: registration then never waits on a name lookup,
        // which would read as a hang.
        let mut options = EngineOptions::default();
        options.webhooks.allow_private = true;
        let engine = Engine::memory_with(options).expect("engine");
        let (store, default_key) = engine
            .create_store(&Actor::admin("fuzz"), NewStore::named("Fuzz"))
            .expect("store");
        let mut keys = vec![default_key.credential()];
        for format in ["hex", "pair"] {
            let key = NewKey::from_json(&serde_json::json!({
                "name": format, "format": format, "permissions": {"Orders": ["View"]}
            }))
            .expect("key");
            keys.push(
                engine
                    .create_key(store.id.as_str(), &Actor::admin("fuzz"), key)
                    .expect("created")
                    .credential(),
            );
        }
        (engine, keys)
    };
}

/// The token parser and checksum, through verify: anything but an issued key is refused as
/// MISSING or INVALID, never allowed, never a panic.
pub fn credentials(data: &[u8]) {
    let Some(credential) = text(data) else { return };
    ENGINE.with(|(engine, keys)| {
        let decision = engine.verify(&VerifyRequest {
            credential: Some(credential),
            permission: Some(Permission::new(Area::Orders, Action::View)),
            ip: None,
            path: "/api/v1/orders",
        });
        if !keys.iter().any(|k| k == credential) {
            assert!(
                matches!(decision.code(), Some(DenyCode::Missing | DenyCode::Invalid)),
                "{credential:?} was not refused: {:?}",
                decision.code()
            );
        }
        // Whatever the scanner calls a token has the token layout.
        if latchkey::is_token(credential) {
            assert_eq!(credential.matches('_').count(), 2, "{credential:?}");
        }
        // The scanner, on the input as a file: each finding is a word of it, shown masked,
        // and names a key only when it is (part of) one that was issued.
        for leak in latchkey::find_leaks(credential) {
            assert_eq!(latchkey::leak_shape(leak.credential), Some(leak.shape));
            assert!(!leak.masked().contains(leak.credential), "{leak:?}");
            let issued = keys
                .iter()
                .any(|k| k.split(':').any(|part| part == leak.credential));
            assert_eq!(
                engine.identify(leak.credential).is_some(),
                issued,
                "{leak:?}"
            );
        }
        // Redacted, the input holds no credential, and redacting again changes nothing.
        let redacted = latchkey::redact(credential, true);
        assert_eq!(latchkey::find_leaks(&redacted).count(), 0, "{redacted:?}");
        assert_eq!(latchkey::redact(&redacted, true), redacted);
    });
}

/// `X-Api-Key` / `Authorization` extraction: the first byte splits the input in two headers.
pub fn headers(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let Some(rest) = text(rest) else { return };
    let at = usize::from(split).min(rest.len());
    let Some((a, b)) = rest.split_at_checked(at) else {
        return;
    };
    let x_api_key = (split & 1 == 0).then_some(a);
    let credential = latchkey::credential_from_headers(x_api_key, Some(b));
    if let Some(key) = x_api_key.map(str::trim).filter(|k| !k.is_empty()) {
        assert_eq!(credential.as_deref(), Some(key), "X-Api-Key wins");
    }
}

/// CIDR lists: every entry parses or is named; what parses prints back and parses again the same.
pub fn cidrs(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let entries: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match latchkey::parse_cidrs(&entries) {
        Ok(nets) => {
            let printed: Vec<String> = nets.iter().map(ToString::to_string).collect();
            assert_eq!(latchkey::parse_cidrs(&printed).expect("reparse"), nets);
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
}

/// Permission input in every form: what is accepted prints and reads back as the same set.
pub fn permissions(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(set) = PermissionSet::from_input(&value) {
        let again = PermissionSet::from_input(&serde_json::to_value(set).expect("json"))
            .expect("a printed set reads back");
        assert_eq!(again, set);
    }
}

/// Every JSON request body the engine reads: the first byte picks which. Refusals are
/// validation errors naming at least one problem; nothing panics.
pub fn bodies(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let problems = |err: latchkey::Error| assert!(!err.problems().is_empty(), "{err:?}");
    match which % 10 {
        0 => NewStore::from_json(&value)
            .map(drop)
            .unwrap_or_else(problems),
        1 => StorePatch::from_json(&value)
            .map(drop)
            .unwrap_or_else(problems),
        2 => NewKey::from_json(&value).map(drop).unwrap_or_else(problems),
        3 => KeyPatch::from_json(&value)
            .map(drop)
            .unwrap_or_else(problems),
        4 => LogQuery::from_json(&value)
            .map(drop)
            .unwrap_or_else(problems),
        _ => ENGINE.with(|(engine, _)| {
            let outcome = engine_body(engine, which, &value);
            if let Err(err) = outcome {
                match err {
                    latchkey::Error::Validation(_) => problems(err),
                    // Missing references, duplicates, caps: refusals too, but never a failure
                    // of the engine itself.
                    other => assert!(
                        !matches!(
                            other,
                            latchkey::Error::Storage(_) | latchkey::Error::Corrupt(_)
                        ),
                        "{other:?}"
                    ),
                }
            }
        }),
    }
}

/// The bodies read by engine calls: entities of every area (create and update), webhooks,
/// store settings, portal sessions.
fn engine_body(engine: &Engine, which: u8, value: &Value) -> latchkey::Result<()> {
    let store = engine.list_stores()?.remove(0);
    let scope = Scope::new(store.id, "live");
    let area = Area::ALL[usize::from(which / 10) % Area::ALL.len()];
    match which % 10 {
        5 => engine.create_entity(&scope, area, value).map(drop),
        6 => engine
            .create_webhook(store.id.as_str(), &latchkey::Actor::admin("fuzz"), value)
            .map(drop),
        7 => engine
            .update_store(
                store.id.as_str(),
                &latchkey::Actor::admin("fuzz"),
                StorePatch::from_json(value)?,
            )
            .map(drop),
        // An update of the area's first entity (once the fuzzer has created one).
        8 => match engine
            .list_entities(&scope, area, Some(1), None)?
            .items
            .first()
        {
            Some(entity) => {
                let id = entity["id"].as_str().unwrap_or_default().to_owned();
                engine.update_entity(&scope, area, &id, value).map(drop)
            }
            None => Ok(()),
        },
        // A portal session for the customer the body names.
        _ => {
            let customer = value
                .get("customer_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let ttl = value.get("ttl_seconds").and_then(Value::as_i64);
            engine
                .create_portal_session(&scope, customer, ttl)
                .map(drop)
        }
    }
}
