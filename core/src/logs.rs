//! The API request log (seed 004, SPEC §7, §11): every API-key request, recorded without a
//! disk write per request.
//!
//! [`Engine::record_request`] pushes onto a bounded lock-free queue; the maintenance thread
//! writes the queue in one transaction per tick, as soon as a quarter of the queue is waiting
//! ([`LOG_FLUSH_AT`]), and on [`Engine::flush`] and drop. When the queue is full the oldest
//! unwritten entry is dropped and counted ([`Engine::dropped_log_entries`]): a burst faster
//! than the disk can lose log lines, never slow requests down.
//! Each batch is written as rows of up to 128 entries of one store (see [`LOGS`]). Each store
//! keeps its log for `log_retention_days`; older entries are deleted as new ones are written,
//! a row at a time once its newest entry is past the retention (so an entry may outlive it by
//! the second a row spans at most).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::engine::{Engine, Inner, ReadStores};
use crate::error::{Error, Problems, Result};
use crate::ids::StoreId;
use crate::storage;

/// (store, unix nanos of the newest entry in the row, sequence) → a chunk of that store's
/// entries with its summary (versions 4 and 5), a chunk without (version 3), or one entry at
/// that time (versions 1 and 2); earlier releases' rows are still read. The sequence orders
/// rows written in the same nanosecond.
pub(crate) const LOGS: TableDefinition<(&str, i64, u64), &[u8]> =
    TableDefinition::new("request_log");

/// Entries waiting to be written, at most.
pub const LOG_BUFFER: usize = 65_536;
/// Entries one read of the request log (and of the audit trail) returns, at most.
pub const MAX_LOG_READ: usize = 1_000;

/// The one rule for how many request-log entries or audit events a read may ask for, so the
/// server, the bindings and the core refuse the same limits.
pub(crate) fn check_read_limit(limit: usize, problems: &mut Problems) {
    if let Err(problem) = read_limit(limit) {
        problems.push(format!("limit: {problem}"));
    }
}

fn read_limit(limit: usize) -> std::result::Result<usize, String> {
    if (1..=MAX_LOG_READ).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("must be between 1 and {MAX_LOG_READ}"))
    }
}
/// Entries waiting that wake the maintenance thread to write them before its tick. Without
/// it the queue was written only every tick (10 s by default), so any load above 6,554
/// requests a second lost most of its log.
pub const LOG_FLUSH_AT: usize = LOG_BUFFER / 4;
/// Longest stored path: longer paths are cut (with `…`).
const MAX_PATH: usize = 512;
/// Characters of a method kept.
const MAX_METHOD: usize = 16;
/// Characters of a decision code kept.
const MAX_CODE: usize = 32;

/// A path as stored: no query or fragment (queries may carry secrets), every credential in it
/// masked (a key pasted into a URL, `/api/v1/orders/lk_…`, must not be kept and shown by the
/// request log; 64-hex words too, as no route takes one), no control characters, at most
/// [`MAX_PATH`] bytes and then `…`. Borrowed when already so, as nearly every path is.
fn clean_path(path: &str) -> std::borrow::Cow<'_, str> {
    // By bytes: `?` and `#` are ASCII, so the cut is at a character boundary. Every request
    // records its path, and decoding characters cost more than the rest of the entry.
    let end = path
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    // Masked before the cut to MAX_PATH, which could otherwise leave a credential's head.
    match crate::keys::redact(&path[..end], true) {
        std::borrow::Cow::Borrowed(path) => clean_chars(path),
        std::borrow::Cow::Owned(path) => clean_chars(&path).into_owned().into(),
    }
}

/// [`clean_path`]'s last steps: control characters out, the length cut.
fn clean_chars(path: &str) -> std::borrow::Cow<'_, str> {
    // An ASCII control is a byte below 0x20 or 0x7f; other control characters (U+0080 to
    // U+009F) are not ASCII, and a path that is not ASCII is checked by characters.
    let clean = if path.is_ascii() {
        !path.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        !path.chars().any(char::is_control)
    };
    if path.len() <= MAX_PATH && clean {
        return path.into();
    }
    let mut clean = String::with_capacity(path.len().min(MAX_PATH + '…'.len_utf8()));
    for c in path.chars().filter(|c| !c.is_control()) {
        if clean.len() + c.len_utf8() > MAX_PATH {
            clean.push('…');
            break;
        }
        clean.push(c);
    }
    clean.into()
}

/// The first `n` characters of `text`.
fn first_chars(text: &str, n: usize) -> &str {
    // A text of at most `n` bytes has at most `n` characters.
    if text.len() <= n {
        return text;
    }
    text.char_indices()
        .nth(n)
        .map_or(text, |(end, _)| &text[..end])
}

/// One API request as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub store_id: StoreId,
    pub key_id: Option<String>,
    pub method: String,
    /// The path without its query string (queries may carry secrets), credentials in it
    /// masked.
    pub path: String,
    pub status: u16,
    pub ip: Option<IpAddr>,
    /// The verify decision's code (`OK`, `FORBIDDEN`, …).
    pub code: String,
    pub latency_us: u64,
}

impl LogEntry {
    /// An entry with the path reduced to what may be stored: no query or fragment, credentials
    /// masked, at most 512 bytes, no control characters.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        at: OffsetDateTime,
        store_id: StoreId,
        key_id: Option<&str>,
        method: &str,
        path: &str,
        status: u16,
        ip: Option<IpAddr>,
        code: &str,
        latency_us: u64,
    ) -> Self {
        Self {
            at,
            store_id,
            key_id: key_id.map(str::to_owned),
            method: first_chars(method, MAX_METHOD).to_owned(),
            path: clean_path(path).into_owned(),
            status,
            ip,
            code: first_chars(code, MAX_CODE).to_owned(),
            latency_us,
        }
    }
}

/// Version 1 of the stored form, still read: the whole entry as JSON with its version `v`.
#[derive(Deserialize)]
struct Stored {
    #[serde(rename = "v")]
    _v: u32,
    #[serde(flatten)]
    entry: LogEntry,
}

