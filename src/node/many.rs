//! Many keys at once (docs/guide.md, "Many keys at once"): `get_many`, its flights, and the
//! batches they make, to the data source here and to each owner.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use rustc_hash::FxHashMap;
use tracing::Instrument as _;

use super::Node;
use super::cache::Entry;
use super::get::{LOAD_CHAIN, LoadChain, Lookup, Origin};
use super::singleflight::Outcome;
use super::source::{CachedSource, FlightKey};
use crate::error::{Error, ErrorKind};
use crate::peer::client::Speaks;

impl Node {
    /// Many keys of one source at once, for a caller on this node (docs/guide.md, "Many keys
    /// at once"): each key's result, in the order of `keys`. Hits are answered from the
    /// caches; the misses this node owns are loaded in one call of the data source, each
    /// joining a load of the key already in flight instead; the others are asked of their
    /// owners. Each key counts as a get; a key that misses twice is fetched once. (A peer's
    /// batched get is [`get_many_for_peer`](Self::get_many_for_peer).)
    pub(crate) async fn get_many<Q: AsRef<str>>(
        self: &Arc<Self>,
        name: &str,
        keys: &[Q],
    ) -> Result<Vec<Result<Bytes, Error>>, Error> {
        let source = self.source(name)?.clone();
        // The keys are looked up as they come, and answered at once while they hit: a call
        // whose keys all hit makes no map of its keys and no list but its results. From the
        // first miss on, the rest of the call goes to `get_many_from`.
        let mut results = Vec::with_capacity(keys.len());
        for (at, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            // A fresh hit as a single get takes it; any other case as `lookup_in` has it.
            if let Some(value) = self.fresh_hit_in(&source, key) {
                results.push(Ok(value));
                continue;
            }
            match self.lookup_in(&source, key, Origin::Local) {
                Ok(Lookup::Hit(entry)) => results.push(Ok(entry.value)),
                Ok(Lookup::Miss(stale)) => {
                    let rest = self.get_many_from(&source, &keys[at..], stale).await;
                    results.extend(rest.into_iter().map(|result| result.map(|e| e.value)));
                    break;
                }
                Err(error) => results.push(Err(error)),
            }
        }
        Ok(results)
    }

    /// The rest of a [`get_many`](Self::get_many) from its first miss: `keys[0]`, which
    /// missed (with `stale`, its expired entry kept for stale-if-error, if any). Each key is
    /// looked up, and counted, once per place, as a get of it would be; each distinct miss is
    /// fetched once.
    async fn get_many_from<Q: AsRef<str>>(
        self: &Arc<Self>,
        source: &Arc<CachedSource>,
        keys: &[Q],
        stale: Option<Entry>,
    ) -> Vec<Result<Entry, Error>> {
        let mut first_miss = Some(stale);
        // Each distinct key once; `slots[i]` is the place of `keys[i]` among them.
        let mut places: FxHashMap<&str, usize> =
            FxHashMap::with_capacity_and_hasher(keys.len(), Default::default());
        let mut distinct: Vec<&str> = Vec::with_capacity(keys.len());
        let slots: Vec<usize> = keys
            .iter()
            .map(|key| {
                let key = key.as_ref();
                *places.entry(key).or_insert_with(|| {
                    distinct.push(key);
                    distinct.len() - 1
                })
            })
            .collect();

        let mut results: Vec<Option<Result<Entry, Error>>> = vec![None; distinct.len()];
        // The keys in one text, which the flights of the misses share: one allocation, not
        // one per key. Made at the first miss (a call whose keys all hit makes none).
        let mut text: Option<Arc<str>> = None;
        let mut start = 0;
        let mut local = Vec::new();
        // Each owner's keys; the owners are few, and told apart by pointer (this node too,
        // once its URL has been compared).
        let mut remote: Vec<(Arc<str>, Vec<_>)> = Vec::new();
        let mut this_node: Option<&Arc<str>> = None;
        let ring = self.ring.load();
        for (place, &key) in distinct.iter().enumerate() {
            let end = start + key.len();
            let key_start = std::mem::replace(&mut start, end);
            let lookup = match first_miss.take() {
                Some(stale) => Ok(Lookup::Miss(stale)),
                None => self.lookup_in(source, key, Origin::Local),
            };
            match lookup {
                Ok(Lookup::Hit(entry)) => results[place] = Some(Ok(entry)),
                Ok(Lookup::Miss(stale)) => {
                    let text = text.get_or_insert_with(|| distinct.concat().into());
                    let miss = (place, FlightKey::part(text, key_start, end, false), stale);
                    let Some(owner) = ring.owner_arc(key) else {
                        local.push(miss);
                        continue;
                    };
                    if this_node.is_some_and(|this| Arc::ptr_eq(this, owner)) {
                        local.push(miss);
                    } else if let Some((_, keys)) =
                        remote.iter_mut().find(|(o, _)| Arc::ptr_eq(o, owner))
                    {
                        keys.push(miss);
                    } else if self.self_url.as_deref() == Some(&**owner) {
                        this_node = Some(owner);
                        local.push(miss);
                    } else {
                        let mut keys = Vec::with_capacity(16);
                        keys.push(miss);
                        remote.push((owner.clone(), keys));
                    }
                }
                Err(error) => results[place] = Some(Err(error)),
            }
        }
        drop(ring);
        // A key asked for again is looked up again, and counted, as another get of it would
        // be: a hit answers that place, and a miss shares the fetch of the key's first place.
        let mut own: Vec<Option<Result<Entry, Error>>> = Vec::new();
        if distinct.len() < slots.len() {
            own = vec![None; slots.len()];
            let mut seen = vec![false; distinct.len()];
            for (at, &place) in slots.iter().enumerate() {
                if std::mem::replace(&mut seen[place], true) {
                    match self.lookup_in(source, distinct[place], Origin::Local) {
                        Ok(Lookup::Hit(entry)) => own[at] = Some(Ok(entry)),
                        Ok(Lookup::Miss(_)) => {}
                        Err(error) => own[at] = Some(Err(error)),
                    }
                }
            }
        }

        let remote = futures_util::future::join_all(
            remote
                .into_iter()
                .map(|(owner, keys)| self.load_many_remote(source, owner, keys)),
        );
        let local = self.load_many_flights(source, local, None);
        let (remote, local) = futures_util::future::join(remote, local).await;
        for (place, result) in remote.into_iter().flatten().chain(local) {
            results[place] = Some(result);
        }
        // Each result moves to the last place that shares it, and is cloned only for a key
        // asked for more than once.
        let shares = |at: usize| own.get(at).is_none_or(Option::is_none);
        let mut uses = vec![0usize; results.len()];
        for (at, &place) in slots.iter().enumerate() {
            if shares(at) {
                uses[place] += 1;
            }
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(at, place)| {
                if let Some(result) = own.get_mut(at).and_then(Option::take) {
                    return result;
                }
                uses[place] -= 1;
                let result = if uses[place] == 0 {
                    results[place].take()
                } else {
                    results[place].clone()
                };
                result.unwrap_or_else(|| Err(Error::new(ErrorKind::Load, &source.name)))
            })
            .collect()
    }

