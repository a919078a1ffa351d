//! The get flow: the caches, then one load per key at a time (docs/guide.md, "The request
//! flow").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tracing::Instrument as _;

use super::Node;
use super::cache::{Entry, Freshness, Tier};
use super::singleflight::Outcome;
use super::source::{CachedSource, FlightKey};
use crate::error::{Error, ErrorKind};
use crate::stats::Event;

/// Whether a get came from this node's callers or from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Peer,
}

impl Node {
    /// The get flow: cache, then one load per key, from the owning peer or the data source.
    ///
    /// The cache is looked up before any future is made; a hit returns a small ready future,
    /// and only a miss allocates the (large) future of a load.
    pub(crate) fn get_entry(self: &Arc<Self>, name: &str, key: &str, origin: Origin) -> Get<Entry> {
        self.get(name, key, origin)
    }

    /// The value of `key` when one of this node's caches holds it fresh: one lookup, one
    /// counter, no future. `None` leaves every other case, and its counting, to
    /// [`get_value`](Self::get_value).
    #[inline(always)]
    pub(crate) fn fresh_hit(&self, name: &str, key: &str) -> Option<Bytes> {
        self.fresh_hit_in(self.sources.get(name)?, key)
    }

    /// [`fresh_hit`](Self::fresh_hit) in `source`.
    #[inline(always)]
    pub(super) fn fresh_hit_in(&self, source: &CachedSource, key: &str) -> Option<Bytes> {
        if key.len() > self.config.max_key_bytes {
            return None;
        }
        let (value, tier) = source.caches.fresh_value(key, &*self.clock)?;
        source.counters.add(tier.hit_event());
        Some(value)
    }

    /// [`get_entry`](Self::get_entry) for a caller that wants only the value.
    pub(crate) fn get_value(self: &Arc<Self>, name: &str, key: &str) -> Get<Bytes> {
        self.get(name, key, Origin::Local)
    }

    #[inline]
    fn get<T: FromEntry>(self: &Arc<Self>, name: &str, key: &str, origin: Origin) -> Get<T> {
        let source = match self.source(name) {
            Ok(source) => source,
            Err(error) => return Get::Ready(Some(Err(error))),
        };
        match self.lookup_in(source, key, origin) {
            Ok(Lookup::Hit(entry)) => Get::Ready(Some(Ok(T::from_entry(entry)))),
            Ok(Lookup::Miss(stale)) => {
                Get::Load(self.load_boxed(source.clone(), key, origin, stale))
            }
            Err(error) => Get::Ready(Some(Err(error))),
        }
    }

    fn load_boxed(
        self: &Arc<Self>,
        source: Arc<CachedSource>,
        key: &str,
        origin: Origin,
        stale: Option<Entry>,
    ) -> BoxedLoad {
        Box::pin(self.clone().load_entry(source, key.into(), origin, stale))
    }

    /// The synchronous part of a get, in its source: checks, counters, and the caches.
    pub(super) fn lookup_in(
        self: &Arc<Self>,
        source: &Arc<CachedSource>,
        key: &str,
        origin: Origin,
    ) -> Result<Lookup, Error> {
        let name = &*source.name;
        if key.len() > self.config.max_key_bytes {
            return Err(Error::new(ErrorKind::KeyTooLong, name));
        }
        let counters = source.counters.stripe();
        if origin == Origin::Peer {
            counters.add(Event::ServerRequest);
        }
        let mut stale = None;
        if let Some((entry, freshness, tier)) = source.caches.get(key, &*self.clock) {
            if freshness == Freshness::Fresh || self.may_serve_stale(source, &entry) {
                counters.add(tier.hit_event());
                if freshness == Freshness::Stale {
                    counters.add(Event::StaleServed);
                    self.refresh(source, key, origin);
                }
                return entry_result(entry, name).map(Lookup::Hit);
            }
            stale = Some(entry);
        }
        counters.add(Event::Load);
        Ok(Lookup::Miss(stale))
    }

    /// Whether a stale entry is inside its stale-while-revalidate grace.
    fn may_serve_stale(&self, source: &CachedSource, entry: &Entry) -> bool {
        let grace = source.options.stale_while_revalidate;
        !grace.is_zero()
            && entry
                .expires
                .and_then(|at| at.checked_add(grace))
                .is_some_and(|until| self.clock.now() < until)
    }

