//! The builder's checks and its environment variables.

use super::*;

fn source() -> impl Source {
    |key: String| async move { Ok::<_, std::io::Error>(key) }
}

#[test]
fn refuses_bad_urls() {
    for url in [
        "",
        "127.0.0.1:8080",
        "ftp://host",
        "http://",
        "http://host:8080/",
        "http://host:8080/path",
        "http://host:8080?q",
        "http://user@host:8080",
        "http://host:notaport",
        "https://host",
        "http://ho st",
    ] {
        let err = Groupcache::builder()
            .open_peer_path()
            .self_url(url)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidUrl { .. }),
            "{url:?}: {err}"
        );
        let err = Groupcache::builder()
            .open_peer_path()
            .self_url("http://ok:1")
            .peers([url])
            .build()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidUrl { .. }),
            "{url:?}: {err}"
        );
    }
    for url in ["http://host", "http://10.0.0.1:8080", "http://[::1]:80"] {
        Groupcache::builder()
            .open_peer_path()
            .self_url(url)
            .build()
            .unwrap();
    }
}

#[test]
fn refuses_bad_settings() {
    let b = Groupcache::builder;
    assert_eq!(
        b().replicas(0).build().unwrap_err(),
        ConfigError::ZeroReplicas
    );
    assert!(matches!(
        b().peer_timeout(Duration::ZERO).build().unwrap_err(),
        ConfigError::ZeroLimit(_)
    ));
    assert_eq!(
        b().peer_idle_timeout(Duration::ZERO).build().unwrap_err(),
        ConfigError::ZeroLimit("peer idle timeout")
    );
    assert_eq!(
        b().max_connections_per_peer(0).build().unwrap_err(),
        ConfigError::ZeroLimit("max connections per peer")
    );
    b().max_connections_per_peer(usize::MAX).build().unwrap();
    assert_eq!(
        b().max_batch_keys(0).build().unwrap_err(),
        ConfigError::ZeroLimit("max batch keys")
    );
    assert_eq!(
        b().max_batch_keys(100_001).build().unwrap_err(),
        ConfigError::TooManyBatchKeys(100_001)
    );
    assert_eq!(
        b().max_batch_keys(usize::MAX)
            .build()
            .unwrap_err()
            .to_string(),
        format!(
            "max batch keys {} is above the maximum of 100000",
            usize::MAX
        )
    );
    b().max_batch_keys(1).build().unwrap();
    b().max_batch_keys(100_000).build().unwrap();
    for path in [
        "",
        "/",
        "_groupcache/",
        "/_groupcache",
        "/a b/",
        "/a?/",
        "//x/",
        "/%41/",
    ] {
        assert!(
            matches!(
                b().base_path(path).build().unwrap_err(),
                ConfigError::InvalidBasePath { path: p, .. } if p == path
            ),
            "{path:?}"
        );
    }
    assert_eq!(
        b().peers(["http://a:1"]).build().unwrap_err(),
        ConfigError::MissingSelfUrl
    );
    assert_eq!(
        b().source("users", source())
            .source("users", source())
            .build()
            .unwrap_err(),
        ConfigError::DuplicateSource("users".into())
    );
    for name in ["", "a/b"] {
        assert_eq!(
            b().source(name, source()).build().unwrap_err(),
            ConfigError::InvalidSourceName(name.into())
        );
    }
}

