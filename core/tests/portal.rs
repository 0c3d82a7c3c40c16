//! Customer portal sessions as a store's managers see them: listed without their tokens,
//! ended one at a time or a customer's all at once, and audited.

mod common;

use common::*;
use latchkey::{Area, AuditAction, EndPortalSessions, Scope};
use serde_json::json;

#[test]
fn managers_list_and_end_portal_sessions() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let (other, _) = other_store(&engine);
    let sid = store.id.as_str();
    let live = Scope::new(store.id, "live");
    let customer = |email: &str| {
        engine
            .create_entity(&live, Area::Customers, &json!({"email": email}))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ann, bob) = (customer("ann@example.com"), customer("bob@example.com"));
    let open = |who: &str, ttl: i64| {
        engine
            .create_portal_session(&live, who, Some(ttl))
            .unwrap()
            .token
            .expose()
            .to_owned()
    };
    let ann_tokens = [open(&ann, 600), open(&ann, 3600)];
    let bob_token = open(&bob, 300);
    let short = open(&bob, 60);

    // Listed soonest-to-expire first, by id, never with a token.
    clock.advance(time::Duration::seconds(61));
    let listed = engine.portal_sessions(sid).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.customer_id.as_str())
            .collect::<Vec<_>>(),
        [bob.as_str(), ann.as_str(), ann.as_str()],
        "the 60-second session has expired"
    );
    let shown = format!(
        "{listed:?} {}",
        json!(listed.iter().map(|s| s.to_json()).collect::<Vec<_>>())
    );
    for token in ann_tokens.iter().chain([&bob_token, &short]) {
        assert!(!shown.contains(token.as_str()));
    }
    assert!(
        listed
            .iter()
            .all(|s| s.id.starts_with("ps_") && s.id.len() == 19)
    );
    assert!(
        engine
            .portal_sessions(other.id.as_str())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        engine.portal_sessions("nosuchst").unwrap_err().code(),
        "NOT_FOUND"
    );

    // One session: only its token stops; another store cannot end it; twice is a 404.
    let bobs = listed[0].id.clone();
    let err = engine
        .end_portal_sessions(other.id.as_str(), &admin(), EndPortalSessions::One(&bobs))
        .unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND");
    assert!(engine.portal_customer(&bob_token).unwrap().is_some());
    let ended = engine
        .end_portal_sessions(sid, &admin(), EndPortalSessions::One(&bobs))
        .unwrap();
    assert_eq!(ended, std::slice::from_ref(&bobs));
    assert_eq!(engine.portal_customer(&bob_token).unwrap(), None);
    assert!(engine.portal_customer(&ann_tokens[0]).unwrap().is_some());
    let again = engine.end_portal_sessions(sid, &admin(), EndPortalSessions::One(&bobs));
    assert_eq!(again.unwrap_err().code(), "NOT_FOUND");

    // A customer's all at once; a customer with none ends nothing and records nothing.
    let ended = engine
        .end_portal_sessions(sid, &admin(), EndPortalSessions::OfCustomer(&ann))
        .unwrap();
    assert_eq!(ended.len(), 2);
    assert!(
        ann_tokens
            .iter()
            .all(|t| engine.portal_customer(t).unwrap().is_none())
    );
    assert!(engine.portal_sessions(sid).unwrap().is_empty());
    let none = engine
        .end_portal_sessions(sid, &admin(), EndPortalSessions::OfCustomer(&ann))
        .unwrap();
    assert!(none.is_empty());

    let events = engine.audit(sid, 2).unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.action == AuditAction::PortalSessionsEnded)
    );
    assert_eq!(events[0].changes, ended);
    assert_eq!(events[1].changes, [bobs]);
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap()["action"],
        "portal_sessions_ended"
    );
}