/// First byte of a version 2 entry. A version 1 entry is a JSON object, so it starts with `{`
/// and the two cannot be taken for each other.
const COMPACT: u8 = 2;
/// First byte of a version 3 row: a chunk of entries.
const CHUNK: u8 = 3;
/// First byte of a version 4 row: a [`Summary`] of the chunk (256 key bits), then the chunk
/// as version 3.
const SUMMARIZED: u8 = 4;
/// First byte of a version 5 row: the same with 1,024 key bits, for chunks of up to 128
/// entries.
const SUMMARIZED_WIDE: u8 = 5;
/// The length written for an absent key id (no real string is 4 GiB long).
const ABSENT: u32 = u32::MAX;
/// Entries in a chunk, at most: rows of about 12 KB. Each row costs the writer a B-tree
/// insert (pages allocated, zeroed, checksummed): with 32 entries a row the writer spent
/// 0.42-0.59 us of CPU a request under `bench/http.sh`'s load, with 128 0.27-0.33 us, on the
/// same two cores as the requests. Readers pass over more at once too (`cargo bench --bench
/// logs`: a rare key's entries and a day's usage read faster); one that wants only the newest
/// decodes up to 127 more.
const CHUNK_ENTRIES: usize = 128;
/// Nanoseconds between a chunk's oldest and newest entry, at most (1 s): a reader that wants
/// entries up to a time need not look at rows whose newest entry is later than that by more.
pub(crate) const CHUNK_SPAN: i64 = 1_000_000_000;

/// The fields of an entry other than its time and store, as fixed-width fields and
/// length-prefixed strings (little-endian): status (u16), latency in µs (u64), address (`0`;
/// `4` and 4 bytes; `6` and 16 bytes), then the key id (u32 length, [`ABSENT`] for none), the
/// method, the path and the code (u32 length each), each followed by its UTF-8 bytes.
///
/// Version 2 stored one entry per row as `2` and these fields, the time and store being the
/// row key's. Version 3 stores a chunk: `3`, the number of entries (u32), then per entry its
/// time (i64 unix nanos) and these fields. Version 4 is `4`, the chunk's [`Summary`] (five
/// u64), then the version 3 chunk; version 5 (written now) is `5`, a wider summary (seventeen
/// u64), then the version 3 chunk.
///
/// A row per chunk rather than per entry: the log is written for every API request, on a
/// thread beside the ones serving them, and a B-tree insert per entry was most of its cost
/// (`cargo bench --bench logs`).
fn encode_fields(out: &mut Vec<u8>, parts: &Parts<'_>) -> Option<()> {
    out.extend_from_slice(&parts.status.to_le_bytes());
    out.extend_from_slice(&parts.latency_us.to_le_bytes());
    match parts.ip {
        None => out.push(0),
        Some(IpAddr::V4(ip)) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    for text in [
        parts.key_id,
        Some(parts.method),
        Some(parts.path),
        Some(parts.code),
    ] {
        match text {
            None => out.extend_from_slice(&ABSENT.to_le_bytes()),
            Some(text) => {
                let len = u32::try_from(text.len())
                    .ok()
                    .filter(|&len| len != ABSENT)?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    Some(())
}

/// An entry's fields other than its store and time, borrowed, as they are stored.
struct Parts<'a> {
    status: u16,
    latency_us: u64,
    ip: Option<IpAddr>,
    key_id: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    code: &'a str,
}

impl Parts<'_> {
    /// Bytes [`encode_fields`] writes.
    fn len(&self) -> usize {
        let ip = match self.ip {
            None => 0,
            Some(IpAddr::V4(_)) => 4,
            Some(IpAddr::V6(_)) => 16,
        };
        let texts = self.key_id.map_or(0, str::len) + self.method.len() + self.path.len();
        2 + 8 + 1 + ip + 4 * 4 + texts + self.code.len()
    }
}

impl LogEntry {
    fn parts(&self) -> Parts<'_> {
        Parts {
            status: self.status,
            latency_us: self.latency_us,
            ip: self.ip,
            key_id: self.key_id.as_deref(),
            method: &self.method,
            path: &self.path,
            code: &self.code,
        }
    }
}

/// An entry waiting to be written: what rows are grouped and ordered by, and the rest already
/// in its stored form, in a buffer the writer hands back once it is written (see
/// `LogBuffer::spares`).
#[derive(Debug)]
struct Queued {
    store: StoreId,
    at: i64,
    fields: Vec<u8>,
}

impl Queued {
    /// The entry at a time in unix nanoseconds, encoded into `fields` (emptied first: a buffer
    /// of an entry already written). `None` when a field is over 4 GiB (no request has one).
    fn at_nanos(store: StoreId, at: i64, parts: &Parts<'_>, mut fields: Vec<u8>) -> Option<Self> {
        fields.clear();
        fields.reserve(parts.len());
        encode_fields(&mut fields, parts)?;
        Some(Self { store, at, fields })
    }
}

/// What a row holds, enough to pass over it unread when a query filters by key or status.
/// Without it, a filter that matches little (the one request of a key used once, the 500s of
/// a healthy store) decoded every entry of the store's log.
///
/// `keys` is a Bloom filter of the rows' key ids (two bits a key, of 1,024 in rows written
/// now and 256 in version 4 ones); `statuses` has bit `status % 64` set for each status. Both
/// answer "maybe" or "no". The hash is fixed (below): summaries are stored, so every release
/// must compute the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    width: Width,
    /// The filter's words; only the first [`Width::words`] are used.
    keys: [u64; 16],
    statuses: u64,
}

/// A summary's key filter: 256 bits (version 4 rows, chunks of up to 32 entries) or 1,024
/// (version 5): two bits a key of 256 left a row of 128 keys answering "maybe" for 40 % of the
/// keys it does not hold, of 1,024 for 5 %, as with 32 keys in 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    Narrow,
    Wide,
}

impl Width {
    /// Log2 of the filter's bits.
    fn log2(self) -> u32 {
        match self {
            Width::Narrow => 8,
            Width::Wide => 10,
        }
    }

    fn words(self) -> usize {
        1 << (self.log2() - 6)
    }

    fn version(self) -> u8 {
        match self {
            Width::Narrow => SUMMARIZED,
            Width::Wide => SUMMARIZED_WIDE,
        }
    }

    /// The summary's stored length: the filter's words and the statuses' word.
    fn len(self) -> usize {
        (self.words() + 1) * 8
    }

    fn of_version(version: u8) -> Option<Width> {
        match version {
            SUMMARIZED => Some(Width::Narrow),
            SUMMARIZED_WIDE => Some(Width::Wide),
            _ => None,
        }
    }
}

/// FxHash's multiplier.
const K: u64 = 0x517c_c1b7_2722_0a95;

impl Summary {
    fn new(width: Width) -> Self {
        Self {
            width,
            keys: [0; 16],
            statuses: 0,
        }
    }

