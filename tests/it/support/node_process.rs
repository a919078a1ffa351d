//! Helpers for the tests that run the node example (`examples/node.rs`) as real processes:
//! finding (building) its binary, running commands with a deadline, signalling processes,
//! and writing past the test harness's output capture.

use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The longest `cargo build --example node` may take: long, since on a cold target
/// directory it compiles the crate and its dependencies on a loaded machine.
pub(crate) const BUILD_DEADLINE: Duration = Duration::from_secs(900);

/// How long a process group gets between SIGTERM and SIGKILL when its deadline passed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// How long the outputs of a command may stay open after it ended.
const PIPE_GRACE: Duration = Duration::from_secs(10);

/// How often the deadline loops look at a child.
const POLL: Duration = Duration::from_millis(20);

/// The crate's directory.
pub(crate) fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<crate>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                manifest_dir().join(dir)
            }
        })
        .unwrap_or_else(|| manifest_dir().join("target"))
}

/// Whether `program` is an executable file in a directory of `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// The first executable file named `program` in a directory of `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes a line straight to the process's stderr: `eprintln!` in a test is captured by
/// the harness (and shown only on failure); this is not.
pub(crate) fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Appends `line` to `path`, creating the file and its directory.
pub(crate) fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(format!("{line}\n").as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Running commands with a deadline

/// What a command printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// `None` when the deadline passed and the command was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// Whether it ended in time with status 0.
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The status and both outputs, for an assertion message.
    pub(crate) fn describe(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => format!("killed after its deadline ({:.1?})", self.elapsed),
        };
        format!(
            "{status}\n----- stdout -----\n{}\n----- stderr -----\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Reads `reader` to its end on a thread of its own; the text arrives on the receiver.
fn drain<R: Read + Send + 'static>(reader: Option<R>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut reader) = reader {
            let _ = reader.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// The text of a drained pipe, waiting at most `PIPE_GRACE`: a process left behind by the
/// command may hold the pipe open.
fn collect(rx: &Receiver<String>) -> String {
    rx.recv_timeout(PIPE_GRACE).unwrap_or_else(|_| {
        format!("<the output was still open {PIPE_GRACE:?} after the command ended>")
    })
}

/// Runs `command` in a process group of its own, with stdin empty and both outputs
/// collected. When `deadline` passes, the whole group gets SIGTERM (so a script's trap can
/// clean up), then SIGKILL after a grace period; `status` is then `None`. `Err` only when
/// the command cannot be started.
pub(crate) fn run_with_deadline(
    mut command: Command,
    deadline: Duration,
) -> std::io::Result<Finished> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let mut status = wait_until(&mut child, started + deadline);
    if status.is_none() {
        // The leader is not reaped yet, so the group id is still its own.
        let group = format!("-{}", child.id());
        signal_raw(&group, "TERM");
        if wait_until(&mut child, Instant::now() + TERM_GRACE).is_none() {
            signal_raw(&group, "KILL");
            let _ = child.wait();
        }
        status = None;
    }
    let elapsed = started.elapsed();
    Ok(Finished {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
        elapsed,
    })
}

/// Waits for `child` until `deadline`; `None` if it is still running then.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(error) => panic!("waiting for process {}: {error}", child.id()),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Sends `SIGsignal` (`"TERM"`, `"KILL"`) to the process `pid`, through `kill(1)`. Returns
/// whether `kill` reported success.
pub(crate) fn signal(pid: u32, signal: &str) -> bool {
    signal_raw(&pid.to_string(), signal)
}

fn signal_raw(target: &str, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// The node binary

/// The node example's binary, built once per test process: `cargo build --example node`
/// with this test build's features and profile, quick when it is up to date (and `cargo
/// test` builds the examples anyway). If cargo cannot be run at all, the binary that is
/// already at `<target>/{debug,release}/examples/node` is used. A build that fails is a
/// test failure.
pub(crate) fn node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_example("node")).clone()
}

/// The users example's binary (`examples/users.rs`), built once per test process.
pub(crate) fn users_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_example("users")).clone()
}

fn profile_dir() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn build_example(name: &str) -> PathBuf {
    let fallback = target_dir().join(profile_dir()).join("examples").join(name);
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(manifest_dir())
        .args([
            "build",
            "--example",
            name,
            "--message-format=json-render-diagnostics",
        ])
        // The jobserver of the outer cargo is not this child's.
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    // Nor are the variables cargo sets for this test: a build script that watches one of
    // them (ring's watches CARGO_MANIFEST_DIR) would rerun, and the example be rebuilt on
    // every run, and again by the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let mut features = Vec::new();
    if cfg!(feature = "tls") {
        features.push("tls");
    }
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let finished = match run_with_deadline(command, BUILD_DEADLINE) {
        Ok(finished) => finished,
        Err(error) => {
            assert!(
                is_executable(&fallback),
                "cannot run cargo ({error}), and there is no {name} binary at {}",
                fallback.display()
            );
            stderr_line(&format!(
                "node_process: cannot run cargo ({error}); using {}",
                fallback.display()
            ));
            return fallback;
        }
    };
    assert!(
        finished.success(),
        "cargo build --example {name} failed: {}",
        finished.describe()
    );
    let built = finished
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == name
        })
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back();
    let binary = built.unwrap_or(fallback);
    assert!(
        is_executable(&binary),
        "cargo built the {name} example, but {} is not an executable file",
        binary.display()
    );
    binary
}
