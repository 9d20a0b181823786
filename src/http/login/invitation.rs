//! The hosted invitation page (`/oauth/invitation?token=…`), server-rendered and usable
//! without JavaScript. A new person chooses their password (and may turn on two-factor
//! authentication); a person with an account signs in with their own password and second
//! factor; either may decline. The decisions are `staff::invitations`'; this module parses
//! forms and renders pages.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::report;
use crate::auth::lockout::Checked;
use crate::auth::login::{self, PasswordSignIn};
use crate::auth::{secrets, totp};
use crate::error::AppError;
use crate::http::AppState;
use crate::http::RequestId;
use crate::http::client_addr::ClientAddr;
use crate::http::pages::{INVITATION_CSRF, csrf_matches, error_html, escape, hidden, new_csrf, page, with_csrf_cookie};
use crate::staff::invitations::{self, Opened, Through};

/// What every step of the page needs.
struct Visit<'a> {
    state: &'a AppState,
    token: String,
    csrf: String,
    through: Through,
}

impl Visit<'_> {
    fn key(&self) -> &[u8; 32] {
        self.state.config.app_key.expose_secret()
    }

    /// A ticket saying `staff` reached `stage` on this invitation's page.
    fn ticket(&self, staff: Uuid, stage: &str) -> String {
        login::sign_ticket(self.key(), staff, &self.binding(stage))
    }

    fn check_ticket(&self, ticket: &str, stage: &str) -> Option<Uuid> {
        login::verify_ticket(self.key(), ticket, &self.binding(stage))
    }

    fn binding(&self, stage: &str) -> String {
        let link: String = secrets::hash(&self.token).iter().map(|b| format!("{b:02x}")).collect();
        format!("invitation|{link}|{stage}")
    }

    fn form(&self, step: &str, inner: &str, button: &str) -> String {
        format!(
            "<form method=\"post\" action=\"/oauth/invitation\">{}{}{}{inner}<button type=\"submit\" name=\"go\">{}</button></form>",
            hidden("token", &self.token),
            hidden("csrf", &self.csrf),
            hidden("step", step),
            escape(button)
        )
    }

    fn decline_form(&self) -> String {
        format!("<p>Not for you?</p>{}", self.form("decline", "", "Decline the invitation"))
    }

    /// The first page: choose a password (new person) or sign in (existing account).
    fn welcome(&self, opened: &Opened, status: StatusCode, error: Option<&str>) -> Response {
        let intro = format!(
            "<p><strong>{venue}</strong> invites <strong>{email}</strong> to join its staff.</p>{error}",
            venue = escape(&opened.venue_name),
            email = escape(&opened.email),
            error = error.map(error_html).unwrap_or_default(),
        );
        let accept = match opened.account {
            None => self.form(
                "create",
                "<p>Choose your password: at least 12 characters with upper and lower case, a digit and a symbol. \
                 Only you will know it.</p>\
                 <label for=\"password\">New password</label>\
                 <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
                 <label for=\"password2\">Repeat it</label>\
                 <input id=\"password2\" name=\"password2\" type=\"password\" autocomplete=\"new-password\" required>",
                "Create my account and accept",
            ),
            Some(_) => self.form(
                "signin",
                &format!(
                    "<p>You already have an account. Sign in with your own password to accept.</p>\
                     <input type=\"hidden\" name=\"email\" autocomplete=\"username\" value=\"{}\">\
                     <label for=\"password\">Password</label>\
                     <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>",
                    escape(&opened.email)
                ),
                "Sign in and accept",
            ),
        };
        page(status, "Join the team", &format!("{intro}{accept}{}", self.decline_form()))
    }

    fn totp_page(&self, ticket: &str, status: StatusCode, error: Option<&str>) -> Response {
        let inner = format!(
            "<p>Enter the 6-digit code from your authenticator app, or a recovery code.</p>{}{}\
             <label for=\"code\">Authentication code</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required>",
            error.map(error_html).unwrap_or_default(),
            hidden("ticket", ticket)
        );
        page(status, "Two-factor authentication", &self.form("totp", &inner, "Verify and accept"))
    }

    /// After acceptance: a new person may turn on two-factor authentication now.
    fn accepted(&self, opened: &Opened, offer_totp: Option<Uuid>) -> Response {
        let offer = offer_totp.map_or_else(String::new, |staff| {
            let inner = format!(
                "<p>You can turn on two-factor authentication now (some venues require it for managers).</p>{}",
                hidden("ticket", &self.ticket(staff, "new-account"))
            );
            self.form("totp-setup", &inner, "Set up two-factor authentication")
        });
        let body = format!(
            "<p id=\"accepted\">You now work at <strong>{}</strong>. Sign in to its apps as <strong>{}</strong>.</p>{offer}",
            escape(&opened.venue_name),
            escape(&opened.email)
        );
        page(StatusCode::OK, "Welcome", &body)
    }

    fn enroll_page(&self, staff: Uuid, enrollment: &totp::Enrollment, error: Option<&str>) -> Response {
        let qr = base64::engine::general_purpose::STANDARD.encode(enrollment.qr_svg.as_bytes());
        let inner = format!(
            "<p>Scan the code with an authenticator app, or enter the key by hand, then type the 6-digit code it \
             shows.</p>{error}<p><img alt=\"QR code for your authenticator app\" width=\"200\" height=\"200\" \
             src=\"data:image/svg+xml;base64,{qr}\"></p><p>Key: <code id=\"totp-secret\">{secret}</code></p>{ticket}\
             <label for=\"code\">Authentication code</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required>",
            error = error.map(error_html).unwrap_or_default(),
            secret = escape(&enrollment.secret),
            ticket = hidden("ticket", &self.ticket(staff, "new-account")),
        );
        page(StatusCode::OK, "Set up two-factor authentication", &self.form("totp-confirm", &inner, "Turn it on"))
    }

    fn done(&self, title: &str, message: &str) -> Response {
        page(StatusCode::OK, title, &format!("<p id=\"done\">{}</p>", escape(message)))
    }
}

