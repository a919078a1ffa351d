//! Runs `scripts/container.sh`: the image of `deploy/Dockerfile` built with podman from base
//! images made of Debian's packages (or reused when its build context has not changed), and
//! three containers of `deploy/docker-compose.yml` driven through their published 127.0.0.1
//! ports: a miss on a remote owner with one load, a remote hit, a local hit, and a container
//! stopped mid-run while the other two answer every key (deploy/README.md).
//!
//! It needs Linux, root, `podman`, `debootstrap`, `curl`, `python3` (with venv) and `git`.
//! Without them it prints `SKIPPED: container: ...` to stderr, appends that line to
//! `<target>/container-skipped`, and passes, unless `GROUPCACHE_REQUIRE_CONTAINERS=1`, which
//! makes it fail instead (`.ci/run` sets it). When it really ran it appends a line to
//! `<target>/container-ran`.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::Duration;

use crate::support::node_process::{self, append_line, stderr_line, target_dir};

/// A cold run debootstraps two root filesystems and compiles the node in release mode inside
/// the build container, on a loaded 2-core machine; a warm one only runs the containers.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(45 * 60);

fn require_containers() -> bool {
    std::env::var("GROUPCACHE_REQUIRE_CONTAINERS").as_deref() == Ok("1")
}

/// Skips the test (a line on stderr and in `<target>/container-skipped`), or fails it when
/// `GROUPCACHE_REQUIRE_CONTAINERS=1`.
fn skip(reason: &str) {
    assert!(
        !require_containers(),
        "GROUPCACHE_REQUIRE_CONTAINERS=1, but the container test cannot run: {reason}"
    );
    let line = format!("SKIPPED: container: {reason}");
    stderr_line(&line);
    let marker = target_dir().join("container-skipped");
    if let Err(error) = append_line(&marker, &line) {
        stderr_line(&format!(
            "container: cannot write {}: {error}",
            marker.display()
        ));
    }
}

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|meta| {
                meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Whether this process runs as root (its effective uid, from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[test]
fn the_image_builds_and_three_containers_serve_the_seed_flows_and_survive_a_stop() {
    if !is_root() {
        skip("not root (debootstrap and podman's root storage need it)");
        return;
    }
    if let Some(missing) = ["podman", "debootstrap", "curl", "python3", "git"]
        .into_iter()
        .find(|program| !on_path(program))
    {
        skip(&format!("{missing} is not installed"));
        return;
    }
    let script = node_process::manifest_dir().join("scripts/container.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg("all")
        .current_dir(node_process::manifest_dir());
    let finished = node_process::run_with_deadline(command, SCRIPT_DEADLINE)
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
    assert!(
        finished.success(),
        "scripts/container.sh failed: {}",
        finished.describe()
    );
    let stdout = &finished.stdout;
    for expected in [
        "container: miss on a remote owner: ",
        "container: remote hit: ",
        "container: local hit: ",
        "container: node 3 shut down gracefully, status 0",
        "container: with node 3 stopped, nodes 1 and 2 answer all ",
        "container: OK",
    ] {
        assert!(
            stdout.lines().any(|line| line.starts_with(expected)),
            "scripts/container.sh exited 0 without a line starting with {expected:?}: {}",
            finished.describe()
        );
    }
    let line = format!(
        "container: scripts/container.sh passed in {:.1?}",
        finished.elapsed
    );
    node_process::stderr_line(&line);
    let marker = target_dir().join("container-ran");
    if let Err(error) = append_line(&marker, &line) {
        stderr_line(&format!(
            "container: cannot write {}: {error}",
            marker.display()
        ));
    }
}
