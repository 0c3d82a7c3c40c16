//! Store entities (SPEC §2, §7, appendix): validation, scoping, pagination, orders, outbox.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use latchkey::{Area, Engine, Scope, StorePatch};
use serde_json::{Value, json};

fn live(engine: &Engine) -> Scope {
    let (store, _) = store(engine);
    Scope::new(store.id, "live")
}

fn create(engine: &Engine, scope: &Scope, area: Area, body: Value) -> Value {
    engine
        .create_entity(scope, area, &body)
        .unwrap_or_else(|e| panic!("{area:?} {body}: {e}"))
}

fn problems(engine: &Engine, scope: &Scope, area: Area, body: Value) -> Vec<String> {
    let err = engine.create_entity(scope, area, &body).unwrap_err();
    assert_eq!(err.code(), "VALIDATION", "{err}");
    err.problems()
}

fn assert_names(problems: &[String], needles: &[&str]) {
    for needle in needles {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions `{needle}`: {problems:#?}"
        );
    }
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

#[test]
fn every_validation_problem_is_named_and_nothing_is_written() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let p = problems(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "", "price": {"amount": -5, "currency": "XXY"}, "type": "weekly",
               "category_id": "cat_000000000000zzzzzzzz", "colour": "red"}),
    );
    assert_names(
        &p,
        &[
            "name: must be 1 to 200",
            "amount",
            "XXY",
            "type: unknown `weekly`",
            "category_id: no category",
            "colour: unknown field",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "x", "discount": {"type": "percentage", "value": 150},
               "starts_at": "2027-02-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z", "max_uses": 0}),
    );
    assert_names(
        &p,
        &[
            "code: must be 3 to 32",
            "percentage must be from 0 to 100",
            "expires_at: must be after starts_at",
            "max_uses",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "TENOFF", "discount": {"type": "fixed", "value": 1000}}),
    );
    assert_names(&p, &["currency: is required for a fixed discount"]);
    let p = problems(
        &engine,
        &scope,
        Area::Sales,
        json!({"name": "Spring", "discount": {"type": "percentage", "value": 10},
               "package_ids": ["pkg_000000000000aaaaaaaa", "nope", "pkg_000000000000aaaaaaaa"],
               "starts_at": "2027-01-01T00:00:00Z"}),
    );
    assert_names(
        &p,
        &[
            "[1] not a package id",
            "[2] `pkg_000000000000aaaaaaaa` is listed twice",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "ip", "value": "10.0.0.0/33"}),
    );
    assert_names(&p, &["value: `10.0.0.0/33` is not an IP address or CIDR"]);
    let p = problems(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "email", "value": "not-an-email"}),
    );
    assert_names(&p, &["value: `not-an-email` is not an email address"]);
    let p = problems(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "a@b", "name": 7}),
    );
    assert_names(
        &p,
        &[
            "email: `a@b` is not an email address",
            "name: expected a string",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Products,
        json!({"sku": "a b", "name": "X", "price": usd(1), "stock": -1}),
    );
    assert_names(&p, &["sku: must be", "stock: must be"]);
    let p = problems(
        &engine,
        &scope,
        Area::GiftCards,
        json!({"balance": usd(-1), "expires_at": "2020-01-01T00:00:00Z"}),
    );
    assert_names(&p, &["balance", "expires_at: must be in the future"]);
    assert!(
        engine
            .create_entity(&scope, Area::Packages, &json!([1]))
            .is_err()
    );

    for area in [
        Area::Packages,
        Area::Coupons,
        Area::Sales,
        Area::Bans,
        Area::Customers,
        Area::Products,
        Area::GiftCards,
    ] {
        let page = engine.list_entities(&scope, area, None, None).unwrap();
        assert!(page.items.is_empty(), "{area:?} wrote something");
    }
}

