//! The integration tests, as one crate: real nodes on 127.0.0.1 (and, for `interop`,
//! `multihost` and `node_example`, real processes), one module per
//! concern, with the code they share in `support`.

mod support;

mod architecture;
mod auth;
mod batch_requests;
mod cache_bytes;
mod config;
mod container;
mod doc_promises;
mod doc_promises_config;
mod doc_promises_hotkeys;
mod doc_promises_interop;
mod doc_promises_ops;
mod doc_promises_usage;
mod doc_promises_wire;
mod expiry;
mod hot_keys;
mod interop;
mod layer_mounting;
mod loads;
mod logs;
mod many;
mod membership;
mod monitoring;
mod multihost;
mod node_example;
mod observability;
mod owner_failures;
mod peer_client;
mod peer_health;
mod peer_path;
mod peer_stats;
mod removal;
mod request_flows;
mod responses;
mod ring_kind;
mod scale;
mod shutdown;
mod tls;
mod typed;
mod users_example;
mod writes;
