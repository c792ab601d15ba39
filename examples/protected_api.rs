//! An API behind Baton's verifier.
//!
//! ```sh
//! cargo run -- serve                   # the broker, in one terminal
//! cargo run --example protected_api              # this API, in another
//! ```
//!
//! Then call `POST http://127.0.0.1:9090/bookings` with a token for
//! `https://api.airline.example` holding `flights.book` (the README's walk
//! ends with one). A DPoP-bound token (the `person_chain` example ends with
//! one) is accepted only under `Authorization: DPoP`, with a proof for
//! `http://<API_LISTEN>/bookings`. `BROKER_URL` names the broker (default
//! `http://127.0.0.1:8080`), `API_LISTEN` this API's address (default
//! `127.0.0.1:9090`).

#[path = "shared/airline.rs"]
mod airline;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let issuer = std::env::var("BROKER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let listen = std::env::var("API_LISTEN").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|error| format!("listen on {listen}: {error}"))?;
    println!("airline API on http://{listen}/bookings, trusting {issuer}");
    axum::serve(listener, airline::router(&issuer, &format!("http://{listen}"))?)
        .await
        .map_err(|error| error.to_string())
}