#[test]
fn references_must_exist_and_deletes_keep_them_whole() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let games = create(&engine, &scope, Area::Categories, json!({"name": "Games"}));
    let rpg = create(
        &engine,
        &scope,
        Area::Categories,
        json!({"name": "RPG", "parent_id": id_of(&games)}),
    );
    let vip = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "VIP", "price": usd(999), "category_id": id_of(&rpg)}),
    );
    // A category cannot move under its own descendant.
    let err = engine
        .update_entity(
            &scope,
            Area::Categories,
            &id_of(&games),
            &json!({"parent_id": id_of(&rpg)}),
        )
        .unwrap_err();
    assert_names(&err.problems(), &["cannot be placed under itself"]);
    // In use: refused with 409, naming a user.
    let err = engine
        .delete_entity(&scope, Area::Categories, &id_of(&rpg))
        .unwrap_err();
    assert_eq!(err.code(), "CONFLICT");
    assert!(err.to_string().contains(&id_of(&vip)), "{err}");
    let sale = create(
        &engine,
        &scope,
        Area::Sales,
        json!({"name": "Launch", "discount": {"type": "percentage", "value": 5},
               "package_ids": [id_of(&vip)], "starts_at": "2026-01-01T00:00:00Z"}),
    );
    assert_eq!(
        engine
            .delete_entity(&scope, Area::Packages, &id_of(&vip))
            .unwrap_err()
            .code(),
        "CONFLICT"
    );
    engine
        .delete_entity(&scope, Area::Sales, &id_of(&sale))
        .unwrap();
    engine
        .delete_entity(&scope, Area::Packages, &id_of(&vip))
        .unwrap();
    engine
        .delete_entity(&scope, Area::Categories, &id_of(&rpg))
        .unwrap();
    assert_eq!(
        engine
            .get_entity(&scope, Area::Categories, &id_of(&rpg))
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    // What each area allows.
    let order_delete = engine.delete_entity(&scope, Area::Orders, "ord_000000000000aaaaaaaa");
    assert_eq!(order_delete.unwrap_err().code(), "NOT_FOUND");
    let sub = engine.create_entity(&scope, Area::Subscriptions, &json!({}));
    assert_eq!(sub.unwrap_err().code(), "NOT_ALLOWED");
    let keys = engine.create_entity(&scope, Area::ApiKeys, &json!({}));
    assert_eq!(keys.unwrap_err().code(), "NOT_ALLOWED");
}

#[test]
fn environments_and_stores_are_isolated() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let (other, _) = store_named(&engine, "Other");
    let live = Scope::new(store.id, "live");
    let test = Scope::new(store.id, "test");
    let elsewhere = Scope::new(other.id, "live");
    let pkg = create(
        &engine,
        &live,
        Area::Packages,
        json!({"name": "VIP", "price": usd(500)}),
    );
    for scope in [&test, &elsewhere] {
        assert!(
            engine
                .list_entities(scope, Area::Packages, None, None)
                .unwrap()
                .items
                .is_empty()
        );
        let err = engine
            .get_entity(scope, Area::Packages, &id_of(&pkg))
            .unwrap_err();
        assert_eq!(err.code(), "NOT_FOUND");
        let err = engine
            .update_entity(
                scope,
                Area::Packages,
                &id_of(&pkg),
                &json!({"name": "Mine"}),
            )
            .unwrap_err();
        assert_eq!(err.code(), "NOT_FOUND");
    }
    // A coupon code is unique per store and environment, not globally.
    let coupon = json!({"code": "WELCOME", "discount": {"type": "percentage", "value": 10}});
    create(&engine, &live, Area::Coupons, coupon.clone());
    create(&engine, &test, Area::Coupons, coupon.clone());
    let again = problems(
        &engine,
        &live,
        Area::Coupons,
        json!({"code": "welcome", "discount": {"type": "percentage", "value": 5}}),
    );
    assert_names(&again, &["code: a coupon with this code already exists"]);
    // An environment the store does not have is not found.
    let staging = Scope::new(store.id, "staging");
    assert_eq!(
        engine
            .list_entities(&staging, Area::Packages, None, None)
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
}

fn store_named(engine: &Engine, name: &str) -> (latchkey::Store, latchkey::CreatedKey) {
    engine
        .create_store(&admin(), latchkey::NewStore::named(name))
        .unwrap()
}

