//! The CNI protocol: environment and `CNI_ARGS`, device-name rules, configs, results of every spec version,
//! errors with the spec's codes, and running delegate plugins like libcni does.

pub mod chain;
pub mod conf;
pub mod env;
pub mod error;
pub mod exec;
pub mod ifname;
pub mod result;
pub mod skel;
#[cfg(test)]
pub mod test_plugin;
pub mod version;

pub use conf::NetworkConfig;
pub use env::{CniArgs, CniEnv, Command, PodRef};
pub use error::{code, CniError};
pub use exec::Invocation;
pub use ifname::validate_ifname;
pub use result::CniResult;
pub use version::Version;
