//! Console sessions: who signed in with the admin credential, until when,
//! and the token each state change must carry (CSRF). Kept in memory and
//! bounded: a broker restart signs everyone out, which is the safe side.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::clock::UnixTime;

/// How long a console session lasts, in seconds: a working day at most.
pub const SESSION_SECONDS: i64 = 8 * 3600;

/// The most sessions kept; past it, the one closest to its end goes first.
const MAX_SESSIONS: usize = 1000;

/// The session cookie's name.
pub const COOKIE: &str = "baton_console";

/// One signed-in session.
#[derive(Clone)]
pub struct Session {
    /// The token every state change must carry in its form.
    pub csrf: String,
    /// Who signed in: `admin token`, or the member an identity provider
    /// signed in. Their actions are recorded under this name.
    pub who: String,
    expires_at: UnixTime,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn allows(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The signed-in sessions, by id.
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    random: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { sessions: Mutex::new(HashMap::new()), random: SystemRandom::new() }
    }
}

impl Sessions {
    /// A new session from `now`, with its id; `None` when no randomness is to be had.
    pub fn open(&self, now: UnixTime, who: &str) -> Option<(String, Session)> {
        let id = self.random_text()?;
        let session = Session { csrf: self.random_text()?, who: who.to_owned(), expires_at: now.plus(SESSION_SECONDS) };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, session| session.expires_at.0 > now.0);
        if sessions.len() >= MAX_SESSIONS {
            let first_to_end =
                sessions.iter().min_by_key(|(_, session)| session.expires_at.0).map(|(id, _)| id.clone());
            if let Some(id) = first_to_end {
                sessions.remove(&id);
            }
        }
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session named `id`.
    pub fn find(&self, id: &str, now: UnixTime) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(id).filter(|session| session.expires_at.0 > now.0).cloned()
    }

    /// Ends the session named `id`.
    pub fn close(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// 256 random bits, as text fit for a cookie or a form field.
    fn random_text(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_time_and_when_closed() {
        let sessions = Sessions::default();
        let (id, session) = sessions.open(UnixTime(1000), "admin token").unwrap();
        assert!(sessions.find(&id, UnixTime(1000 + SESSION_SECONDS - 1)).is_some());
        assert!(sessions.find(&id, UnixTime(1000 + SESSION_SECONDS)).is_none());
        assert!(session.allows(&session.csrf) && !session.allows("forged"));
        sessions.close(&id);
        assert!(sessions.find(&id, UnixTime(1001)).is_none());
    }

    #[test]
    fn the_sessions_kept_are_bounded() {
        let sessions = Sessions::default();
        let ids: Vec<String> =
            (0..MAX_SESSIONS + 5).map(|at| sessions.open(UnixTime(at as i64), "admin token").unwrap().0).collect();
        let kept = sessions.sessions.lock().unwrap().len();
        assert_eq!(kept, MAX_SESSIONS);
        // The first opened is the first to end, and went first.
        assert!(sessions.find(&ids[0], UnixTime(10)).is_none());
        assert!(sessions.find(ids.last().unwrap(), UnixTime(10)).is_some());
    }
}
