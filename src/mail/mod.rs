//! Outgoing mail through a transactional outbox: [`enqueue`] writes a mail in the
//! transaction of what causes it (an invitation, a password reset), sealed under the
//! platform data key because it carries a one-time link; a background worker of any
//! server process ([`spawn_worker`]) takes due mails with a lease, renders and sends them
//! over SMTP (lettre) or into a directory (`venueql dev`), and retries failures with
//! backoff. A rolled-back change sends nothing; a process dying before or while sending
//! loses nothing (the lease runs out and another worker sends it).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::MailConfig;
use crate::crypto::{self, MasterKeys, Place};
use crate::error::AppError;
use crate::keys;
use crate::tenancy::Db;

/// A mail venueql sends, with what its text needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mail {
    /// An invitation to join a venue, with its one-time link token.
    Invitation {
        /// The link token (`vqiv_…`).
        token: String,
        /// The venue's display name.
        venue_name: String,
        /// When the link stops working.
        expires_at: DateTime<Utc>,
    },
    /// A diner's one-time code proving they control their email.
    DinerCode {
        /// Six digits.
        code: String,
        /// The venue asking.
        venue_name: String,
        /// When the code stops working.
        expires_at: DateTime<Utc>,
    },
    /// A password reset link.
    PasswordReset {
        /// The link token (`vqpr_…`).
        token: String,
        /// When the link stops working.
        expires_at: DateTime<Utc>,
    },
}

/// A mail's subject and plain-text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl Mail {
    fn kind(&self) -> &'static str {
        match self {
            Mail::Invitation { .. } => "invitation",
            Mail::PasswordReset { .. } => "password_reset",
            Mail::DinerCode { .. } => "diner_code",
        }
    }

    /// The text of the mail, with links under `base_url` (the server's public URL).
    pub fn render(&self, base_url: &str) -> Rendered {
        match self {
            Mail::Invitation { token, venue_name, expires_at } => Rendered {
                subject: format!("You are invited to work at {venue_name}"),
                body: format!(
                    "Hello,\n\n{venue_name} has invited you to join its staff on venueql.\n\n\
                     Open this link to accept (or decline) the invitation:\n\n  {base_url}/oauth/invitation?token={token}\n\n\
                     If you are new, you will choose your own password there; if you already work at another venue, \
                     sign in with your own password. Nobody at the venue ever sees it.\n\n\
                     The link works once, until {expires}. If you did not expect this invitation, ignore this mail.\n",
                    expires = expires_at.format("%Y-%m-%d %H:%M UTC"),
                ),
            },
            Mail::DinerCode { code, venue_name, expires_at } => Rendered {
                subject: format!("Your code for {venue_name}: {code}"),
                body: format!(
                    "Hello,\n\nYour code is {code}\n\nType it on {venue_name}'s ordering page to confirm this email is \
                     yours, so your allergen profile can be shared with (or withdrawn from) other venues. It works \
                     once, until {expires}.\nIf you did not ask for it, ignore this mail: nothing changes.\n",
                    expires = expires_at.format("%Y-%m-%d %H:%M UTC"),
                ),
            },
            Mail::PasswordReset { token, expires_at } => Rendered {
                subject: "Reset your venueql password".into(),
                body: format!(
                    "Hello,\n\nSomeone (hopefully you) asked to reset the password of this venueql account.\n\n\
                     Open this link to choose a new password:\n\n  {base_url}/oauth/reset?token={token}\n\n\
                     The link works once, until {expires}. Choosing a new password signs you out everywhere.\n\
                     If you did not ask for this, ignore this mail: your password stays as it is.\n",
                    expires = expires_at.format("%Y-%m-%d %H:%M UTC"),
                ),
            },
        }
    }
}

/// What the outbox seals: who the mail goes to and what it says.
#[derive(Serialize, Deserialize)]
struct Envelope {
    to: String,
    mail: Mail,
}

/// Where a mail's payload is sealed (its ciphertext is bound to the outbox row).
fn payload_place(id: &str) -> Place<'_> {
    Place { scope: "platform", table: "mail_outbox", row: id, column: "payload" }
}

