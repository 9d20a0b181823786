//! The write-once copy of the audit trail: every venue's audit rows (with their chain
//! hashes and keyed seals) and the platform's audit rows, shipped in order as NDJSON
//! batches to S3-compatible storage with Object Lock in compliance mode.
//!
//! A batch is named by its stream and sequence range (`audit/venues/{venue}/{first}-{last}.ndjson`,
//! `audit/platform/{first}-{last}.ndjson`, numbers zero-padded to 20 digits), written with
//! `If-None-Match: *`, a retention date, and its SHA-256 checksum. The resume cursor of
//! the stream moves only after the PUT succeeded; a process that died between the PUT and
//! the cursor finds the batch starting at its cursor already stored, adopts it and moves
//! on: no gap, no duplicate. Requests are presigned with SigV4 by the `rusty-s3` crate.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rusty_s3::actions::{CreateBucket, GetObject, ListObjectsV2, PutObject, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::WormSettings;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// Rows per batch (one object).
const BATCH_ROWS: i64 = 500;
/// How long a presigned request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// What a PUT found.
#[derive(Debug, PartialEq, Eq)]
enum Stored {
    /// The object was written.
    Written,
    /// An object of that name exists already (a retry after a crash, or another replica).
    AlreadyThere,
}

/// An S3 bucket with Object Lock, as the audit trail uses it.
pub struct WormStore {
    bucket: Bucket,
    credentials: Credentials,
    retention_days: u32,
    http: reqwest::Client,
}

fn s3_error(what: &str, error: impl std::fmt::Display) -> AppError {
    AppError::Unavailable(format!("the WORM copy could not {what}: {error}"))
}

