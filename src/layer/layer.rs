use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::GroupcacheService;
use crate::groupcache::Shared;

/// Serves the peer path and gives every other request a [`CacheHandle`](crate::CacheHandle).
///
/// Made by [`Groupcache::layer`](crate::Groupcache::layer); see the [module docs](crate::layer).
#[derive(Clone)]
pub struct GroupcacheLayer {
    shared: Arc<Shared>,
}

impl GroupcacheLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl fmt::Debug for GroupcacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupcacheLayer")
            .field("base_path", &self.shared.config.base_path)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for GroupcacheLayer {
    type Service = GroupcacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GroupcacheService::new(inner, self.shared.clone())
    }
}
