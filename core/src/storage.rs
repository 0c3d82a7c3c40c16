//! Every redb table, and the record codec. The only module that names tables.
//!
//! Records are JSON objects with a `v` format version: new optional fields are added with
//! `#[serde(default)]`, so a database written by an older release opens in a newer one, and a
//! record from a newer release than this one is refused rather than misread.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Database-wide values: the format version, counters.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Store id → store record.
pub(crate) const STORES: TableDefinition<&str, &[u8]> = TableDefinition::new("stores");
/// (store id, key id) → key record. Keys of one store are one contiguous range.
pub(crate) const KEYS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("keys");
/// (store id, key id) → when the key was last used: 8 bytes of unix seconds (big-endian), then
/// the address (1 tag byte: 0 none, 4, 6; then 16 bytes). Fixed-size and apart from the key
/// record, so the background flush writes it without decoding or re-encoding the record.
pub(crate) const USAGE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("key_usage");
/// (store id, sequence) → audit event. Sequence is global and increasing, so a reverse range
/// over one store reads its events newest first.
pub(crate) const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");

/// The database format this release writes. Bump only with a migration in [`prepare`].
///
/// - 1: the first.
/// - 2: adds `entity_outputs`, each entity's output kept beside its record.
/// - 3: adds `portal_by_store` and `portal_expiry`, the portal sessions' indexes.
/// - 4: adds `key_expiry`, the keys owed an expiry notice in expiry order.
pub(crate) const FORMAT_VERSION: u64 = 4;
const FORMAT_KEY: &str = "format_version";
const AUDIT_SEQ_KEY: &str = "audit_seq";

/// Creates every table and checks the format version, in one durable transaction.
pub(crate) fn prepare(db: &Database) -> Result<()> {
    let tx = db.begin_write()?;
    {
        let mut meta = tx.open_table(META)?;
        let stored = meta.get(FORMAT_KEY)?.map(|v| read_u64(v.value()));
        match stored {
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes().as_slice())?;
            }
            Some(Some(version)) if version < FORMAT_VERSION => {
                migrate(&tx, version)?;
                meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes().as_slice())?;
            }
            Some(Some(version)) if version == FORMAT_VERSION => {}
            Some(Some(version)) => {
                return Err(Error::Corrupt(format!(
                    "database format {version} was written by a newer release (this one reads up to {FORMAT_VERSION})"
                )));
            }
            Some(None) => return Err(Error::Corrupt("unreadable format version".into())),
        }
        tx.open_table(STORES)?;
        tx.open_table(KEYS)?;
        tx.open_table(crate::expiry::KEY_EXPIRY)?;
        tx.open_table(AUDIT)?;
        tx.open_table(USAGE)?;
        tx.open_table(crate::entities::ENTITIES)?;
        tx.open_table(crate::entities::OUTPUTS)?;
        tx.open_table(crate::entities::UNIQUE)?;
        tx.open_table(crate::entities::OUTBOX)?;
        tx.open_table(crate::entities::IDEMPOTENCY)?;
        tx.open_table(crate::entities::IDEMPOTENCY_AGE)?;
        tx.open_table(crate::logs::LOGS)?;
        tx.open_table(crate::portal::PORTAL)?;
        tx.open_table(crate::portal::PORTAL_BY_STORE)?;
        tx.open_table(crate::portal::PORTAL_EXPIRY)?;
        tx.open_table(crate::webhooks::WEBHOOKS)?;
        tx.open_table(crate::webhooks::DELIVERIES)?;
        tx.open_table(crate::webhooks::DUE)?;
    }
    tx.commit()?;
    Ok(())
}

/// Records `version` as the database's format, as a release of that format left it (migration
/// tests, after removing what later formats added).
#[cfg(test)]
pub(crate) fn set_format_version(tx: &WriteTransaction, version: u64) {
    tx.open_table(META)
        .expect("meta")
        .insert(FORMAT_KEY, version.to_be_bytes().as_slice())
        .expect("version");
}

