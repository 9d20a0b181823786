//! The second factor inside the hosted login: the TOTP (or recovery code) step, and the
//! in-login enrolment a venue requires for elevated roles, with the recovery codes shown
//! once.

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;

use super::{LoginContext, Progress, internal_page, locked_page};
use crate::auth::lockout::Checked;
use crate::auth::{login, totp};
use crate::error::AppError;
use crate::http::pages::{error_html, escape, page};

impl LoginContext<'_> {
    pub(super) fn totp_page(&self, ticket: &str, error: Option<&str>) -> Response {
        let body = format!(
            "<p>Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>{error}\
             <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
             <label for=\"code\">Authentication code</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required>\
             <button type=\"submit\">Verify</button></form>",
            error = error.map(error_html).unwrap_or_default(),
            hidden = self.hidden("totp", ticket, None),
        );
        page(
            if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK },
            "Two-factor authentication",
            &body,
        )
    }

    pub(super) fn enroll_page(
        &self,
        ticket: &str,
        venue: uuid::Uuid,
        enrollment: &totp::Enrollment,
        error: Option<&str>,
    ) -> Response {
        let qr = base64::engine::general_purpose::STANDARD.encode(enrollment.qr_svg.as_bytes());
        let body = format!(
            "<p>This venue requires two-factor authentication for your role. Scan the code with an authenticator \
             app, or enter the key by hand, then type the 6-digit code it shows.</p>{error}\
             <p><img alt=\"QR code for your authenticator app\" width=\"200\" height=\"200\" src=\"data:image/svg+xml;base64,{qr}\"></p>\
             <p>Key: <code id=\"totp-secret\">{secret}</code></p>\
             <form method=\"post\" action=\"/oauth/authorize\">{hidden}\
             <label for=\"code\">Authentication code</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required>\
             <button type=\"submit\">Turn on two-factor authentication</button></form>",
            error = error.map(error_html).unwrap_or_default(),
            secret = escape(&enrollment.secret),
            hidden = self.hidden("enroll", ticket, Some(venue)),
        );
        page(StatusCode::OK, "Set up two-factor authentication", &body)
    }

    pub(super) fn recovery_page(&self, ticket: &str, venue: uuid::Uuid, codes: &[String]) -> Response {
        let list: String = codes.iter().map(|c| format!("<li><code>{}</code></li>", escape(c))).collect();
        let body = format!(
            "<p>Two-factor authentication is on. Keep these recovery codes somewhere safe: each works once if \
             you lose your authenticator. They are not shown again.</p><ul id=\"recovery-codes\">{list}</ul>\
             <form method=\"post\" action=\"/oauth/authorize\">{hidden}<button type=\"submit\">Continue</button></form>",
            hidden = self.hidden("venue", ticket, Some(venue)),
        );
        page(StatusCode::OK, "Recovery codes", &body)
    }
}

/// The TOTP step (under the lockout, per person and address).
pub(super) async fn totp_step(context: &LoginContext<'_>, ticket: &str, code: &str) -> Progress {
    let Some(staff) = context.check_ticket(ticket, "mfa-pending") else {
        return Progress::Page(context.retry(StatusCode::UNAUTHORIZED, "Your sign-in expired. Sign in again."));
    };
    let (state, typed) = (context.state, login::CodeAttempt { staff, code, ip: context.client_addr });
    let checked =
        async { login::second_factor(&state.db, state.config.lockout, state.config.keys.master()?, typed).await }.await;
    match checked {
        Ok(Checked::Passed(())) => Progress::Authenticated { staff, mfa: true },
        Ok(Checked::Wrong) => {
            Progress::Page(context.totp_page(ticket, Some("That code is not valid. Try the next one.")))
        }
        Ok(Checked::Locked(wait)) => {
            let message = format!("Too many attempts. Try again in {wait} seconds.");
            Progress::Page(locked_page(context.totp_page(ticket, Some(&message)), wait))
        }
        Err(error) => Progress::Page(internal_page(context, error)),
    }
}

/// Confirms in-login TOTP enrolment and shows the recovery codes once.
pub(super) async fn enroll_step(
    context: &LoginContext<'_>,
    ticket: &str,
    code: &str,
    venue: Option<uuid::Uuid>,
) -> Progress {
    let (Some(staff), Some(venue)) = (context.check_ticket(ticket, "enroll"), venue) else {
        return Progress::Page(context.retry(StatusCode::UNAUTHORIZED, "Your sign-in expired. Sign in again."));
    };
    let (state, typed) = (context.state, login::CodeAttempt { staff, code, ip: context.client_addr });
    let confirmed =
        async { login::confirm_totp(&state.db, state.config.lockout, state.config.keys.master()?, typed).await }.await;
    match confirmed {
        Ok(codes) => Progress::Page(context.recovery_page(&context.ticket(staff, "mfa"), venue, &codes)),
        Err(AppError::RateLimited { retry_after_secs, message }) => {
            Progress::Page(locked_page(context.retry(StatusCode::TOO_MANY_REQUESTS, &message), retry_after_secs))
        }
        Err(AppError::BadUserInput(message)) => {
            let retry = context.ticket(staff, "enroll");
            match restart_enrollment(context, staff).await {
                Ok(enrollment) => Progress::Page(context.enroll_page(&retry, venue, &enrollment, Some(&message))),
                Err(error) => Progress::Page(internal_page(context, error)),
            }
        }
        Err(error) => Progress::Page(internal_page(context, error)),
    }
}

pub(super) async fn restart_enrollment(
    context: &LoginContext<'_>,
    staff: uuid::Uuid,
) -> Result<totp::Enrollment, AppError> {
    let state = context.state;
    let person = login::email_of(&state.db, staff).await?.ok_or(AppError::NotFound("person"))?;
    totp::begin_enrollment(&state.db, state.config.keys.master()?, staff, &person).await
}
