//! The Redis store against the contract (in progress).
