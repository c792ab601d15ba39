//! Console sessions: who signed in, until when, and the token each state
//! change must carry (CSRF). The broker's store keeps them
//! ([`crate::store::sessions`]), under a hash of the id, so that with Redis
//! every node behind a balancer knows a signed-in browser.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::broker::Broker;
use crate::store::{SessionKey, SessionRecord, StoreError};

/// How long a console session lasts, in seconds: a working day at most.
pub const SESSION_SECONDS: i64 = 8 * 3600;

/// The session cookie's name.
pub const COOKIE: &str = "baton_console";

/// One signed-in session.
pub type Session = SessionRecord;

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No randomness to make an id from.
    #[error("no randomness available")]
    Randomness,
    /// The store cannot keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `presented` is `session`'s CSRF token (constant time).
pub fn allows(session: &Session, presented: &str) -> bool {
    bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

/// A new session for `who`, with its id (the cookie's value).
pub async fn open(broker: &Broker, who: &str) -> Result<(String, Session), OpenError> {
    let now = broker.context().now();
    let id = random_text().ok_or(OpenError::Randomness)?;
    let session = Session {
        csrf: random_text().ok_or(OpenError::Randomness)?,
        who: who.to_owned(),
        expires_at: now.plus(SESSION_SECONDS),
    };
    broker.console_sessions().open_session(&SessionKey::of(&id), &session, now).await?;
    Ok((id, session))
}

/// The live session named `id`.
pub async fn find(broker: &Broker, id: &str) -> Result<Option<Session>, StoreError> {
    broker.console_sessions().session(&SessionKey::of(id), broker.context().now()).await
}

/// Ends the session named `id`.
pub async fn close(broker: &Broker, id: &str) -> Result<(), StoreError> {
    broker.console_sessions().close_session(&SessionKey::of(id)).await
}

/// 256 random bits, as text fit for a cookie or a form field.
fn random_text() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixTime;

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let session = Session { csrf: "token".into(), who: "admin token".into(), expires_at: UnixTime(10) };
        assert!(allows(&session, "token"));
        assert!(!allows(&session, "forged") && !allows(&session, "toke") && !allows(&session, ""));
    }

    #[test]
    fn random_text_is_not_repeated() {
        let (one, two) = (random_text().unwrap(), random_text().unwrap());
        assert_eq!(one.len(), 43);
        assert_ne!(one, two);
    }
}