#[test]
fn reads_the_environment() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let cache = GroupcacheBuilder::from_env_lookup(
        "PARSEC",
        env(&[
            ("PARSEC_SELF_URL", "http://a:1"),
            ("PARSEC_PEER_URLS", " http://a:1, http://b:1 ,,"),
            ("PARSEC_CACHE_BYTES", "1024"),
            ("PARSEC_BASE_PATH", "/cache/"),
            ("PARSEC_PEER_SECRET", "0123456789abcdef0123456789abcdef"),
            ("OTHER_REPLICAS", "0"),
        ]),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(cache.stats().cluster.peers, ["http://a:1", "http://b:1"]);
    assert_eq!(cache.self_url(), Some("http://a:1"));

    let single = GroupcacheBuilder::from_env_lookup("PARSEC", env(&[]))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        single.stats().cluster.count,
        0,
        "no peer list: single-node mode"
    );

    let err = GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_CACHE_BYTES", "64MiB")]))
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Env {
            variable: "PARSEC_CACHE_BYTES".into(),
            reason: "`64MiB` is not a whole number".into()
        }
    );
    assert!(err.to_string().contains("PARSEC_CACHE_BYTES"));
    let err =
        GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_OPEN_PEER_PATH", "maybe")]))
            .unwrap_err();
    assert!(
        matches!(err, ConfigError::Env { variable, .. } if variable == "PARSEC_OPEN_PEER_PATH")
    );
    let err = GroupcacheBuilder::from_env_lookup(
        "PARSEC",
        env(&[
            ("PARSEC_SELF_URL", "http://a:1"),
            ("PARSEC_PEER_URLS", "http://b:1"),
        ]),
    )
    .unwrap()
    .build()
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::PeerAuthRequired,
        "a cluster needs a secret or an open path"
    );
    let err =
        GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_PEER_TIMEOUT_MS", "-1")]))
            .unwrap_err();
    assert!(
        matches!(err, ConfigError::Env { variable, .. } if variable == "PARSEC_PEER_TIMEOUT_MS")
    );
    let err =
        GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_PEER_IDLE_TIMEOUT_MS", "0")]))
            .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Env {
            variable: "PARSEC_PEER_IDLE_TIMEOUT_MS".into(),
            reason: "peer idle timeout must be greater than zero".into()
        }
    );
    let builder = GroupcacheBuilder::from_env_lookup(
        "PARSEC",
        env(&[("PARSEC_MAX_CONNECTIONS_PER_PEER", "8")]),
    )
    .unwrap();
    assert_eq!(builder.max_connections_per_peer, 8);
    let builder =
        GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_MAX_BATCH_KEYS", "250")]))
            .unwrap();
    assert_eq!(builder.max_batch_keys, 250);
    let err =
        GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_PEER_URLS", "http://b:1")]))
            .unwrap()
            .build()
            .unwrap_err();
    assert_eq!(err, ConfigError::MissingSelfUrl);
}

#[test]
fn refuses_rings_too_large() {
    let b = || {
        Groupcache::builder()
            .open_peer_path()
            .self_url("http://a:1")
    };
    for replicas in [usize::MAX, 1 << 40, 10_000_000, 10_001] {
        let err = b()
            .replicas(replicas)
            .peers(["http://b:1"])
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::TooManyReplicas(replicas));
        assert!(err.to_string().contains("10000"), "{replicas}: {err}");
    }
    // This node and a hundred peers: 101 × 10,000 points.
    let cache = b().replicas(crate::MAX_REPLICAS).build().unwrap();
    let peers: Vec<String> = (0..100).map(|i| format!("http://p{i}:1")).collect();
    let too_large = ConfigError::RingTooLarge {
        peers: 101,
        replicas: 10_000,
    };
    let before = cache.stats().cluster.peers;
    assert_eq!(cache.set_peers(peers.clone()).unwrap_err(), too_large);
    assert_eq!(
        cache.stats().cluster.peers,
        before,
        "a refused list changes nothing"
    );
    let err = b().replicas(10_000).peers(peers).build().unwrap_err();
    assert_eq!(err, too_large);
    assert!(err.to_string().contains("1010000 points"), "{err}");
    assert!(err.to_string().contains("1000000"), "{err}");
}

#[test]
fn refuses_contradictory_peer_health() {
    let health = |cooldown, max_cooldown| PeerHealthConfig {
        failure_threshold: 3,
        cooldown,
        max_cooldown,
    };
    let b = Groupcache::builder;
    let err = b()
        .peer_health(health(Duration::from_secs(60), Duration::from_secs(30)))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidPeerHealth(_)), "{err}");
    assert!(err.to_string().contains("cooldown"), "{err}");
    let err = b()
        .peer_health(health(Duration::ZERO, Duration::from_secs(30)))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidPeerHealth(_)), "{err}");
    assert!(err.to_string().contains("cooldown"), "{err}");
    b().peer_health(health(Duration::MAX, Duration::MAX))
        .build()
        .unwrap();
    // Skipping off: the cooldowns are not used.
    b().peer_health(PeerHealthConfig {
        failure_threshold: 0,
        ..health(Duration::ZERO, Duration::ZERO)
    })
    .build()
    .unwrap();
}