/// Writes `mail` to `recipient` into the outbox, inside the caller's transaction.
pub async fn enqueue(
    conn: &mut PgConnection,
    master: &MasterKeys,
    recipient: &str,
    mail: &Mail,
) -> Result<Uuid, AppError> {
    let id = Uuid::new_v4();
    let (version, key) = keys::platform_key(conn, master, None).await?;
    let envelope = Envelope { to: recipient.to_string(), mail: mail.clone() };
    let json = serde_json::to_vec(&envelope).map_err(AppError::internal)?;
    let sealed = crypto::encrypt_field(&key, version, payload_place(&id.to_string()), &json);
    sqlx::query("SELECT private.enqueue_mail($1, $2, $3)")
        .bind(id)
        .bind(mail.kind())
        .bind(sealed)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Mails in the outbox not yet sent (nor given up on).
pub async fn waiting(db: &Db) -> Result<i64, AppError> {
    Ok(sqlx::query_scalar("SELECT private.mail_waiting()").fetch_one(db.platform_level()).await?)
}

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server (`SMTP_URL`).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `.eml` file per mail in a directory (`MAIL_DIR`, `venueql dev`).
    Directory(AsyncFileTransport<Tokio1Executor>),
}

impl Transport {
    /// The transport the settings name: `MAIL_DIR` wins over `SMTP_URL`; None when
    /// neither is set.
    pub fn from_config(config: &MailConfig) -> Result<Option<Transport>, crate::config::ConfigError> {
        if let Some(dir) = &config.mail_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                crate::config::ConfigError(format!("MAIL_DIR {} cannot be created: {e}", dir.display()))
            })?;
            return Ok(Some(Transport::Directory(AsyncFileTransport::new(dir))));
        }
        let Some(url) = &config.smtp_url else { return Ok(None) };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| crate::config::ConfigError(format!("SMTP_URL is not a usable SMTP URL: {e}")))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Some(Transport::Smtp(transport)))
    }

    async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError { permanent: e.is_permanent(), text: e.to_string() }),
            Transport::Directory(files) => {
                files.send(message).await.map(|_| ()).map_err(|e| SendError { permanent: false, text: e.to_string() })
            }
        }
    }
}

/// Why one delivery failed.
struct SendError {
    /// The server refused for good (a 5xx answer, a bad address): do not retry.
    permanent: bool,
    text: String,
}

/// What the outbox worker needs.
#[derive(Clone)]
pub struct Worker {
    /// The app role's database.
    pub db: Db,
    /// Opens the sealed payloads.
    pub master: Arc<MasterKeys>,
    /// Where mail goes.
    pub transport: Transport,
    /// The sender.
    pub from: Mailbox,
    /// Base of the links in mails (the server's public URL).
    pub base_url: String,
    /// First retry wait, doubled per attempt (at most an hour).
    pub retry_base: Duration,
    /// How long a taken mail is held before another worker may take it.
    pub lease: Duration,
}

/// Gives up on a mail after this many failed deliveries (with the backoff, about a day).
const MAX_ATTEMPTS: i32 = 12;
/// How many mails one claim takes: one, so a slow SMTP server cannot hold a batch past
/// its lease (another worker would then send the rest again).
const BATCH: i32 = 1;
/// How often an idle worker looks for due mail.
const POLL: Duration = Duration::from_millis(500);

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    payload: Option<Vec<u8>>,
    attempts: i32,
}

impl Worker {
    /// Sends every due mail once; returns how many were taken.
    pub async fn deliver_due(&self) -> Result<usize, AppError> {
        let claimed: Vec<Claimed> = sqlx::query_as("SELECT id, payload, attempts FROM private.claim_mail($1, $2)")
            .bind(BATCH)
            .bind(i32::try_from(self.lease.as_secs()).unwrap_or(i32::MAX).max(1))
            .fetch_all(self.db.platform_level())
            .await?;
        let taken = claimed.len();
        for mail in claimed {
            let id = mail.id;
            let attempts = mail.attempts;
            match self.deliver(mail).await {
                Ok(()) => {
                    sqlx::query("SELECT private.mail_sent($1)").bind(id).execute(self.db.platform_level()).await?;
                    tracing::info!(mail = %id, "mail sent");
                }
                Err(failure) => self.failed(id, attempts, failure).await?,
            }
        }
        Ok(taken)
    }

