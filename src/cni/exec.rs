//! Running a plugin binary: find it in `CNI_PATH`, feed it stdin and the `CNI_*`
//! environment, read its answer, and kill it if it hangs.

use super::env::{CniArgs, Command};
use super::error::{code, CniError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    let path = find_plugin(plugin_type, inv.cni_path)?;
    let netns = inv.netns.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let started = Instant::now();
    let mut child = std::process::Command::new(&path)
        .env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args.render())
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(code::DELEGATE_EXEC, format!("exec {}: {e}", path.display())))?;
    let (stdout, stderr, timed_out) = collect(&mut child, stdin, inv.timeout);
    let status = child.wait().map_err(|e| CniError::io(format!("wait for {plugin_type}"), e))?;
    DELEGATE_CALLS.fetch_add(1, Ordering::Relaxed);
    DELEGATE_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    if !stderr.trim().is_empty() {
        log::debug!("{plugin_type} {} stderr: {}", inv.command.as_str(), stderr.trim());
    }
    if timed_out {
        return Err(CniError::new(
            code::DELEGATE_EXEC,
            format!("{plugin_type} did not answer {} within {:?} and was killed", inv.command.as_str(), inv.timeout),
        ));
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

/// Writes stdin and reads stdout and stderr to EOF, all on this thread with poll(2), and kills
/// the child at the bound. One thread per call: an ADD runs a delegate per network, and a
/// reader thread and a watchdog thread for each cost more than the I/O itself. A plugin that
/// exits without reading stdin gives EPIPE, and its exit status tells the story; one whose
/// own children keep its stdout open is killed at the bound all the same.
fn collect(child: &mut Child, stdin: &[u8], timeout: Duration) -> (Vec<u8>, String, bool) {
    const CHUNK: usize = 4096; // PIPE_BUF: after POLLOUT, a write this size does not block.
    let deadline = Instant::now() + timeout;
    let mut input = child.stdin.take().filter(|_| !stdin.is_empty());
    let mut pending = stdin;
    let (mut out_pipe, mut err_pipe) = (child.stdout.take(), child.stderr.take());
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while out_pipe.is_some() || err_pipe.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            return (stdout, String::from_utf8_lossy(&stderr).into_owned(), true);
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
    }
    (stdout, String::from_utf8_lossy(&stderr).into_owned(), false)
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

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn call<'a>(dir: &'a str, args: &'a CniArgs, timeout: Duration) -> Invocation<'a> {
        Invocation {
            command: Command::Add,
            container_id: "c1",
            netns: None,
            ifname: "eth0",
            args,
            cni_path: dir,
            timeout,
        }
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
        script(dir.path(), "hang", "exec sleep 30");
        let (path, args) = (dir.path().display().to_string(), CniArgs::default());
        let err = exec_plugin(&call(&path, &args, Duration::from_millis(200)), "hang", b"{}").unwrap_err();
        assert_eq!(err.code, code::DELEGATE_EXEC);
        assert!(err.msg.contains("hang did not answer ADD") && err.msg.contains("was killed"), "{}", err.msg);
    }

    #[test]
    fn large_stdin_and_stdout_flow_both_ways_without_deadlock() {
        // cat answers while it still reads: both pipes fill beyond their 64 KiB at once.
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "echo", "cat; echo chatter >&2");
        let big = serde_json::json!({"cniVersion": "1.0.0", "blob": "x".repeat(300_000)});
        let (path, args) = (dir.path().display().to_string(), CniArgs::default());
        let out = exec_plugin(&call(&path, &args, Duration::from_secs(10)), "echo", big.to_string().as_bytes());
        assert_eq!(out.unwrap(), Some(big));
    }

    #[test]
    fn a_plugin_that_ignores_stdin_is_judged_by_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "quiet", "exit 0");
        let (path, args) = (dir.path().display().to_string(), CniArgs::default());
        let out = exec_plugin(&call(&path, &args, Duration::from_secs(10)), "quiet", &vec![b' '; 200_000]);
        assert_eq!(out.unwrap(), None);
    }
}
