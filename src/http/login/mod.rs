//! The hosted login (`/oauth/authorize`): the sign-in flow of the authorization-code grant
//! (password, then a second factor when the person has one, then the venue), with its
//! other hosted flows beside it: the second factor and its in-login enrolment ([`mfa`]),
//! accepting an invitation ([`invitation`]) and resetting a password ([`reset`]). Every
//! page is server-rendered HTML without JavaScript, CSRF-protected, never cached.

pub mod invitation;
mod mfa;
pub mod reset;

use std::collections::HashMap;
use std::net::IpAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::client_addr::ClientAddr;
use super::oauth::{Form, no_store};
use super::pages::{LOGIN_CSRF, cookie_value, csrf_matches, error_html, escape, new_csrf, page, with_csrf_cookie};
use crate::auth::lockout::{self, Checked};
use crate::auth::login::{self, PasswordSignIn};
use crate::auth::oauth::{self, Client};
use crate::auth::totp;
use crate::error::AppError;
use crate::http::AppState;
use crate::tenancy::VenueId;

/// The parameters of an authorization request, carried through the login steps.
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    code_challenge: String,
    code_challenge_method: String,
    state: Option<String>,
}

impl AuthorizeRequest {
    fn from(params: &HashMap<String, String>) -> AuthorizeRequest {
        let get = |name: &str| params.get(name).cloned().unwrap_or_default();
        AuthorizeRequest {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            response_type: get("response_type"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            state: params.get("state").cloned(),
        }
    }

    /// What a login ticket is bound to: this client, redirect and challenge.
    fn binding(&self) -> String {
        format!("{}|{}|{}", self.client_id, self.redirect_uri, self.code_challenge)
    }

    fn hidden_fields(&self) -> String {
        let mut fields = String::new();
        for (name, value) in [
            ("client_id", Some(&self.client_id)),
            ("redirect_uri", Some(&self.redirect_uri)),
            ("response_type", Some(&self.response_type)),
            ("code_challenge", Some(&self.code_challenge)),
            ("code_challenge_method", Some(&self.code_challenge_method)),
            ("state", self.state.as_ref()),
        ] {
            if let Some(value) = value {
                fields.push_str(&format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value)));
            }
        }
        fields
    }
}

/// Why an authorization request cannot go on.
enum Refusal {
    /// Shown on our page: the client or redirect URI cannot be trusted with a redirect.
    Page(StatusCode, String),
    /// Sent back to the client's redirect URI as `error=…`.
    Redirect(String),
}

fn redirect_to(uri: &str, issuer: &str, pairs: &[(&str, &str)], state: Option<&str>) -> String {
    let mut url = url::Url::parse(uri).expect("registered redirect URIs are absolute URLs");
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    url.to_string()
}

/// Validates the request in RFC 6749 §4.1.2.1 order: client and redirect URI first (no
/// redirect when either is wrong), then the rest (reported to the redirect URI).
async fn validate(state: &AppState, request: &AuthorizeRequest) -> Result<Client, Refusal> {
    let client = oauth::find_client(&state.db, &request.client_id)
        .await
        .map_err(|_| Refusal::Page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again.".into()))?
        .filter(|c| c.kind == "spa")
        .ok_or_else(|| {
            Refusal::Page(StatusCode::BAD_REQUEST, "This application is not registered for sign-in.".into())
        })?;
    if !client.redirect_uris.contains(&request.redirect_uri) {
        return Err(Refusal::Page(
            StatusCode::BAD_REQUEST,
            "The redirect URI does not exactly match one registered for this application.".into(),
        ));
    }
    let issuer = &state.issuer;
    let refuse = |error: &str, description: &str| {
        Refusal::Redirect(redirect_to(
            &request.redirect_uri,
            issuer,
            &[("error", error), ("error_description", description)],
            request.state.as_deref(),
        ))
    };
    if request.response_type != "code" {
        return Err(refuse("unsupported_response_type", "response_type must be code"));
    }
    if request.code_challenge.is_empty() {
        return Err(refuse("invalid_request", "code_challenge is required (PKCE with S256)"));
    }
    if request.code_challenge_method != "S256" {
        return Err(refuse("invalid_request", "code_challenge_method must be S256"));
    }
    let well_formed = request.code_challenge.len() == 43
        && request.code_challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(refuse(
            "invalid_request",
            "code_challenge must be BASE64URL(SHA256(code_verifier)), 43 characters",
        ));
    }
    Ok(client)
}