#[test]
fn pages_neither_skip_nor_repeat_under_concurrent_inserts() {
    let (engine, clock) = engine();
    let engine = Arc::new(engine);
    let scope = live(&engine);
    let mut existing = HashSet::new();
    for i in 0..120 {
        let c = create(
            &engine,
            &scope,
            Area::Customers,
            json!({"email": format!("c{i}@example.com")}),
        );
        existing.insert(id_of(&c));
        clock.advance(time::Duration::milliseconds(1));
    }
    let writer = {
        let (engine, scope) = (engine.clone(), scope.clone());
        std::thread::spawn(move || {
            for i in 0..60 {
                create(
                    &engine,
                    &scope,
                    Area::Customers,
                    json!({"email": format!("new{i}@example.com")}),
                );
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = engine
            .list_entities(&scope, Area::Customers, Some(7), cursor.as_deref())
            .unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(id_of));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    writer.join().unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an entity was repeated");
    assert!(
        existing.is_subset(&unique),
        "an entity that existed throughout was skipped"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "pages are in id order");

    let err = engine
        .list_entities(&scope, Area::Customers, Some(0), Some("!!"))
        .unwrap_err();
    assert_names(
        &err.problems(),
        &["limit: must be between 1 and 100", "cursor: not a cursor"],
    );
}

#[test]
fn customer_emails_are_masked_on_every_output_but_matched_in_full() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let jane = create(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "jane.doe@example.com", "name": "Jane"}),
    );
    assert_eq!(jane["email"], "j***@example.com");
    assert_eq!(
        engine
            .get_entity(&scope, Area::Customers, &id_of(&jane))
            .unwrap()["email"],
        "j***@example.com"
    );
    let listed = engine
        .list_entities(&scope, Area::Customers, None, None)
        .unwrap();
    assert!(!serde_json::to_string(&listed).unwrap().contains("jane.doe"));
    let dup = problems(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "JANE.DOE@example.com"}),
    );
    assert_names(&dup, &["already exists"]);
    // An order by email finds the same customer.
    let pkg = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "VIP", "price": usd(100)}),
    );
    let order = create(
        &engine,
        &scope,
        Area::Orders,
        json!({"email": "Jane.Doe@Example.com", "items": [{"package_id": id_of(&pkg)}]}),
    );
    assert_eq!(order["customer_id"], jane["id"]);
}

#[test]
fn gift_card_codes_are_shown_once() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let card = create(
        &engine,
        &scope,
        Area::GiftCards,
        json!({"balance": usd(5_000), "note": "Raffle"}),
    );
    let code = card["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 19, "XXXX-XXXX-XXXX-XXXX: {code}");
    assert_eq!(
        card["masked_code"],
        format!("****-****-****-{}", &code[15..])
    );
    let id = id_of(&card);
    let got = engine.get_entity(&scope, Area::GiftCards, &id).unwrap();
    let updated = engine
        .update_entity(
            &scope,
            Area::GiftCards,
            &id,
            &json!({"note": "Raffle 2026"}),
        )
        .unwrap();
    let listed = engine
        .list_entities(&scope, Area::GiftCards, None, None)
        .unwrap();
    let listed_json = engine
        .list_entities_json(&scope, Area::GiftCards, None, None)
        .unwrap();
    let raw = code.replace('-', "");
    for text in [
        got.to_string(),
        updated.to_string(),
        serde_json::to_string(&listed).unwrap(),
        listed_json.to_json(),
        format!("{:?}", engine),
    ] {
        assert!(
            !text.contains(&code) && !text.contains(&raw),
            "code leaked: {text}"
        );
        assert!(!text.contains("code_digest"), "{text}");
    }
    assert!(got.get("code").is_none());
    // Void is final.
    engine
        .update_entity(&scope, Area::GiftCards, &id, &json!({"void": true}))
        .unwrap();
    let err = engine
        .update_entity(&scope, Area::GiftCards, &id, &json!({"void": false}))
        .unwrap_err();
    assert_names(&err.problems(), &["cannot be restored"]);
}