/// A transport error without its URL (a presigned URL carries the access key id and a
/// signature: never in errors or logs).
fn unsent(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

impl WormStore {
    /// A store for `settings` (path-style URLs: they work with every S3 implementation).
    pub fn new(settings: &WormSettings) -> Result<WormStore, String> {
        let bucket =
            Bucket::new(settings.endpoint.clone(), UrlStyle::Path, settings.bucket.clone(), settings.region.clone())
                .map_err(|e| format!("AUDIT_S3_ENDPOINT/AUDIT_S3_BUCKET: {e}"))?;
        let credentials =
            Credentials::new(settings.access_key_id.clone(), settings.secret_access_key.expose_secret().to_string());
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().map_err(|e| e.to_string())?;
        Ok(WormStore { bucket, credentials, retention_days: settings.retention_days, http })
    }

    /// Creates the bucket with Object Lock enabled (for `venueql dev` and the tests; in
    /// production the bucket is the operator's, made once with its own policy).
    pub async fn create_locked_bucket(&self) -> Result<(), AppError> {
        let mut action = CreateBucket::new(&self.bucket, &self.credentials);
        action.headers_mut().insert("x-amz-bucket-object-lock-enabled", "true");
        let response = self
            .http
            .put(action.sign(SIGNED_FOR))
            .header("x-amz-bucket-object-lock-enabled", "true")
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| s3_error("create the bucket", unsent(e)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            Ok(())
        } else {
            Err(s3_error("create the bucket", format!("{status}: {body}")))
        }
    }

    /// Writes `body` under `key`, locked in compliance mode until now + retention, with
    /// its SHA-256 checksum, and only if no object of that name exists.
    async fn put_locked(&self, key: &str, body: Vec<u8>) -> Result<Stored, AppError> {
        let retain_until = (Utc::now() + chrono::Duration::days(i64::from(self.retention_days)))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
        let headers = [
            ("content-type", "application/x-ndjson".to_string()),
            ("if-none-match", "*".to_string()),
            ("x-amz-checksum-sha256", checksum),
            ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
            ("x-amz-object-lock-mode", "COMPLIANCE".to_string()),
            ("x-amz-object-lock-retain-until-date", retain_until),
        ];
        let mut action = PutObject::new(&self.bucket, Some(&self.credentials), key);
        for (name, value) in &headers {
            action.headers_mut().insert(*name, value.clone());
        }
        let mut request = self.http.put(action.sign(SIGNED_FOR));
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request.body(body).send().await.map_err(|e| s3_error("store a batch", unsent(e)))?;
        match response.status().as_u16() {
            200..=299 => Ok(Stored::Written),
            409 | 412 => Ok(Stored::AlreadyThere),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(s3_error("store a batch", format!("{status}: {}", first_line(&body))))
            }
        }
    }

    /// Every object name under `prefix`, in name order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, AppError> {
        let mut names = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix.to_string());
            if let Some(token) = &continuation {
                action.with_continuation_token(token.clone());
            }
            let response =
                self.http.get(action.sign(SIGNED_FOR)).send().await.map_err(|e| s3_error("list batches", unsent(e)))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| s3_error("list batches", unsent(e)))?;
            if !status.is_success() {
                return Err(s3_error("list batches", format!("{status}: {}", first_line(&text))));
            }
            let page = ListObjectsV2::parse_response(&text).map_err(|e| s3_error("list batches", e))?;
            names.extend(page.contents.into_iter().map(|c| c.key));
            continuation = page.next_continuation_token;
            if continuation.is_none() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every object under `prefix` with the id of its first version (the one this exporter
    /// wrote and Object Lock keeps) and how many versions it has: anyone who may put objects
    /// can add a newer version under a name, never remove or change the first.
    pub async fn first_versions(&self, prefix: &str) -> Result<Vec<FirstVersion>, AppError> {
        let mut found: Vec<FirstVersion> = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            let query = action.query_mut();
            query.remove("list-type");
            query.remove("encoding-type");
            query.insert("versions", "");
            query.insert("prefix", prefix.to_string());
            if let Some((key, version)) = &marker {
                query.insert("key-marker", key.clone());
                query.insert("version-id-marker", version.clone());
            }
            let response = self
                .http
                .get(action.sign(SIGNED_FOR))
                .send()
                .await
                .map_err(|e| s3_error("list versions", unsent(e)))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| s3_error("list versions", unsent(e)))?;
            if !status.is_success() {
                return Err(s3_error("list versions", format!("{status}: {}", first_line(&text))));
            }
            let page: VersionListing = quick_xml::de::from_str(&text).map_err(|e| s3_error("list versions", e))?;
            // S3 lists each key's versions newest first: the last one seen is the first written.
            for version in page.versions {
                match found.last_mut() {
                    Some(last) if last.key == version.key => {
                        last.version_id = version.version_id;
                        last.versions += 1;
                    }
                    _ => found.push(FirstVersion { key: version.key, version_id: version.version_id, versions: 1 }),
                }
            }
            marker = match (page.is_truncated, page.next_key_marker, page.next_version_id_marker) {
                (Some(true), Some(key), Some(version)) => Some((key, version)),
                _ => break,
            };
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The body of version `version` of the object `key`.
    pub async fn get_version(&self, key: &str, version: &str) -> Result<Vec<u8>, AppError> {
        let mut action = GetObject::new(&self.bucket, Some(&self.credentials), key);
        action.query_mut().insert("versionId", version.to_string());
        self.fetch(action.sign(SIGNED_FOR), key).await
    }

    /// The body of the object `key` (its newest version).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, AppError> {
        let action = GetObject::new(&self.bucket, Some(&self.credentials), key);
        self.fetch(action.sign(SIGNED_FOR), key).await
    }

    async fn fetch(&self, url: url::Url, key: &str) -> Result<Vec<u8>, AppError> {
        let response = self.http.get(url).send().await.map_err(|e| s3_error("read a batch", unsent(e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| s3_error("read a batch", unsent(e)))?;
        if !status.is_success() {
            return Err(s3_error("read a batch", format!("{key}: {status}")));
        }
        Ok(body.to_vec())
    }
}

/// An object's first version.
#[derive(Debug)]
pub struct FirstVersion {
    /// The object name.
    pub key: String,
    /// Its first version's id.
    pub version_id: String,
    /// How many versions the name has (1 unless someone wrote over it).
    pub versions: usize,
}

/// S3's `ListVersionsResult`, as much as the verifier reads.
#[derive(serde::Deserialize)]
struct VersionListing {
    #[serde(rename = "Version", default)]
    versions: Vec<VersionEntry>,
    #[serde(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[serde(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[serde(rename = "NextVersionIdMarker")]
    next_version_id_marker: Option<String>,
}

#[derive(serde::Deserialize)]
struct VersionEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "VersionId")]
    version_id: String,
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// The object name of a batch of `stream` (`venues/{id}` or `platform`).
pub fn batch_key(stream: &str, first: i64, last: i64) -> String {
    format!("audit/{stream}/{first:020}-{last:020}.ndjson")
}

/// The range of a batch named by [`batch_key`].
pub fn batch_range(key: &str) -> Option<(i64, i64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".ndjson")?;
    let (first, last) = name.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// One venue audit row as the WORM copy holds it.
