//! OAuth client registration: what a client may be (one set of rules for operators and
//! venues), the venue's own clients, and the web origins browsers may call from.
//!
//! - `spa`: public (no secret), signs people in through the hosted login to the redirect
//!   URIs it lists; registered by an operator it serves every venue of its person,
//!   registered by a venue only that venue. Its `allowed_origins` are where the SPA is
//!   served; browsers there may call the token endpoint and the API (CORS).
//! - `integration`: a server with a secret, client-credentials tokens with the client's
//!   permissions, one venue.
//! - `pos`: a terminal with a secret, PIN grants for the venue's staff, one venue.

use serde::Serialize;

use super::oauth::{CLIENT_ID_PREFIX, CLIENT_SECRET_PREFIX};
use super::secrets;
use crate::access::Permissions;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, PlatformTx, VenueTx};
use crate::venues::Venue;

/// A client to register, as asked for (checked by [`check`]).
#[derive(Clone, Copy, Debug)]
pub struct NewClient<'a> {
    /// `spa`, `integration` or `pos`.
    pub kind: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Exact redirect URIs (SPA clients only; at least one).
    pub redirect_uris: &'a [String],
    /// Web origins the SPA is served from (SPA clients only).
    pub allowed_origins: &'a [String],
    /// Permissions of an integration's client-credentials tokens, or a POS terminal's
    /// ceiling (an SPA's ceiling is the person's membership: none may be given).
    pub permissions: Permissions,
}

/// A registration that passed every rule, in normal form.
struct Checked {
    kind: &'static str,
    name: String,
    redirect_uris: Vec<String>,
    allowed_origins: Vec<String>,
    permissions: Permissions,
}

/// Checks a redirect URI: absolute, no fragment, https (or http on a loopback host).
fn check_redirect_uri(uri: &str) -> Result<(), AppError> {
    let parsed = url::Url::parse(uri)
        .map_err(|_| AppError::bad_input(format!("redirect URI {uri:?} is not an absolute URL")))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if parsed.fragment().is_some() {
        return Err(AppError::bad_input(format!("redirect URI {uri:?} must not have a fragment")));
    }
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err(AppError::bad_input(format!("redirect URI {uri:?} must use https (http only for localhost)")));
    }
    Ok(())
}

fn check_redirect_uris(uris: &[String]) -> Result<(), AppError> {
    if uris.is_empty() || uris.len() > 10 {
        return Err(AppError::bad_input("an spa client needs 1 to 10 redirect URIs (--redirect-uri, or redirectUris)"));
    }
    uris.iter().try_for_each(|uri| check_redirect_uri(uri))
}

/// The one set of rules for a new client, whoever registers it.
fn check(new: &NewClient<'_>) -> Result<Checked, AppError> {
    let kind = match new.kind {
        "spa" => "spa",
        "integration" => "integration",
        "pos" => "pos",
        other => return Err(AppError::bad_input(format!("kind must be spa, integration or pos, not {other:?}"))),
    };
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::bad_input("name must be 1 to 200 characters"));
    }
    if kind == "spa" {
        check_redirect_uris(new.redirect_uris)?;
        if !new.permissions.is_empty() {
            return Err(AppError::bad_input(
                "an spa client carries the signed-in person's own permissions: give it none",
            ));
        }
    } else if !new.redirect_uris.is_empty() || !new.allowed_origins.is_empty() {
        return Err(AppError::bad_input(format!(
            "a {kind} client is not a browser app: redirect URIs and allowed origins are for spa clients"
        )));
    }
    Ok(Checked {
        kind,
        name: name.to_string(),
        redirect_uris: new.redirect_uris.to_vec(),
        allowed_origins: crate::origins::normalize_all(new.allowed_origins)?,
        permissions: new.permissions,
    })
}

/// Output of `admin create-client`.
#[derive(Debug, Serialize)]
pub struct CreatedClient {
    /// Client id.
    pub client_id: String,
    /// The secret of a confidential client (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// `spa`, `integration` or `pos`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Venue slug of a venue-bound client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Registered web origins.
    pub allowed_origins: Vec<String>,
    /// Permissions of client-credentials tokens.
    pub permissions: Vec<&'static str>,
}