#[test]
fn order_arithmetic_with_sales_coupons_and_rounding() {
    let (engine, clock) = engine();
    let scope = live(&engine);
    let customer = create(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "buyer@example.com"}),
    );
    let vip = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "VIP", "price": usd(999)}),
    );
    let kit = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "Kit", "price": usd(333)}),
    );
    let mug = create(
        &engine,
        &scope,
        Area::Products,
        json!({"sku": "MUG-1", "name": "Mug", "price": usd(1_250), "stock": 3}),
    );
    // 15% off VIP (running), and a sale that has not started yet.
    create(
        &engine,
        &scope,
        Area::Sales,
        json!({"name": "Spring", "discount": {"type": "percentage", "value": 15},
               "package_ids": [id_of(&vip)], "starts_at": "2026-01-01T00:00:00Z"}),
    );
    create(
        &engine,
        &scope,
        Area::Sales,
        json!({"name": "Later", "discount": {"type": "percentage", "value": 90},
               "package_ids": [id_of(&kit)], "starts_at": "2030-01-01T00:00:00Z"}),
    );
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "TEN", "discount": {"type": "percentage", "value": 10}, "max_uses": 1}),
    );
    let order = create(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": id_of(&customer), "coupon_code": "ten", "items": [
            {"package_id": id_of(&vip), "quantity": 3},
            {"package_id": id_of(&kit)},
            {"product_id": id_of(&mug), "quantity": 2}
        ]}),
    );
    // Lines: 2997 + 333 + 2500 = 5830. Sale: 15% of 2997 = 449.55 → 450.
    // Coupon: 10% of (5830 − 450 = 5380) = 538. Discount 988, total 4842.
    assert_eq!(order["subtotal"], 5_830);
    assert_eq!(order["items"][0]["discount"], 450);
    assert_eq!(order["items"][1]["discount"], 0);
    assert_eq!(order["discount"], 988);
    assert_eq!(order["total"], 4_842);
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["coupon_code"], "TEN");
    assert_eq!(order["items"][2]["unit_price"], 1_250);

    // The coupon was used up and the mug's stock went down.
    let coupon_page = engine
        .list_entities(&scope, Area::Coupons, None, None)
        .unwrap();
    assert_eq!(coupon_page.items[0]["uses"], 1);
    assert_eq!(
        engine
            .get_entity(&scope, Area::Products, &id_of(&mug))
            .unwrap()["stock"],
        1
    );
    let again = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": id_of(&customer), "coupon_code": "TEN",
               "items": [{"product_id": id_of(&mug), "quantity": 2}]}),
    );
    assert_names(
        &again,
        &[
            "coupon_code: `TEN` has been used up",
            "quantity: only 1 of product",
        ],
    );

    // An expired coupon is refused too.
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "SOON", "discount": {"type": "fixed", "value": 100, "currency": "USD"},
               "expires_at": "2026-11-23T13:00:00Z"}),
    );
    clock.advance(time::Duration::hours(2));
    let expired = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": id_of(&customer), "coupon_code": "SOON", "items": [{"package_id": id_of(&kit)}]}),
    );
    assert_names(&expired, &["coupon_code: `SOON` has expired"]);

    // A fixed discount never takes the total below zero.
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "BIG", "discount": {"type": "fixed", "value": 100000, "currency": "USD"}}),
    );
    let free = create(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": id_of(&customer), "coupon_code": "BIG", "items": [{"package_id": id_of(&kit)}]}),
    );
    assert_eq!(
        (free["discount"].as_i64(), free["total"].as_i64()),
        (Some(333), Some(0))
    );
}