#[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize, Debug)]
pub struct ShippedRow {
    /// The venue.
    pub venue_id: Uuid,
    /// Place in the venue's chain.
    pub seq: i64,
    /// The row's id.
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of object changed.
    pub target_type: Option<String>,
    /// Object changed.
    pub target_id: Option<String>,
    /// State before.
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// The request.
    pub request_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// Chain hash of the row before (hex).
    pub prev_hash: String,
    /// Chain hash of this row (hex).
    pub row_hash: String,
    /// Which `AUDIT_HMAC_KEY` sealed it.
    pub seal_key: Option<String>,
    /// Its keyed seal (hex).
    pub seal: Option<String>,
}

/// The query that reads venue rows in the WORM format (used by the exporter and by
/// `audit verify --against-worm` for the database side).
pub const SHIPPED_ROWS: &str = "SELECT a.venue_id, a.seq, a.id, a.occurred_at, a.actor, a.action, a.target_type, a.target_id, \
            a.before, a.after, a.request_id, host(a.ip) AS ip, encode(a.prev_hash, 'hex') AS prev_hash, \
            encode(a.row_hash, 'hex') AS row_hash, s.key_id AS seal_key, encode(s.mac, 'hex') AS seal \
     FROM audit_events a LEFT JOIN audit_seals s ON s.venue_id = a.venue_id AND s.seq = a.seq \
     WHERE a.seq > $1 ORDER BY a.seq LIMIT $2";

/// One platform audit row as the WORM copy holds it.
#[derive(sqlx::FromRow, serde::Serialize, Debug)]
struct PlatformRow {
    id: i64,
    occurred_at: DateTime<Utc>,
    actor: String,
    reason: String,
    venue_id: Option<Uuid>,
}

fn ndjson<T: serde::Serialize>(rows: &[T]) -> Vec<u8> {
    let mut body = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut body, row).expect("serialisable row");
        body.push(b'\n');
    }
    body
}

/// Ships audit rows to the WORM copy, stream by stream.
pub struct Exporter {
    db: Db,
    store: WormStore,
}

impl Exporter {
    /// An exporter over the app role's database handle.
    pub fn new(db: Db, store: WormStore) -> Exporter {
        Exporter { db, store }
    }

    /// One round: ships one batch of every stream that has rows the copy lacks. Returns
    /// how many batches were shipped (or adopted).
    pub async fn run_once(&self) -> Result<usize, AppError> {
        let due: Vec<(Uuid, i64, i64)> =
            sqlx::query_as("SELECT venue_id, shipped_through, head FROM private.audit_export_due()")
                .fetch_all(self.db.platform_level())
                .await?;
        let mut shipped = 0;
        for (venue, _, _) in due {
            shipped += usize::from(self.ship_venue(VenueId::from_audit_head(venue)).await?);
        }
        shipped += usize::from(self.ship_platform().await?);
        Ok(shipped)
    }

    /// Ships the venue's next batch. The venue transaction holds the stream's lock
    /// across the PUT, so two processes never ship the same stream at once.
    async fn ship_venue(&self, venue: VenueId) -> Result<bool, AppError> {
        let stream = format!("venue:{}", venue.as_uuid());
        let mut tx = self.db.venue_tx(venue).await?;
        if !take_stream_lock(tx.conn(), &stream).await? {
            return Ok(false);
        }
        let cursor: i64 =
            sqlx::query_scalar("SELECT private.audit_export_cursor($1)").bind(&stream).fetch_one(tx.conn()).await?;
        let rows: Vec<ShippedRow> =
            sqlx::query_as(SHIPPED_ROWS).bind(cursor).bind(BATCH_ROWS).fetch_all(tx.conn()).await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            tx.commit().await?;
            return Ok(false);
        };
        let prefix = format!("venues/{}", venue.as_uuid());
        let through = self.store_batch(&prefix, first.seq, last.seq, ndjson(&rows)).await?;
        advance(tx.conn(), &stream, through).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ships the platform stream's next batch (`platform_audit_events` by id).
    async fn ship_platform(&self) -> Result<bool, AppError> {
        let stream = "platform";
        let mut tx = self.db.resolving_tx().await?;
        if !take_stream_lock(tx.conn(), stream).await? {
            return Ok(false);
        }
        let cursor: i64 =
            sqlx::query_scalar("SELECT private.audit_export_cursor($1)").bind(stream).fetch_one(tx.conn()).await?;
        let rows: Vec<PlatformRow> = sqlx::query_as(
            "SELECT id, occurred_at, actor, reason, venue_id FROM private.platform_audit_batch($1, $2::integer)",
        )
        .bind(cursor)
        .bind(BATCH_ROWS)
        .fetch_all(tx.conn())
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            tx.commit().await?;
            return Ok(false);
        };
        let through = self.store_batch("platform", first.id, last.id, ndjson(&rows)).await?;
        advance(tx.conn(), stream, through).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a batch starting at `first`, or adopts the one a previous attempt stored
    /// there (after checking it begins with the same row); returns how far the copy now
    /// reaches.
    async fn store_batch(&self, prefix: &str, first: i64, last: i64, body: Vec<u8>) -> Result<i64, AppError> {
        if let Some(stored) = self.adopt(prefix, first, &body).await? {
            return Ok(stored);
        }
        match self.store.put_locked(&batch_key(prefix, first, last), body.clone()).await? {
            Stored::Written => Ok(last),
            Stored::AlreadyThere => self
                .adopt(prefix, first, &body)
                .await?
                .ok_or_else(|| s3_error("store a batch", "the bucket refused it as existing but lists no such batch")),
        }
    }