fn gone() -> Response {
    let message = "This invitation link was used, revoked or has expired. Ask the venue to invite you again.";
    page(StatusCode::NOT_FOUND, "Invitation not available", &error_html(message))
}

fn locked(wait: u32) -> Response {
    let mut response =
        page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &error_html(&format!("Try again in {wait} seconds.")));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
    response
}

/// A failure inside venueql (logged with the request id, reported) or a refusal.
fn failed(error: AppError) -> Response {
    match error {
        AppError::RateLimited { retry_after_secs, .. } => locked(retry_after_secs),
        AppError::NotFound(_) => gone(),
        AppError::Internal(_) => {
            report(error);
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                &error_html("Something went wrong. Try again."),
            )
        }
        other => {
            let message = other.client_message();
            report(other);
            page(StatusCode::BAD_REQUEST, "Cannot continue", &error_html(&message))
        }
    }
}

/// `GET /oauth/invitation?token=…`: what the invitation is and how to accept it.
pub async fn invitation_page(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token = params.get("token").cloned().unwrap_or_default();
    let visit = Visit { state: &state, token, csrf: new_csrf(), through: Through { request_id, ip: client_addr } };
    let response = match invitations::open(&state.db, state.config.lockout, &visit.token, client_addr).await {
        Ok(Some(opened)) => visit.welcome(&opened, StatusCode::OK, None),
        Ok(None) => gone(),
        Err(error) => failed(error),
    };
    with_csrf_cookie(response, state.issuer.starts_with("https://"), INVITATION_CSRF, &visit.csrf)
}

/// `POST /oauth/invitation`: one step of accepting or declining.
pub async fn invitation_submit(
    State(state): State<AppState>,
    Extension(ClientAddr(client_addr)): Extension<ClientAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return page(StatusCode::BAD_REQUEST, "Cannot continue", &error_html("The form could not be read."));
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    if !csrf_matches(&headers, INVITATION_CSRF, field("csrf")) {
        let message = "This form expired or came from another site. Open the link from your invitation mail again.";
        return page(StatusCode::FORBIDDEN, "Cannot continue", &error_html(message));
    }
    let visit = Visit {
        state: &state,
        token: field("token").to_string(),
        csrf: field("csrf").to_string(),
        through: Through { request_id, ip: client_addr },
    };
    let result = match field("step") {
        "create" => create_account(&visit, field("password"), field("password2")).await,
        "signin" => sign_in(&visit, field("password")).await,
        "totp" => second_factor(&visit, field("ticket"), field("code")).await,
        "decline" => invitations::decline(&state.db, &visit.token, &visit.through).await.map(|opened| {
            visit.done("Invitation declined", &format!("You declined the invitation of {}.", opened.venue_name))
        }),
        "totp-setup" => totp_setup(&visit, field("ticket")).await,
        "totp-confirm" => totp_confirm(&visit, field("ticket"), field("code")).await,
        _ => Ok(page(StatusCode::BAD_REQUEST, "Cannot continue", &error_html("Open the link from your mail again."))),
    };
    result.unwrap_or_else(failed)
}

/// The live invitation of the visit, or the page to show instead.
async fn opened(visit: &Visit<'_>) -> Result<Result<Opened, Response>, AppError> {
    let state = visit.state;
    Ok(invitations::open(&state.db, state.config.lockout, &visit.token, visit.through.ip).await?.ok_or_else(gone))
}

