//! `node-local`: the CNI IPAM plugin for node-unique addresses (see `kactus::ipam`).

fn main() -> std::process::ExitCode {
    kactus::ipam::run_from_process().print()
}
