//! Console sessions: who signed in, until when, and the token each state
//! change must carry (CSRF). The broker's store keeps them
//! ([`crate::store::sessions`]), under a hash of the id, so that with Redis
//! every node behind a balancer knows a signed-in browser.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::broker::Broker;
use crate::store::{SessionKey, SessionRecord, StoreError};

/// How long a console session lasts, in seconds: a working day at most.
pub const SESSION_SECONDS: i64 = 8 * 3600;

/// The session cookie's name.
pub const COOKIE: &str = "baton_console";

/// Whom a session opened with the admin credential is recorded as. No
/// listed member has a space in their name.
pub const ADMIN_TOKEN: &str = "admin token";

/// One signed-in session, as the store keeps it.
pub type Session = SessionRecord;

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No randomness to make an id from.
    #[error("no randomness available")]
    Randomness,
    /// What would admit it is not configured.
    #[error("not admitted")]
    NotAdmitted,
    /// The store cannot keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `presented` is `session`'s CSRF token (constant time).
pub fn allows(session: &Session, presented: &str) -> bool {
    bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

/// What let someone sign in.
pub enum Admission<'a> {
    /// The admin credential.
    AdminToken,
    /// The identity provider, which signed in this listed member.
    Member(&'a str),
}

/// A new session, with its id (the cookie's value).
pub async fn open(broker: &Broker, admission: Admission<'_>) -> Result<(String, Session), OpenError> {
    let now = broker.context().now();
    let id = crate::ids::random_text::<32>().ok_or(OpenError::Randomness)?;
    let (who, admitted_by) = match admission {
        Admission::AdminToken => (ADMIN_TOKEN.to_owned(), admin_fingerprint(broker)),
        Admission::Member(member) => (member.to_owned(), provider_admission(broker)),
    };
    let session = Session {
        csrf: crate::ids::random_text::<32>().ok_or(OpenError::Randomness)?,
        who,
        admitted_by: admitted_by.ok_or(OpenError::NotAdmitted)?,
        expires_at: now.plus(SESSION_SECONDS),
    };
    broker.console_sessions().open_session(&SessionKey::of(&id), &session, now).await?;
    Ok((id, session))
}

/// The live session named `id`, while what admitted it still would: a
/// rotated admin token, or a member taken off the list, ends the sessions
/// it opened, on every node.
pub async fn find(broker: &Broker, id: &str) -> Result<Option<Session>, StoreError> {
    let found = broker.console_sessions().session(&SessionKey::of(id), broker.context().now()).await?;
    Ok(found.filter(|session| still_admitted(broker, session)))
}

fn still_admitted(broker: &Broker, session: &Session) -> bool {
    if session.who == ADMIN_TOKEN {
        return admin_fingerprint(broker).is_some_and(|now| now == session.admitted_by);
    }
    let listed = broker.console_sign_in().is_some_and(|sign_in| sign_in.lists(&session.who));
    listed && provider_admission(broker).is_some_and(|now| now == session.admitted_by)
}

/// `admin:` and a hash of the admin token's configured hash.
fn admin_fingerprint(broker: &Broker) -> Option<String> {
    let hash = broker.settings().admin_token_sha256.as_deref()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
    Some(format!("admin:{}", URL_SAFE_NO_PAD.encode(digest.as_ref())))
}

/// `provider:` and the provider's issuer.
fn provider_admission(broker: &Broker) -> Option<String> {
    broker.console_sign_in().map(|sign_in| format!("provider:{}", sign_in.issuer()))
}

/// Ends the session named `id`.
pub async fn close(broker: &Broker, id: &str) -> Result<(), StoreError> {
    broker.console_sessions().close_session(&SessionKey::of(id)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixTime;

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let session = Session {
            csrf: "token".into(),
            who: ADMIN_TOKEN.into(),
            admitted_by: "admin:x".into(),
            expires_at: UnixTime(10),
        };
        assert!(allows(&session, "token"));
        assert!(!allows(&session, "forged") && !allows(&session, "toke") && !allows(&session, ""));
    }
}
