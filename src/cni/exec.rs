//! Running a plugin binary: find it in `CNI_PATH`, feed it stdin and the `CNI_*`
//! environment, read its answer, and kill it if it hangs.

use super::env::{CniArgs, Command};
use super::error::{code, CniError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most a delegate may print on stdout: a CNI result is a few KiB, and a plugin that
/// prints without end must not take the node's memory with it.
pub const MAX_STDOUT: usize = 8 << 20;
/// How much of a delegate's stderr is kept for the log (the rest is read and dropped).
const MAX_STDERR: usize = 64 << 10;

/// Delegate calls made by this process and their wall time (spawn to reap), so the plugin
/// can log how much of its own time was spent waiting for delegates.
static DELEGATE_CALLS: AtomicU64 = AtomicU64::new(0);
static DELEGATE_NANOS: AtomicU64 = AtomicU64::new(0);

/// The plugin binaries this process has run so far, and the wall time they took.
pub fn delegate_time() -> (u64, Duration) {
    (DELEGATE_CALLS.load(Ordering::Relaxed), Duration::from_nanos(DELEGATE_NANOS.load(Ordering::Relaxed)))
}

/// The environment of one plugin call (what `CNI_*` will be for the child).
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a CniArgs,
    pub cni_path: &'a str,
    pub timeout: Duration,
}

/// Finds `plugin_type` in the colon-separated `cni_path`, first match wins (as libcni).
pub fn find_plugin(plugin_type: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    super::conf::validate_plugin_type(plugin_type).map_err(CniError::invalid_config)?;
    for dir in cni_path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(plugin_type);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(CniError::new(code::DELEGATE_EXEC, format!("plugin {plugin_type:?} not found in CNI_PATH {cni_path:?}")))
}

/// Execs the plugin and returns what it printed on success (`None` when it printed
/// nothing, as DEL and CHECK do). A plugin's own error JSON keeps its code and message.
pub fn exec_plugin(inv: &Invocation, plugin_type: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    exec_plugin_with(inv, plugin_type, stdin, &|_| {})
}

/// [`exec_plugin`], with `prepare` given the command before it is spawned (podagent runs
/// the node's plugin in the host's mount namespace this way).
pub fn exec_plugin_with(
    inv: &Invocation,
    plugin_type: &str,
    stdin: &[u8],
    prepare: &dyn Fn(&mut std::process::Command),
) -> Result<Option<Value>, CniError> {
    let path = find_plugin(plugin_type, inv.cni_path)?;
    let netns = inv.netns.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let started = Instant::now();
    let mut command = std::process::Command::new(&path);
    prepare(&mut command);
    let mut child = command
        .env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args.render())
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill at the bound takes the plugins it runs (its IPAM)
        // with it.
        .process_group(0)
        .spawn()
        .map_err(|e| CniError::new(code::DELEGATE_EXEC, format!("exec {}: {e}", path.display())))?;
    let deadline = started + inv.timeout;
    let (stdout, stderr, stopped) = collect(&mut child, stdin, deadline);
    // Its pipes are closed, but the plugin may live on (`exec >/dev/null 2>&1; sleep`): the
    // same bound holds for its exit.
    let (status, stopped) = match stopped {
        Some(_) => (child.wait(), stopped),
        None => reap(&mut child, deadline),
    };
    let status = status.map_err(|e| CniError::io(format!("wait for {plugin_type}"), e))?;
    DELEGATE_CALLS.fetch_add(1, Ordering::Relaxed);
    DELEGATE_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    if !stderr.trim().is_empty() {
        log::debug!("{plugin_type} {} stderr: {}", inv.command.as_str(), stderr.trim());
    }
    match stopped {
        Some(Stopped::Timeout) => {
            return Err(CniError::new(
                code::DELEGATE_EXEC,
                format!(
                    "{plugin_type} did not answer {} within {:?} and was killed",
                    inv.command.as_str(),
                    inv.timeout
                ),
            ))
        }
        Some(Stopped::TooMuchOutput) => {
            return Err(CniError::new(
                code::DELEGATE_EXEC,
                format!(
                    "{plugin_type} printed more than {} MiB on {} and was killed",
                    MAX_STDOUT >> 20,
                    inv.command.as_str()
                ),
            ))
        }
        None => {}
    }
    decode_answer(plugin_type, &stdout, &stderr, status)
}

/// What a plugin that exited with `status` told us: its result JSON (`None` when it printed
/// nothing, as DEL and CHECK do), or its failure as a CNI error.
pub fn decode_answer(
    plugin_type: &str,
    stdout: &[u8],
    stderr: &str,
    status: std::process::ExitStatus,
) -> Result<Option<Value>, CniError> {
    if status.success() {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return serde_json::from_slice(stdout).map(Some).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, format!("{plugin_type} printed a result that is not JSON: {e}"))
        });
    }
    Err(plugin_error(plugin_type, stdout, stderr, status))
}