    fn key_bits(&self, key_id: &[u8]) -> [usize; 2] {
        // FxHash's step over 8-byte little-endian words (the last zero-padded), then the
        // length: the writer hashes every entry's key, and a byte-at-a-time hash cost it 7 %.
        let mut hash: u64 = 0;
        for word in key_id.chunks(8) {
            let mut padded = [0u8; 8];
            padded[..word.len()].copy_from_slice(word);
            hash = (hash.rotate_left(5) ^ u64::from_le_bytes(padded)).wrapping_mul(K);
        }
        hash = (hash.rotate_left(5) ^ key_id.len() as u64).wrapping_mul(K);
        // The high bits are the well-mixed ones: two positions from the top ones (for 256
        // bits, the top 16 as version 4 has always taken them).
        let bits = self.width.log2();
        let mask = (1u64 << bits) - 1;
        [
            (hash >> (64 - bits)) as usize,
            ((hash >> (64 - 2 * bits)) & mask) as usize,
        ]
    }

    fn add(&mut self, key_id: Option<&[u8]>, status: u16) {
        if let Some(key_id) = key_id {
            for bit in self.key_bits(key_id) {
                self.keys[bit / 64] |= 1 << (bit % 64);
            }
        }
        self.statuses |= 1 << (status % 64);
    }

    /// False only when no entry of the row can match.
    fn may_match(&self, key_id: Option<&str>, status: Option<u16>) -> bool {
        let key = key_id.is_none_or(|key| {
            self.key_bits(key.as_bytes())
                .iter()
                .all(|&bit| self.keys[bit / 64] & (1 << (bit % 64)) != 0)
        });
        key && status.is_none_or(|s| self.statuses & (1 << (s % 64)) != 0)
    }

    /// The version byte, then the summary.
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.width.version());
        for word in self.keys[..self.width.words()]
            .iter()
            .chain([&self.statuses])
        {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }

    /// The summary of a stored row, when it has one (versions 4 and 5), and the chunk after it.
    fn of_row(bytes: &[u8]) -> Option<(Summary, &[u8])> {
        let (&version, rest) = bytes.split_first()?;
        let mut summary = Summary::new(Width::of_version(version)?);
        let (stored, chunk) = rest.split_at_checked(summary.width.len())?;
        let mut words = stored
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
        for key in &mut summary.keys[..summary.width.words()] {
            *key = words.next().unwrap_or(u64::MAX);
        }
        summary.statuses = words.next().unwrap_or(u64::MAX);
        Some((summary, chunk))
    }
}

/// The key id and status in an entry's stored fields (see [`encode_fields`]), without
/// decoding the rest.
fn key_and_status(fields: &[u8]) -> (Option<&[u8]>, u16) {
    let mut reader = Reader(fields);
    let status = reader.array().map_or(0, u16::from_le_bytes);
    let key = (|| {
        reader.array::<8>()?;
        let skip = match reader.array::<1>()? {
            [4] => 4,
            [6] => 16,
            _ => 0,
        };
        reader.0 = reader.0.get(skip..)?;
        let len = u32::from_le_bytes(reader.array()?);
        if len == ABSENT {
            return None;
        }
        reader.0.get(..usize::try_from(len).ok()?)
    })();
    (key, status)
}

/// A version 5 row holding `entries` (all of one store): their [`Summary`], then the chunk.
fn encode_chunk(out: &mut Vec<u8>, entries: &[Queued]) -> Result<()> {
    let mut summary = Summary::new(Width::Wide);
    for entry in entries {
        let (key, status) = key_and_status(&entry.fields);
        summary.add(key, status);
    }
    summary.write(out);
    out.push(CHUNK);
    let count = u32::try_from(entries.len())
        .map_err(|_| Error::Corrupt("log entry chunk: over 4 billion entries".into()))?;
    out.extend_from_slice(&count.to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.at.to_le_bytes());
        out.extend_from_slice(&entry.fields);
    }
    Ok(())
}

/// An entry as stored, with its time in unix nanos: its strings borrowed from the row
/// (versions 2 to 5), or owned when they had to be unescaped (version 1). A reader looks at
/// the fields it filters on before paying for an entry's four strings.
#[derive(Debug)]
pub(crate) struct RawEntry<'a> {
    pub(crate) at: i64,
    pub(crate) status: u16,
    pub(crate) latency_us: u64,
    ip: Option<IpAddr>,
    pub(crate) key_id: Option<Cow<'a, str>>,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    pub(crate) code: Cow<'a, str>,
}

impl RawEntry<'_> {
    pub(crate) fn into_entry(self, store: StoreId) -> LogEntry {
        LogEntry {
            // Every i64 of nanoseconds is a valid time.
            at: crate::clock::from_nanos(self.at),
            store_id: store,
            key_id: self.key_id.map(Cow::into_owned),
            method: self.method.into_owned(),
            // Masked again as read: rows written before paths were masked on the way in may
            // still hold a key pasted into a URL.
            path: crate::keys::redact(&self.path, true).into_owned(),
            status: self.status,
            ip: self.ip,
            code: self.code.into_owned(),
            latency_us: self.latency_us,
        }
    }
}

/// The entries of a stored row of any version, oldest first, without copying their strings;
/// `key_at` is the time in the row's key.
pub(crate) fn read_row(bytes: &[u8], key_at: i64) -> Result<Vec<RawEntry<'_>>> {
    let corrupt = || Error::Corrupt("log entry record: truncated or not UTF-8".into());
    match bytes.first() {
        Some(b'{') => {
            let entry = storage::decode::<Stored>(bytes, 1, "log entry")?.entry;
            Ok(vec![RawEntry {
                at: key_at,
                status: entry.status,
                latency_us: entry.latency_us,
                ip: entry.ip,
                key_id: entry.key_id.map(Cow::Owned),
                method: Cow::Owned(entry.method),
                path: Cow::Owned(entry.path),
                code: Cow::Owned(entry.code),
            }])
        }
        Some(&COMPACT) => {
            let mut reader = Reader(&bytes[1..]);
            let entry = reader.fields(key_at).ok_or_else(corrupt)?;
            reader.finish().ok_or_else(corrupt)?;
            Ok(vec![entry])
        }
        Some(&SUMMARIZED | &SUMMARIZED_WIDE) => read_row(
            Summary::of_row(bytes)
                .map(|(_, chunk)| chunk)
                .filter(|chunk| chunk.first() == Some(&CHUNK))
                .ok_or_else(corrupt)?,
            key_at,
        ),
        Some(&CHUNK) => {
            let mut reader = Reader(&bytes[1..]);
            let count = u32::from_le_bytes(reader.array().ok_or_else(corrupt)?);
            // Not trusted for the allocation: every entry takes at least 35 bytes.
            let room = (bytes.len() / 35).min(usize::try_from(count).unwrap_or(usize::MAX));
            let mut entries = Vec::with_capacity(room);
            for _ in 0..count {
                let at = i64::from_le_bytes(reader.array().ok_or_else(corrupt)?);
                entries.push(reader.fields(at).ok_or_else(corrupt)?);
            }
            reader.finish().ok_or_else(corrupt)?;
            Ok(entries)
        }
        Some(version) => Err(Error::Corrupt(format!(
            "log entry record version {version} is newer than this release reads ({SUMMARIZED_WIDE})"
        ))),
        None => Err(Error::Corrupt("log entry record: empty".into())),
    }
}