    /// Starts one background load of `key` (joined by any load already running).
    fn refresh(self: &Arc<Self>, source: &Arc<CachedSource>, key: &str, origin: Origin) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key: Arc<str> = key.into();
        // Its waiter, dropped at once, hands the load to a task of its own.
        drop(self.start_flight(&runtime, source, key, origin));
    }

    /// A miss: joins or starts the one load of the key.
    pub(super) async fn load_entry(
        self: Arc<Self>,
        source: Arc<CachedSource>,
        key: Arc<str>,
        origin: Origin,
        stale: Option<Entry>,
    ) -> Result<Entry, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::new(ErrorKind::NoRuntime, &source.name))?;
        let flight = self.start_flight(&runtime, &source, key, origin)?;
        self.settle(&source, flight.await, stale)
    }

    /// A flight's outcome as the get's result: a cached *not found* as one, and the stale
    /// value instead of a failed load within stale-if-error.
    pub(super) fn settle(
        &self,
        source: &CachedSource,
        outcome: Outcome<Result<Entry, Error>>,
        stale: Option<Entry>,
    ) -> Result<Entry, Error> {
        let result = match outcome {
            Outcome::Done(result) => result,
            Outcome::Panicked => Err(Error::new(ErrorKind::LoadPanicked, &source.name)),
        };
        match (result, stale) {
            (Err(error), Some(stale))
                if error.is_load() && self.within_stale_if_error(source, &stale) =>
            {
                source.counters.add(Event::StaleServed);
                tracing::debug!(source = %source.name, %error, "load failed; serving the stale value");
                Ok(stale)
            }
            (result, _) => result.and_then(|entry| entry_result(entry, &source.name)),
        }
    }

    fn within_stale_if_error(&self, source: &CachedSource, entry: &Entry) -> bool {
        let window = source.options.stale_if_error;
        !window.is_zero()
            && !entry.negative
            && entry
                .expires
                .and_then(|at| at.checked_add(window))
                .is_some_and(|until| self.clock.now() < until)
    }

    /// Joins or starts the flight of `key`.
    fn start_flight(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        source: &Arc<CachedSource>,
        key: Arc<str>,
        origin: Origin,
    ) -> Result<impl Future<Output = Outcome<Result<Entry, Error>>> + Send + 'static, Error> {
        // A data source that reads, through this cache, a key that it (or a load it waits for)
        // is loading would wait for itself forever.
        let loading = LoadChain::current();
        if loading
            .as_ref()
            .is_some_and(|chain| chain.contains(source, &key))
        {
            return Err(Error::new(ErrorKind::RecursiveLoad, &source.name));
        }
        // A peer request is never forwarded: it is served from here even where this node's
        // ring names another owner, so rings that disagree cannot make requests loop.
        let owner = match origin {
            Origin::Local => self.remote_owner(&key),
            Origin::Peer => None,
        };
        let span = tracing::debug_span!(
            "groupcache.get",
            source = %source.name,
            from_peer = origin == Origin::Peer,
            owner = owner.as_deref(),
            key = tracing::field::Empty,
        );
        let span = self.with_key(span, &key);
        let flight_key = FlightKey::whole(key.clone(), owner.is_some());
        Ok(source.flights.run(runtime, flight_key, move |ticket| {
            let (node, source) = (self.clone(), source.clone());
            let chain = LoadChain::push(loading, &source, key.clone());
            // Counted from the moment the flight exists, so a shutdown that starts now waits
            // for it.
            let drain = node.drain.begin();
            // The load's future is large (kilobytes: the peer request's, the data source's);
            // boxed where it starts, it is written once, not copied by each of the layers
            // that wrap the flight (the chain's scope, the span, the flight's own task).
            LOAD_CHAIN
                .scope(chain, async move {
                    let _counted = drain;
                    Box::pin(node.load(&source, key, owner, &ticket)).await
                })
                .instrument(span)
        }))
    }
}

impl Tier {
    fn hit_event(self) -> Event {
        match self {
            Tier::Main => Event::MainHit,
            Tier::Hot => Event::HotHit,
        }
    }

    pub(super) fn flight_hit_event(self) -> Event {
        match self {
            Tier::Main => Event::FlightMainHit,
            Tier::Hot => Event::FlightHotHit,
        }
    }
}

pub(super) enum Lookup {
    Hit(Entry),
    /// A miss, with the entry that expired, if one is kept for stale-if-error.
    Miss(Option<Entry>),
}

/// A cached *not found* answers as one.
fn entry_result(entry: Entry, name: &str) -> Result<Entry, Error> {
    if entry.negative {
        Err(Error::new(ErrorKind::NotFound, name))
    } else {
        Ok(entry)
    }
}

type BoxedLoad = Pin<Box<dyn Future<Output = Result<Entry, Error>> + Send>>;

/// What a get gives: the whole entry (the peer server sends its expiry), or the value alone.
pub(crate) trait FromEntry {
    fn from_entry(entry: Entry) -> Self;
}

impl FromEntry for Entry {
    fn from_entry(entry: Entry) -> Self {
        entry
    }
}

impl FromEntry for Bytes {
    #[inline]
    fn from_entry(entry: Entry) -> Self {
        entry.value
    }
}

/// The future of a get: ready at once on a hit, a boxed load on a miss.
pub(crate) enum Get<T> {
    Ready(Option<Result<T, Error>>),
    Load(BoxedLoad),
}

impl<T: FromEntry + Unpin> Future for Get<T> {
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(result) => {
                Poll::Ready(result.take().expect("Get polled after it completed"))
            }
            Self::Load(load) => load
                .as_mut()
                .poll(cx)
                .map(|result| result.map(T::from_entry)),
        }
    }
}