/// Why a delegate was killed before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Timeout,
    TooMuchOutput,
}

/// Writes stdin and reads stdout and stderr to EOF, all on this thread with poll(2), and kills
/// the child's process group at the bound or when stdout outgrows [`MAX_STDOUT`]. One thread
/// per call: an ADD runs a delegate per network, and a reader thread and a watchdog thread for
/// each cost more than the I/O itself. A plugin that exits without reading stdin gives EPIPE,
/// and its exit status tells the story; one whose own children keep its stdout open is killed
/// at the bound all the same.
fn collect(child: &mut Child, stdin: &[u8], deadline: Instant) -> (Vec<u8>, String, Option<Stopped>) {
    const CHUNK: usize = 4096; // PIPE_BUF: after POLLOUT, a write this size does not block.
    let mut input = child.stdin.take().filter(|_| !stdin.is_empty());
    let mut pending = stdin;
    let (mut out_pipe, mut err_pipe) = (child.stdout.take(), child.stderr.take());
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while out_pipe.is_some() || err_pipe.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        let stop = match () {
            _ if left.is_zero() => Some(Stopped::Timeout),
            _ if stdout.len() > MAX_STDOUT => Some(Stopped::TooMuchOutput),
            _ => None,
        };
        if stop.is_some() {
            kill_group(child);
            return (stdout, String::from_utf8_lossy(&stderr).into_owned(), stop);
        }
        let wait = PollTimeout::try_from(left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let ready = {
            let mut fds = Vec::with_capacity(3);
            let mut slots = [None; 3];
            if let Some(pipe) = &input {
                slots[0] = Some(fds.len());
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(pipe) = &out_pipe {
                slots[1] = Some(fds.len());
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            }
            if let Some(pipe) = &err_pipe {
                slots[2] = Some(fds.len());
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, wait) {
                Ok(_) => slots.map(|slot| slot.and_then(|i| fds[i].revents()).is_some_and(|r| !r.is_empty())),
                Err(nix::errno::Errno::EINTR) => [false; 3],
                // Cannot wait on the pipes: let the bound decide rather than spin.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    [false; 3]
                }
            }
        };
        if ready[0] {
            let chunk = &pending[..pending.len().min(CHUNK)];
            match input.as_mut().map(|pipe| pipe.write(chunk)) {
                Some(Ok(n)) if n < pending.len() => pending = &pending[n..],
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // All written (dropping the pipe closes it: EOF), or the plugin stopped reading.
                _ => input = None,
            }
        }
        if ready[1] && !read_some(&mut out_pipe, &mut stdout) {
            out_pipe = None;
        }
        if ready[2] && !read_some(&mut err_pipe, &mut stderr) {
            err_pipe = None;
        }
        stderr.truncate(MAX_STDERR);
    }
    (stdout, String::from_utf8_lossy(&stderr).into_owned(), None)
}

/// Waits for the child to exit until `deadline`, then kills its group and reaps it. A plugin
/// that closed its pipes has almost always exited already (its pipes close as it exits), so
/// the first look mostly finds it gone; one that lives on is looked at again at growing
/// intervals (at most 10 ms apart), which costs nothing beside the bound it runs into.
fn reap(child: &mut Child, deadline: Instant) -> (std::io::Result<std::process::ExitStatus>, Option<Stopped>) {
    let mut pause = Duration::from_micros(50);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Ok(status), None),
            Ok(None) => {}
            Err(e) => return (Err(e), None),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            kill_group(child);
            return (child.wait(), Some(Stopped::Timeout));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Kills the child and every process of its group (see [`exec_plugin`]).
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill();
}

/// Reads what a ready pipe holds into `into`; false at EOF or on an error (the pipe is done).
fn read_some<R: Read>(pipe: &mut Option<R>, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16384];
    match pipe.as_mut().map(|p| p.read(&mut buf)) {
        Some(Ok(0)) | None => false,
        Some(Ok(n)) => {
            into.extend_from_slice(&buf[..n]);
            true
        }
        Some(Err(e)) => e.kind() == std::io::ErrorKind::Interrupted,
    }
}