/// Brings a database written in format `from` up to [`FORMAT_VERSION`], inside the
/// transaction that records the new version (so a crash leaves the old format, untouched).
fn migrate(tx: &WriteTransaction, from: u64) -> Result<()> {
    if from < 2 {
        crate::entities::rebuild_outputs(tx)?;
    }
    if from < 3 {
        crate::portal::rebuild_index(tx)?;
    }
    if from < 4 {
        crate::expiry::rebuild_index(tx)?;
    }
    Ok(())
}

/// A time as index keys order it: unix nanoseconds (saturated past the year 2262).
pub(crate) fn unix_nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Opens a read transaction.
pub(crate) fn read(db: &Database) -> Result<redb::ReadTransaction> {
    Ok(db.begin_read()?)
}

/// Opens a write transaction. redb's default durability is immediate: `commit` returns only
/// once the data is on disk, which is what makes an acknowledged write survive kill -9.
pub(crate) fn write(db: &Database) -> Result<WriteTransaction> {
    Ok(db.begin_write()?)
}

/// Takes the next value of the global audit sequence.
pub(crate) fn next_audit_seq(tx: &WriteTransaction) -> Result<u64> {
    next_counter(tx, AUDIT_SEQ_KEY)
}

/// A database-wide number kept in [`META`] (a counter or a cursor); 0 until first written.
pub(crate) fn meta_u64(tx: &WriteTransaction, name: &str) -> Result<u64> {
    let meta = tx.open_table(META)?;
    let value = meta.get(name)?.and_then(|v| read_u64(v.value()));
    Ok(value.unwrap_or(0))
}

/// [`meta_u64`] in a read transaction.
pub(crate) fn read_meta_u64(tx: &redb::ReadTransaction, name: &str) -> Result<u64> {
    let meta = tx.open_table(META)?;
    let value = meta.get(name)?.and_then(|v| read_u64(v.value()));
    Ok(value.unwrap_or(0))
}

pub(crate) fn set_meta_u64(tx: &WriteTransaction, name: &str, value: u64) -> Result<()> {
    tx.open_table(META)?
        .insert(name, value.to_be_bytes().as_slice())?;
    Ok(())
}

/// Increments the counter `name` and returns its new value (the first is 1).
pub(crate) fn next_counter(tx: &WriteTransaction, name: &str) -> Result<u64> {
    let next = meta_u64(tx, name)? + 1;
    set_meta_u64(tx, name, next)?;
    Ok(next)
}

/// A key's last use as the usage table keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredUsage {
    /// Unix seconds.
    pub at: i64,
    pub ip: Option<std::net::IpAddr>,
    /// While a regeneration's overlap lasts: the last use of the replaced secret, under the
    /// first 8 bytes of its digest, so that the secret a later regeneration replaces never
    /// inherits it.
    pub previous: Option<([u8; 8], i64)>,
}

/// A row of the usage table: the time (8 bytes), the address (a tag byte, 4 = IPv4, 6 = IPv6,
/// then 16 bytes, zero-padded), and, when there is one, the replaced secret's digest tag and
/// last use (8 + 8 bytes). Rows written before the replaced secret's use was kept are 25 bytes.
pub(crate) fn encode_usage(usage: &StoredUsage) -> Vec<u8> {
    let mut out = vec![0u8; USAGE_ROW];
    out[..8].copy_from_slice(&usage.at.to_be_bytes());
    match usage.ip {
        None => {}
        Some(std::net::IpAddr::V4(v4)) => {
            out[8] = 4;
            out[9..13].copy_from_slice(&v4.octets());
        }
        Some(std::net::IpAddr::V6(v6)) => {
            out[8] = 6;
            out[9..25].copy_from_slice(&v6.octets());
        }
    }
    if let Some((tag, at)) = usage.previous {
        out.extend_from_slice(&tag);
        out.extend_from_slice(&at.to_be_bytes());
    }
    out
}

