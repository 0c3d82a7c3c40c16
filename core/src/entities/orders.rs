//! Orders: manual creation prices lines with sales and a coupon, takes stock, starts
//! subscriptions and records events, all in one commit.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::coupons::Coupon;
use super::customers::{Customer, email};
use super::discount::Discount;
use super::packages::{Package, PackageType};
use super::products::Product;
use super::rules::{id_of, present};
use super::sales::Sale;
use super::subscriptions::Subscription;
use super::{Ctx, Entity, Kind, unique};
use crate::error::{Error, Problems, Result};
use crate::input::{Fields, integer, string};
use crate::money::{self, percent_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OrderStatus {
    Pending,
    Completed,
    Cancelled,
    Refunded,
}

fn order_status(value: &Value) -> Result<OrderStatus, String> {
    match string(value)?.as_str() {
        "pending" => Ok(OrderStatus::Pending),
        "completed" => Ok(OrderStatus::Completed),
        "cancelled" => Ok(OrderStatus::Cancelled),
        "refunded" => Ok(OrderStatus::Refunded),
        other => Err(format!(
            "unknown `{other}` (expected pending, completed, cancelled or refunded)"
        )),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    package_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    name: String,
    quantity: i64,
    /// Minor units, in the order's currency.
    unit_price: i64,
    /// Sale discount on this line, minor units.
    discount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    id: String,
    customer_id: String,
    items: Vec<OrderItem>,
    subtotal: i64,
    discount: i64,
    total: i64,
    currency: String,
    coupon_code: Option<String>,
    status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Entity for Order {
    const KIND: Kind = Kind::Order;

    fn customer_id(&self) -> Option<&str> {
        Some(&self.customer_id)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn create(_id: String, _input: &Value, _ctx: &mut Ctx<'_>) -> Result<Self> {
        Err(Error::NotAllowed(
            "orders are created with create_order".into(),
        ))
    }

    fn update(&mut self, input: &Value, _ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "order")?;
        let status = f.optional("status", order_status);
        f.finish().finish()?;
        if let Some(status) = status {
            self.status = status;
        }
        Ok(())
    }
}

/// Item lines one order may have, at most.
pub const MAX_ITEMS: usize = 100;
/// The largest quantity of one item line.
pub const MAX_QUANTITY: i64 = 1_000;

/// What an item line refers to.
enum Line {
    Package(Package),
    Product(Product),
}

/// Reads one `{package_id | product_id, quantity}`, naming problems as `items[i].field`.
fn read_item(
    ctx: &Ctx<'_>,
    i: usize,
    item: &Value,
    problems: &mut Problems,
) -> Result<Option<(Line, i64)>> {
    let at = |p: String| format!("items[{i}].{p}");
    let mut f = match Fields::new(item, "item") {
        Ok(f) => f,
        Err(_) => {
            problems.push(format!("items[{i}]: expected an object"));
            return Ok(None);
        }
    };
    // A line naming either, even badly, has its problem reported by the field's own parse.
    let names_one = ["package_id", "product_id"]
        .iter()
        .any(|name| item.get(name).is_some());
    let package_id = f.optional("package_id", id_of(Kind::Package));
    let product_id = f.optional("product_id", id_of(Kind::Product));
    let quantity = f.optional("quantity", integer);
    for problem in f
        .finish()
        .finish()
        .err()
        .map(|e| e.problems())
        .unwrap_or_default()
    {
        problems.push(at(problem));
    }
    let quantity = quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        problems.push(at(format!("quantity: must be from 1 to {MAX_QUANTITY}")));
    }
    let line = match (package_id, product_id) {
        (Some(id), None) => match ctx.load::<Package>(&id)? {
            Some(p) if p.active => Some(Line::Package(p)),
            Some(_) => {
                problems.push(at(format!("package_id: package `{id}` is not active")));
                None
            }
            None => {
                problems.push(at(format!("package_id: no package `{id}` in this store")));
                None
            }
        },
        (None, Some(id)) => match ctx.load::<Product>(&id)? {
            Some(p) if !p.active => {
                problems.push(at(format!("product_id: product `{id}` is not active")));
                None
            }
            Some(p) if p.stock < quantity => {
                problems.push(at(format!(
                    "quantity: only {} of product `{id}` in stock",
                    p.stock
                )));
                None
            }
            Some(p) => Some(Line::Product(p)),
            None => {
                problems.push(at(format!("product_id: no product `{id}` in this store")));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push(format!(
                "items[{i}]: give package_id or product_id, not both"
            ));
            None
        }
        (None, None) => {
            if !names_one {
                problems.push(at("package_id or product_id: is required".into()));
            }
            None
        }
    };
    Ok(line.map(|line| (line, quantity)))
}

/// The best running sale's discount on a package line.
fn sale_discount(sales: &[Sale], package: &Package, quantity: i64, now: OffsetDateTime) -> i64 {
    let line = package.price.amount * quantity;
    sales
        .iter()
        .filter(|s| s.covers(&package.id) && s.running_at(now))
        .filter_map(|s| match &s.discount {
            // A fixed sale price cut applies to each unit.
            Discount::Fixed { value, currency } if *currency == package.price.currency => {
                Some((value * quantity).min(line))
            }
            Discount::Fixed { .. } => None,
            Discount::Percentage { value } => Some(percent_of(line, *value)),
        })
        .max()
        .unwrap_or(0)
}

/// Manual order creation (SPEC §7): validates the items, prices them with running sales and
/// the coupon, records the order, its subscriptions and their events in one commit.
pub(super) fn create_order(ctx: &mut Ctx<'_>, input: &Value) -> Result<Value> {
    let mut f = Fields::new(input, "order")?;
    let names_customer = ["customer_id", "email"]
        .iter()
        .any(|name| input.get(name).is_some());
    let customer_id = f.optional("customer_id", id_of(Kind::Customer));
    let customer_email = f.optional("email", email);
    let items = f.required("items", |v| {
        v.as_array()
            .cloned()
            .ok_or_else(|| "expected a list of items".to_owned())
    });
    let coupon_code = f.optional("coupon_code", |v| {
        string(v).map(|c| c.trim().to_ascii_uppercase())
    });
    let mut problems = f.finish();

    let customer = match (&customer_id, &customer_email) {
        (Some(_), Some(_)) => {
            problems.push("customer_id: give customer_id or email, not both");
            None
        }
        (None, None) => {
            if !names_customer {
                problems.push("customer_id: a customer_id or an email is required");
            }
            None
        }
        (Some(id), None) => match ctx.load::<Customer>(id)? {
            Some(c) => Some(c),
            None => {
                problems.push(format!("customer_id: no customer `{id}` in this store"));
                None
            }
        },
        (None, Some(address)) => {
            let key = Customer::email_key(address);
            match ctx.unique_owner(unique::CUSTOMER_EMAIL, &key)? {
                Some(id) => ctx.load::<Customer>(&id)?,
                None => Some(Customer::new(
                    ctx.new_id(Kind::Customer)?,
                    address.clone(),
                    ctx.now,
                )),
            }
        }
    };

    let items = items.unwrap_or_default();
    if items.is_empty() && !problems.mentions("items") {
        problems.push("items: an order needs at least one item");
    }
    if items.len() > MAX_ITEMS {
        problems.push(format!("items: at most {MAX_ITEMS} items"));
    }
    let mut lines = Vec::new();
    for (i, item) in items.iter().take(MAX_ITEMS).enumerate() {
        if let Some(line) = read_item(ctx, i, item, &mut problems)? {
            lines.push((i, line));
        }
    }
    let currency = lines.first().map(|(_, (line, _))| match line {
        Line::Package(p) => p.price.currency.clone(),
        Line::Product(p) => p.price.currency.clone(),
    });
    for (i, (line, quantity)) in &lines {
        let own = match line {
            Line::Package(p) => &p.price.currency,
            Line::Product(p) => &p.price.currency,
        };
        if Some(own) != currency.as_ref() {
            problems.push(format!(
                "items[{i}]: priced in {own}, the order in {}",
                currency.as_deref().unwrap_or("?")
            ));
        }
        if let Line::Package(p) = line
            && p.package_type == PackageType::Subscription
            && *quantity != 1
        {
            problems.push(format!(
                "items[{i}].quantity: a subscription is bought one at a time"
            ));
        }
    }

    let coupon = match &coupon_code {
        Some(code) => match ctx.unique_owner(unique::COUPON_CODE, code)? {
            Some(id) => {
                let coupon = ctx.load::<Coupon>(&id)?;
                if let Some(reason) = coupon.as_ref().and_then(|c| c.unusable(ctx.now)) {
                    problems.push(format!("coupon_code: `{code}` {reason}"));
                }
                coupon
            }
            None => {
                problems.push(format!("coupon_code: no coupon `{code}`"));
                None
            }
        },
        None => None,
    };
    problems.finish()?;
    let customer = present(customer, "customer_id")?;
    let currency = present(currency, "items")?;

    // Prices: lines, then running sales per line, then the coupon on what remains.
    let sales = ctx.all::<Sale>()?;
    let mut order_items = Vec::with_capacity(lines.len());
    let mut subtotal: i64 = 0;
    let mut sale_total: i64 = 0;
    for (_, (line, quantity)) in &lines {
        let (item, discount) = match line {
            Line::Package(p) => (
                OrderItem {
                    package_id: Some(p.id.clone()),
                    product_id: None,
                    name: p.name.clone(),
                    quantity: *quantity,
                    unit_price: p.price.amount,
                    discount: 0,
                },
                sale_discount(&sales, p, *quantity, ctx.now),
            ),
            Line::Product(p) => (
                OrderItem {
                    package_id: None,
                    product_id: Some(p.id.clone()),
                    name: p.name.clone(),
                    quantity: *quantity,
                    unit_price: p.price.amount,
                    discount: 0,
                },
                0,
            ),
        };
        subtotal = subtotal.saturating_add(item.unit_price.saturating_mul(*quantity));
        sale_total = sale_total.saturating_add(discount);
        order_items.push(OrderItem { discount, ..item });
    }
    if subtotal > money::MAX_AMOUNT {
        return Err(Error::invalid(vec![
            "items: the order total is too large".into(),
        ]));
    }
    let coupon_off = match &coupon {
        Some(c) => c
            .discount
            .off(subtotal - sale_total, &currency)
            .map_err(|p| Error::invalid(vec![format!("coupon_code: {p}")]))?,
        None => 0,
    };
    let discount = sale_total + coupon_off;

    // Writes: the customer (if new), stock, coupon use, order, subscriptions, events.
    if ctx.load::<Customer>(&customer.id)?.is_none() {
        ctx.save(&customer, &[])?;
    }
    for (_, (line, quantity)) in &lines {
        if let Line::Product(p) = line {
            let mut product = p.clone();
            product.stock -= quantity;
            ctx.save(&product, &product.uniques())?;
        }
    }
    if let Some(mut coupon) = coupon {
        coupon.uses += 1;
        ctx.save(&coupon, &coupon.uniques())?;
    }
    let order = Order {
        id: ctx.new_id(Kind::Order)?,
        customer_id: customer.id.clone(),
        items: order_items,
        subtotal,
        discount,
        total: subtotal - discount,
        currency,
        coupon_code,
        status: OrderStatus::Completed,
        created_at: ctx.now,
    };
    ctx.save(&order, &[])?;
    let output = order.output();
    ctx.emit("order.created", output.clone());
    for (_, (line, _)) in &lines {
        if let Line::Package(p) = line
            && p.package_type == PackageType::Subscription
        {
            let subscription = Subscription::start(
                ctx.new_id(Kind::Subscription)?,
                &customer.id,
                &p.id,
                &order.id,
                ctx.now,
            );
            ctx.save(&subscription, &[])?;
            ctx.emit("subscription.created", subscription.output());
        }
    }
    Ok(json!(output))
}