    /// The last number of a stored batch of `prefix` that starts at `first`, when there is
    /// one; an error when it does not begin with the same row as `body` (the database no
    /// longer holds what was copied: restored from a backup, or rewritten).
    async fn adopt(&self, prefix: &str, first: i64, body: &[u8]) -> Result<Option<i64>, AppError> {
        let names = self.store.list(&format!("audit/{prefix}/{first:020}-")).await?;
        let Some((name, last)) =
            names.iter().filter_map(|n| Some((n, batch_range(n)?.1))).max_by_key(|(_, last)| *last)
        else {
            return Ok(None);
        };
        let stored = self.store.get(name).await?;
        if first_line_of(&stored) != first_line_of(body) {
            let problem = format!(
                "{name} holds a different row {first} than the database: the audit rows changed after they were \
                 copied (a restore from backup, or tampering); run `venueql audit verify --against-worm`"
            );
            return Err(s3_error("continue the copy", problem));
        }
        Ok(Some(last))
    }
}

fn first_line_of(body: &[u8]) -> &[u8] {
    body.split(|b| *b == b'\n').next().unwrap_or_default()
}

async fn take_stream_lock(conn: &mut sqlx::PgConnection, stream: &str) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended('venueql.audit_export:' || $1, 0))")
        .bind(stream)
        .fetch_one(conn)
        .await?)
}

async fn advance(conn: &mut sqlx::PgConnection, stream: &str, through: i64) -> Result<(), AppError> {
    sqlx::query("SELECT private.advance_audit_export($1, $2)").bind(stream).bind(through).execute(conn).await?;
    Ok(())
}

/// Runs the exporter until the process ends: a round every `every` (at once again while
/// there is a backlog). Failures (storage or database unreachable) are logged and retried;
/// the cursor never moves past what the copy holds.
pub fn spawn_exporter(exporter: Exporter, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match exporter.run_once().await {
                Ok(shipped) if shipped > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error.client_message(), "audit WORM copy behind; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Reads one venue's rows from the WORM copy (each batch's first, locked version), in
/// order, with every gap or overlap between batches, and every batch written over,
/// reported as a problem.
pub async fn shipped_rows(store: &WormStore, venue: Uuid) -> Result<(Vec<ShippedRow>, Vec<String>), AppError> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut expected = 1;
    for batch in store.first_versions(&format!("audit/venues/{venue}/")).await? {
        let name = batch.key;
        if batch.versions > 1 {
            problems.push(format!(
                "WORM copy: {name} was written over {} time(s) (its first, locked version is the one read)",
                batch.versions - 1
            ));
        }
        let Some((first, last)) = batch_range(&name) else {
            problems.push(format!("WORM copy: {name} is not a batch name"));
            continue;
        };
        if first != expected {
            problems.push(format!("WORM copy: batch {name} starts at {first}, expected {expected}"));
        }
        expected = last + 1;
        let body = store.get_version(&name, &batch.version_id).await?;
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<ShippedRow>(line) {
                Ok(row) => rows.push(row),
                Err(error) => problems.push(format!("WORM copy: {name}: unreadable row ({error})")),
            }
        }
    }
    Ok((rows, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names_sort_in_sequence_order_and_parse_back() {
        let a = batch_key("venues/x", 1, 500);
        let b = batch_key("venues/x", 501, 1_000);
        assert!(a < b);
        assert_eq!(a, "audit/venues/x/00000000000000000001-00000000000000000500.ndjson");
        assert_eq!(batch_range(&b), Some((501, 1_000)));
        assert_eq!(batch_range("audit/venues/x/garbage.ndjson"), None);
    }
}