const USAGE_ROW: usize = 25;

pub(crate) fn decode_usage(bytes: &[u8]) -> Option<StoredUsage> {
    let (row, previous) = match bytes.len() {
        USAGE_ROW => (bytes, None),
        41 => {
            let (row, rest) = bytes.split_at(USAGE_ROW);
            let (tag, at) = rest.split_at(8);
            (row, Some((tag.try_into().ok()?, read_i64(at)?)))
        }
        _ => return None,
    };
    let ip = match row[8] {
        4 => Some(std::net::IpAddr::from(
            <[u8; 4]>::try_from(&row[9..13]).ok()?,
        )),
        6 => Some(std::net::IpAddr::from(
            <[u8; 16]>::try_from(&row[9..25]).ok()?,
        )),
        _ => None,
    };
    Some(StoredUsage {
        at: read_i64(&row[..8])?,
        ip,
        previous,
    })
}

fn read_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// [`encode`] into a buffer the caller reuses (appended to).
pub(crate) fn encode_into<T: Serialize>(out: &mut Vec<u8>, record: &T) -> Result<()> {
    serde_json::to_writer(out, record)
        .map_err(|e| Error::Corrupt(format!("cannot encode record: {e}")))
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(&mut out, record)?;
    Ok(out)
}

/// Decodes a record, refusing one whose `v` is newer than `current`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], current: u32, what: &str) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    let version: Version = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("{what} record has no readable version: {e}")))?;
    if version.v > current {
        return Err(Error::Corrupt(format!(
            "{what} record version {} is newer than this release reads ({current})",
            version.v
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{what} record: {e}")))
}

/// Every (key, value) of `table` whose first key part is `store`, in key order.
pub(crate) fn store_range<'a, T>(
    table: &'a T,
    store: &str,
) -> Result<impl Iterator<Item = Result<(String, Vec<u8>)>> + 'a>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let range = table.range((store, "")..)?;
    let store = store.to_owned();
    Ok(range
        .map(|item| item.map_err(Error::from))
        .take_while(move |item| match item {
            Ok((k, _)) => k.value().0 == store,
            Err(_) => true,
        })
        .map(|item| item.map(|(k, v)| (k.value().1.to_owned(), v.value().to_vec()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Rec {
        v: u32,
        name: String,
        #[serde(default)]
        added_later: Option<u32>,
    }

    #[test]
    fn records_from_older_releases_read_and_newer_ones_are_refused() {
        let old: Rec = decode(br#"{"v":1,"name":"a"}"#, 2, "thing").unwrap();
        assert_eq!(
            old,
            Rec {
                v: 1,
                name: "a".into(),
                added_later: None
            }
        );
        let err = decode::<Rec>(br#"{"v":3,"name":"a"}"#, 2, "thing").unwrap_err();
        assert_eq!(err.code(), "CORRUPT");
        assert!(decode::<Rec>(b"not json", 2, "thing").is_err());
    }

    #[test]
    fn usage_rows_round_trip() {
        for ip in [
            None,
            Some("203.0.113.9".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ] {
            for previous in [
                None,
                Some((*b"\x01\x02\x03\x04\x05\x06\x07\x08", 1_790_000_100)),
            ] {
                let usage = StoredUsage {
                    at: 1_790_000_000,
                    ip,
                    previous,
                };
                let row = encode_usage(&usage);
                assert_eq!(row.len(), if previous.is_some() { 41 } else { 25 });
                assert_eq!(decode_usage(&row), Some(usage));
            }
        }
        assert_eq!(decode_usage(b"short"), None);
        // Not a row this format writes: refused, not read in part.
        assert_eq!(decode_usage(&[0u8; 33]), None);
    }

    #[test]
    fn a_database_of_a_newer_format_is_refused() {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        prepare(&db).unwrap();
        prepare(&db).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, (FORMAT_VERSION + 1).to_be_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(prepare(&db).unwrap_err().code(), "CORRUPT");
    }
}
