//! Under abuse (DESIGN.md §12): the client of every endpoint authenticated
//! under a throttle of failed attempts per address and client, and the
//! refusals of requests whose client never proved itself counted together,
//! one audit event per interval, instead of one event each.

mod authentication;
pub mod refusals;
pub mod throttle;

pub use authentication::Guard;
pub(crate) use authentication::{claimed_client, proves_identity};
pub use refusals::RefusalSettings;
pub use throttle::{ThrottleSettings, Throttled};