#[test]
fn orders_record_their_events_in_the_same_commit() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let monthly = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "Monthly", "price": usd(500), "type": "subscription"}),
    );
    let euro = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "Euro", "price": {"amount": 5, "currency": "EUR"}}),
    );
    // Creating the store wrote its default key's `api_key.created`; orders come after it.
    let before = engine.outbox_events(0, 10).unwrap();
    let types: Vec<&str> = before.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["api_key.created"]);
    let after = before[0].seq;
    // A refused order writes nothing: no order, no customer, no event.
    let refused = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"email": "new@example.com", "items": [{"package_id": id_of(&monthly)}, {"package_id": id_of(&euro)}]}),
    );
    assert_names(&refused, &["items[1]: priced in EUR, the order in USD"]);
    assert!(engine.outbox_events(after, 10).unwrap().is_empty());
    assert!(
        engine
            .list_entities(&scope, Area::Customers, None, None)
            .unwrap()
            .items
            .is_empty()
    );

    let order = create(
        &engine,
        &scope,
        Area::Orders,
        json!({"email": "new@example.com", "items": [{"package_id": id_of(&monthly)}]}),
    );
    let events = engine.outbox_events(after, 10).unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["order.created", "subscription.created"]);
    assert_eq!(events[0].data, order);
    assert_eq!(events[0].store_id, scope.store_id);
    assert_eq!(events[0].environment, "live");
    let subscriptions = engine
        .list_entities(&scope, Area::Subscriptions, None, None)
        .unwrap();
    assert_eq!(subscriptions.items.len(), 1);
    assert_eq!(subscriptions.items[0]["order_id"], order["id"]);
    assert_eq!(events[1].data, subscriptions.items[0]);
    assert_eq!(engine.outbox_events(events[0].seq, 10).unwrap().len(), 1);
    let err = engine
        .update_entity(
            &scope,
            Area::Subscriptions,
            &id_of(&subscriptions.items[0]),
            &json!({}),
        )
        .unwrap_err();
    assert_eq!(err.code(), "NOT_ALLOWED");
    let err = engine
        .delete_entity(&scope, Area::Orders, &id_of(&order))
        .unwrap_err();
    assert_eq!(err.code(), "NOT_ALLOWED");
    let paid = engine
        .update_entity(
            &scope,
            Area::Orders,
            &id_of(&order),
            &json!({"status": "refunded"}),
        )
        .unwrap();
    assert_eq!(paid["status"], "refunded");
}

#[test]
fn storefront_shows_active_packages_of_the_default_environment() {
    let (engine, _) = engine();
    let scope = live(&engine);
    create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "On", "price": usd(1)}),
    );
    create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "Off", "price": usd(1), "active": false}),
    );
    create(
        &engine,
        &Scope::new(scope.store_id, "test"),
        Area::Packages,
        json!({"name": "Test", "price": usd(1)}),
    );
    create(&engine, &scope, Area::Categories, json!({"name": "All"}));
    let sid = scope.store_id.as_str();
    let packages = engine.storefront(sid, Area::Packages, None, None).unwrap();
    let names: Vec<&str> = packages
        .items
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["On"]);
    assert_eq!(
        engine
            .storefront(sid, Area::Categories, None, None)
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        engine
            .storefront(sid, Area::Orders, None, None)
            .unwrap_err()
            .code(),
        "NOT_ALLOWED"
    );
    assert_eq!(
        engine
            .storefront("nosuchst", Area::Packages, None, None)
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    // The storefront follows the store's environments.
    let patch = StorePatch {
        environments: Some(vec!["test".into()]),
        ..Default::default()
    };
    assert!(
        engine.update_store(sid, &admin(), patch).is_err(),
        "live still has its default key"
    );
}

#[test]
fn bans_normalise_their_values() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let ip = create(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "ip", "value": "203.0.113.9", "reason": "spam"}),
    );
    assert_eq!(ip["value"], "203.0.113.9/32");
    let net = create(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "ip", "value": "2001:db8::1/32"}),
    );
    assert_eq!(net["value"], "2001:db8::/32");
    let email = create(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "email", "value": "Bad@Example.com", "expires_at": "2027-01-01T00:00:00Z"}),
    );
    assert_eq!(email["value"], "bad@example.com");
    let user = create(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "user", "value": "griefer42"}),
    );
    let updated = engine
        .update_entity(
            &scope,
            Area::Bans,
            &id_of(&user),
            &json!({"reason": "appeal pending", "expires_at": null}),
        )
        .unwrap();
    assert_eq!(updated["reason"], "appeal pending");
    let err = engine
        .update_entity(
            &scope,
            Area::Bans,
            &id_of(&user),
            &json!({"value": "someone-else"}),
        )
        .unwrap_err();
    assert_names(&err.problems(), &["value: unknown field"]);
    engine
        .delete_entity(&scope, Area::Bans, &id_of(&ip))
        .unwrap();
    assert_eq!(
        engine
            .list_entities(&scope, Area::Bans, None, None)
            .unwrap()
            .items
            .len(),
        3
    );
}

