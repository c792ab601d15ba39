//! The embedded store against the contract (in progress).
