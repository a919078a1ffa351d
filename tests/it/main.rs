//! The integration tests, as one crate: real nodes on 127.0.0.1 (and, for `interop`,
//! `multihost` and `node_script`, real processes), one module per
//! concern, with the code they share in `support`.

mod support;

mod auth;
mod cluster;
mod config;
mod hardening;
mod hotkeys_ttl;
mod interop;
mod membership;
mod multihost;
mod node_script;
mod observability;
mod peer_client;
mod peer_path;
mod responses;
mod tls;
