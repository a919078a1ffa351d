use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::GroupcacheService;
use crate::node::Node;

/// Serves the peer path and gives every other request a [`CacheHandle`](crate::CacheHandle).
///
/// Made by [`Groupcache::layer`](crate::Groupcache::layer); see the [module docs](crate::middleware).
#[derive(Clone)]
pub struct GroupcacheLayer {
    node: Arc<Node>,
}

impl GroupcacheLayer {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

impl fmt::Debug for GroupcacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupcacheLayer")
            .field("base_path", &self.node.config().base_path)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for GroupcacheLayer {
    type Service = GroupcacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GroupcacheService::new(inner, self.node.clone())
    }
}