fn login_form(client: &Client, request: &AuthorizeRequest, csrf: &str, error: Option<&str>) -> String {
    format!(
        "<p>Sign in to continue to <strong>{client}</strong>.</p>{error}\
         <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"step\" value=\"password\">\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        client = escape(&client.name),
        error = error.map(error_html).unwrap_or_default(),
        hidden = request.hidden_fields(),
        csrf = escape(csrf),
    )
}

fn venue_form(request: &AuthorizeRequest, csrf: &str, ticket: &str, venues: &[login::StaffVenue]) -> String {
    let options: String = venues
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "<label for=\"venue-{i}\"><input id=\"venue-{i}\" type=\"radio\" name=\"venue_id\" value=\"{id}\"{checked} style=\"width:auto\"> {name}</label>",
                id = v.venue_id,
                name = escape(&v.name),
                checked = if i == 0 { " checked" } else { "" },
            )
        })
        .collect();
    format!(
        "<p>You work at several venues. Which one now?</p>\
         <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"step\" value=\"venue\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\"><fieldset><legend>Venue</legend>{options}</fieldset>\
         <button type=\"submit\">Continue</button></form>",
        hidden = request.hidden_fields(),
        csrf = escape(csrf),
        ticket = escape(ticket),
    )
}

fn refusal_response(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page(status, message) => page(status, "Cannot sign in", &error_html(&message)),
        Refusal::Redirect(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
    }
}

/// `GET /oauth/authorize`: validates the request and shows the sign-in form.
pub async fn authorize_page(State(state): State<AppState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let request = AuthorizeRequest::from(&params);
    let client = match validate(&state, &request).await {
        Ok(client) => client,
        Err(refusal) => return refusal_response(refusal),
    };
    let csrf = new_csrf();
    let body = login_form(&client, &request, &csrf, None);
    with_csrf_cookie(page(StatusCode::OK, "Sign in", &body), state.issuer.starts_with("https://"), LOGIN_CSRF, &csrf)
}

/// Everything a login step needs about the request being served.
struct LoginContext<'a> {
    state: &'a AppState,
    client: Client,
    request: AuthorizeRequest,
    csrf: String,
    key: &'a [u8; 32],
    client_addr: IpAddr,
}

impl LoginContext<'_> {
    /// A ticket for `staff` at login stage `stage` (password, mfa-pending, mfa, enroll).
    fn ticket(&self, staff: uuid::Uuid, stage: &str) -> String {
        login::sign_ticket(self.key, staff, &format!("{}|{stage}", self.request.binding()))
    }

    fn check_ticket(&self, ticket: &str, stage: &str) -> Option<uuid::Uuid> {
        login::verify_ticket(self.key, ticket, &format!("{}|{stage}", self.request.binding()))
    }

    fn retry(&self, status: StatusCode, message: &str) -> Response {
        page(status, "Sign in", &login_form(&self.client, &self.request, &self.csrf, Some(message)))
    }

    fn hidden(&self, step: &str, ticket: &str, venue: Option<uuid::Uuid>) -> String {
        let venue =
            venue.map(|v| format!("<input type=\"hidden\" name=\"venue_id\" value=\"{v}\">")).unwrap_or_default();
        format!(
            "{}<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"step\" value=\"{step}\">\
             <input type=\"hidden\" name=\"ticket\" value=\"{}\">{venue}",
            self.request.hidden_fields(),
            escape(&self.csrf),
            escape(ticket)
        )
    }
}

/// Where a login step leaves the person.
enum Progress {
    /// Show this page (an error, or the next step's form).
    Page(Response),
    /// Authenticated: `mfa` says whether a second factor was verified in this login.
    Authenticated { staff: uuid::Uuid, mfa: bool },
}

