//! The peer side: the client that asks other nodes, its connections, the server that answers
//! them, peer authentication and peer health. The wire format itself is in
//! `crate::protocol`.

pub mod auth;
mod body;
pub(crate) mod client;
mod client_extensions;
mod error;
pub(crate) mod figures;
pub(crate) mod health;
mod pool;

pub(crate) mod server;
#[cfg(feature = "tls")]
pub(crate) mod tls;
