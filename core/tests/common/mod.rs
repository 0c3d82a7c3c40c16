#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use latchkey::{
    Action, Actor, Area, CreatedKey, Decision, Engine, EngineOptions, FakeClock, NewKey, NewStore,
    Permission, PermissionSet, Store, VerifyRequest,
};
use time::macros::datetime;

pub fn clock() -> FakeClock {
    FakeClock::new(datetime!(2026-11-23 12:00 UTC))
}

pub fn options(clock: &FakeClock) -> EngineOptions {
    EngineOptions {
        clock: Arc::new(clock.clone()),
        usage_flush_interval: Duration::from_secs(3600),
        ..EngineOptions::default()
    }
}

pub fn engine() -> (Engine, FakeClock) {
    let clock = clock();
    (Engine::memory_with(options(&clock)).unwrap(), clock)
}

pub fn admin() -> Actor {
    Actor::admin("test-admin")
}

pub fn perms(value: serde_json::Value) -> PermissionSet {
    PermissionSet::from_input(&value).unwrap()
}

pub fn store(engine: &Engine) -> (Store, CreatedKey) {
    engine
        .create_store(&admin(), NewStore::named("Test Shop"))
        .unwrap()
}

/// A second store ("Other"), for what must stay within one store.
pub fn other_store(engine: &Engine) -> (Store, CreatedKey) {
    engine
        .create_store(&admin(), NewStore::named("Other"))
        .unwrap()
}

pub fn scoped(engine: &Engine, store: &Store, permissions: serde_json::Value) -> CreatedKey {
    engine
        .create_key(
            store.id.as_str(),
            &admin(),
            NewKey::new("scoped", perms(permissions)),
        )
        .unwrap()
}

pub fn verify(engine: &Engine, credential: &str, area: Area, action: Action) -> Decision {
    verify_from(engine, credential, area, action, "127.0.0.1")
}

pub fn verify_from(
    engine: &Engine,
    credential: &str,
    area: Area,
    action: Action,
    ip: &str,
) -> Decision {
    let ip: IpAddr = ip.parse().unwrap();
    engine.verify(&VerifyRequest {
        credential: Some(credential),
        permission: Some(Permission::new(area, action)),
        ip: Some(ip),
        path: "/api/v1/orders",
    })
}

/// Lets the store's key permissions be edited after creation.
pub fn allow_permission_edits(engine: &Engine, store_id: &str) {
    let patch = latchkey::StorePatch {
        permissions_editable: Some(true),
        ..Default::default()
    };
    engine.update_store(store_id, &admin(), patch).unwrap();
}

/// Activates or deactivates a key as the administrator.
pub fn set_active(engine: &Engine, store_id: &str, key_id: &str, active: bool) {
    let patch = latchkey::KeyPatch {
        active: Some(active),
        ..Default::default()
    };
    engine
        .update_key(store_id, &admin(), key_id, patch)
        .unwrap();
}

/// The error code of a call expected to fail.
pub fn code_of<T: std::fmt::Debug>(result: latchkey::Result<T>) -> &'static str {
    result.unwrap_err().code()
}