/// The page for a failure inside venueql: the detail is logged with the request id and
/// reported to Sentry; the person sees a generic message.
fn internal_page(context: &LoginContext<'_>, error: AppError) -> Response {
    report(error);
    context.retry(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Try again.")
}

/// Logs and reports an error met on a hosted page (internal ones to Sentry).
pub(crate) fn report(error: AppError) {
    match error {
        AppError::Internal(source) => crate::observability::report_internal(source.as_ref()),
        other => tracing::warn!(code = other.code(), "hosted page refused: {}", other.client_message()),
    }
}

fn locked_page(mut response: Response, wait: u32) -> Response {
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
    response
}

/// `POST /oauth/authorize`: password, then TOTP when enabled, then the venue choice when
/// the person belongs to several venues (and TOTP enrolment when the venue requires it
/// for their role), then a redirect with the authorization code.
pub async fn authorize_submit(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Form(fields)) = Form::parse(&body) else {
        return page(StatusCode::BAD_REQUEST, "Cannot sign in", &error_html("The form could not be read."));
    };
    let csrf = fields.get("csrf").cloned().unwrap_or_default();
    if !csrf_matches(&headers, LOGIN_CSRF, &csrf) {
        let message = "This sign-in form expired or came from another site. Go back to the application and try again.";
        return page(StatusCode::FORBIDDEN, "Cannot sign in", &error_html(message));
    }
    let request = AuthorizeRequest::from(&fields);
    let client = match validate(&state, &request).await {
        Ok(client) => client,
        Err(refusal) => return refusal_response(refusal),
    };
    let key = state.config.app_key.expose_secret();
    let context = LoginContext { state: &state, client, request, csrf, key, client_addr };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let venue_field: Option<uuid::Uuid> = field("venue_id").parse().ok();
    let mut device_cookie = None;
    let progress = match field("step") {
        "password" => {
            let email = field("email");
            let cookie = cookie_value(&headers, DEVICE_COOKIE).unwrap_or_default();
            let device = lockout::trusted_device(key, &cookie, email);
            let sign_in = PasswordSignIn { email, password: field("password"), ip: client_addr, device };
            match password_step(&context, sign_in).await {
                Ok((progress, cookie)) => {
                    device_cookie = Some(cookie);
                    progress
                }
                Err(progress) => progress,
            }
        }
        "totp" => mfa::totp_step(&context, field("ticket"), field("code")).await,
        "enroll" => mfa::enroll_step(&context, field("ticket"), field("code"), venue_field).await,
        "venue" => {
            match (context.check_ticket(field("ticket"), "mfa"), context.check_ticket(field("ticket"), "password")) {
                (Some(staff), _) => Progress::Authenticated { staff, mfa: true },
                (None, Some(staff)) => Progress::Authenticated { staff, mfa: false },
                (None, None) => {
                    Progress::Page(context.retry(StatusCode::UNAUTHORIZED, "Your sign-in expired. Sign in again."))
                }
            }
        }
        _ => Progress::Page(context.retry(StatusCode::BAD_REQUEST, "Sign in with your email and password.")),
    };
    let response = match progress {
        Progress::Page(response) => response,
        Progress::Authenticated { staff, mfa } => finish_login(&context, staff, mfa, venue_field).await,
    };
    with_device_cookie(response, &state, device_cookie.as_deref())
}

/// The password step (under the lockout): on success, the TOTP step when the person has
/// TOTP, else signed in; with the renewed trusted-device cookie, so strangers' failures
/// cannot lock this browser out.
async fn password_step(
    context: &LoginContext<'_>,
    sign_in: PasswordSignIn<'_>,
) -> Result<(Progress, String), Progress> {
    let state = context.state;
    let checked = login::sign_in_with_password(&state.db, state.config.lockout, sign_in)
        .await
        .map_err(|e| Progress::Page(internal_page(context, e)))?;
    let staff = match checked {
        Checked::Passed(staff) => staff,
        Checked::Wrong => {
            return Err(Progress::Page(context.retry(StatusCode::UNAUTHORIZED, "The email or password is incorrect.")));
        }
        Checked::Locked(wait) => {
            let message = format!("Too many sign-in attempts. Try again in {wait} seconds.");
            return Err(Progress::Page(locked_page(context.retry(StatusCode::TOO_MANY_REQUESTS, &message), wait)));
        }
    };
    let cookie = lockout::device_cookie(context.key, sign_in.device, sign_in.email);
    let progress = match totp::is_enrolled(&state.db, staff).await {
        Ok(true) => Progress::Page(context.totp_page(&context.ticket(staff, "mfa-pending"), None)),
        Ok(false) => Progress::Authenticated { staff, mfa: false },
        Err(error) => Progress::Page(internal_page(context, error)),
    };
    Ok((progress, cookie))
}

