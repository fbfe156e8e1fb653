//! How to bring a pod's table from what it is to what it should be, cheapest first: nothing;
//! a refill of the sets whose elements changed (a peer came, went or changed address: one
//! transaction, no rule rewritten); the whole table replaced (a policy, a rule or a device
//! changed: still one transaction, never a moment without rules); or deleted.

use crate::nft::{Set, Table};

#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Unchanged,
    /// `Nft::refill_sets` with these sets.
    Refill(Vec<Set>),
    /// `Nft::apply` this table.
    Replace(Table),
    /// `Nft::delete` the table.
    Delete,
}

/// The update from `current` (what was last applied; `None` if unknown or absent) to
/// `desired`. After a restart `current` is unknown: the table is replaced, which is safe.
pub fn plan(current: Option<&Table>, desired: Option<&Table>) -> Update {
    match (current, desired) {
        (None, None) => Update::Unchanged,
        (Some(_), None) => Update::Delete,
        (None, Some(t)) => Update::Replace(t.clone()),
        (Some(old), Some(new)) if shape(old) != shape(new) => Update::Replace(new.clone()),
        (Some(old), Some(new)) => {
            let changed: Vec<Set> = new
                .sets
                .iter()
                .filter(|set| old.sets.iter().find(|o| o.name == set.name).is_none_or(|o| o.elements != set.elements))
                .cloned()
                .collect();
            if changed.is_empty() {
                Update::Unchanged
            } else {
                Update::Refill(changed)
            }
        }
    }
}

/// The table without its set elements: what a refill cannot change.
fn shape(table: &Table) -> Table {
    let mut t = table.clone();
    t.sets.iter_mut().for_each(|s| s.elements.clear());
    t
}
