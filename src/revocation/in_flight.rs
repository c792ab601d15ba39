//! The revocations under way on this node.

use crate::claims::TokenId;

/// The tokens this node is revoking now, from the revocation's write to its
/// event's, so that a concurrent call for the same token neither writes a
/// second event nor takes the first call's event, not yet written, for one
/// that was lost.
#[derive(Debug, Default)]
pub(crate) struct Revoking(std::sync::Mutex<std::collections::HashSet<TokenId>>);

/// A token claimed in [`Revoking`] until dropped: held by the call that
/// records its revocation until the record is done.
pub(crate) struct RevokingClaim<'a> {
    revoking: &'a Revoking,
    jti: TokenId,
}

impl Revoking {
    /// Claims `jti`; `None` while another call holds it.
    pub(crate) fn claim(&self, jti: &TokenId) -> Option<RevokingClaim<'_>> {
        let mut revoking = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        revoking.insert(jti.clone()).then(|| RevokingClaim { revoking: self, jti: jti.clone() })
    }
}

impl Drop for RevokingClaim<'_> {
    fn drop(&mut self) {
        let mut revoking = self.revoking.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        revoking.remove(&self.jti);
    }
}
