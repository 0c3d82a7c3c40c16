//! Runs every shared scenario in `sdk-tests/scenarios/` against the engine (the Python and
//! Node bindings run the same files).

use std::collections::HashMap;
use std::path::PathBuf;

use latchkey::{
    Action, Actor, Area, CreatedKey, Engine, KeyPatch, NewKey, NewStore, Permission, Scope,
    StorePatch, VerifyRequest,
};
use serde_json::{Value, json};

struct Run {
    engine: Engine,
    stores: HashMap<String, String>,
    /// Credentials and key ids by name.
    keys: HashMap<String, (String, String)>,
    /// Entity ids and portal session tokens by name.
    entities: HashMap<String, String>,
    sessions: HashMap<String, String>,
}

/// `input` with every string `"$name"` replaced by the id of the entity saved as `name`.
fn resolve(input: &Value, entities: &HashMap<String, String>) -> Value {
    match input {
        Value::String(text) => match text.strip_prefix('$') {
            Some(name) => json!(entities[name]),
            None => input.clone(),
        },
        Value::Array(items) => items.iter().map(|v| resolve(v, entities)).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), resolve(v, entities)))
            .collect(),
        other => other.clone(),
    }
}

fn text<'a>(step: &'a Value, field: &str) -> &'a str {
    step[field]
        .as_str()
        .unwrap_or_else(|| panic!("step needs `{field}`: {step}"))
}

fn saved(created: &CreatedKey) -> (String, String) {
    (created.key.id.clone(), created.credential())
}

impl Run {
    fn store(&self, step: &Value) -> String {
        self.stores[text(step, "store")].clone()
    }

    fn key(&self, step: &Value) -> (String, String) {
        self.keys[text(step, "key")].clone()
    }

