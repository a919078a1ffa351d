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

/// `pairs` as the sorted labels of a [`Snapshot`] key.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

/// The counter `name` with the labels `pairs`, if recorded.
pub(crate) fn counter(s: &Snapshot, name: &str, pairs: &[(&str, &str)]) -> Option<u64> {
    match s.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(v)) => Some(*v),
        None => None,
        other => panic!("{name}: {other:?}"),
    }
}

/// The gauge `name` with the labels `pairs`, if recorded.
pub(crate) fn gauge(s: &Snapshot, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    match s.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        None => None,
        other => panic!("{name}: {other:?}"),
    }
}
