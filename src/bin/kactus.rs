//! `kactus`: the CNI meta-plugin (run by the container runtime with `CNI_COMMAND` set).

use std::io::Write;

fn main() {
    let outcome = kactus::plugin::run_from_process();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(if outcome.success { 0 } else { 1 });
}
