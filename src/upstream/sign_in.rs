//! A security-team member signing in to the console at an identity
//! provider: the OpenID Connect authorization code flow (Core §3.1) with
//! PKCE (RFC 7636), through the `openidconnect` crate.
//!
//! [`SignIn::start`] gives the URL to send the browser to and what to keep
//! until it returns ([`Pending`]); [`SignIn::finish`] exchanges the code,
//! verifies the ID token (signature at the provider's keys, `iss`, `aud`,
//! times, and the `nonce` of this very sign-in) and admits the person only
//! when the configuration lists them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata};
use openidconnect::{
    AccessToken, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EmptyAdditionalClaims,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, SubjectIdentifier, TokenResponse as _,
    UserInfoClaims,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// How long the provider's metadata is reused before it is fetched again.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// How long a failed discovery stands before the next is tried.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What is known of the provider's metadata.
enum Discovery {
    /// Nothing yet.
    NotYet,
    /// Fetched then.
    Found(Box<CoreProviderMetadata>, Instant),
    /// The last attempt failed then.
    Failed(Instant),
}

/// A client of the provider as discovery describes it: an authorization
/// endpoint, and perhaps token and UserInfo endpoints.
type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// The console's registration at its identity provider.
#[derive(Clone)]
pub struct SignInSettings {
    /// The provider's issuer URL (discovered through OIDC Discovery).
    pub issuer: String,
    /// The console's client id there.
    pub client_id: String,
    /// The console's client secret there.
    pub client_secret: SecretString,
    /// Where the provider sends the browser back: the console's callback.
    pub redirect_uri: String,
    /// Who may sign in: an entry with an `@` is an email the provider must
    /// have verified; any other, a subject (`sub`) at the provider.
    pub members: Vec<String>,
}

impl std::fmt::Debug for SignInSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SignInSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// What a sign-in keeps between sending the browser away and its return.
/// The browser may keep it itself: it holds nothing that would let anyone
/// else use the code (PKCE binds the code to the verifier, the nonce binds
/// the ID token to this sign-in, and both come back only from the browser
/// that left with them).
#[derive(Serialize, Deserialize)]
pub struct Pending {
    /// The `state` the provider hands back; it names this sign-in.
    pub state: String,
    nonce: String,
    verifier: String,
}

/// Why a sign-in failed; none of it is shown to the browser in detail.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Discovery or the token endpoint could not be reached.
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    /// The provider refused the code.
    #[error("the identity provider refused the code: {0}")]
    Refused(String),
    /// The ID token is missing or does not verify.
    #[error("the ID token is not acceptable: {0}")]
    Invalid(String),
    /// The provider's issuer or the redirect URI is not a usable URL.
    #[error("the sign-in is misconfigured: {0}")]
    Misconfigured(String),
    /// The person signed in, but is not listed.
    #[error("`{0}` is not a listed member of the security team")]
    NotMember(String),
}

