//! An acknowledged write survives kill -9, and the scoped-key cap holds under concurrent writers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use latchkey::{Action, Area, Engine, NewKey, StorePatch};
use serde_json::json;

const CHILD_ENV: &str = "LATCHKEY_CRASH_CHILD_DB";

/// In the child: create keys forever, printing each credential once its call has returned.
fn child(path: &str) -> ! {
    let engine = Engine::open(path).expect("open");
    let (store, default_key) = store(&engine);
    let sid = store.id.as_str();
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                max_scoped_keys: Some(10_000),
                ..Default::default()
            },
        )
        .expect("settings");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {}", default_key.credential()).expect("stdout");
    out.flush().expect("stdout");
    for i in 0.. {
        let key = engine
            .create_key(
                sid,
                &admin(),
                NewKey::new(format!("k{i}"), perms(json!({"Orders": ["View"]}))),
            )
            .expect("create");
        writeln!(out, "ACK {}", key.credential()).expect("stdout");
        out.flush().expect("stdout");
    }
    unreachable!("the loop only ends when the process is killed")
}

#[test]
fn acknowledged_keys_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_keys_survive_kill_9",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(credential) = line.strip_prefix("ACK ") {
            acknowledged.push(credential.to_owned());
        }
        if acknowledged.len() == 25 {
            break;
        }
    }
    // SIGKILL while the child is in the middle of further creations.
    process.kill().unwrap();
    process.wait().unwrap();
    assert_eq!(acknowledged.len(), 25, "the child stopped early");

    let engine = Engine::open(&path).unwrap();
    for credential in &acknowledged {
        let decision = verify(&engine, credential, Area::Orders, Action::View);
        assert!(
            decision.allowed(),
            "an acknowledged key was lost: {decision:?}"
        );
    }
}

#[test]
fn concurrent_creations_never_exceed_the_cap() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let (store, _) = store(&engine);
    let sid = store.id.to_string();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (engine, sid) = (engine.clone(), sid.clone());
            std::thread::spawn(move || {
                (0..5)
                    .filter(|i| {
                        let key = NewKey::new(format!("k{i}"), perms(json!("*")));
                        engine.create_key(&sid, &admin(), key).is_ok()
                    })
                    .count()
            })
        })
        .collect();
    let created: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(created, 5, "max_scoped_keys is 5");
    assert_eq!(engine.list_keys(&sid).unwrap().len(), 6);
}

/// A database file has one engine at a time; a second open says so in words a person can act
/// on, and leaves the first engine working.
#[test]
fn a_database_open_elsewhere_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.redb");
    let engine = Engine::open(&path).unwrap();
    let (_, key) = store(&engine);
    let Err(err) = Engine::open(&path) else {
        panic!("a second engine opened the same file");
    };
    assert_eq!(err.code(), "STORAGE");
    let message = err.to_string();
    assert!(message.contains("already open"), "{message}");
    assert!(message.contains("running server"), "{message}");
    assert!(
        verify(&engine, &key.credential(), Area::Orders, Action::View).allowed(),
        "the first engine stopped working"
    );
    drop(engine);
    Engine::open(&path).expect("open once the first engine is gone");
}