/// Reads stored entries; `None` once the bytes run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The fields [`encode_fields`] writes, as an entry at `at`.
    fn fields(&mut self, at: i64) -> Option<RawEntry<'a>> {
        let status = u16::from_le_bytes(self.array()?);
        let latency_us = u64::from_le_bytes(self.array()?);
        let ip = match self.array::<1>()? {
            [0] => None,
            [4] => Some(IpAddr::from(self.array::<4>()?)),
            [6] => Some(IpAddr::from(self.array::<16>()?)),
            [_] => return None,
        };
        let key_id = self.text()?;
        let (method, path, code) = (self.text()??, self.text()??, self.text()??);
        Some(RawEntry {
            at,
            status,
            latency_us,
            ip,
            key_id: key_id.map(Cow::Borrowed),
            method: Cow::Borrowed(method),
            path: Cow::Borrowed(path),
            code: Cow::Borrowed(code),
        })
    }

    /// `Some` when every byte was read.
    fn finish(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    /// A length-prefixed string: `Some(None)` for [`ABSENT`].
    fn text(&mut self) -> Option<Option<&'a str>> {
        let len = u32::from_le_bytes(self.array()?);
        if len == ABSENT {
            return Some(None);
        }
        let (text, rest) = self.0.split_at_checked(usize::try_from(len).ok()?)?;
        self.0 = rest;
        Some(Some(std::str::from_utf8(text).ok()?))
    }
}

/// Filters for reading a store's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub key_id: Option<String>,
    pub status: Option<u16>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// At most this many (1–1,000; default 100), newest first.
    pub limit: Option<usize>,
}

/// The parts of a request a caller outside the process describes, checked: a method (not
/// empty), an HTTP status and a readable client address. Problems are pushed; the values
/// returned stand in for the refused ones.
fn request_parts(
    method: &str,
    status: i64,
    ip: Option<&str>,
    problems: &mut Vec<String>,
) -> (u16, Option<IpAddr>) {
    if method.trim().is_empty() {
        problems.push("method: expected an HTTP method".to_owned());
    }
    let status = http_status(status).unwrap_or_else(|problem| {
        problems.push(format!("status: {problem}"));
        0
    });
    let ip = ip.and_then(|text| {
        crate::parse_ip_argument(text)
            .map_err(|problem| problems.push(problem))
            .ok()
    });
    (status, ip)
}

/// `n` as an HTTP status (100–599), or the problem to name.
fn http_status(n: i64) -> std::result::Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("`{n}` is not an HTTP status"))
}

impl LogQuery {
    /// Filters from a JSON object (binding arguments): `key_id`, `status`, `since`, `until`
    /// (RFC 3339) and `limit`, naming every problem; `null` means no filter.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        use crate::input::{Fields, integer, string, timestamp};
        let mut fields = Fields::new(value, "log query")?;
        let key_id = fields.patch("key_id", string).into_update().flatten();
        let status = fields
            .patch("status", |v| integer(v).and_then(http_status))
            .into_update()
            .flatten();
        let since = fields.patch("since", timestamp).into_update().flatten();
        let until = fields.patch("until", timestamp).into_update().flatten();
        let limit = fields
            .patch("limit", |v| {
                // A negative count is as far out of range as zero.
                integer(v).and_then(|n| read_limit(usize::try_from(n).unwrap_or(0)))
            })
            .into_update()
            .flatten();
        fields.finish().finish()?;
        Ok(Self {
            key_id,
            status,
            since,
            until,
            limit,
        })
    }
}

/// The in-memory side of the log.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    queue: ArrayQueue<Queued>,
    dropped: AtomicU64,
    seq: AtomicU64,
    /// The maintenance thread, once started.
    writer: OnceLock<Thread>,
    /// Entries waiting that wake the writer; 0: never (see `EngineOptions::log_flush_at`).
    flush_at: usize,
    /// Set when a request woke the writer, cleared by the writer before it drains the queue:
    /// one wake-up per batch rather than one per request past the mark.
    woken: AtomicBool,
    /// Held from draining the queue to the commit, so a reader's flush waits for a batch
    /// already taken off the queue instead of reading before it lands. The batch's buffer is
    /// kept between flushes (up to `LOG_BUFFER` entries, 2.5 MiB) rather than allocated for
    /// each wake-up of the writer under load.
    flushing: parking_lot::Mutex<Vec<Queued>>,
    /// Entries' buffers the writer handed back, at most [`LOG_FLUSH_AT`], for the next entries
    /// to be encoded into. Entries are made on the threads serving requests and written on the
    /// writer's: freed there, each buffer was an allocation freed across threads, and the
    /// allocator returned the pages that emptied so to the system and faulted them back in
    /// (2 MiB zeroed at a time, with transparent huge pages): most of the server's page faults
    /// under keyed load. Handed round, the buffers stay allocated.
    spares: ArrayQueue<Vec<u8>>,
}

impl LogBuffer {
    pub(crate) fn new(flush_at: usize) -> Self {
        Self {
            queue: ArrayQueue::new(LOG_BUFFER),
            flush_at,
            dropped: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            writer: OnceLock::new(),
            woken: AtomicBool::new(false),
            flushing: parking_lot::Mutex::new(Vec::new()),
            spares: ArrayQueue::new(LOG_FLUSH_AT),
        }
    }

    /// Names the thread that writes the queue.
    pub(crate) fn set_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    /// Called by the writer before it drains the queue: a request from now on may wake it.
    pub(crate) fn rearm(&self) {
        self.woken.store(false, Ordering::Release);
    }