#[test]
fn refuses_a_previous_secret_alone() {
    let err = Groupcache::builder()
        .self_url("http://a:1")
        .peers(["http://b:1"])
        .previous_peer_secret("the old secret, 32 bytes or more, still valid")
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::PreviousPeerSecretOnly);
    assert!(err.to_string().contains("previous"), "{err}");
}

#[test]
fn refuses_short_secrets() {
    let b = || {
        Groupcache::builder()
            .self_url("http://a:1")
            .peers(["http://b:1"])
    };
    let long = "0123456789abcdef0123456789abcdef";
    b().peer_secret(long).build().unwrap();
    for short in ["", "s3cret", &long[1..]] {
        let err = b().peer_secret(short).build().unwrap_err();
        assert_eq!(
            err,
            ConfigError::ShortPeerSecret {
                previous: false,
                len: short.len()
            }
        );
        assert!(err.to_string().contains("32"), "{short:?}: {err}");
        let err = b()
            .peer_secret(long)
            .previous_peer_secret(short)
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::ShortPeerSecret {
                previous: true,
                len: short.len()
            }
        );
        assert!(err.to_string().contains("32"), "{short:?}: {err}");
    }
    // The same secret as current and previous is one secret.
    b().peer_secret(long)
        .previous_peer_secret(long)
        .build()
        .unwrap();
}

#[test]
fn spells_hosts_in_lower_case() {
    let cache = Groupcache::builder()
        .open_peer_path()
        .self_url("HTTP://Node-1:8080")
        .peers(["http://node-1:8080", "http://NODE-2:8080", "Http://[::A]:1"])
        .build()
        .unwrap();
    let cluster = cache.stats().cluster;
    assert_eq!(
        cluster.peers,
        ["http://node-1:8080", "http://node-2:8080", "http://[::a]:1"]
    );
    assert_eq!(cache.self_url(), Some("http://node-1:8080"));
    cache
        .set_peers(["http://NODE-1:8080", "http://Node-3:8080"])
        .unwrap();
    assert_eq!(
        cache.stats().cluster.peers,
        ["http://node-1:8080", "http://node-3:8080"]
    );
}

#[test]
fn an_empty_peer_list_keeps_this_node() {
    let cache = Groupcache::builder()
        .open_peer_path()
        .self_url("http://a:1")
        .peers(["http://a:1", "http://b:1"])
        .build()
        .unwrap();
    cache.set_peers(Vec::<String>::new()).unwrap();
    assert_eq!(cache.stats().cluster.peers, ["http://a:1"]);
    assert_eq!(cache.ring().owner("k"), Some("http://a:1"));

    let no_self = Groupcache::builder().build().unwrap();
    no_self.set_peers(Vec::<String>::new()).unwrap();
    assert_eq!(no_self.stats().cluster.count, 0, "single-node mode");
}

#[test]
fn refuses_a_connect_timeout_above_the_peer_timeout() {
    let err = Groupcache::builder()
        .peer_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::ConnectTimeoutAbovePeerTimeout {
            connect: Duration::from_secs(2),
            peer: Duration::from_secs(1)
        }
    );
    assert!(err.to_string().contains("connect timeout"), "{err}");
    // The default connect timeout follows a shorter peer timeout.
    Groupcache::builder()
        .peer_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Groupcache::builder()
        .peer_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
}

#[test]
fn refuses_hot_key_thresholds_that_are_not_rates() {
    for qps in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, -0.0001] {
        let err = Groupcache::builder()
            .hot_keys(HotKeys::AboveQps(qps))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidHotKeyRate(_)),
            "{qps}: {err}"
        );
        assert!(err.to_string().contains("hot"), "{qps}: {err}");
    }
    for qps in [0.0, 0.05, f64::MAX] {
        Groupcache::builder()
            .hot_keys(HotKeys::AboveQps(qps))
            .build()
            .unwrap();
    }
}