/// Registers a client through the door (`admin create-client`): an SPA without a venue
/// serves every venue of its person; every other client belongs to `venue`.
pub async fn create_client(
    tx: &mut PlatformTx,
    new: &NewClient<'_>,
    venue: Option<&Venue>,
) -> Result<CreatedClient, AppError> {
    let checked = check(new)?;
    if checked.kind != "spa" && venue.is_none() {
        return Err(AppError::bad_input(format!("a {} client needs --venue", checked.kind)));
    }
    let id = secrets::new_secret(CLIENT_ID_PREFIX);
    let secret = (checked.kind != "spa").then(|| secrets::new_secret(CLIENT_SECRET_PREFIX));
    sqlx::query(
        "INSERT INTO private.oauth_clients (id, kind, name, venue_id, redirect_uris, permissions, secret_hash, \
                                            allowed_origins) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(checked.kind)
    .bind(&checked.name)
    .bind(venue.map(|v| v.id))
    .bind(&checked.redirect_uris)
    .bind(checked.permissions.to_db())
    .bind(secret.as_deref().map(secrets::hash))
    .bind(&checked.allowed_origins)
    .execute(tx.conn())
    .await?;
    Ok(CreatedClient {
        client_id: id,
        client_secret: secret,
        kind: checked.kind.to_string(),
        name: checked.name,
        venue: venue.map(|v| v.slug.clone()),
        redirect_uris: checked.redirect_uris,
        allowed_origins: checked.allowed_origins,
        permissions: checked.permissions.names(),
    })
}

/// An SPA client's browser-facing settings after `admin update-client`.
#[derive(Debug, Serialize)]
pub struct UpdatedClient {
    /// Client id.
    pub client_id: String,
    /// Redirect URIs now.
    pub redirect_uris: Vec<String>,
    /// Web origins now.
    pub allowed_origins: Vec<String>,
}

/// Replaces an SPA client's redirect URIs and origins through the door (`admin
/// update-client`; `venueql dev` after its apps moved to other ports).
pub async fn update_spa_client(
    tx: &mut PlatformTx,
    client_id: &str,
    redirect_uris: &[String],
    allowed_origins: &[String],
) -> Result<UpdatedClient, AppError> {
    check_redirect_uris(redirect_uris)?;
    let origins = crate::origins::normalize_all(allowed_origins)?;
    let changed = sqlx::query(
        "UPDATE private.oauth_clients SET redirect_uris = $2, allowed_origins = $3 WHERE id = $1 AND kind = 'spa'",
    )
    .bind(client_id)
    .bind(redirect_uris)
    .bind(&origins)
    .execute(tx.conn())
    .await?;
    if changed.rows_affected() == 0 {
        return Err(AppError::bad_input(format!("no spa client with id {client_id:?}")));
    }
    Ok(UpdatedClient {
        client_id: client_id.to_string(),
        redirect_uris: redirect_uris.to_vec(),
        allowed_origins: origins,
    })
}

/// Whether any active SPA client lists `origin` (a CORS preflight of the staff or token
/// door, before the client is known).
pub async fn origin_registered(db: &Db, origin: &str) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar("SELECT private.spa_origin_registered($1)")
        .bind(origin)
        .fetch_one(db.platform_level())
        .await?)
}

/// Whether the active client `client_id` lists `origin`.
pub async fn client_allows_origin(db: &Db, client_id: &str, origin: &str) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar("SELECT private.client_allows_origin($1, $2)")
        .bind(client_id)
        .bind(origin)
        .fetch_one(db.platform_level())
        .await?)
}

/// A client of the transaction's venue, as its managers see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VenueClient {
    /// Client id.
    pub id: String,
    /// `integration`, `pos` or `spa`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Client-credentials permissions (integrations) or ceiling (POS).
    pub permissions: i64,
    /// When it was registered.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Redirect URIs (SPA clients).
    pub redirect_uris: Vec<String>,
    /// Web origins (SPA clients).
    pub allowed_origins: Vec<String>,
}

/// The active clients of the transaction's venue.
pub async fn venue_clients(tx: &mut VenueTx) -> Result<Vec<VenueClient>, AppError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, name, permissions, created_at, redirect_uris, allowed_origins \
         FROM private.clients_of_current_venue()",
    )
    .fetch_all(tx.conn())
    .await?)
}

async fn venue_client(tx: &mut VenueTx, id: &str) -> Result<VenueClient, AppError> {
    venue_clients(tx).await?.into_iter().find(|c| c.id == id).ok_or(AppError::NotFound("API client"))
}