async fn create_account(visit: &Visit<'_>, password: &str, repeated: &str) -> Result<Response, AppError> {
    let opened = match opened(visit).await? {
        Ok(opened) => opened,
        Err(page) => return Ok(page),
    };
    if password != repeated {
        return Ok(visit.welcome(&opened, StatusCode::BAD_REQUEST, Some("The two passwords differ.")));
    }
    let state = visit.state;
    match invitations::accept_as_new_person(&state.db, &state.breach, &visit.token, password, &visit.through).await {
        Ok((opened, staff)) => Ok(visit.accepted(&opened, Some(staff))),
        Err(AppError::BadUserInput(message)) => Ok(visit.welcome(&opened, StatusCode::BAD_REQUEST, Some(&message))),
        Err(error) => Err(error),
    }
}

async fn sign_in(visit: &Visit<'_>, password: &str) -> Result<Response, AppError> {
    let opened = match opened(visit).await? {
        Ok(opened) => opened,
        Err(page) => return Ok(page),
    };
    let state = visit.state;
    let sign_in = PasswordSignIn { email: &opened.email, password, ip: visit.through.ip, device: None };
    let staff = match login::sign_in_with_password(&state.db, state.config.lockout, sign_in).await? {
        Checked::Passed(staff) => staff,
        Checked::Wrong => {
            return Ok(visit.welcome(&opened, StatusCode::UNAUTHORIZED, Some("The password is incorrect.")));
        }
        Checked::Locked(wait) => return Ok(locked(wait)),
    };
    if totp::is_enrolled(&state.db, staff).await? {
        return Ok(visit.totp_page(&visit.ticket(staff, "mfa-pending"), StatusCode::OK, None));
    }
    let opened = invitations::accept_as_member(&state.db, &visit.token, staff, &visit.through).await?;
    Ok(visit.accepted(&opened, None))
}

async fn second_factor(visit: &Visit<'_>, ticket: &str, code: &str) -> Result<Response, AppError> {
    let Some(staff) = visit.check_ticket(ticket, "mfa-pending") else {
        return Ok(gone());
    };
    let state = visit.state;
    let master = state.config.keys.master()?;
    match login::second_factor(
        &state.db,
        state.config.lockout,
        master,
        login::CodeAttempt { staff, code, ip: visit.through.ip },
    )
    .await?
    {
        Checked::Passed(()) => {
            let opened = invitations::accept_as_member(&state.db, &visit.token, staff, &visit.through).await?;
            Ok(visit.accepted(&opened, None))
        }
        Checked::Wrong => Ok(visit.totp_page(ticket, StatusCode::UNAUTHORIZED, Some("That code is not valid."))),
        Checked::Locked(wait) => Ok(locked(wait)),
    }
}

async fn totp_setup(visit: &Visit<'_>, ticket: &str) -> Result<Response, AppError> {
    let Some(staff) = visit.check_ticket(ticket, "new-account") else {
        return Ok(gone());
    };
    let state = visit.state;
    let email = login::email_of(&state.db, staff).await?.ok_or(AppError::NotFound("person"))?;
    let enrollment = totp::begin_enrollment(&state.db, state.config.keys.master()?, staff, &email).await?;
    Ok(visit.enroll_page(staff, &enrollment, None))
}

async fn totp_confirm(visit: &Visit<'_>, ticket: &str, code: &str) -> Result<Response, AppError> {
    let Some(staff) = visit.check_ticket(ticket, "new-account") else {
        return Ok(gone());
    };
    let state = visit.state;
    let master = state.config.keys.master()?;
    match login::confirm_totp(
        &state.db,
        state.config.lockout,
        master,
        login::CodeAttempt { staff, code, ip: visit.through.ip },
    )
    .await
    {
        Ok(codes) => {
            let list: String = codes.iter().map(|c| format!("<li><code>{}</code></li>", escape(c))).collect();
            let body = format!(
                "<p id=\"done\">Two-factor authentication is on. Keep these recovery codes somewhere safe: each works \
                 once if you lose your authenticator. They are not shown again.</p><ul id=\"recovery-codes\">{list}</ul>"
            );
            Ok(page(StatusCode::OK, "Recovery codes", &body))
        }
        Err(AppError::BadUserInput(message)) => {
            let email = login::email_of(&state.db, staff).await?.ok_or(AppError::NotFound("person"))?;
            let enrollment = totp::begin_enrollment(&state.db, master, staff, &email).await?;
            Ok(visit.enroll_page(staff, &enrollment, Some(&message)))
        }
        Err(error) => Err(error),
    }
}
