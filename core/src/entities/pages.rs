//! Rendered list pages kept between writes: a page a storefront or integration lists over and
//! over is read from the database and joined once, then handed out as a shared reference until
//! its store's entities change.
//!
//! Invariant: a cached page is what reading the database now would give. Every entity write
//! ([`Engine::write_in`](crate::engine::Engine)) drops its store's pages after it commits and
//! before it returns, and bumps a generation number. A reader notes the generation before it
//! opens its read transaction and files its page only if no write came in between: otherwise
//! the page may predate a commit whose invalidation already ran, and is handed out once but
//! not kept. So a write's caller, and anyone after it, never sees a page from before it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::{Equivalent, HashMap};
use parking_lot::RwLock;

use super::PageJson;
use crate::ids::StoreId;

/// Bytes of page text kept, all stores together. Past it the cache starts over empty: simpler
/// than tracking recency, and a page in demand is back after its next read.
const BUDGET: usize = 8 << 20;

/// A page larger than this is not kept: one would crowd out many smaller ones.
const LARGEST: usize = BUDGET / 16;

/// What names a page within its store.
#[derive(Debug, PartialEq, Eq)]
struct PageKey {
    environment: Box<str>,
    kind: u8,
    limit: usize,
    after: Option<Box<str>>,
}

/// [`PageKey`] borrowed, for lookups that allocate nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRef<'a> {
    pub environment: &'a str,
    pub kind: u8,
    pub limit: usize,
    pub after: Option<&'a str>,
}

// Both hash the same fields in the same order as the same types (`Box<str>` hashes as `str`),
// which `Equivalent` requires.
impl Hash for PageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

impl Hash for PageRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.environment.hash(state);
        self.kind.hash(state);
        self.limit.hash(state);
        self.after.hash(state);
    }
}

impl PageKey {
    fn borrowed(&self) -> PageRef<'_> {
        PageRef {
            environment: &self.environment,
            kind: self.kind,
            limit: self.limit,
            after: self.after.as_deref(),
        }
    }
}

impl Equivalent<PageKey> for PageRef<'_> {
    fn equivalent(&self, key: &PageKey) -> bool {
        let key = key.borrowed();
        self.environment == key.environment
            && self.kind == key.kind
            && self.limit == key.limit
            && self.after == key.after
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every write, in any store.
    generation: u64,
    /// Keys are checked input (live stores and environments, decoded cursors) and bounded in
    /// number by the budget; the hasher is seeded per process.
    stores: HashMap<StoreId, HashMap<PageKey, Arc<PageJson>, RandomState>, RandomState>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PageCache {
    state: RwLock<State>,
}

/// What a miss needs to file the page it reads: the generation seen before reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl PageCache {
    /// The page if it is kept; else the ticket to file it with once read.
    pub(crate) fn get(&self, store: StoreId, page: PageRef<'_>) -> Result<Arc<PageJson>, Ticket> {
        let state = self.state.read();
        state
            .stores
            .get(&store)
            .and_then(|pages| pages.get(&page))
            .cloned()
            .ok_or(Ticket(state.generation))
    }

    /// Files a page read after `ticket` was taken, unless a write came in since.
    pub(crate) fn put(
        &self,
        ticket: Ticket,
        store: StoreId,
        page: PageRef<'_>,
        json: &Arc<PageJson>,
    ) {
        let size = json.len();
        if size > LARGEST {
            return;
        }
        let mut state = self.state.write();
        if state.generation != ticket.0 {
            return;
        }
        if state.bytes + size > BUDGET {
            state.stores.clear();
            state.bytes = 0;
        }
        let key = PageKey {
            environment: page.environment.into(),
            kind: page.kind,
            limit: page.limit,
            after: page.after.map(Into::into),
        };
        let pages = state.stores.entry(store).or_default();
        if let Some(old) = pages.insert(key, json.clone()) {
            // Two readers missed together; the second replaces the first's equal page.
            state.bytes -= old.len();
        }
        state.bytes += size;
    }

    /// Drops a store's pages after a write to its entities committed.
    pub(crate) fn invalidate(&self, store: StoreId) {
        let mut state = self.state.write();
        state.generation += 1;
        if let Some(pages) = state.stores.remove(&store) {
            state.bytes -= pages.values().map(|p| p.len()).sum::<usize>();
        }
    }
}

impl PageJson {
    /// Bytes of text the page holds.
    fn len(&self) -> usize {
        self.items.len() + self.next_cursor.as_ref().map_or(0, String::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &str) -> Arc<PageJson> {
        Arc::new(PageJson {
            items: items.to_owned(),
            next_cursor: None,
        })
    }

    fn at<'a>(environment: &'a str, after: Option<&'static str>) -> PageRef<'a> {
        PageRef {
            environment,
            kind: 1,
            limit: 50,
            after,
        }
    }

    #[test]
    fn a_page_is_kept_until_its_store_is_written() {
        let cache = PageCache::default();
        let (a, b) = (
            StoreId::parse("storeaaa").unwrap(),
            StoreId::parse("storebbb").unwrap(),
        );
        let ticket = cache.get(a, at("production", None)).unwrap_err();
        cache.put(ticket, a, at("production", None), &page("[1]"));
        let ticket = cache.get(b, at("production", None)).unwrap_err();
        cache.put(ticket, b, at("production", None), &page("[2]"));
        assert_eq!(cache.get(a, at("production", None)).unwrap().items, "[1]");
        // Other environments, cursors and stores are other pages.
        assert!(cache.get(a, at("staging", None)).is_err());
        assert!(cache.get(a, at("production", Some("pkg_1"))).is_err());

        cache.invalidate(a);
        assert!(cache.get(a, at("production", None)).is_err());
        assert_eq!(cache.get(b, at("production", None)).unwrap().items, "[2]");
        assert_eq!(cache.state.read().bytes, 3);
    }

    #[test]
    fn a_page_read_across_a_write_is_not_kept() {
        let cache = PageCache::default();
        let store = StoreId::parse("storeaaa").unwrap();
        let ticket = cache.get(store, at("production", None)).unwrap_err();
        // A write commits and invalidates while the reader reads (possibly the old state).
        cache.invalidate(store);
        cache.put(ticket, store, at("production", None), &page("[\"old\"]"));
        assert!(cache.get(store, at("production", None)).is_err());
        assert_eq!(cache.state.read().bytes, 0);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = PageCache::default();
        let store = StoreId::parse("storeaaa").unwrap();
        let big = page(&"x".repeat(LARGEST));
        let names: Vec<String> = (0..40).map(|i| format!("env{i}")).collect();
        for name in &names {
            let ticket = cache.get(store, at(name, None)).unwrap_err();
            cache.put(ticket, store, at(name, None), &big);
            assert!(cache.state.read().bytes <= BUDGET);
        }
        // The newest is always kept; one over the largest size never is.
        assert!(cache.get(store, at("env39", None)).is_ok());
        let huge = page(&"x".repeat(LARGEST + 1));
        let ticket = cache.get(store, at("huge", None)).unwrap_err();
        cache.put(ticket, store, at("huge", None), &huge);
        assert!(cache.get(store, at("huge", None)).is_err());
    }
}