#[test]
fn order_inputs_name_every_problem() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let off = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "Off", "price": usd(1), "active": false}),
    );
    let monthly = create(
        &engine,
        &scope,
        Area::Packages,
        json!({"name": "M", "price": usd(1), "type": "subscription"}),
    );
    let p = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": "cus_000000000000aaaaaaaa", "email": "x@example.com", "items": [
            {"package_id": id_of(&off)},
            {"package_id": id_of(&monthly), "quantity": 2},
            {"quantity": 0},
            {"package_id": id_of(&off), "product_id": "prd_000000000000aaaaaaaa"},
            {"product_id": "prd_000000000000aaaaaaaa"},
            "nope"
        ], "coupon_code": "NOSUCH", "gift": true}),
    );
    assert_names(
        &p,
        &[
            "customer_id: give customer_id or email, not both",
            "items[0].package_id: package",
            "items[1].quantity: a subscription is bought one at a time",
            "items[2].quantity: must be from 1 to 1000",
            "items[2].package_id or product_id: is required",
            "items[3]: give package_id or product_id, not both",
            "items[4].product_id: no product",
            "items[5]: expected an object",
            "coupon_code: no coupon `NOSUCH`",
            "gift: unknown field",
        ],
    );
    let p = problems(&engine, &scope, Area::Orders, json!({"items": []}));
    assert_names(
        &p,
        &[
            "a customer_id or an email is required",
            "items: an order needs at least one item",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": "cus_000000000000aaaaaaaa", "items": [{"package_id": id_of(&monthly)}]}),
    );
    assert_names(&p, &["customer_id: no customer"]);
    // A field given badly is one problem, not also "is required".
    let p = problems(
        &engine,
        &scope,
        Area::Orders,
        json!({"customer_id": "nope", "items": [{"package_id": "nope"}, {"product_id": null}]}),
    );
    assert_eq!(
        p,
        [
            "customer_id: not a customer id",
            "items[0].package_id: not a package id",
            "items[1].product_id: must not be null",
        ],
        "{p:#?}"
    );
}

#[test]
fn unique_values_and_date_order_per_area() {
    let (engine, _) = engine();
    let scope = live(&engine);
    create(
        &engine,
        &scope,
        Area::Products,
        json!({"sku": "MUG-1", "name": "Mug", "price": usd(1)}),
    );
    let dup = problems(
        &engine,
        &scope,
        Area::Products,
        json!({"sku": "mug-1", "name": "Mug", "price": usd(1)}),
    );
    assert_names(&dup, &["sku: a product with this sku already exists"]);

    let a = create(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "a@example.com"}),
    );
    create(
        &engine,
        &scope,
        Area::Customers,
        json!({"email": "b@example.com"}),
    );
    let err = engine
        .update_entity(
            &scope,
            Area::Customers,
            &id_of(&a),
            &json!({"email": "B@example.com"}),
        )
        .unwrap_err();
    assert_names(
        &err.problems(),
        &["email: a customer with this email already exists"],
    );
    // Changing one's own email to another case of itself is fine.
    engine
        .update_entity(
            &scope,
            Area::Customers,
            &id_of(&a),
            &json!({"email": "A@example.com", "name": "Ann"}),
        )
        .unwrap();

    let long = "x".repeat(201);
    assert_names(
        &problems(&engine, &scope, Area::Categories, json!({"name": long})),
        &["name: must be 1 to 200"],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Sales,
        json!({"name": "S", "discount": {"type": "fixed", "value": 5, "currency": "usd"},
               "package_ids": ["pkg_000000000000aaaaaaaa"],
               "starts_at": "2027-02-01T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"}),
    );
    assert_names(
        &p,
        &[
            "ends_at: must be after starts_at",
            "package_ids: no package `pkg_000000000000aaaaaaaa`",
        ],
    );
    let p = problems(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "OLD", "discount": {"type": "percentage", "value": 5, "currency": "USD"},
               "expires_at": "2020-01-01T00:00:00Z"}),
    );
    assert_names(
        &p,
        &[
            "expires_at: must be in the future",
            "only a fixed discount has a currency",
        ],
    );
    // A coupon can be renamed to a free code but not to a taken one.
    let one = create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "ONE", "discount": {"type": "percentage", "value": 5}}),
    );
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "TWO", "discount": {"type": "percentage", "value": 5}}),
    );
    let err = engine
        .update_entity(&scope, Area::Coupons, &id_of(&one), &json!({"code": "two"}))
        .unwrap_err();
    assert_names(
        &err.problems(),
        &["code: a coupon with this code already exists"],
    );
    let renamed = engine
        .update_entity(
            &scope,
            Area::Coupons,
            &id_of(&one),
            &json!({"code": "three"}),
        )
        .unwrap();
    assert_eq!(renamed["code"], "THREE");
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "ONE", "discount": {"type": "percentage", "value": 5}}),
    );
}