    /// A peer's batched get of `keys` of `source`: each key's result, in order. The keys are
    /// looked up as they come, and only the misses go in a map (which allocates nothing while
    /// every key hits): a key asked for twice is looked up twice, and counted twice, as two
    /// gets of it would be; the misses, each once, are loaded here in one batch, never
    /// forwarded.
    pub(crate) async fn get_many_for_peer(
        self: &Arc<Self>,
        source: &Arc<CachedSource>,
        keys: &[&str],
    ) -> Vec<Result<Entry, Error>> {
        let mut results: Vec<Option<Result<Entry, Error>>> = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        // A key missed twice: its place, and the place of its first miss.
        let mut again = Vec::new();
        let mut first_miss: FxHashMap<&str, usize> = FxHashMap::default();
        // The misses' flights share one text of the keys, made at the first miss, as
        // `get_many_from`'s do.
        let mut text: Option<Arc<str>> = None;
        let mut start = 0;
        for (place, &key) in keys.iter().enumerate() {
            let end = start + key.len();
            let key_start = std::mem::replace(&mut start, end);
            match self.lookup_in(source, key, Origin::Peer) {
                Ok(Lookup::Hit(entry)) => results.push(Some(Ok(entry))),
                Ok(Lookup::Miss(stale)) => {
                    results.push(None);
                    match first_miss.entry(key) {
                        std::collections::hash_map::Entry::Occupied(seen) => {
                            again.push((place, *seen.get()));
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(place);
                            let text = text.get_or_insert_with(|| keys.concat().into());
                            let key = FlightKey::part(text, key_start, end, false);
                            misses.push((place, key, stale));
                        }
                    }
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        for (place, result) in self.load_many_flights(source, misses, None).await {
            results[place] = Some(result);
        }
        for (place, first) in again {
            results[place] = results[first].clone();
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(Error::new(ErrorKind::Load, &source.name))))
            .collect()
    }

    /// The misses of [`get_many`](Self::get_many) that `owner` owns. A node of this crate
    /// is asked for them in batches; a golang/groupcache node (or one not reached to learn
    /// what it speaks) gets one get per key, as for [`get`](Self::get_value).
    async fn load_many_remote(
        self: &Arc<Self>,
        source: &Arc<CachedSource>,
        owner: Arc<str>,
        keys: Vec<(usize, FlightKey, Option<Entry>)>,
    ) -> Vec<(usize, Result<Entry, Error>)> {
        // One key goes as a single get would, asking nothing first.
        if keys.len() > 1 {
            if self.health.is_skipped(&owner) {
                // Asked nothing, not even what it speaks: the batch loads its keys here and
                // counts them as skipped, as for a skipped peer of this crate.
                return self.load_many_flights(source, keys, Some(owner)).await;
            }
            let fingerprint = self.ring.load().fingerprint_header().clone();
            let speaks = self
                .client
                .speaks(&owner, &self.config.base_path, &fingerprint)
                .await;
            if matches!(speaks, Ok(Speaks::Extensions)) {
                return self.load_many_flights(source, keys, Some(owner)).await;
            }
        }
        let gets = keys.into_iter().map(|(place, key, stale)| {
            let load = self
                .clone()
                .load_entry(source.clone(), key.to_arc(), Origin::Local, stale);
            async move { (place, load.await) }
        });
        futures_util::future::join_all(gets).await
    }

    /// Misses of [`get_many`](Self::get_many): one flight per key, joined where one is
    /// running, and the new ones loaded together, from the data source here (no `owner`) or
    /// from `owner`.
    async fn load_many_flights(
        self: &Arc<Self>,
        source: &Arc<CachedSource>,
        keys: Vec<(usize, FlightKey, Option<Entry>)>,
        owner: Option<Arc<str>>,
    ) -> Vec<(usize, Result<Entry, Error>)> {
        if keys.is_empty() {
            return Vec::new();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let error = Error::new(ErrorKind::NoRuntime, &source.name);
            return keys
                .into_iter()
                .map(|(place, _, _)| (place, Err(error.clone())))
                .collect();
        };
        // A data source that reads, through this cache, a key that it (or a load it waits
        // for) is loading would wait for itself forever.
        let loading = LoadChain::current();
        let (recursive, keys): (Vec<_>, Vec<_>) = match &loading {
            None => (Vec::new(), keys),
            Some(chain) => keys
                .into_iter()
                .partition(|(_, key, _)| chain.contains(source, key.key())),
        };
        // The keys go to their flights; what is left of each is its place and stale entry.
        let remote = owner.is_some();
        let (keys, flight_keys): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .map(|(place, key, stale)| ((place, stale), key.asking(remote)))
            .unzip();
        let batch = source.flights.run_batch(&runtime, flight_keys, |batch| {
            let count = batch.len();
            let chain = LoadChain::push_flights(loading.clone(), source, batch.keys.clone());
            let span =
                tracing::debug_span!("groupcache.get_many", source = %source.name, keys = count);
            let (node, loaded_from, owner) = (self.clone(), source.clone(), owner.clone());
            // Counted from the moment the flights exist, so a shutdown that starts now waits
            // for them.
            let drain = self.drain.begin();
            LOAD_CHAIN
                .scope(chain, async move {
                    let _counted = drain;
                    // Boxed where it starts, as a single load is (start_flight). The results
                    // are in the order of the keys.
                    match owner {
                        Some(owner) => {
                            Box::pin(node.fetch_batch(&owner, &loaded_from, &batch)).await
                        }
                        None => Box::pin(node.load_batch(&loaded_from, &batch)).await,
                    }
                })
                .instrument(span)
        });
        // The keys joined in flight and the batch of the others, driven here together.
        let joined = futures_util::future::join_all(
            batch
                .joined
                .into_iter()
                .map(|(place, waiter)| waiter.map(move |outcome| (place, outcome))),
        );
        let joined_batches = futures_util::future::join_all(
            batch
                .joined_batches
                .into_iter()
                .map(|(places, waiter)| waiter.map(move |outcome| (places, outcome))),
        );
        let started = async {
            match batch.started {
                Some((places, waiter)) => Some((places, waiter.await)),
                None => None,
            }
        };
        let (joined, joined_batches, started) =
            futures_util::future::join3(joined, joined_batches, started).await;
        let mut outcomes: Vec<Option<Outcome<Result<Entry, Error>>>> = vec![None; keys.len()];
        for (place, outcome) in joined {
            outcomes[place] = Some(outcome);
        }
        for (places, outcome) in joined_batches {
            for (place, nth) in places {
                outcomes[place] = Some(outcome.nth(nth));
            }
        }
        if let Some((places, outcome)) = started {
            for (place, outcome) in places.into_iter().zip(outcome.into_each()) {
                outcomes[place] = Some(outcome);
            }
        }
        let recursive = recursive.into_iter().map(|(place, _, _)| {
            (
                place,
                Err(Error::new(ErrorKind::RecursiveLoad, &source.name)),
            )
        });
        keys.into_iter()
            .zip(outcomes)
            .map(|((place, stale), outcome)| {
                let outcome = outcome.unwrap_or(Outcome::Panicked);
                (place, self.settle(source, outcome, stale))
            })
            .chain(recursive)
            .collect()
    }
}
