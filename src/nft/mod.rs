//! nftables from Rust, over netlink: no `nft` binary, no C library.
//!
//! The caller builds the table it wants as plain values (`table.rs`: chains, rules, named sets
//! and verdict maps with their elements) and [`Nft`] makes the kernel's copy that, in one
//! transaction (`NFNL_MSG_BATCH_BEGIN` .. `END`): the kernel applies all of it or none, so a
//! pod is never without its rules, not even between two changes. An existing table is
//! rewritten in place (chains and sets kept by name, so base chains stay hooked): deleting and
//! re-adding it, even in one transaction, lets a connection's first packet miss NAT for an
//! instant inside the commit (see `compile::update`; the test that found it makes 500
//! connections through thousands of changes). Two users: the in-pod Service
//! proxy (`service_proxy.rs` holds its table's shape) and MultiNetworkPolicy.
//!
//! `compile.rs` turns a table into messages, `wire.rs` holds the bytes (attributes,
//! expressions, batch framing), `socket.rs` the netlink socket, `ranges.rs` the interval
//! arithmetic of address and port sets; `conntrack.rs` deletes a pod's UDP conntrack entries
//! to endpoints that went (ctnetlink).

mod compile;
pub mod conntrack;
pub mod error;
pub mod ranges;
pub mod service_proxy;
mod socket;
pub mod table;
mod wire;

pub use error::NftError;
pub use table::{
    priority, proto, Chain, ChainKind, CtState, Element, Family, Field, Hook, HookPoint, Key, Policy, Rule, Set, Stmt,
    Table, Value,
};
pub use wire::Verdict;

use socket::NfSocket;
use std::path::Path;

/// The table kactus owns in a pod for MultiNetworkPolicy (the Service proxy's is
/// [`service_proxy::TABLE`]). No other table is ever touched.
pub const POLICY_TABLE: &str = "kactus-policy";

/// nftables in one network namespace.
pub struct Nft {
    socket: NfSocket,
}

impl Nft {
    /// nftables of the network namespace at `netns` (the socket is made on a thread inside
    /// it and stays bound to it).
    pub fn open_in(netns: &Path) -> Result<Nft, NftError> {
        let netns_error = |source| NftError::Netns { path: netns.to_path_buf(), source };
        let socket = crate::netns::run_in(netns, NfSocket::open).map_err(netns_error)?.map_err(NftError::Socket)?;
        Ok(Nft { socket })
    }

    /// nftables of the calling thread's network namespace.
    pub fn open() -> Result<Nft, NftError> {
        Ok(Nft { socket: NfSocket::open().map_err(NftError::Socket)? })
    }

    /// Makes the kernel's table exactly `table`, in one transaction: created if absent,
    /// otherwise updated in place (chains and sets kept by name, their contents rewritten, see
    /// `compile::update`), or replaced whole when the kernel refuses that (a set or a base
    /// chain whose definition changed). On any error the kernel's table is as it was.
    pub fn apply(&mut self, table: &Table) -> Result<(), NftError> {
        let existing = self.existing(table.family, &table.name)?;
        if existing != compile::Existing::default() {
            let messages = compile::update(table, &existing).map_err(|reason| invalid(&table.name, reason))?;
            match self.socket.transact(&messages) {
                Err(NftError::Refused { .. }) => {}
                done => return done,
            }
        }
        let messages = compile::replace(table).map_err(|reason| invalid(&table.name, reason))?;
        self.socket.transact(&messages)
    }

    /// The chains and sets of a table, by name (none when there is no such table).
    fn existing(&mut self, family: Family, table: &str) -> Result<compile::Existing, NftError> {
        let mut names = |sets: bool| -> Result<Vec<String>, NftError> {
            let request = compile::list(family, table, sets);
            let answers = match self.socket.dump(&request)? {
                Ok(answers) => answers,
                Err(errno) if errno == libc::ENOENT => return Ok(Vec::new()),
                Err(errno) => return Err(NftError::Refused { what: request.what, index: 1, errno }),
            };
            // NFTA_*_TABLE is 1 in both spaces; the name is NFTA_CHAIN_NAME (3) or NFTA_SET_NAME (2).
            let name_attr = if sets { wire::attr::set::NAME } else { wire::attr::chain::NAME };
            let text = |bytes: &[u8]| {
                String::from_utf8_lossy(bytes.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
            };
            Ok(answers
                .iter()
                .filter(|(_, attrs)| wire::find_attr(attrs, 1).map(text).as_deref() == Some(table))
                .filter_map(|(_, attrs)| wire::find_attr(attrs, name_attr).map(text))
                .collect())
        };
        Ok(compile::Existing { chains: names(false)?, sets: names(true)? })
    }

    /// Replaces the elements of sets (and maps) that `apply` made in table `table`, in one
    /// transaction, leaving the rules alone: how peers' address changes stay cheap.
    pub fn refill_sets(&mut self, family: Family, table: &str, sets: &[Set]) -> Result<(), NftError> {
        let messages = compile::refill(family, table, sets).map_err(|reason| invalid(table, reason))?;
        self.socket.transact(&messages)
    }

    /// Deletes a table with everything in it; no error when there is none.
    pub fn delete(&mut self, family: Family, name: &str) -> Result<(), NftError> {
        self.socket.transact(&compile::delete(family, name))
    }

    /// Whether the table exists (after a restart: reconcile it, don't assume).
    pub fn exists(&mut self, family: Family, name: &str) -> Result<bool, NftError> {
        match self.socket.request(&compile::get_table(family, name))? {
            Ok(_) => Ok(true),
            Err(errno) if errno == libc::ENOENT => Ok(false),
            Err(errno) => {
                Err(NftError::Refused { what: format!("get table {} {name}", family.as_str()), index: 1, errno })
            }
        }
    }

    /// The ruleset's generation: the kernel adds one per committed transaction.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let answer = self.socket.request(&compile::get_generation())?;
        let messages = answer.map_err(|errno| NftError::Refused { what: "get generation".into(), index: 1, errno })?;
        messages
            .iter()
            .filter(|(kind, _)| *kind == wire::Op::NewGen.message_type())
            .find_map(|(_, attrs)| wire::find_attr(attrs, wire::attr::gen::ID))
            .and_then(|id| Some(u32::from_be_bytes(id.try_into().ok()?)))
            .ok_or_else(|| NftError::Protocol("no generation in the kernel's answer".into()))
    }
}

fn invalid(table: &str, reason: String) -> NftError {
    NftError::Invalid { table: table.to_string(), reason }
}