#[test]
fn refuses_base_paths_with_dot_segments_or_the_root() {
    for path in ["/../", "/./", "/a/../b/", "/a/./", "/../a/", "/a/.."] {
        let err = Groupcache::builder().base_path(path).build().unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidBasePath { path: p, .. } if p == path),
            "{path}: {err}"
        );
        assert!(
            err.to_string().contains("`..` segment") || err.to_string().contains("end with"),
            "{path}: {err}"
        );
    }
    let err = Groupcache::builder().base_path("/").build().unwrap_err();
    assert!(
        err.to_string().contains("every request"),
        "the real reason: {err}"
    );
    for path in ["/.well-known/cache/", "/a.b/", "/.../", "/_groupcache/v2/"] {
        Groupcache::builder().base_path(path).build().unwrap();
    }
}

#[test]
fn env_values_out_of_range_name_their_variable() {
    for (variable, value) in [
        ("PARSEC_REPLICAS", "0"),
        ("PARSEC_REPLICAS", "10001"),
        ("PARSEC_PEER_TIMEOUT_MS", "0"),
        ("PARSEC_CONNECT_TIMEOUT_MS", "0"),
        ("PARSEC_PEER_IDLE_TIMEOUT_MS", "0"),
        ("PARSEC_MAX_CONNECTIONS_PER_PEER", "0"),
        ("PARSEC_MAX_BATCH_KEYS", "0"),
        ("PARSEC_MAX_BATCH_KEYS", "100001"),
        ("PARSEC_PEER_SECRET", "s3cret"),
        ("PARSEC_PEER_SECRET_PREVIOUS", "s3cret"),
        ("PARSEC_BASE_PATH", "/../"),
        ("PARSEC_BASE_PATH", "/"),
        ("PARSEC_BASE_PATH", "_groupcache/"),
    ] {
        let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| {
            (name == variable).then(|| value.to_owned())
        })
        .map(|_| ())
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { variable: v, .. } if v == variable),
            "{variable}={value}: {err}"
        );
    }
    let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| {
        (name == "PARSEC_REPLICAS").then(|| "10001".to_owned())
    })
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable PARSEC_REPLICAS: ring replicas 10001 is above the maximum of 10000"
    );
    let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| {
        (name == "PARSEC_MAX_BATCH_KEYS").then(|| "200000".to_owned())
    })
    .map(|_| ())
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Env {
            variable: "PARSEC_MAX_BATCH_KEYS".to_owned(),
            reason: ConfigError::TooManyBatchKeys(200_000).to_string(),
        }
    );
    // In range, and trimmed.
    let b = GroupcacheBuilder::from_env_lookup("PARSEC", |name| match name {
        "PARSEC_REPLICAS" => Some(" 10000 ".into()),
        "PARSEC_PEER_SECRET" => Some(" 0123456789abcdef0123456789abcdef ".into()),
        "PARSEC_PEER_SECRET_PREVIOUS" => Some("fedcba9876543210fedcba9876543210".into()),
        "PARSEC_BASE_PATH" => Some(" /cache/v2/ ".into()),
        "PARSEC_CONNECT_TIMEOUT_MS" => Some("1".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(b.replicas, 10_000);
    assert_eq!(b.base_path, "/cache/v2/");
    assert_eq!(b.peer_secret.as_ref().map(PeerSecret::len), Some(32));
    assert_eq!(b.previous_peer_secrets.len(), 1);
    b.build().unwrap();
    // What depends on other settings is left to `build`.
    let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| match name {
        "PARSEC_PEER_TIMEOUT_MS" => Some("100".into()),
        "PARSEC_CONNECT_TIMEOUT_MS" => Some("200".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::ConnectTimeoutAbovePeerTimeout { .. }
    ));
}

#[test]
fn adds_self_to_the_peers() {
    let cache = Groupcache::builder()
        .open_peer_path()
        .self_url("http://a:1")
        .peers(["http://b:1", "http://c:1"])
        .build()
        .unwrap();
    let cluster = cache.stats().cluster;
    assert_eq!(cluster.peers, ["http://b:1", "http://c:1", "http://a:1"]);
    assert_eq!(cluster.self_url.as_deref(), Some("http://a:1"));

    let alone = Groupcache::builder()
        .open_peer_path()
        .self_url("http://a:1")
        .build()
        .unwrap();
    assert_eq!(
        alone.stats().cluster.peers,
        ["http://a:1"],
        "no peers but a self URL: a ring of one, this node"
    );
    let single = Groupcache::builder().build().unwrap();
    assert_eq!(
        single.stats().cluster.count,
        0,
        "no peers and no self URL: single-node mode"
    );
}
