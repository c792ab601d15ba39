//! The one narrowing rule (DESIGN.md §2 promise 1): a child is never
//! broader, longer lived or deeper than its parent allows. The chain module
//! applies it when it derives a child; [`check_path`] applies it to every
//! hop of a token being verified, so that a verifier can check from the
//! token alone that each hop only narrowed.

mod path;

pub use path::{check_path, PathError};

use crate::claims::{Claims, Hop, ScopeSet};
use crate::clock::UnixTime;

/// How a child would break the narrowing rule. Deriving reports it as
/// [`crate::chain::ChainError::Widened`]; verifying a path, as [`PathError`]
/// in that error's own words (audit events carry both texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Widening {
    /// Deeper than the limit allows.
    #[error("depth {depth} exceeds the limit {limit}")]
    TooDeep {
        /// The depth the token has or would have.
        depth: u32,
        /// The configured limit.
        limit: u32,
    },
    /// A scope not held by the parent.
    #[error("scopes are not a subset of the parent's")]
    ScopeWidened,
    /// An expiry after the parent's.
    #[error("expiry is later than the parent's")]
    LifetimeExtended,
}

/// What a token of a chain holds, as the narrowing rule compares it with a
/// child: its scopes, its expiry and its depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds<'a> {
    /// Its scopes; `None` where it sets no cap: a person's token that
    /// carries no `scope` leaves the first hop's scopes to policy
    /// (DESIGN.md §10).
    scope: Option<&'a ScopeSet>,
    exp: UnixTime,
    depth: u32,
}

impl<'a> Bounds<'a> {
    /// The bounds of one of Baton's tokens.
    pub fn of_token(claims: &'a Claims) -> Bounds<'a> {
        Bounds { scope: Some(&claims.scope), exp: claims.exp, depth: claims.delegation.depth }
    }

    /// The bounds of an ancestor recorded as `hop` at `depth` in a path. A
    /// person's token at the root caps the chain's scopes only where it
    /// carries some.
    pub fn of_hop(hop: &'a Hop, depth: u32) -> Bounds<'a> {
        let uncapped = hop.iss.is_some() && hop.scope.is_empty();
        Bounds { scope: (!uncapped).then_some(&hop.scope), exp: hop.exp, depth }
    }

    /// The narrowing rule (DESIGN.md §2 promise 1): a child with `scope` and
    /// `exp` is one deeper than this token and within `limit`, holds no scope
    /// this token does not, and expires no later. Returns the child's bounds.
    pub fn narrow_to<'b>(&self, scope: &'b ScopeSet, exp: UnixTime, limit: u32) -> Result<Bounds<'b>, Widening> {
        let depth = child_depth(self.depth, limit)?;
        if self.scope.is_some_and(|cap| !scope.is_subset(cap)) {
            return Err(Widening::ScopeWidened);
        }
        if exp > self.exp {
            return Err(Widening::LifetimeExtended);
        }
        Ok(Bounds { scope: Some(scope), exp, depth })
    }

    /// The depth: a child's, for bounds [`Bounds::narrow_to`] returned.
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

/// The depth of a token's child: the parent's + 1, never over `limit`
/// (DESIGN.md §10: the limit is the largest depth a token may have).
pub fn child_depth(parent: u32, limit: u32) -> Result<u32, Widening> {
    let depth = parent.saturating_add(1);
    within_limit(depth, limit).map(|()| depth)
}

/// Whether a token of `depth` is within `limit`.
pub fn within_limit(depth: u32, limit: u32) -> Result<(), Widening> {
    if depth > limit {
        return Err(Widening::TooDeep { depth, limit });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::claims::Scope;

    /// The scopes random chains are drawn from.
    pub(crate) const UNIVERSE: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", "s5"];

    /// The scopes of `UNIVERSE` whose bits are set in `mask`.
    pub(crate) fn masked(mask: u8) -> ScopeSet {
        UNIVERSE
            .iter()
            .enumerate()
            .filter(|(index, _)| mask & (1 << index) != 0)
            .map(|(_, scope)| scope.parse::<Scope>().unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn the_rule_admits_exactly_the_children_that_narrow(
            parent_mask in 0..64u8, uncapped in any::<bool>(), parent_exp in 0..500i64, depth in 0..8u32,
            child_mask in 0..64u8, child_exp in 0..500i64, limit in 0..8u32,
        ) {
            let parent_scope = masked(parent_mask);
            let child_scope = masked(child_mask);
            let parent = Bounds { scope: (!uncapped).then_some(&parent_scope), exp: UnixTime(parent_exp), depth };
            let narrower = (uncapped || child_scope.is_subset(&parent_scope)) && child_exp <= parent_exp;
            match parent.narrow_to(&child_scope, UnixTime(child_exp), limit) {
                Ok(child) => {
                    prop_assert!(narrower && depth < limit);
                    prop_assert_eq!(child, Bounds { scope: Some(&child_scope), exp: UnixTime(child_exp), depth: depth + 1 });
                }
                Err(Widening::TooDeep { depth: refused, limit: named }) => {
                    prop_assert_eq!((refused, named), (depth + 1, limit));
                    prop_assert!(depth >= limit);
                }
                Err(_) => prop_assert!(!narrower),
            }
        }
    }
}
