//! The hosted password reset (`/oauth/reset`), server-rendered and usable without
//! JavaScript: ask for a link by email (the same answer whether or not the account
//! exists), then choose a new password through the link. `POST /oauth/reset` with
//! `email` answers JSON to a client that asks for it (`Accept: application/json`). The
//! decisions are `auth::reset`'s; this module parses forms and renders pages.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::report;
use crate::auth::reset::{self, Requested};
use crate::error::AppError;
use crate::http::AppState;
use crate::http::client_addr::ClientAddr;
use crate::http::pages::{RESET_CSRF, csrf_matches, error_html, escape, hidden, new_csrf, page, with_csrf_cookie};

fn form(csrf: &str, step: &str, inner: &str, button: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/oauth/reset\">{}{}{inner}<button type=\"submit\">{}</button></form>",
        hidden("csrf", csrf),
        hidden("step", step),
        escape(button)
    )
}

fn request_form(csrf: &str, status: StatusCode, error: Option<&str>) -> Response {
    let inner = format!(
        "<p>Give the email of your account; we send a link to choose a new password.</p>{}\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>",
        error.map(error_html).unwrap_or_default()
    );
    page(status, "Reset your password", &form(csrf, "request", &inner, "Send me a link"))
}

fn new_password_form(csrf: &str, token: &str, email: &str, status: StatusCode, error: Option<&str>) -> Response {
    let inner = format!(
        "<p>Choose a new password for <strong>{}</strong>: at least 12 characters with upper and lower case, a digit \
         and a symbol. You will be signed out everywhere.</p>{}{}\
         <label for=\"password\">New password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
         <label for=\"password2\">Repeat it</label>\
         <input id=\"password2\" name=\"password2\" type=\"password\" autocomplete=\"new-password\" required>",
        escape(email),
        error.map(error_html).unwrap_or_default(),
        hidden("token", token)
    );
    page(status, "Choose a new password", &form(csrf, "complete", &inner, "Change my password"))
}

fn gone() -> Response {
    let message = "This reset link was used or has expired. Ask for a new one at /oauth/reset.";
    page(StatusCode::NOT_FOUND, "Link not available", &error_html(message))
}

fn locked(wait: u32, json: bool) -> Response {
    let message = format!("Too many attempts. Try again in {wait} seconds.");
    let mut response = if json {
        let body = serde_json::json!({ "error": "rate_limited", "error_description": message });
        (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
    } else {
        page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &error_html(&message))
    };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
    response
}

fn failed(error: AppError, json: bool) -> Response {
    match error {
        AppError::RateLimited { retry_after_secs, .. } => locked(retry_after_secs, json),
        AppError::NotFound(_) => gone(),
        other => {
            let (status, message) = match &other {
                AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again.".into()),
                refusal => (StatusCode::BAD_REQUEST, refusal.client_message()),
            };
            report(other);
            if json {
                let code = if status.is_server_error() { "server_error" } else { "invalid_request" };
                let body = serde_json::json!({ "error": code, "error_description": message });
                return (status, axum::Json(body)).into_response();
            }
            page(status, "Cannot continue", &error_html(&message))
        }
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

/// `GET /oauth/reset`: the request form; with `?token=…`, the new-password form.
pub async fn reset_page(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let csrf = new_csrf();
    let response = match params.get("token") {
        None => request_form(&csrf, StatusCode::OK, None),
        Some(token) => match reset::open(&state.db, state.config.lockout, token, client_addr).await {
            Ok(Some(email)) => new_password_form(&csrf, token, &email, StatusCode::OK, None),
            Ok(None) => gone(),
            Err(error) => failed(error, false),
        },
    };
    with_csrf_cookie(response, state.issuer.starts_with("https://"), RESET_CSRF, &csrf)
}

/// `POST /oauth/reset`: `email` asks for a link (the same answer whether or not the
/// account exists); `token` + `password` uses one. The form of the hosted page carries a
/// CSRF value; a JSON client (`Accept: application/json`) asking for a link needs none,
/// since asking changes nothing but sending a mail to the account's own address.
pub async fn reset_submit(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = wants_json(&headers);
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return failed(AppError::bad_input("send the form as application/x-www-form-urlencoded"), json);
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let csrf = field("csrf");
    let asking = fields.contains_key("email");
    let csrf_needed = !(asking && json);
    if csrf_needed && !csrf_matches(&headers, RESET_CSRF, csrf) {
        let message = "This form expired or came from another site. Open /oauth/reset again.";
        return page(StatusCode::FORBIDDEN, "Cannot continue", &error_html(message));
    }
    if asking {
        let Some(master) = state.config.keys.master.as_ref() else {
            return failed(
                AppError::Unavailable("password reset is not enabled on this server (APP_KEY is not set)".into()),
                json,
            );
        };
        let email = field("email");
        let cookie = crate::http::pages::cookie_value(&headers, super::DEVICE_COOKIE).unwrap_or_default();
        let device = crate::auth::lockout::trusted_device(
            secrecy::ExposeSecret::expose_secret(&*state.config.app_key),
            &cookie,
            email,
        );
        let asked = reset::ResetRequest { email, ip: client_addr, device };
        return match reset::request(&state.db, state.config.lockout, master, asked).await {
            Ok(Requested::Accepted) if json => {
                let body = serde_json::json!({ "status": "accepted",
                    "message": "if an account exists for this email, a reset link is on its way" });
                (StatusCode::ACCEPTED, axum::Json(body)).into_response()
            }
            Ok(Requested::Accepted) => {
                let message = format!(
                    "If an account exists for {}, a link to choose a new password is on its way. It works for 30 minutes.",
                    field("email").trim()
                );
                page(StatusCode::OK, "Check your mail", &format!("<p id=\"done\">{}</p>", escape(&message)))
            }
            Ok(Requested::Locked(wait)) => locked(wait, json),
            Err(AppError::BadUserInput(message)) if !json => {
                request_form(csrf, StatusCode::BAD_REQUEST, Some(&message))
            }
            Err(error) => failed(error, json),
        };
    }
    let (token, password) = (field("token"), field("password"));
    if password != field("password2") {
        return match reset::open(&state.db, state.config.lockout, token, client_addr).await {
            Ok(Some(email)) => {
                new_password_form(csrf, token, &email, StatusCode::BAD_REQUEST, Some("The two passwords differ."))
            }
            Ok(None) => gone(),
            Err(error) => failed(error, json),
        };
    }
    let done = reset::complete(&state.db, state.config.lockout, &state.breach, token, password, client_addr);
    match done.await {
        Ok(_) => {
            let message = "Your password is changed and you were signed out everywhere. Sign in again with it.";
            page(StatusCode::OK, "Password changed", &format!("<p id=\"done\">{}</p>", escape(message)))
        }
        Err(AppError::BadUserInput(message)) => {
            match reset::open(&state.db, state.config.lockout, token, client_addr).await {
                Ok(Some(email)) => new_password_form(csrf, token, &email, StatusCode::BAD_REQUEST, Some(&message)),
                Ok(None) => gone(),
                Err(error) => failed(error, json),
            }
        }
        Err(error) => failed(error, json),
    }
}
