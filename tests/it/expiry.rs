//! How long a value is kept, on real nodes over loopback with a clock moved by hand: a TTL
//! that travels with the value to the hot copies, a default TTL, errors never kept and *not
//! found* kept only where negative caching is configured, and stale values served while a
//! refresh loads or when the load fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Loads, cluster, eventually, key_owned_by};
use tower_groupcache::{ErrorKind, Groupcache, HotKeys, Loaded, ManualClock, SourceOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// A source whose value for a key is `key#n`, n counting its loads; it fails while `failing`.
#[derive(Clone, Default)]
struct Versioned {
    loads: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Versioned {
    fn source(&self, ttl: Option<Duration>) -> impl tower_groupcache::Source {
        let this = self.clone();
        move |key: String| {
            let this = this.clone();
            async move {
                if this.failing.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other("back end down"));
                }
                let n = this.loads.fetch_add(1, Ordering::SeqCst) + 1;
                let loaded = Loaded::new(format!("{key}#{n}"));
                Ok(match ttl {
                    Some(ttl) => loaded.with_ttl(ttl),
                    None => loaded,
                })
            }
        }
    }
}

#[tokio::test]
async fn ttl_expires_on_the_owner_and_on_hot_copies() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let loads = Loads::default();
    let (c, v) = (clock.clone(), versioned.clone());
    let nodes = cluster(2, &loads, move |b| {
        b.clock(c.clone())
            .hot_keys(HotKeys::AboveQps(0.0))
            .source("versioned", v.source(Some(Duration::from_secs(10))))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "ttl:");
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#1")
    );
    // The hot copy on A and the owner's copy on B both hold it now.
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#1")
    );
    assert_eq!(
        b.stats("versioned").server_requests,
        1,
        "A served it from its hot copy"
    );
    // The expiry travelled with the value: both copies expire together.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#2")
    );
    assert_eq!(b.stats("versioned").server_requests, 2);
    assert_eq!(
        b.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#2")
    );
    assert_eq!(versioned.loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_default_ttl_applies_when_the_source_gives_none() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(None),
            SourceOptions::new().ttl(Duration::from_secs(30)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(29));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
}

#[tokio::test]
async fn errors_and_not_found_are_not_cached() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    // A local load error, twice: two loads.
    let key = key_owned_by(&a.cache, &a.url, "fail:");
    for round in 1..=2 {
        let err = a.handle().get("users", &key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Load);
        let cause = std::error::Error::source(&err).expect("the source's error is kept");
        assert!(cause.to_string().contains("back end refused"), "{cause}");
        assert_eq!(loads.count(&key), round);
    }
    assert_eq!(a.stats("users").local_load_errs, 2);

    // Not found on the owner: the requester does not load it again itself.
    let key = key_owned_by(&a.cache, &b.url, "missing:");
    let err = a.handle().get("users", &key).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(loads.of(&key), [b.url.as_str()]);
    let sa = a.stats("users");
    assert_eq!((sa.peer_errors, sa.local_loads), (0, 0));
    a.handle().get("users", &key).await.unwrap_err();
    assert_eq!(loads.count(&key), 2, "not found is not cached");

    // An unknown source is a typed error, before any I/O.
    let err = a.handle().get("nope", "k").await.unwrap_err();
    assert!(err.is_unknown_source());
}

#[tokio::test]
async fn not_found_is_cached_only_when_configured() {
    let clock = ManualClock::new();
    let misses = Arc::new(AtomicUsize::new(0));
    let source = |misses: Arc<AtomicUsize>| {
        move |_key: String| {
            let misses = misses.clone();
            async move {
                misses.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Loaded::not_found())
            }
        }
    };
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source("plain", source(misses.clone()))
        .source_with(
            "negative",
            source(misses.clone()),
            SourceOptions::new().negative_ttl(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    for _ in 0..3 {
        assert!(h.get("plain", "k").await.unwrap_err().is_not_found());
    }
    assert_eq!(misses.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        assert!(h.get("negative", "k").await.unwrap_err().is_not_found());
    }
    assert_eq!(misses.load(Ordering::SeqCst), 4, "the not-found was cached");
    clock.advance(Duration::from_secs(10));
    assert!(h.get("negative", "k").await.unwrap_err().is_not_found());
    assert_eq!(misses.load(Ordering::SeqCst), 5, "and expired");
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_loads_once_in_the_background() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(Some(Duration::from_secs(10))),
            SourceOptions::new().stale_while_revalidate(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(11));
    for _ in 0..5 {
        // Expired but within the grace: the old value at once.
        let got = h.get("v", "k").await.unwrap();
        assert!(got == "k#1" || got == "k#2", "{got:?}");
    }
    eventually("the refresh landed", DEADLINE, || {
        cache.stats().source("v").unwrap().stats.local_loads == 2
    })
    .await;
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
    assert_eq!(
        versioned.loads.load(Ordering::SeqCst),
        2,
        "one background load"
    );
    assert!(cache.stats().source("v").unwrap().stats.stale_served >= 1);
    // Past the grace, a get waits for a fresh load.
    clock.advance(Duration::from_secs(200));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#3");
}

#[tokio::test]
async fn stale_if_error_serves_the_old_value_when_the_load_fails() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(Some(Duration::from_secs(10))),
            SourceOptions::new().stale_if_error(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    versioned.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        h.get("v", "k").await.unwrap(),
        "k#1",
        "stale, because the load failed"
    );
    let stats = cache.stats().source("v").unwrap().stats;
    assert_eq!((stats.stale_served, stats.local_load_errs), (1, 1));
    clock.advance(Duration::from_secs(40));
    assert!(
        h.get("v", "k").await.unwrap_err().is_load(),
        "past the window: the error"
    );
    versioned.failing.store(false, Ordering::SeqCst);
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
}