/// The stored outputs a JSON page is read from say exactly what decoding the records says,
/// in every area, through creation, updates (direct and by orders), deletion and paging.
#[test]
fn json_pages_equal_decoded_pages_in_every_area() {
    let (engine, _) = engine();
    let scope = live(&engine);
    let category = create(&engine, &scope, Area::Categories, json!({"name": "Ranks"}));
    let mut packages = Vec::new();
    for i in 0..7 {
        packages.push(create(
            &engine,
            &scope,
            Area::Packages,
            json!({"name": format!("Rank {i}"), "price": usd(100 * (i + 1)),
                   "category_id": id_of(&category)}),
        ));
    }
    create(
        &engine,
        &scope,
        Area::Coupons,
        json!({"code": "SAVE10", "discount": {"type": "percentage", "value": 10}}),
    );
    create(
        &engine,
        &scope,
        Area::GiftCards,
        json!({"balance": usd(5_000)}),
    );
    create(
        &engine,
        &scope,
        Area::Orders,
        json!({"email": "buyer@example.com", "items": [{"package_id": id_of(&packages[0])}]}),
    );
    create(
        &engine,
        &scope,
        Area::Bans,
        json!({"type": "ip", "value": "203.0.113.9"}),
    );
    engine
        .update_entity(
            &scope,
            Area::Packages,
            &id_of(&packages[2]),
            &json!({"name": "Renamed"}),
        )
        .unwrap();
    engine
        .delete_entity(&scope, Area::Packages, &id_of(&packages[4]))
        .unwrap();

    let areas = [
        Area::Categories,
        Area::Packages,
        Area::Coupons,
        Area::GiftCards,
        Area::Customers,
        Area::Bans,
        Area::Orders,
        Area::Subscriptions,
    ];
    let mut seen = 0;
    for area in areas {
        let mut cursor: Option<String> = None;
        loop {
            let decoded = engine
                .list_entities(&scope, area, Some(2), cursor.as_deref())
                .unwrap();
            let stored = engine
                .list_entities_json(&scope, area, Some(2), cursor.as_deref())
                .unwrap();
            let as_value: Value = serde_json::from_str(&stored.to_json()).unwrap();
            assert_eq!(as_value, Value::from(decoded.clone()), "{area:?}");
            // Byte for byte what the decoded page serializes to.
            assert_eq!(
                stored.to_json(),
                serde_json::to_string(&Value::from(decoded.clone())).unwrap(),
                "{area:?}"
            );
            seen += decoded.items.len();
            match decoded.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    // 1 category, 6 packages, 1 coupon, 1 gift card, 1 customer, 1 ban, 1 order, 0 or more
    // subscriptions (one-off package): every entity was compared.
    assert!(seen >= 12, "{seen}");
    let err = engine
        .list_entities_json(&scope, Area::Packages, Some(0), Some("not a cursor"))
        .unwrap_err();
    assert_names(
        &err.problems(),
        &["limit: must be between", "cursor: not a cursor"],
    );
}

/// The names on a stored page, in order.
fn names_on(page: &latchkey::PageJson) -> Vec<String> {
    let page: Value = serde_json::from_str(&page.to_json()).unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_listed_page_is_kept_between_writes_and_every_write_shows_at_once() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let (other, _) = store_named(&engine, "Other");
    let live = Scope::new(store.id, "live");
    let test = Scope::new(store.id, "test");
    let elsewhere = Scope::new(other.id, "live");
    let list = |scope: &Scope| {
        engine
            .list_entities_json(scope, Area::Packages, None, None)
            .unwrap()
    };
    let vip = create(
        &engine,
        &live,
        Area::Packages,
        json!({"name": "VIP", "price": usd(500)}),
    );
    let first = list(&live);
    assert_eq!(names_on(&first), ["VIP"]);
    // Read again with no write between: the same page, not read and joined again.
    assert!(Arc::ptr_eq(&first, &list(&live)));
    assert!(names_on(&list(&test)).is_empty());

    // A write to another store or environment leaves the page; it is not in it either.
    create(
        &engine,
        &elsewhere,
        Area::Packages,
        json!({"name": "Theirs", "price": usd(100)}),
    );
    create(
        &engine,
        &test,
        Area::Packages,
        json!({"name": "Trial", "price": usd(100)}),
    );
    assert_eq!(names_on(&list(&live)), ["VIP"]);
    assert_eq!(names_on(&list(&test)), ["Trial"]);

    // Each write to the store shows in the next list: creation, update, deletion. (A later
    // millisecond, so Gold's id sorts after VIP's.)
    clock.advance(time::Duration::seconds(1));
    let gold = create(
        &engine,
        &live,
        Area::Packages,
        json!({"name": "Gold", "price": usd(900)}),
    );
    assert_eq!(names_on(&list(&live)), ["VIP", "Gold"]);
    engine
        .update_entity(
            &live,
            Area::Packages,
            &id_of(&vip),
            &json!({"name": "VIP+"}),
        )
        .unwrap();
    assert_eq!(names_on(&list(&live)), ["VIP+", "Gold"]);
    engine
        .delete_entity(&live, Area::Packages, &id_of(&gold))
        .unwrap();
    assert_eq!(names_on(&list(&live)), ["VIP+"]);
    // Pages of other sizes and cursors are pages of their own.
    let one = engine
        .list_entities_json(&live, Area::Packages, Some(1), None)
        .unwrap();
    assert_eq!(names_on(&one), ["VIP+"]);
    assert!(one.next_cursor.is_none());

    // A refused write changes nothing and the page stays valid.
    assert!(
        engine
            .create_entity(&live, Area::Packages, &json!({"name": ""}))
            .is_err()
    );
    assert_eq!(names_on(&list(&live)), ["VIP+"]);
}

/// Readers and a writer together: once a write returns, no reader sees a page without it.
#[test]
fn no_list_after_a_write_misses_it_under_concurrent_readers() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let scope = live(&engine);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, scope, done) = (engine.clone(), scope.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    // Written before the list starts, so the list must hold at least that many.
                    let written = done.load(std::sync::atomic::Ordering::Acquire);
                    let page = engine
                        .list_entities_json(&scope, Area::Packages, Some(100), None)
                        .unwrap();
                    let seen = names_on(&page).len();
                    assert!(seen >= written, "{seen} listed after {written} written");
                    if written == 40 {
                        break;
                    }
                }
            })
        })
        .collect();
    for i in 0..40 {
        create(
            &engine,
            &scope,
            Area::Packages,
            json!({"name": format!("P{i}"), "price": usd(100)}),
        );
        done.store(i + 1, std::sync::atomic::Ordering::Release);
    }
    for reader in readers {
        reader.join().unwrap();
    }
}