tokio::task_local! {
    /// The keys that the loads running on this task's call path are loading: set around each
    /// load, so a get made from inside a data source can tell that it waits for itself.
    pub(super) static LOAD_CHAIN: Option<Arc<LoadChain>>;
}

/// One load on a call path, and the load that waits for it.
pub(crate) struct LoadChain {
    /// The source's address, which tells a source of this cache from one of another cache
    /// in the process. Compared only; the load holds the source alive.
    source: usize,
    keys: ChainKeys,
    parent: Option<Arc<LoadChain>>,
}

/// The key of a load, or the keys of a batch: one key needs no slice of its own, and a
/// batch of flights shares its keys' list.
enum ChainKeys {
    One(Arc<str>),
    Many(Box<[Arc<str>]>),
    Flights(Arc<[FlightKey]>),
}

impl ChainKeys {
    fn contains(&self, key: &str) -> bool {
        match self {
            Self::One(one) => **one == *key,
            Self::Many(many) => many.iter().any(|k| **k == *key),
            Self::Flights(flights) => flights.iter().any(|k| k.key() == key),
        }
    }
}

impl LoadChain {
    /// The loads the current task runs inside, if any.
    pub(super) fn current() -> Option<Arc<LoadChain>> {
        LOAD_CHAIN.try_with(Clone::clone).ok().flatten()
    }

    fn push(
        parent: Option<Arc<LoadChain>>,
        source: &CachedSource,
        key: Arc<str>,
    ) -> Option<Arc<Self>> {
        Self::link(parent, source, ChainKeys::One(key))
    }

    pub(super) fn push_many(
        parent: Option<Arc<LoadChain>>,
        source: &CachedSource,
        keys: Box<[Arc<str>]>,
    ) -> Option<Arc<Self>> {
        Self::link(parent, source, ChainKeys::Many(keys))
    }

    /// The link of a batch of flights, which loads their keys.
    pub(super) fn push_flights(
        parent: Option<Arc<LoadChain>>,
        source: &CachedSource,
        keys: Arc<[FlightKey]>,
    ) -> Option<Arc<Self>> {
        Self::link(parent, source, ChainKeys::Flights(keys))
    }

    fn link(
        parent: Option<Arc<LoadChain>>,
        source: &CachedSource,
        keys: ChainKeys,
    ) -> Option<Arc<Self>> {
        Some(Arc::new(Self {
            source: std::ptr::from_ref(source) as usize,
            keys,
            parent,
        }))
    }

    pub(super) fn contains(&self, source: &CachedSource, key: &str) -> bool {
        let mut link = Some(self);
        while let Some(chain) = link {
            if chain.source == std::ptr::from_ref(source) as usize && chain.keys.contains(key) {
                return true;
            }
            link = chain.parent.as_deref();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::SourceOptions;

    fn cached(name: &str) -> Arc<CachedSource> {
        let source = |key: String| async move { Ok::<_, std::io::Error>(key) };
        Arc::new(CachedSource::new(
            name,
            Arc::new(source),
            SourceOptions::new(),
            1 << 20,
            0.125,
            0,
            std::time::Instant::now(),
        ))
    }

    #[test]
    fn a_load_chain_knows_each_key_it_waits_for_and_nothing_else() {
        let (users, orders) = (cached("users"), cached("orders"));
        let outer = LoadChain::push(None, &users, "k".into());
        let inner = LoadChain::push(outer, &orders, "o".into()).unwrap();
        assert!(inner.contains(&orders, "o"), "its own key");
        assert!(
            inner.contains(&users, "k"),
            "the key of the load it runs inside"
        );
        assert!(
            !inner.contains(&users, "o"),
            "another source's key of that name"
        );
        assert!(!inner.contains(&orders, "k"));
        // Another cache's source of the same name is another source.
        assert!(!inner.contains(&cached("users"), "k"));
        // A batch's link holds each of its keys.
        let batch = LoadChain::push_many(Some(inner), &users, ["a".into(), "b".into()].into())
            .expect("a link");
        assert!(batch.contains(&users, "a") && batch.contains(&users, "b"));
        assert!(batch.contains(&orders, "o"), "and the chain it runs inside");
        assert!(!batch.contains(&users, "c"));
        // So does a batch of flights, remote or not.
        let flights = LoadChain::push_flights(
            Some(batch),
            &orders,
            [
                FlightKey::whole("x".into(), true),
                FlightKey::whole("y".into(), false),
            ]
            .into(),
        )
        .expect("a link");
        assert!(flights.contains(&orders, "x") && flights.contains(&orders, "y"));
        assert!(
            flights.contains(&users, "a"),
            "and the chain it runs inside"
        );
        assert!(!flights.contains(&users, "x") && !flights.contains(&orders, "z"));
    }

    #[tokio::test]
    async fn the_chain_of_a_task_is_the_one_its_load_runs_in() {
        let users = cached("users");
        assert!(LoadChain::current().is_none(), "outside any load");
        let chain = LoadChain::push(None, &users, "k".into());
        let seen = LOAD_CHAIN
            .scope(chain, async { LoadChain::current() })
            .await;
        assert!(seen.is_some_and(|chain| chain.contains(&users, "k")));
    }
}
