//! Runs `scripts/three-nodes.sh` against the node example: three node processes on
//! 127.0.0.1, checked from the outside with curl (values, one load per key in the cluster,
//! peer traffic, a `401` for an unsigned peer request, `/metrics`, and a graceful SIGTERM).
//!
//! The node binary is built (or found) by `node_process::node_binary` and handed to the
//! script as `NODE_BIN`, so the script does not run cargo itself.
#![cfg(all(unix, feature = "serde"))]

use std::process::Command;
use std::time::Duration;

use crate::support::node_process;

/// The whole script: its own deadlines are 120 s per node to get ready and 60 s per node
/// to stop, and 30 keys take a few seconds; this leaves room for a loaded machine.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn three_node_processes_pass_the_script() {
    let binary = node_process::node_binary();
    let script = node_process::manifest_dir().join("scripts/three-nodes.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .current_dir(node_process::manifest_dir())
        .env("NODE_BIN", &binary)
        .env("READY_TIMEOUT", "120")
        .env("STOP_TIMEOUT", "60");
    let finished = node_process::run_with_deadline(command, SCRIPT_DEADLINE)
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    assert!(
        finished.success(),
        "scripts/three-nodes.sh failed with NODE_BIN={}: {}",
        binary.display(),
        finished.describe()
    );
    assert!(
        finished
            .stdout
            .lines()
            .any(|line| line == "three-nodes: OK"),
        "scripts/three-nodes.sh exited 0 without its final OK: {}",
        finished.describe()
    );
    node_process::stderr_line(&format!(
        "node_example: scripts/three-nodes.sh passed in {:.1?}",
        finished.elapsed
    ));
}