    async fn deliver(&self, mail: Claimed) -> Result<(), SendError> {
        let permanent = |text: String| SendError { permanent: true, text };
        let sealed = mail.payload.ok_or_else(|| permanent("the mail has no payload".into()))?;
        let opened = self.open(mail.id, &sealed).await.map_err(|e| permanent(format!("{e:?}")))?;
        let to: Mailbox = opened.to.parse().map_err(|_| permanent("the recipient is not an address".into()))?;
        let rendered = opened.mail.render(&self.base_url);
        // 7bit keeps the links readable in the raw message; other text is quoted-printable.
        let body = Body::new_with_encoding(rendered.body.clone(), ContentTransferEncoding::SevenBit)
            .unwrap_or_else(|_| Body::new(rendered.body));
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| permanent(e.to_string()))?;
        self.transport.send(message).await
    }

    async fn open(&self, id: Uuid, sealed: &[u8]) -> Result<Envelope, AppError> {
        let mut tx = self.db.resolving_tx().await?;
        let (_, key) = keys::platform_key(tx.conn(), &self.master, Some(crypto::field_version(sealed)?)).await?;
        tx.commit().await?;
        let json = crypto::decrypt_field(&key, payload_place(&id.to_string()), sealed)?;
        serde_json::from_slice(&json).map_err(AppError::internal)
    }

    async fn failed(&self, id: Uuid, attempts: i32, failure: SendError) -> Result<(), AppError> {
        let give_up = failure.permanent || attempts + 1 >= MAX_ATTEMPTS;
        let factor = 2u32.saturating_pow(u32::try_from(attempts).unwrap_or(0).min(16));
        let wait = self.retry_base.saturating_mul(factor).min(Duration::from_secs(3600));
        if give_up {
            tracing::error!(mail = %id, attempts = attempts + 1, error = %failure.text, "mail not delivered; giving up");
        } else {
            tracing::warn!(mail = %id, attempts = attempts + 1, retry_in_secs = wait.as_secs(), error = %failure.text, "mail not delivered; will retry");
        }
        sqlx::query("SELECT private.mail_failed($1, $2, $3, $4)")
            .bind(id)
            .bind(&failure.text)
            .bind(i32::try_from(wait.as_secs()).unwrap_or(3600))
            .bind(give_up)
            .execute(self.db.platform_level())
            .await?;
        Ok(())
    }
}

/// Runs the worker until the process ends: sends due mail, then looks again every half
/// second. A database outage is logged and waited out.
pub fn spawn_worker(worker: Worker) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match worker.deliver_due().await {
                Ok(taken) if taken > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    if let AppError::Internal(source) = &error {
                        tracing::warn!(error = %source, "mail outbox unavailable; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mails_link_to_the_server_and_say_how_long_they_work() {
        let expires_at = "2026-12-07T10:00:00Z".parse().unwrap();
        let invitation = Mail::Invitation { token: "vqiv_abc".into(), venue_name: "Demo Cafe".into(), expires_at };
        let rendered = invitation.render("https://api.example.com");
        assert_eq!(rendered.subject, "You are invited to work at Demo Cafe");
        assert!(rendered.body.contains("https://api.example.com/oauth/invitation?token=vqiv_abc"), "{}", rendered.body);
        assert!(rendered.body.contains("2026-12-07 10:00 UTC"));
        let reset = Mail::PasswordReset { token: "vqpr_xyz".into(), expires_at };
        assert!(
            reset.render("http://127.0.0.1:8080").body.contains("http://127.0.0.1:8080/oauth/reset?token=vqpr_xyz")
        );
        let json = serde_json::to_string(&reset).unwrap();
        assert_eq!(serde_json::from_str::<Mail>(&json).unwrap(), reset);
    }
}