/// How the provider names a person.
#[derive(Clone, Copy)]
enum Name<'a> {
    /// Its `sub`.
    Subject(&'a str),
    /// An email it has verified.
    Email(&'a str),
}

/// Signs people in at the configured provider.
pub struct SignIn {
    settings: SignInSettings,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    metadata: tokio::sync::Mutex<Discovery>,
}

impl SignIn {
    /// Sign-ins at `settings`' provider, reached with bounded HTTP calls
    /// that follow no redirect.
    pub fn new(settings: SignInSettings, clock: Arc<dyn Clock>) -> Result<SignIn, SignInError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| SignInError::Unreachable(error.to_string()))?;
        Ok(SignIn { settings, http, clock, metadata: tokio::sync::Mutex::new(Discovery::NotYet) })
    }

    /// The provider's issuer URL.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Whether `member` (as [`SignIn::finish`] names one) is listed.
    pub fn lists(&self, member: &str) -> bool {
        self.settings.members.iter().any(|listed| listed == member)
    }

    /// The URL to send the browser to, and what to keep until it returns.
    pub async fn start(&self) -> Result<(String, Pending), SignInError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        };
        Ok((url.to_string(), pending))
    }

    /// The listed member the provider signed in, from the `code` it handed
    /// back for `pending`.
    pub async fn finish(&self, pending: Pending, code: String) -> Result<String, SignInError> {
        let metadata = self.metadata(false).await?;
        let client = self.client(metadata)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|error| SignInError::Refused(error.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|error| SignInError::Refused(error.to_string()))?;
        // Core §3.1.3.7: the ID token names who signed in; the access token
        // is not used.
        let id_token = response.id_token().ok_or_else(|| SignInError::Invalid("no ID token".into()))?;
        let now =
            chrono::DateTime::from_timestamp(self.clock.now().0, 0).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let nonce = Nonce::new(pending.nonce);
        let claims = match id_token.claims(&client.id_token_verifier().set_time_fn(move || now), &nonce) {
            // A key not seen yet may be a rotation at the provider: its keys once more.
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                let rediscovered = self.client(self.metadata(true).await?)?;
                let verifier = rediscovered.id_token_verifier().set_time_fn(move || now);
                let verified = id_token.claims(&verifier, &nonce).cloned();
                verified
            }
            verified => verified.cloned(),
        }
        .map_err(|error| SignInError::Invalid(error.to_string()))?;
        let subject = claims.subject().clone();
        if self.is_member(Name::Subject(subject.as_str())) {
            return Ok(subject.to_string());
        }
        // An email names a person only once the provider has verified it.
        let mut email = claims.email().filter(|_| claims.email_verified() == Some(true)).map(|email| email.to_string());
        if email.is_none() {
            // Many providers put the email in the UserInfo answer alone
            // (Core §5.4); that answer must name the same subject (§5.3.2).
            email = self.verified_email(&client, response.access_token().clone(), subject.clone()).await?;
        }
        match email {
            Some(email) if self.is_member(Name::Email(&email)) => Ok(email),
            email => Err(SignInError::NotMember(email.unwrap_or_else(|| subject.to_string()))),
        }
    }

    /// Whether the configuration lists `name`. An entry with an `@` is an
    /// email, matched only by a verified email; any other is a subject. So a
    /// provider that lets people choose a `sub` like `alice@example.com`
    /// lets nobody pass for Alice.
    fn is_member(&self, name: Name<'_>) -> bool {
        self.settings.members.iter().any(|member| match name {
            Name::Email(email) => member.contains('@') && member.eq_ignore_ascii_case(email),
            Name::Subject(subject) => !member.contains('@') && member == subject,
        })
    }

    /// The verified email the provider's UserInfo endpoint gives for
    /// `subject`, when it has one.
    async fn verified_email(
        &self,
        client: &Client,
        access_token: AccessToken,
        subject: SubjectIdentifier,
    ) -> Result<Option<String>, SignInError> {
        let Ok(request) = client.user_info(access_token, Some(subject)) else {
            return Ok(None);
        };
        let claims: UserInfoClaims<EmptyAdditionalClaims, CoreGenderClaim> = request
            .request_async(&self.http)
            .await
            .map_err(|error| SignInError::Invalid(format!("userinfo: {error}")))?;
        Ok(claims.email().filter(|_| claims.email_verified() == Some(true)).map(|email| email.to_string()))
    }

    /// The provider's metadata, discovered again when older than
    /// [`METADATA_MAX_AGE`] (its keys may have rotated) or when `stale`.
    /// A discovery that failed is not tried again for [`RETRY_AFTER`]:
    /// sign-ins started meanwhile fail at once rather than queue behind it.
    async fn metadata(&self, stale: bool) -> Result<CoreProviderMetadata, SignInError> {
        let mut cached = self.metadata.lock().await;
        match &*cached {
            Discovery::Found(metadata, fetched) if !stale && fetched.elapsed() < METADATA_MAX_AGE => {
                return Ok((**metadata).clone());
            }
            Discovery::Failed(at) if at.elapsed() < RETRY_AFTER => {
                return Err(SignInError::Unreachable("discovery failed moments ago".into()));
            }
            _ => {}
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|error| SignInError::Misconfigured(error.to_string()))?;
        match CoreProviderMetadata::discover_async(issuer, &self.http).await {
            Ok(metadata) => {
                *cached = Discovery::Found(Box::new(metadata.clone()), Instant::now());
                Ok(metadata)
            }
            Err(error) => {
                *cached = Discovery::Failed(Instant::now());
                Err(SignInError::Unreachable(format!("discovery: {error}")))
            }
        }
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<Client, SignInError> {
        let redirect = RedirectUrl::new(self.settings.redirect_uri.clone())
            .map_err(|error| SignInError::Misconfigured(error.to_string()))?;
        let secret = ClientSecret::new(self.settings.client_secret.expose_secret().to_owned());
        Ok(CoreClient::from_provider_metadata(metadata, ClientId::new(self.settings.client_id.clone()), Some(secret))
            .set_redirect_uri(redirect))
    }
}
