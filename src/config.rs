//! The rules of a node's settings that the builder, the environment reader and a change of
//! peers share: peer URLs, the base path, peer secrets and the need for one.

use std::sync::Arc;

use crate::error::ConfigError;
use crate::peer::auth::{PeerAuth, PeerSecret};

/// The shortest peer secret accepted, in bytes: 32, the output size of the HMAC-SHA256 that
/// signs peer requests.
pub const MIN_PEER_SECRET_BYTES: usize = 32;

/// Whether the peer list names another node; a node with others needs a peer secret, or
/// an open peer path chosen on purpose.
pub(crate) fn check_peer_auth(
    peers: &[String],
    self_url: Option<&str>,
    has_secret: bool,
    open_peer_path: bool,
) -> Result<bool, ConfigError> {
    let others = peers.iter().any(|p| Some(p.as_str()) != self_url);
    if others && !has_secret && !open_peer_path {
        return Err(ConfigError::PeerAuthRequired);
    }
    Ok(others)
}

/// The signer and checker of peer requests: the current secret signs, and it and the
/// previous ones are accepted. `None` without secrets.
pub(crate) fn peer_auth(
    current: Option<PeerSecret>,
    previous: Vec<PeerSecret>,
) -> Result<Option<Arc<PeerAuth>>, ConfigError> {
    let Some(current) = current else {
        if previous.is_empty() {
            return Ok(None);
        }
        return Err(ConfigError::PreviousPeerSecretOnly);
    };
    check_secret_length(&current, false)?;
    for secret in &previous {
        check_secret_length(secret, true)?;
    }
    let mut secrets = vec![current];
    for secret in previous {
        if !secrets.contains(&secret) {
            secrets.push(secret);
        }
    }
    Ok(Some(Arc::new(PeerAuth::new(secrets))))
}

/// A secret of at least [`MIN_PEER_SECRET_BYTES`].
pub(crate) fn check_secret_length(secret: &PeerSecret, previous: bool) -> Result<(), ConfigError> {
    if secret.len() < MIN_PEER_SECRET_BYTES {
        return Err(ConfigError::ShortPeerSecret {
            previous,
            len: secret.len(),
        });
    }
    Ok(())
}

/// Checks every peer URL and spells it as [`normalize_url`] does, and adds `self_url` (already
/// normalized) if it is missing. With a self URL this node is always on the ring, so an empty
/// list gives a ring of one; without one, an empty list is single-node mode and any other is
/// refused.
pub(crate) fn validate_peers(
    self_url: Option<&str>,
    peers: Vec<String>,
    https: bool,
) -> Result<Vec<String>, ConfigError> {
    let mut peers = peers
        .iter()
        .map(|peer| normalize_url(peer, https))
        .collect::<Result<Vec<_>, _>>()?;
    match self_url {
        Some(me) if !peers.iter().any(|p| p == me) => peers.push(me.to_owned()),
        Some(_) => {}
        None if peers.is_empty() => {}
        None => return Err(ConfigError::MissingSelfUrl),
    }
    Ok(peers)
}

/// Checks a self or peer URL, and returns it with its scheme and host in lower case: the ring
/// compares URLs as strings, and `HTTP://Node-1:8080` is the same node as
/// `http://node-1:8080`.
pub(crate) fn normalize_url(url: &str, https: bool) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    match scheme.as_deref() {
        Some("http") => {}
        Some("https") if https => {}
        Some("https") => {
            return Err(invalid(
                "https peers need the `tls` feature and `peer_tls(..)` on the builder",
            ));
        }
        Some(_) => return Err(invalid("the scheme must be http")),
        None => {
            return Err(invalid(
                "an absolute URL is needed, e.g. http://10.0.0.1:8080",
            ));
        }
    }
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a.as_str(),
        _ => return Err(invalid("the URL has no host")),
    };
    // What follows the last `:` outside an IPv6 literal's brackets is the port.
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    let port_ok = match after_host.rsplit_once(':') {
        Some((_, port)) => port.parse::<u16>().is_ok(),
        None => true,
    };
    if !port_ok {
        return Err(invalid("the port is not a number from 0 to 65535"));
    }
    if authority.contains('@') {
        return Err(invalid("user information is not allowed in a peer URL"));
    }
    let scheme = scheme.unwrap_or_default();
    if url.len() != scheme.len() + 3 + authority.len() {
        return Err(invalid("a peer URL has no path, query or trailing `/`"));
    }
    // The authority is the host and port alone (no user information): all of it may be
    // lowered. A host name is case-insensitive, and so are an IPv6 literal's hex digits.
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

pub(crate) fn validate_base_path(path: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidBasePath {
        path: path.to_owned(),
        reason,
    };
    if path == "/" {
        return Err(invalid(
            "every request would be a peer request; use a path of its own, e.g. /_groupcache/",
        ));
    }
    if path.len() < 2 || !path.starts_with('/') || !path.ends_with('/') {
        return Err(invalid("it must start and end with `/`"));
    }
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
    if !plain {
        return Err(invalid(
            "it may hold visible ASCII characters only, and no `?`, `#` or `%`",
        ));
    }
    // Between the leading and trailing `/`.
    for segment in path[1..path.len() - 1].split('/') {
        match segment {
            "" => return Err(invalid("it has an empty segment (`//`)")),
            "." | ".." => {
                return Err(invalid(
                    "it has a `.` or `..` segment, which a client or proxy may resolve away",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