    fn push(&self, entry: Option<Queued>) {
        let Some(entry) = entry else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(oldest) = self.queue.force_push(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let _ = self.spares.push(oldest.fields);
        }
        // The plain load first: past the mark, every request until the writer drains would
        // otherwise do a locked swap on this shared line.
        if self.flush_at > 0
            && self.queue.len() >= self.flush_at
            && !self.woken.load(Ordering::Relaxed)
            && !self.woken.swap(true, Ordering::AcqRel)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }
}

pub(crate) fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl Inner {
    /// Writes the buffered entries in one transaction and applies each store's retention.
    pub(crate) fn flush_logs(&self) -> Result<()> {
        let mut batch = self.logs.flushing.lock();
        if self.logs.queue.is_empty() {
            return Ok(());
        }
        batch.clear();
        // At most one queue's worth, so a steady stream still commits.
        while batch.len() < LOG_BUFFER
            && let Some(entry) = self.logs.queue.pop()
        {
            batch.push(entry);
        }
        // Each store's entries together, oldest first; a stable sort keeps entries of the same
        // nanosecond in the order they were recorded. The queue is close to that order already,
        // which a stable sort (merging the runs it finds) exploits and an unstable one does
        // not: the unstable sort cost the writer about 8 % more CPU under load.
        batch.sort_by_key(|entry: &Queued| (entry.store, entry.at));
        let written = self.write_batch(&batch);
        // The entries themselves are not kept until the next batch, only the buffer; their
        // fields' buffers go back to the threads that record entries, as many as are kept.
        for entry in batch.drain(..) {
            if self.logs.spares.push(entry.fields).is_err() {
                break;
            }
        }
        batch.clear();
        written
    }

    /// Writes a sorted batch in one transaction and applies each store's retention.
    fn write_batch(&self, batch: &[Queued]) -> Result<()> {
        let tx = storage::write(&self.db)?;
        {
            let mut table = tx.open_table(LOGS)?;
            let mut stores: Vec<StoreId> = Vec::new();
            let mut bytes = Vec::new();
            let mut rest = batch;
            while let Some(first) = rest.first() {
                let start = first.at;
                let len = rest
                    .iter()
                    .take(CHUNK_ENTRIES)
                    .take_while(|e| {
                        e.store == first.store && e.at.saturating_sub(start) <= CHUNK_SPAN
                    })
                    .count();
                let (chunk, tail) = rest.split_at(len);
                rest = tail;
                bytes.clear();
                encode_chunk(&mut bytes, chunk)?;
                let newest = chunk.last().map_or(start, |e| e.at);
                let seq = self.logs.seq.fetch_add(1, Ordering::Relaxed);
                table.insert((first.store.as_str(), newest, seq), bytes.as_slice())?;
                // Sorted by store, so each store's chunks are consecutive.
                if stores.last() != Some(&first.store) {
                    stores.push(first.store);
                }
            }
            let now = self.clock.now();
            for store in stores {
                // A store deleted meanwhile keeps nothing; its entries expire with the default.
                let days = tx
                    .store(store.as_str())
                    .map(|s| s.settings.log_retention_days)
                    .unwrap_or(30);
                let cutoff = nanos(now - time::Duration::days(i64::from(days)));
                table.retain_in(
                    (store.as_str(), i64::MIN, 0)..(store.as_str(), cutoff, 0),
                    |_, _| false,
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Engine {
    /// Records one API request. Never blocks and never writes to disk itself.
    pub fn record_request(&self, entry: LogEntry) {
        let logs = &self.inner().logs;
        let spare = logs.spares.pop().unwrap_or_default();
        let queued = Queued::at_nanos(entry.store_id, nanos(entry.at), &entry.parts(), spare);
        logs.push(queued);
    }

    /// Queues an entry from its parts, cleaned as [`LogEntry::new`] does, without making one.
    #[allow(clippy::too_many_arguments)]
    fn record_parts(
        &self,
        store: StoreId,
        key_id: Option<&str>,
        method: &str,
        path: &str,
        status: u16,
        ip: Option<IpAddr>,
        code: &str,
        latency_us: u64,
    ) {
        let parts = Parts {
            status,
            latency_us,
            ip,
            key_id,
            method: first_chars(method, MAX_METHOD),
            path: &clean_path(path),
            code: first_chars(code, MAX_CODE),
        };
        let logs = &self.inner().logs;
        let spare = logs.spares.pop().unwrap_or_default();
        let queued = Queued::at_nanos(store, self.inner().clock.now_nanos(), &parts, spare);
        logs.push(queued);
    }

    /// Records the request a decision answered (middleware of the bindings and the server):
    /// nothing when the decision names no store (the credential matched no key).
    pub fn record_decision(
        &self,
        decision: &crate::Decision,
        method: &str,
        path: &str,
        status: u16,
        ip: Option<IpAddr>,
        latency_us: u64,
    ) {
        if let Some(store_id) = decision.store_id() {
            self.record_parts(
                store_id,
                decision.key_id(),
                method,
                path,
                status,
                ip,
                decision.code_str(),
                latency_us,
            );
        }
    }

    /// [`Engine::record_decision`] for a request described from outside the process (a
    /// binding's `record_request`): the method, status and address are checked first, every
    /// problem named (with `problems` the caller found already), and nothing is recorded when
    /// there is one.
    #[allow(clippy::too_many_arguments)]
    pub fn record_checked(
        &self,
        decision: &crate::Decision,
        method: &str,
        path: &str,
        status: i64,
        ip: Option<&str>,
        latency_us: u64,
        mut problems: Vec<String>,
    ) -> Result<()> {
        let (status, ip) = request_parts(method, status, ip, &mut problems);
        Problems::from(problems).finish()?;
        self.record_decision(decision, method, path, status, ip, latency_us);
        Ok(())
    }

    /// [`Engine::record_decision`] for a binding that carried the decision across as its parts
    /// (the store and key it named, its code; `None` for allowed). Checked like any outside
    /// input: a malformed store or key id, a status outside 100–599 or an unreadable address
    /// is refused with every problem named and nothing recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn record_outcome(
        &self,
        store_id: &str,
        key_id: Option<&str>,
        code: Option<crate::DenyCode>,
        method: &str,
        path: &str,
        status: u32,
        ip: Option<&str>,
        latency_us: u64,
    ) -> Result<()> {
        let mut problems = Vec::new();
        let (status, ip) = request_parts(method, i64::from(status), ip, &mut problems);
        let store = StoreId::parse(store_id);
        if store.is_none() {
            problems.push(format!("storeId: `{store_id}` is not a store id"));
        }
        if let Some(key_id) = key_id.filter(|k| !crate::ids::is_key_id(k)) {
            problems.push(format!("keyId: `{key_id}` is not a key id"));
        }
        Problems::from(problems).finish()?;
        if let Some(store) = store {
            self.record_parts(
                store,
                key_id,
                method,
                path,
                status,
                ip,
                code.map_or("OK", crate::DenyCode::as_str),
                latency_us,
            );
        }
        Ok(())
    }

    /// Log entries recorded and not yet written.
    pub fn pending_log_entries(&self) -> usize {
        self.inner().logs.queue.len()
    }

    /// Log entries dropped because the buffer was full (since start).
    pub fn dropped_log_entries(&self) -> u64 {
        self.inner().logs.dropped.load(Ordering::Relaxed)
    }

    /// A store's request log, newest first, filtered. Entries still in the buffer are written
    /// first, so a request is readable as soon as it was recorded.
    pub fn logs(&self, store_id: &str, query: &LogQuery) -> Result<Vec<LogEntry>> {
        let mut problems = Problems::new();
        let limit = query.limit.unwrap_or(100);
        check_read_limit(limit, &mut problems);
        if let (Some(since), Some(until)) = (query.since, query.until)
            && until < since
        {
            problems.push("until: must not be before since");
        }
        problems.finish()?;
        self.inner().flush_logs()?;
        let tx = storage::read(&self.inner().db)?;
        let store = tx.store(store_id)?;
        let table = tx.open_table(LOGS)?;
        let sid = store.id.as_str();
        let from = query.since.map_or(i64::MIN, nanos);
        let to = query.until.map_or(i64::MAX, nanos);
        let wanted = |entry: &RawEntry<'_>| {
            (from..=to).contains(&entry.at)
                && query
                    .key_id
                    .as_deref()
                    .is_none_or(|k| entry.key_id.as_deref() == Some(k))
                && query.status.is_none_or(|s| s == entry.status)
        };
        // Rows come newest first by the time of their newest entry, but a row's older entries
        // may be older than the next rows' (batches overlap a little in time). So entries wait
        // in a heap until no row still unread can hold a newer one: every unread row's key, and
        // so every entry in it, is at most the next row's (time, sequence).
        let mut waiting = std::collections::BinaryHeap::new();
        let mut out = Vec::new();
        // A row whose newest entry is later than `to` by more than a chunk's span holds
        // nothing up to `to`.
        let last = (sid, to.saturating_add(CHUNK_SPAN), u64::MAX);
        for item in table.range((sid, from, 0)..=last)?.rev() {
            let (key, value) = item?;
            let (_, newest, seq) = key.value();
            let row = value.value();
            while waiting
                .peek()
                .is_some_and(|w: &Waiting| (w.at, w.seq) > (newest, seq))
            {
                out.extend(waiting.pop().map(|w| w.entry));
                if out.len() == limit {
                    return Ok(out);
                }
            }
            if Summary::of_row(row).is_some_and(|(summary, _)| {
                !summary.may_match(query.key_id.as_deref(), query.status)
            }) {
                continue;
            }
            // Of a row's wanted entries only its newest `room` can be returned (each older one
            // has `room` entries ahead of it already), so only those are made into entries.
            // Rows are written in time order; the stable sort only makes sure (one pass then).
            let room = limit - out.len();
            let mut entries = read_row(row, newest)?;
            entries.sort_by_key(|entry| entry.at);
            for (index, raw) in entries
                .into_iter()
                .enumerate()
                .rev()
                .filter(|(_, raw)| wanted(raw))
                .take(room)
            {
                waiting.push(Waiting {
                    at: raw.at,
                    seq,
                    index,
                    entry: raw.into_entry(store.id),
                });
            }
        }
        while out.len() < limit
            && let Some(w) = waiting.pop()
        {
            out.push(w.entry);
        }
        Ok(out)
    }
}

/// An entry read, in the order the log is returned: newest first, then the later row, then
/// the later entry within the row (entries of the same nanosecond, newest recorded first).
struct Waiting {
    at: i64,
    seq: u64,
    index: usize,
    entry: LogEntry,
}

impl Waiting {
    fn order(&self) -> (i64, u64, usize) {
        (self.at, self.seq, self.index)
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn store() -> StoreId {
        StoreId::parse("ab12cd34").unwrap()
    }

    /// The entries of a stored row of any version as entries, each with its time in unix
    /// nanos; `store` and `key_at` are the row key's.
    fn decode_row(bytes: &[u8], store: StoreId, key_at: i64) -> Result<Vec<(i64, LogEntry)>> {
        Ok(read_row(bytes, key_at)?
            .into_iter()
            .map(|raw| (raw.at, raw.into_entry(store)))
            .collect())
    }

    fn sample(key_id: Option<&str>, ip: Option<IpAddr>, path: &str) -> LogEntry {
        LogEntry::new(
            OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789).unwrap(),
            store(),
            key_id,
            "GET",
            path,
            429,
            ip,
            "RATE_LIMITED",
            1_234,
        )
    }

    /// A version 2 row (one entry), as earlier releases wrote it.
    fn compact(entry: &LogEntry) -> Vec<u8> {
        let mut out = vec![COMPACT];
        encode_fields(&mut out, &entry.parts()).unwrap();
        out
    }

    fn chunk(entries: &[LogEntry]) -> Vec<u8> {
        let queued: Vec<Queued> = entries
            .iter()
            .map(|e| Queued::at_nanos(e.store_id, nanos(e.at), &e.parts(), Vec::new()).unwrap())
            .collect();
        // What was measured is what was written.
        for (q, e) in queued.iter().zip(entries) {
            assert_eq!(q.fields.len(), e.parts().len());
        }
        let mut out = Vec::new();
        encode_chunk(&mut out, &queued).unwrap();
        out
    }

    /// The one entry a row holds.
    fn single(bytes: &[u8], at: i64) -> Result<LogEntry> {
        let mut entries = decode_row(bytes, store(), at)?;
        assert_eq!(entries.len(), 1);
        Ok(entries.remove(0).1)
    }

    fn samples() -> Vec<LogEntry> {
        vec![
            sample(
                Some("key_01"),
                Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
                "/a",
            ),
            sample(
                None,
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                "/api/v1/ünïcode",
            ),
            sample(Some(""), None, ""),
        ]
    }

    #[test]
    fn chunks_read_back_whole_with_each_entrys_time() {
        let mut entries = samples();
        for (n, entry) in entries.iter_mut().enumerate() {
            entry.at += time::Duration::milliseconds(n as i64 * 7);
        }
        let bytes = chunk(&entries);
        assert_eq!(bytes[0], SUMMARIZED_WIDE);
        assert_eq!(bytes[1 + Width::Wide.len()], CHUNK);
        // The key's time is the newest entry's; each entry keeps its own.
        let read = decode_row(&bytes, store(), nanos(entries[2].at)).unwrap();
        let expected: Vec<_> = entries.iter().map(|e| (nanos(e.at), e.clone())).collect();
        assert_eq!(read, expected);
        assert!(decode_row(&chunk(&[]), store(), 0).unwrap().is_empty());
    }

    /// A row written before paths were masked, with a key in its path, reads back masked.
    #[test]
    fn a_key_in_an_older_rows_path_is_masked_when_read() {
        let generated =
            crate::keys::format::generate(crate::KeyFormat::Token, "lk", store()).unwrap();
        let token = generated.secret.expose();
        let hex = "0123456789abcdef".repeat(4);
        let mut old = sample(None, None, "/");
        for (path, masked) in [
            (
                format!("/api/v1/orders/{hex}"),
                "/api/v1/orders/…cdef".to_owned(),
            ),
            (
                format!("/api/v1/orders/{token}/x"),
                format!(
                    "/api/v1/orders/lk_ab12cd34_…{}/x",
                    &token[token.len() - 4..]
                ),
            ),
        ] {
            // Stored as given: the entry is made without `LogEntry::new`'s cleaning.
            old.path = path;
            let read = decode_row(&compact(&old), store(), 0).unwrap();
            assert_eq!(read[0].1.path, masked);
        }
    }

    /// Chunks written before summaries (version 3) still read, and are never passed over.
    #[test]
    fn version_3_chunks_still_read() {
        let entries = samples();
        let bytes = chunk(&entries);
        let v3 = &bytes[1 + Width::Wide.len()..];
        assert_eq!(v3[0], CHUNK);
        let read = decode_row(v3, store(), 0).unwrap();
        let expected: Vec<_> = entries.iter().map(|e| (nanos(e.at), e.clone())).collect();
        assert_eq!(read, expected);
        assert_eq!(Summary::of_row(v3), None);
    }

    /// The summary answers "no" only for keys and statuses no entry has.
    #[test]
    fn summaries_pass_over_rows_that_cannot_match() {
        let mut entries = samples();
        entries[1].status = 503;
        let (summary, _) = Summary::of_row(&chunk(&entries)).unwrap();
        for entry in &entries {
            assert!(summary.may_match(entry.key_id.as_deref(), Some(entry.status)));
        }
        assert!(summary.may_match(None, None));
        assert!(!summary.may_match(None, Some(200)));
        // Among many other key ids, nearly all are answered "no" (two bits of 1,024 each).
        let others = (0..1000)
            .filter(|n| summary.may_match(Some(&format!("key_{n:020}")), None))
            .count();
        assert!(others < 50, "{others} of 1000 absent keys passed");
        // Each stored form of an address and key is skipped to the key correctly.
        for entry in &entries {
            let queued =
                Queued::at_nanos(entry.store_id, nanos(entry.at), &entry.parts(), Vec::new())
                    .unwrap();
            let (key, status) = key_and_status(&queued.fields);
            assert_eq!(key, entry.key_id.as_deref().map(str::as_bytes));
            assert_eq!(status, entry.status);
        }
    }

    /// A full chunk of distinct keys still passes over nearly every key it does not hold:
    /// the reason a 128-entry row has 1,024 bits where a 32-entry one had 256.
    #[test]
    fn a_full_chunk_of_distinct_keys_still_passes_over_others() {
        let entries: Vec<LogEntry> = (0..CHUNK_ENTRIES)
            .map(|n| sample(Some(&format!("key_held_{n:020}")), None, "/p"))
            .collect();
        let (summary, _) = Summary::of_row(&chunk(&entries)).unwrap();
        for entry in &entries {
            assert!(summary.may_match(entry.key_id.as_deref(), None));
        }
        let others = (0..1000)
            .filter(|n| summary.may_match(Some(&format!("key_other_{n:019}")), None))
            .count();
        assert!(others < 100, "{others} of 1000 absent keys passed");
    }

    /// Version 4 rows (256-bit summaries, as earlier releases wrote them) still read, and
    /// their summaries are asked with the bits those releases set.
    #[test]
    fn version_4_rows_still_read_and_pass_over() {
        let mut entries = samples();
        entries[1].status = 503;
        // The bits version 4 has always set: the top two bytes of the hash.
        let old_bits = |key: &[u8]| {
            let mut hash: u64 = 0;
            for word in key.chunks(8) {
                let mut padded = [0u8; 8];
                padded[..word.len()].copy_from_slice(word);
                hash = (hash.rotate_left(5) ^ u64::from_le_bytes(padded)).wrapping_mul(K);
            }
            hash = (hash.rotate_left(5) ^ key.len() as u64).wrapping_mul(K);
            [(hash >> 56) as usize, ((hash >> 48) & 0xff) as usize]
        };
        let mut words = [0u64; 5];
        for entry in &entries {
            for bit in entry
                .key_id
                .as_deref()
                .map_or(vec![], |k| old_bits(k.as_bytes()).to_vec())
            {
                words[bit / 64] |= 1 << (bit % 64);
            }
            words[4] |= 1 << (entry.status % 64);
        }
        let mut v4 = vec![SUMMARIZED];
        for word in words {
            v4.extend_from_slice(&word.to_le_bytes());
        }
        let wide = chunk(&entries);
        v4.extend_from_slice(&wide[1 + Width::Wide.len()..]);
        let read = decode_row(&v4, store(), 0).unwrap();
        let expected: Vec<_> = entries.iter().map(|e| (nanos(e.at), e.clone())).collect();
        assert_eq!(read, expected);
        let (summary, _) = Summary::of_row(&v4).unwrap();
        assert_eq!(summary.width, Width::Narrow);
        for entry in &entries {
            assert!(summary.may_match(entry.key_id.as_deref(), Some(entry.status)));
        }
        assert!(!summary.may_match(None, Some(200)));
        let others = (0..1000)
            .filter(|n| summary.may_match(Some(&format!("key_{n:020}")), None))
            .count();
        assert!(others < 50, "{others} of 1000 absent keys passed");
        // Cut anywhere, a version 4 row is refused like any other.
        for cut in 0..v4.len() {
            assert!(decode_row(&v4[..cut], store(), 0).is_err());
        }
    }

    /// A written entry's buffer is handed back and the next entry recorded is encoded into
    /// it: what it held before does not show in the entry, which reads back as recorded.
    #[test]
    fn written_entries_buffers_are_reused_for_the_next_entries() {
        let engine = Engine::memory().unwrap();
        let (store, _) = engine
            .create_store(&crate::Actor::admin("t"), crate::NewStore::named("Logs"))
            .unwrap();
        let at = engine.clock().now();
        let long = "/api/v1/orders/".to_owned() + &"x".repeat(300);
        let recorded = |path: &str, status: u16| {
            LogEntry::new(
                at,
                store.id,
                Some("key_a"),
                "GET",
                path,
                status,
                None,
                "OK",
                7,
            )
        };
        for status in [200, 201, 202] {
            engine.record_request(recorded(&long, status));
        }
        engine.flush().unwrap();
        let logs = &engine.inner().logs;
        assert_eq!(logs.spares.len(), 3);
        engine.record_request(recorded("/api/v1/orders", 204));
        assert_eq!(logs.spares.len(), 2);
        engine.flush().unwrap();
        let read = engine
            .logs(store.id.as_str(), &LogQuery::default())
            .unwrap();
        let statuses: Vec<u16> = read.iter().map(|e| e.status).collect();
        assert_eq!(statuses.len(), 4);
        let short = read.iter().find(|e| e.status == 204).unwrap();
        assert_eq!(*short, recorded("/api/v1/orders", 204));
    }

    /// Rows of one entry written before chunks (version 2) still read.
    #[test]
    fn version_2_entries_still_read() {
        for entry in samples() {
            let bytes = compact(&entry);
            assert_eq!(single(&bytes, nanos(entry.at)).unwrap(), entry);
        }
    }

    /// Entries written before the compact form (JSON with `"v":1`) still read.
    #[test]
    fn version_1_entries_still_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            v: u32,
            #[serde(flatten)]
            entry: &'a LogEntry,
        }
        let entry = sample(Some("key_01"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), "/x");
        let json = serde_json::to_vec(&V1 {
            v: 1,
            entry: &entry,
        })
        .unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(single(&json, nanos(entry.at)).unwrap(), entry);
    }

    /// A damaged record is an error naming the log entry, never a panic or a wrong entry.
    #[test]
    fn damaged_records_are_refused() {
        let one = sample(Some("key_01"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), "/p");
        for bytes in [compact(&one), chunk(&samples())] {
            for cut in 0..bytes.len() {
                let error = decode_row(&bytes[..cut], store(), 0).unwrap_err();
                assert!(error.to_string().contains("log entry"), "{error}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_row(&longer, store(), 0).is_err());
        }
        let mut bad_ip = compact(&one);
        bad_ip[11] = 5;
        assert!(decode_row(&bad_ip, store(), 0).is_err());
        // A count larger than the entries there: refused, without allocating for the count.
        let mut too_many = chunk(&samples());
        let count = 2 + Width::Wide.len();
        too_many[count..count + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_row(&too_many, store(), 0).is_err());
        // A summary followed by anything but a chunk.
        let mut not_chunk = chunk(&samples());
        not_chunk[1 + Width::Wide.len()] = COMPACT;
        assert!(decode_row(&not_chunk, store(), 0).is_err());
        let mut newer = compact(&one);
        newer[0] = SUMMARIZED_WIDE + 1;
        let error = decode_row(&newer, store(), 0).unwrap_err();
        assert!(error.to_string().contains("newer"), "{error}");
    }

    /// How paths were cleaned before [`clean_path`] (kept as the reference it must match).
    fn clean_path_before(path: &str) -> String {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let path = crate::keys::redact(path, true);
        let mut clean: String = path.chars().filter(|c| !c.is_control()).collect();
        if clean.len() > MAX_PATH {
            let mut cut = MAX_PATH;
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            clean.truncate(cut);
            clean.push('…');
        }
        clean
    }

    proptest! {
        /// Paths of any length and content are cleaned as before, and cleaning is idempotent.
        #[test]
        fn paths_are_cleaned_as_before(path in "(.|\\?|#|[\\x00-\\x1f]|é|€){0,600}") {
            let clean = clean_path(&path);
            prop_assert_eq!(clean.as_ref(), clean_path_before(&path));
            let again = clean_path(&clean);
            prop_assert_eq!(again.as_ref(), clean.as_ref());
        }

        /// A method or code is cut after its first characters, never inside one.
        #[test]
        fn texts_keep_their_first_characters(text in ".{0,40}", n in 0usize..40) {
            prop_assert_eq!(first_chars(&text, n), text.chars().take(n).collect::<String>());
        }

        /// Any entries, whatever their strings and times hold, read back as they were written.
        #[test]
        fn any_chunk_round_trips(
            entries in proptest::collection::vec(
                (
                    proptest::option::of(".{0,40}"),
                    ".{0,16}",
                    ".{0,80}",
                    ".{0,32}",
                    any::<u16>(),
                    any::<u64>(),
                    proptest::option::of(any::<IpAddr>()),
                    -9_000_000_000_000_000_000i64..9_000_000_000_000_000_000,
                ),
                0..8,
            ),
        ) {
            let entries: Vec<LogEntry> = entries
                .into_iter()
                .map(|(key_id, method, path, code, status, latency_us, ip, at)| LogEntry {
                    at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(at)).unwrap(),
                    store_id: store(),
                    key_id,
                    method,
                    path,
                    status,
                    ip,
                    code,
                    latency_us,
                })
                .collect();
            let bytes = chunk(&entries);
            let read = decode_row(&bytes, store(), 0).unwrap();
            let expected: Vec<_> = entries.iter().map(|e| (nanos(e.at), e.clone())).collect();
            prop_assert_eq!(read, expected);
            // No entry is ever passed over by its row's summary.
            let (summary, _) = Summary::of_row(&bytes).unwrap();
            for entry in &entries {
                prop_assert!(summary.may_match(entry.key_id.as_deref(), Some(entry.status)));
            }
            if let Some(first) = entries.first() {
                prop_assert_eq!(&single(&compact(first), nanos(first.at)).unwrap(), first);
            }
        }
    }
}
