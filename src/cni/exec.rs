//! Running a plugin binary: find it in `CNI_PATH`, feed it stdin and the `CNI_*`
//! environment, read its answer, and kill it if it hangs.

use super::env::{CniArgs, Command};
use super::error::{code, CniError};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
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
    if status.success() {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        return serde_json::from_slice(&stdout).map(Some).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, format!("{plugin_type} printed a result that is not JSON: {e}"))
        });
    }
    Err(plugin_error(plugin_type, &stdout, &stderr, status))
}

/// Writes stdin, reads stdout/stderr to EOF, with a watchdog that kills the child at the bound.
fn collect(child: &mut Child, stdin: &[u8], timeout: Duration) -> (Vec<u8>, String, bool) {
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
            // The child is not reaped until the caller's wait(), so the pid is still ours.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            return true;
        }
        false
    });
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin gives EPIPE; its exit status tells the story.
        let _ = input.write_all(stdin);
    }
    let mut stderr_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_string(&mut s);
        }
        s
    });
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    let stderr = stderr_reader.join().unwrap_or_default();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    (stdout, stderr, timed_out)
}

fn plugin_error(plugin_type: &str, stdout: &[u8], stderr: &str, status: std::process::ExitStatus) -> CniError {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = obj.get("msg").and_then(Value::as_str) {
            let c = obj.get("code").and_then(Value::as_u64).unwrap_or(code::DELEGATE_EXEC as u64) as u32;
            let details = obj.get("details").and_then(Value::as_str).unwrap_or_default();
            return CniError::new(c, format!("{plugin_type}: {msg}")).with_details(details);
        }
    }
    let said = String::from_utf8_lossy(stdout);
    let said = if said.trim().is_empty() { stderr.trim().to_string() } else { said.trim().to_string() };
    CniError::new(code::DELEGATE_EXEC, format!("{plugin_type} failed ({status}): {said}"))
}