/// Picks the venue (the only one, the chosen one, or asks), enforces the venue's MFA
/// rule for elevated permissions, and redirects with the authorization code.
async fn finish_login(
    context: &LoginContext<'_>,
    staff: uuid::Uuid,
    mfa: bool,
    wanted: Option<uuid::Uuid>,
) -> Response {
    let state = context.state;
    let mut venues = match login::venues_of(&state.db, staff).await {
        Ok(venues) => venues,
        Err(error) => return internal_page(context, error),
    };
    // A venue's own app signs people in to that venue only.
    if let Some(own) = context.client.venue_id {
        venues.retain(|v| v.venue_id == own);
    }
    let stage = if mfa { "mfa" } else { "password" };
    let chosen = match (venues.as_slice(), wanted) {
        ([], _) if context.client.venue_id.is_some() => {
            let message = "This app belongs to a venue your account does not work at. Ask its manager to invite you.";
            return page(StatusCode::FORBIDDEN, "Cannot sign in", &error_html(message));
        }
        ([], _) => {
            let message = "Your account does not belong to any venue yet. Ask a manager to invite you.";
            return page(StatusCode::FORBIDDEN, "Cannot sign in", &error_html(message));
        }
        (_, Some(wanted)) if venues.iter().any(|v| v.venue_id == wanted) => wanted,
        ([only], None) => only.venue_id,
        (_, _) => {
            let ticket = context.ticket(staff, stage);
            return page(
                StatusCode::OK,
                "Choose a venue",
                &venue_form(&context.request, &context.csrf, &ticket, &venues),
            );
        }
    };
    let venue = VenueId::from_credential(chosen);
    match login::mfa_required(&state.db, venue, staff).await {
        Ok(false) => {}
        Ok(true) if mfa => {}
        Ok(true) => {
            return match mfa::restart_enrollment(context, staff).await {
                Ok(enrollment) => context.enroll_page(&context.ticket(staff, "enroll"), chosen, &enrollment, None),
                Err(error) => internal_page(context, error),
            };
        }
        Err(error) => return internal_page(context, error),
    }
    let request = &context.request;
    let code = crate::auth::authorization_code::issue_code(
        &state.db,
        venue,
        staff,
        &context.client,
        &request.redirect_uri,
        &request.code_challenge,
        mfa,
    )
    .await;
    match code {
        Ok(code) => {
            let location =
                redirect_to(&request.redirect_uri, &state.issuer, &[("code", &code)], request.state.as_deref());
            no_store((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
        }
        Err(error) => internal_page(context, error),
    }
}

/// The trusted-device cookie (sent to every hosted page under `/oauth`: sign-in and
/// reset count only this browser's failures for the email it vouches for).
pub(crate) const DEVICE_COOKIE: &str = "vq_device";

fn with_device_cookie(mut response: Response, state: &AppState, value: Option<&str>) -> Response {
    let Some(value) = value else { return response };
    let secure = if state.issuer.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{DEVICE_COOKIE}={value}; Path=/oauth; Max-Age=7776000; HttpOnly; SameSite=Strict{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `GET /dev/callback` (only with `GRAPHIQL`, i.e. `venueql dev`): the redirect target of
/// the demo SPA client; shows the authorization code to exchange with curl.
pub async fn dev_callback(State(state): State<AppState>, Query(params): Query<HashMap<String, String>>) -> Response {
    if !state.config.graphiql {
        return crate::http::error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    }
    let field = |name: &str| escape(params.get(name).map(String::as_str).unwrap_or_default());
    let body = if params.contains_key("code") {
        format!(
            "<p>Authorization code (valid for {CODE_TTL} seconds, once):</p><pre id=\"code\">{code}</pre>\
             <p>Exchange it with the <code>oauth.exchange_example</code> command from <code>.venueql/dev.json</code>, \
             replacing <code>CODE</code>.</p><p>state: <code>{state}</code></p>",
            CODE_TTL = oauth::CODE_TTL_SECS,
            code = field("code"),
            state = field("state"),
        )
    } else {
        error_html(&format!("{}: {}", field("error"), field("error_description")))
    };
    page(StatusCode::OK, "venueql dev callback", &body)
}