/// Registers a client at the transaction's venue with permissions the caller holds;
/// returns it with its secret (shown once; none for an SPA client).
pub async fn create_venue_client(
    tx: &mut VenueTx,
    who: &Who,
    caller: Permissions,
    new: &NewClient<'_>,
) -> Result<(VenueClient, Option<String>), AppError> {
    Permissions::check_grantable(caller, Permissions::empty(), new.permissions).map_err(AppError::Refused)?;
    let checked = check(new)?;
    let id = secrets::new_secret(CLIENT_ID_PREFIX);
    let secret = (checked.kind != "spa").then(|| secrets::new_secret(CLIENT_SECRET_PREFIX));
    sqlx::query("SELECT private.create_venue_client($1, $2, $3, $4, $5, $6, $7)")
        .bind(&id)
        .bind(checked.kind)
        .bind(&checked.name)
        .bind(checked.permissions.to_db())
        .bind(secret.as_deref().map(secrets::hash))
        .bind(&checked.redirect_uris)
        .bind(&checked.allowed_origins)
        .execute(tx.conn())
        .await?;
    let after = serde_json::json!({ "kind": checked.kind, "name": checked.name,
        "permissions": checked.permissions.names(), "redirect_uris": checked.redirect_uris,
        "allowed_origins": checked.allowed_origins });
    let change = Change {
        action: "oauth_client.created",
        target_type: "oauth_client",
        target_id: id.clone(),
        before: None,
        after: Some(after),
    };
    audit::record(tx, who, change).await?;
    Ok((venue_client(tx, &id).await?, secret))
}

/// Replaces the web origins of one of the venue's SPA clients (audited); another venue's
/// client, or one that is not an SPA, is "not found".
pub async fn set_venue_client_origins(
    tx: &mut VenueTx,
    who: &Who,
    id: &str,
    origins: &[String],
) -> Result<VenueClient, AppError> {
    let origins = crate::origins::normalize_all(origins)?;
    if !secrets::looks_like(id, CLIENT_ID_PREFIX) {
        return Err(AppError::NotFound("SPA client"));
    }
    let before = venue_client(tx, id).await.map(|c| c.allowed_origins).ok();
    let changed: bool = sqlx::query_scalar("SELECT private.set_venue_client_origins($1, $2)")
        .bind(id)
        .bind(&origins)
        .fetch_one(tx.conn())
        .await?;
    if !changed {
        return Err(AppError::NotFound("SPA client"));
    }
    let change = Change {
        action: "oauth_client.origins_set",
        target_type: "oauth_client",
        target_id: id.to_string(),
        before: Some(serde_json::json!({ "allowed_origins": before })),
        after: Some(serde_json::json!({ "allowed_origins": origins })),
    };
    audit::record(tx, who, change).await?;
    venue_client(tx, id).await
}

/// Revokes a client of the transaction's venue (its tokens stop working at once).
pub async fn revoke_venue_client(tx: &mut VenueTx, who: &Who, id: &str) -> Result<(), AppError> {
    if !secrets::looks_like(id, CLIENT_ID_PREFIX) {
        return Err(AppError::NotFound("API client"));
    }
    let revoked: bool =
        sqlx::query_scalar("SELECT private.revoke_venue_client($1)").bind(id).fetch_one(tx.conn()).await?;
    if !revoked {
        return Err(AppError::NotFound("API client"));
    }
    let change = Change {
        action: "oauth_client.revoked",
        target_type: "oauth_client",
        target_id: id.to_string(),
        before: None,
        after: None,
    };
    audit::record(tx, who, change).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_or_loopback_http_without_fragment() {
        assert!(check_redirect_uri("https://app.example.com/cb").is_ok());
        assert!(check_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(check_redirect_uri("http://app.example.com/cb").is_err());
        assert!(check_redirect_uri("https://app.example.com/cb#x").is_err());
        assert!(check_redirect_uri("/cb").is_err());
    }

    #[test]
    fn one_set_of_rules_for_every_client() {
        let uris = ["https://app.example.com/cb".to_string()];
        let origins = ["https://app.example.com".to_string()];
        let spa = NewClient {
            kind: "spa",
            name: "App",
            redirect_uris: &uris,
            allowed_origins: &origins,
            permissions: Permissions::empty(),
        };
        assert!(check(&spa).is_ok());
        assert!(check(&NewClient { redirect_uris: &[], ..spa }).is_err(), "an spa needs a redirect URI");
        assert!(check(&NewClient { permissions: Permissions::MENU_VIEW, ..spa }).is_err(), "an spa has no ceiling");
        let integration = NewClient { kind: "integration", redirect_uris: &[], ..spa };
        assert!(check(&integration).is_err(), "origins are for browser apps");
        assert!(check(&NewClient { allowed_origins: &[], ..integration }).is_ok());
        assert!(check(&NewClient { kind: "robot", ..spa }).is_err());
        assert!(check(&NewClient { name: " ", ..spa }).is_err());
    }
}