fn plugin_error(plugin_type: &str, stdout: &[u8], stderr: &str, status: std::process::ExitStatus) -> CniError {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = obj.get("msg").and_then(Value::as_str) {
            // The delegate's own code, unless it is none a CNI error can carry (0, or beyond
            // the spec's unsigned int, which a cast would wrap into another code).
            let own = obj.get("code").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok());
            let c = own.filter(|&c| c != 0).unwrap_or(code::DELEGATE_EXEC);
            let details = obj.get("details").and_then(Value::as_str).unwrap_or_default();
            return CniError::new(c, format!("{plugin_type}: {msg}")).with_details(details);
        }
    }
    let said = String::from_utf8_lossy(stdout);
    let said = if said.trim().is_empty() { stderr.trim().to_string() } else { said.trim().to_string() };
    CniError::new(code::DELEGATE_EXEC, format!("{plugin_type} failed ({status}): {said}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Runs an ADD of plugin `name`, a shell script with `body` made in `dir`.
    fn run(dir: &Path, name: &str, body: &str, timeout: Duration, stdin: &[u8]) -> Result<Option<Value>, CniError> {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (cni_path, args) = (dir.display().to_string(), CniArgs::default());
        let inv = Invocation {
            command: Command::Add,
            container_id: "c1",
            netns: None,
            ifname: "eth0",
            args: &args,
            cni_path: &cni_path,
            timeout,
        };
        // A test thread forking at the moment the script was written holds it open for
        // writing until its child execs, and exec then fails with ETXTBSY: try again.
        for _ in 0..20 {
            match exec_plugin(&inv, name, stdin) {
                Err(e) if e.msg.contains("Text file busy") => std::thread::sleep(Duration::from_millis(20)),
                answer => return answer,
            }
        }
        exec_plugin(&inv, name, stdin)
    }

    #[test]
    fn a_delegates_error_keeps_its_code_only_when_it_is_one() {
        use std::os::unix::process::ExitStatusExt;
        let failed = |stdout: &str| {
            decode_answer("macvlan", stdout.as_bytes(), "", std::process::ExitStatus::from_raw(1 << 8)).unwrap_err()
        };
        assert_eq!(failed(r#"{"code": 999, "msg": "no master"}"#).code, 999);
        // The delegate_answer fuzz target's check: 2^32 + 7 was cast to 7 ("invalid network
        // config"), and 0 was passed on, which is no error code.
        for given in ["4294967303", "0", "-1", "\"7\""] {
            let e = failed(&format!(r#"{{"code": {given}, "msg": "no master"}}"#));
            assert_eq!((e.code, e.msg.as_str()), (code::DELEGATE_EXEC, "macvlan: no master"), "code {given}");
        }
    }

    #[test]
    fn a_delegate_that_hangs_is_killed_at_the_bound_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), "hang", "exec sleep 30", Duration::from_millis(200), b"{}").unwrap_err();
        assert_eq!(err.code, code::DELEGATE_EXEC);
        assert!(err.msg.contains("hang did not answer ADD") && err.msg.contains("was killed"), "{}", err.msg);
    }

    #[test]
    fn a_hung_delegates_children_are_killed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let body = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        // The bound leaves the shell ample time to start its child and write the pid file,
        // however loaded the machine (300 ms was once not enough while the suite compiled).
        let err = run(dir.path(), "ipam-hangs", &body, Duration::from_secs(2), b"{}").unwrap_err();
        assert!(err.msg.contains("was killed"), "{}", err.msg);
        let pid = std::fs::read_to_string(&pidfile).expect("the delegate wrote its child's pid").trim().to_string();
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "the delegate's child {pid} still runs: {state}");
    }

    #[test]
    fn a_delegate_that_closes_its_pipes_and_lives_on_is_killed_at_the_bound() {
        // Issue 22: its pipes reach EOF at once, and an unbounded wait for its exit held the
        // container's lock for as long as it chose to run.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let body = format!("exec >/dev/null 2>&1 </dev/null; sleep 30 & echo $! > {}; wait", pidfile.display());
        let err = run(dir.path(), "detaches", &body, Duration::from_secs(2), b"{}").unwrap_err();
        assert_eq!(err.code, code::DELEGATE_EXEC);
        assert!(err.msg.contains("detaches did not answer ADD") && err.msg.contains("was killed"), "{}", err.msg);
        let pid = std::fs::read_to_string(&pidfile).expect("the delegate wrote its child's pid").trim().to_string();
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "the delegate's child {pid} still runs: {state}");
    }

    #[test]
    fn a_delegate_that_prints_without_end_is_killed_at_the_output_bound() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(dir.path(), "chatty", "exec cat /dev/zero", Duration::from_secs(20), b"{}").unwrap_err();
        assert_eq!(err.code, code::DELEGATE_EXEC);
        assert!(err.msg.contains("printed more than 8 MiB"), "{}", err.msg);
    }

    #[test]
    fn large_stdin_and_stdout_flow_both_ways_without_deadlock() {
        // cat answers while it still reads: both pipes fill beyond their 64 KiB at once.
        let dir = tempfile::tempdir().unwrap();
        let big = serde_json::json!({"cniVersion": "1.0.0", "blob": "x".repeat(300_000)});
        let body = "cat; echo chatter >&2";
        let out = run(dir.path(), "echo", body, Duration::from_secs(10), big.to_string().as_bytes());
        assert_eq!(out.unwrap(), Some(big));
    }

    #[test]
    fn a_plugin_that_ignores_stdin_is_judged_by_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), "quiet", "exit 0", Duration::from_secs(10), &vec![b' '; 200_000]);
        assert_eq!(out.unwrap(), None);
    }
}
