//! What a test reads of the metrics a cache recorded.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Each series by name and sorted labels.
pub(crate) type Snapshot = HashMap<(String, Vec<(String, String)>), DebugValue>;

/// The series `recorder` holds now.
pub(crate) fn snapshot(recorder: &DebuggingRecorder) -> Snapshot {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}
