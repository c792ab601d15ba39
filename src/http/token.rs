//! `POST /token`: the form body and the `Authorization` header become a
//! [`TokenRequest`]; the broker's answer becomes JSON.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ErrorResponse;
use crate::grant::{Broker, RequestError, TokenParams, TokenRequest};

pub(super) async fn token(State(broker): State<Arc<Broker>>, request: Request) -> Response {
    let client_address = client_address(&request);
    let outcome = match read(&broker, request, client_address.clone()).await {
        Ok(token_request) => broker.token(token_request).await,
        Err(error) => Err(broker.refuse(error, client_address).await),
    };
    match outcome {
        Ok(response) => Json(response).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

fn client_address(request: &Request) -> Option<String> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.to_string())
}

async fn read(broker: &Broker, request: Request, client_address: Option<String>) -> Result<TokenRequest, RequestError> {
    let (parts, body) = request.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(RequestError::NotForm);
    }
    let bytes =
        axum::body::to_bytes(body, broker.settings().max_body_bytes).await.map_err(|_| RequestError::TooLarge)?;
    let params = TokenParams::from_pairs(form_urlencoded::parse(&bytes))?;
    let authorization = match parts.headers.get_all(header::AUTHORIZATION).iter().collect::<Vec<_>>().as_slice() {
        [] => None,
        // Bytes that are not text cannot be Basic credentials: client
        // authentication refuses them as malformed.
        [one] => Some(String::from_utf8_lossy(one.as_bytes()).into_owned()),
        _ => return Err(RequestError::Repeated(Some("authorization"))),
    };
    Ok(TokenRequest { authorization, params, client_address })
}
