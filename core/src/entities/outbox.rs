//! The outbox: events written in the same commit as the change they report.

use redb::{TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::Scope;
use crate::engine::Engine;
use crate::error::Result;
use crate::ids::StoreId;
use crate::storage;

/// seq → event, in commit order. Written in the same transaction as the change it reports.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const OUTBOX_SEQ_KEY: &str = "outbox_seq";

/// An event recorded for delivery (`order.created`, `subscription.created`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    v: u32,
    /// Position in the outbox (commit order).
    pub seq: u64,
    /// Stable across delivery attempts: `evt_` + the sequence number.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub store_id: StoreId,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub data: Value,
}

/// The sequence of the last event written (0 before any).
pub(crate) fn outbox_position(tx: &WriteTransaction) -> Result<u64> {
    storage::meta_u64(tx, OUTBOX_SEQ_KEY)
}

pub(crate) fn write_outbox(
    tx: &WriteTransaction,
    scope: &Scope,
    now: OffsetDateTime,
    events: Vec<(&'static str, Value)>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut seq = storage::meta_u64(tx, OUTBOX_SEQ_KEY)?;
    let mut outbox = tx.open_table(OUTBOX)?;
    for (event_type, data) in events {
        seq += 1;
        let event = OutboxEvent {
            v: 1,
            seq,
            id: format!("evt_{seq:016}"),
            event_type: event_type.to_owned(),
            store_id: scope.store_id,
            environment: scope.environment.clone(),
            created_at: now,
            data,
        };
        outbox.insert(seq, storage::encode(&event)?.as_slice())?;
    }
    drop(outbox);
    storage::set_meta_u64(tx, OUTBOX_SEQ_KEY, seq)
}

impl Engine {
    /// Outbox events after `after_seq`, oldest first, at most `limit`.
    pub fn outbox_events(&self, after_seq: u64, limit: usize) -> Result<Vec<OutboxEvent>> {
        let tx = storage::read(&self.inner().db)?;
        let table = tx.open_table(OUTBOX)?;
        let mut events = Vec::new();
        for item in table.range(after_seq.saturating_add(1)..)?.take(limit) {
            let (_, value) = item?;
            events.push(storage::decode(value.value(), 1, "outbox event")?);
        }
        Ok(events)
    }
}
