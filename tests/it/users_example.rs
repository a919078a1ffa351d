//! Runs `scripts/users.sh` against the users example (`examples/users.rs`, SQLite behind the
//! cache): three processes on 127.0.0.1, a cold page of 100 users costing at most one SQL
//! query per process and 100 rows in all, a warm page and user costing none, and a `404`.
#![cfg(all(unix, feature = "serde"))]

use std::process::Command;
use std::time::Duration;

use crate::support::node_process;

/// The script waits up to 120 s per process to seed its database and listen.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn a_cold_page_costs_one_sql_query_per_owner_on_three_processes() {
    let binary = node_process::users_binary();
    let script = node_process::manifest_dir().join("scripts/users.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .current_dir(node_process::manifest_dir())
        .env("USERS_BIN", &binary)
        .env("READY_TIMEOUT", "120");
    let finished = node_process::run_with_deadline(command, SCRIPT_DEADLINE)
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    assert!(
        finished.success(),
        "scripts/users.sh failed with USERS_BIN={}: {}",
        binary.display(),
        finished.describe()
    );
    let stdout = &finished.stdout;
    assert!(
        stdout
            .lines()
            .any(|line| line == "users: all checks passed"),
        "scripts/users.sh exited 0 without its final line: {}",
        finished.describe()
    );
    assert!(
        stdout.lines().any(|line| line
            .starts_with("users: cold page of 100: SQL queries per process")
            && line.ends_with("100 rows in all")),
        "{}",
        finished.describe()
    );
    node_process::stderr_line(&format!(
        "users_example: scripts/users.sh passed in {:.1?}",
        finished.elapsed
    ));
}