    /// A `check_leaks` step's text: its `lines`, each `{name}` the credential of that key.
    fn pasted(&self, step: &Value) -> String {
        let mut text = String::new();
        for line in step["lines"].as_array().expect("lines") {
            let mut line = line.as_str().expect("a line").to_owned();
            for (name, (_, credential)) in &self.keys {
                line = line.replace(&format!("{{{name}}}"), credential);
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// A portal step's token: the session saved under `session`, or `token` as given.
    fn token(&self, step: &Value) -> String {
        match step["session"].as_str() {
            Some(name) => self.sessions[name].clone(),
            None => text(step, "token").to_owned(),
        }
    }

    /// Runs one step; `Err(code, problems)` when the engine refused it.
    fn step(&mut self, step: &Value) -> Result<(), (String, usize)> {
        let admin = Actor::admin("scenario");
        let fail = |e: latchkey::Error| (e.code().to_owned(), e.problems().len());
        match text(step, "op") {
            "create_store" => {
                let mut body = step.get("settings").cloned().unwrap_or(json!({}));
                body["name"] = step["name"].clone();
                let input = NewStore::from_json(&body).map_err(fail)?;
                let (store, key) = self.engine.create_store(&admin, input).map_err(fail)?;
                let name = text(step, "as");
                self.stores.insert(name.to_owned(), store.id.to_string());
                self.keys.insert(format!("{name}.default"), saved(&key));
            }
            "update_store" => {
                let patch = StorePatch::from_json(&step["patch"]).map_err(fail)?;
                self.engine
                    .update_store(&self.store(step), &admin, patch)
                    .map_err(fail)?;
            }
            "create_key" => {
                let input = NewKey::from_json(&step["input"]).map_err(fail)?;
                let created = self
                    .engine
                    .create_key(&self.store(step), &admin, input)
                    .map_err(fail)?;
                self.keys
                    .insert(text(step, "as").to_owned(), saved(&created));
            }
            "update_key" => {
                let patch = KeyPatch::from_json(&step["patch"]).map_err(fail)?;
                let (id, _) = self.key(step);
                self.engine
                    .update_key(&self.store(step), &admin, &id, patch)
                    .map_err(fail)?;
            }
            "regenerate_key" => {
                let (id, old) = self.key(step);
                // `overlap_seconds` as the request body gives it (absent: none).
                let mut input = serde_json::json!({});
                if let Some(overlap) = step.get("overlap_seconds") {
                    input["overlap_seconds"] = overlap.clone();
                }
                let created = self
                    .engine
                    .regenerate_key_from_json(&self.store(step), &admin, &id, &input)
                    .map_err(fail)?;
                if let Some(old_as) = step["old_as"].as_str() {
                    self.keys.insert(old_as.to_owned(), (id, old));
                }
                self.keys
                    .insert(text(step, "key").to_owned(), saved(&created));
            }
            "revoke_key" => {
                let (id, _) = self.key(step);
                self.engine
                    .revoke_key(&self.store(step), &admin, &id)
                    .map_err(fail)?;
            }
            "verify" => self.verify(step),
            "create_entity" | "list_entities" => {
                let store = latchkey::StoreId::parse(&self.store(step)).expect("store id");
                let scope = Scope::new(store, step["environment"].as_str().unwrap_or("live"));
                let area = Area::parse(text(step, "area")).expect("area");
                if text(step, "op") == "create_entity" {
                    let input = resolve(&step["input"], &self.entities);
                    let created = self
                        .engine
                        .create_entity_once(&scope, area, &input, step["idempotency_key"].as_str())
                        .map_err(fail)?;
                    assert_eq!(
                        created.replayed,
                        step.get("same_as").is_some(),
                        "replayed: {step}"
                    );
                    let id = created.value["id"].as_str().expect("an entity id");
                    if let Some(name) = step["same_as"].as_str() {
                        assert_eq!(
                            Some(id),
                            self.entities.get(name).map(String::as_str),
                            "{step}"
                        );
                    }
                    if let Some(name) = step["as"].as_str() {
                        self.entities.insert(name.to_owned(), id.to_owned());
                    }
                } else {
                    let page = self
                        .engine
                        .list_entities(&scope, area, None, None)
                        .map_err(fail)?;
                    assert_eq!(
                        Some(page.items.len() as u64),
                        step["expect_count"].as_u64(),
                        "{step}"
                    );
                }
            }
            "create_portal_session" => {
                let store = latchkey::StoreId::parse(&self.store(step)).expect("store id");
                let scope = Scope::new(store, step["environment"].as_str().unwrap_or("live"));
                let customer = &self.entities[text(step, "customer")];
                let session = self
                    .engine
                    .create_portal_session(&scope, customer, step["ttl_seconds"].as_i64())
                    .map_err(fail)?;
                self.sessions.insert(
                    text(step, "as").to_owned(),
                    session.token.expose().to_owned(),
                );
            }
            "portal_customer" => {
                let found = self
                    .engine
                    .portal_customer(&self.token(step))
                    .map_err(fail)?;
                let wanted = step["expect"].as_str().map(|name| &self.entities[name]);
                assert_eq!(found.map(|c| c.customer_id).as_ref(), wanted, "{step}");
            }
            "portal_list" => {
                let area = Area::parse(text(step, "area")).expect("area");
                let limit = step["limit"].as_u64().map(|n| n as usize);
                let page = self
                    .engine
                    .portal_page(&self.token(step), area, limit, None)
                    .map_err(fail)?;
                assert_eq!(
                    page.map(|p| p.items.len() as u64),
                    step["expect_count"].as_u64(),
                    "{step}"
                );
            }
            "audit" => {
                // The newest events, newest first: action, key (by name; null for a store
                // event), changed fields, and the scenario's actor on every one.
                // `limit` defaults to the number of events expected (an error step has none).
                let expected = step["expect"].as_array().cloned().unwrap_or_default();
                let limit = step["limit"]
                    .as_u64()
                    .map_or(expected.len(), |n| n as usize);
                let events = self.engine.audit(&self.store(step), limit).map_err(fail)?;
                let shown: Vec<Value> = events
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap())
                    .collect();
                assert_eq!(shown.len(), expected.len(), "{step}");
                for (event, want) in shown.iter().zip(expected) {
                    let key = want["key"]
                        .as_str()
                        .map(|name| json!(self.keys[name].0))
                        .unwrap_or(Value::Null);
                    assert_eq!(event["action"], want["action"], "{step}");
                    assert_eq!(event["key_id"], key, "{step}");
                    assert_eq!(event["changes"], want["changes"], "{step}");
                    assert_eq!(
                        event["actor"],
                        json!({"type": "admin", "id": "scenario"}),
                        "{step}"
                    );
                }
            }
            "check_leaks" => {
                // `lines` with each `{name}` replaced by that key's credential; each finding
                // expected as [line, shape, status, key name or null].
                let text = self.pasted(step);
                let stop = step["stop"].as_bool().unwrap_or(false);
                let findings = self.engine.check_leaks(&text, stop, &admin);
                let seen: Vec<Value> = findings
                    .iter()
                    .map(|f| json!([f.line, f.shape, f.status, f.key_id]))
                    .collect();
                let wanted: Vec<Value> = step["expect"]
                    .as_array()
                    .expect("expect")
                    .iter()
                    .map(|w| {
                        let key = w[3].as_str().map(|name| self.keys[name].0.clone());
                        json!([w[0], w[1], w[2], key])
                    })
                    .collect();
                assert_eq!(seen, wanted, "{step}");
            }
            other => panic!("unknown op `{other}`"),
        }
        Ok(())
    }

    fn verify(&self, step: &Value) {
        let credential = match (step.get("key"), step.get("credential")) {
            (Some(_), _) => Some(self.key(step).1),
            (None, Some(c)) => c.as_str().map(str::to_owned),
            (None, None) => None,
        };
        let permission = match (step["area"].as_str(), step["action"].as_str()) {
            (Some(area), Some(action)) => Some(Permission::new(
                Area::parse(area).expect("area"),
                Action::parse(action).expect("action"),
            )),
            _ => None,
        };
        let ip = step["ip"].as_str().map(|ip| ip.parse().expect("ip"));
        let request = VerifyRequest {
            credential: credential.as_deref(),
            permission,
            ip,
            path: step["path"].as_str().unwrap_or("/"),
        };
        let repeat = step["repeat"].as_u64().unwrap_or(1);
        let mut decision = self.engine.verify(&request);
        for _ in 1..repeat {
            decision = self.engine.verify(&request);
        }
        let expect = &step["expect"];
        let check = |field: &str, actual: Value| {
            if let Some(wanted) = expect.get(field) {
                assert_eq!(&actual, wanted, "{field} of {step}");
            }
        };
        check("allowed", json!(decision.allowed()));
        check("code", json!(decision.code_str()));
        check("status", json!(decision.status()));
        check("message", json!(decision.message()));
        if let Some(wanted) = expect.get("headers").and_then(Value::as_object) {
            let headers: HashMap<_, _> = decision.headers().into_iter().collect();
            for (name, value) in wanted {
                assert_eq!(
                    headers.get(name.as_str()).map(String::as_str),
                    value.as_str(),
                    "header {name} of {step}"
                );
            }
        }
    }
}

#[test]
fn every_shared_scenario_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk-tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sdk-tests/scenarios")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenarios found: {files:?}");
    for file in files {
        let scenario: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("JSON");
        let mut run = Run {
            engine: Engine::memory().expect("engine"),
            stores: HashMap::new(),
            keys: HashMap::new(),
            entities: HashMap::new(),
            sessions: HashMap::new(),
        };
        for (i, step) in scenario["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .enumerate()
        {
            let outcome = run.step(step);
            match (step.get("expect_error").and_then(Value::as_str), outcome) {
                (None, Ok(())) => {}
                (None, Err((code, _))) => {
                    panic!("{}: step {i} failed with {code}: {step}", file.display())
                }
                (Some(wanted), Ok(())) => {
                    panic!("{}: step {i} should fail with {wanted}", file.display())
                }
                (Some(wanted), Err((code, problems))) => {
                    assert_eq!(code, wanted, "{}: step {i}", file.display());
                    if let Some(n) = step["problems"].as_u64() {
                        assert_eq!(
                            problems as u64,
                            n,
                            "{}: problems of step {i}",
                            file.display()
                        );
                    }
                }
            }
        }
    }
}
