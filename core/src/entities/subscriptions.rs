//! Subscriptions: started by orders of subscription packages; read-only.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{Ctx, Entity, Kind};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    id: String,
    customer_id: String,
    package_id: String,
    order_id: String,
    status: String,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    next_payment_at: OffsetDateTime,
}

impl Entity for Subscription {
    const KIND: Kind = Kind::Subscription;

    fn customer_id(&self) -> Option<&str> {
        Some(&self.customer_id)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn create(_id: String, _input: &Value, _ctx: &mut Ctx<'_>) -> Result<Self> {
        Err(Error::NotAllowed(
            "subscriptions are created by orders of subscription packages".into(),
        ))
    }

    fn update(&mut self, _input: &Value, _ctx: &mut Ctx<'_>) -> Result<()> {
        Err(Error::NotAllowed("subscriptions are read-only".into()))
    }
}

/// How long a subscription period lasts.
const PERIOD: time::Duration = time::Duration::days(30);

impl Subscription {
    /// An active subscription to `package_id`, started now by `order_id`.
    pub(crate) fn start(
        id: String,
        customer_id: &str,
        package_id: &str,
        order_id: &str,
        now: OffsetDateTime,
    ) -> Self {
        Subscription {
            id,
            customer_id: customer_id.to_owned(),
            package_id: package_id.to_owned(),
            order_id: order_id.to_owned(),
            status: "active".into(),
            started_at: now,
            next_payment_at: now + PERIOD,
        }
    }
}
