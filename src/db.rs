//! Database set-up: the three roles, `db init`, migrations, and the start-up check that
//! the server's own role can be subject to row-level security.

use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Group role holding every privilege the server has; `DATABASE_URL`'s user is it or a member.
pub const APP_GROUP: &str = "venueql_app";
/// Group role for explicit cross-tenant work; `DATABASE_PLATFORM_URL`'s user is it or a member.
pub const PLATFORM_GROUP: &str = "venueql_platform";

/// A database set-up failure, with a message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A URL is missing or malformed.
    #[error("{0}")]
    Url(String),
    /// The server's role may bypass row-level security; the server refuses to run.
    #[error("refusing to run: {0}")]
    UnsafeRole(String),
    /// PostgreSQL said no.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The three role URLs from SPEC §11.
#[derive(Clone, Debug)]
pub struct RoleUrls {
    /// `DATABASE_URL`: the app role.
    pub app: String,
    /// `DATABASE_OWNER_URL`: the owner role (migrations).
    pub owner: String,
    /// `DATABASE_PLATFORM_URL`: the platform role.
    pub platform: String,
}

impl RoleUrls {
    /// Reads the three URLs from the environment, naming any that is missing.
    pub fn from_env() -> Result<RoleUrls, DbError> {
        let get = |name: &str| {
            std::env::var(name).map_err(|_| DbError::Url(format!("{name} is not set (see README: configuration)")))
        };
        Ok(RoleUrls {
            app: get("DATABASE_URL")?,
            owner: get("DATABASE_OWNER_URL")?,
            platform: get("DATABASE_PLATFORM_URL")?,
        })
    }
}

/// User, password and database named by a PostgreSQL URL.
struct UrlParts {
    user: String,
    password: Option<String>,
    database: String,
}

fn url_parts(name: &str, raw: &str) -> Result<UrlParts, DbError> {
    let url = url::Url::parse(raw).map_err(|e| DbError::Url(format!("{name} is not a valid URL: {e}")))?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    if user.is_empty() {
        return Err(DbError::Url(format!("{name} names no user")));
    }
    let database = decode(url.path().trim_start_matches('/'));
    if database.is_empty() {
        return Err(DbError::Url(format!("{name} names no database")));
    }
    Ok(UrlParts { user, password: url.password().map(decode), database })
}

async fn connect(url: &str) -> Result<PgConnection, DbError> {
    Ok(PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?)
}

/// A pooled connection idle for longer than this is pinged before it is handed out; one
/// used more recently is known to be alive, and skipping the ping saves a round trip on
/// every acquire under load.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);

/// Opens a pool on `url` (any of the three roles).
pub async fn pool(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    open_pool(PgConnectOptions::from_str(url)?, max_connections).await
}

/// Opens the app pool through a transaction-pooling proxy (`DATABASE_POOL_MODE=transaction`):
/// no statement is cached on a connection, since the next transaction may run on
/// another server connection that never saw it.
pub async fn pool_behind_transaction_pooler(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    open_pool(PgConnectOptions::from_str(url)?.statement_cache_capacity(0), max_connections).await
}

async fn open_pool(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, DbError> {
    let options = options.application_name("venueql");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?)
}

/// Runs a DDL statement built by PostgreSQL's own `format()`, so names and passwords are
/// quoted by the server rather than by string pasting.
async fn execute_formatted(conn: &mut PgConnection, template: &str, args: &[&str]) -> Result<(), DbError> {
    let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT format('{template}', {})", placeholders.join(", "));
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for arg in args {
        query = query.bind(*arg);
    }
    let statement = query.fetch_one(&mut *conn).await?;
    sqlx::raw_sql(&statement).execute(&mut *conn).await?;
    Ok(())
}

async fn role_exists(conn: &mut PgConnection, role: &str) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *conn)
        .await?)
}

/// Creates `login` (with its password) and, when it differs from `group`, the NOLOGIN
/// group role it joins. Existing roles get their password and attributes reset.
async fn ensure_login_role(conn: &mut PgConnection, login: &UrlParts, group: Option<&str>) -> Result<(), DbError> {
    let attributes = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION INHERIT LOGIN";
    let verb = if role_exists(conn, &login.user).await? { "ALTER" } else { "CREATE" };
    match &login.password {
        Some(password) => {
            execute_formatted(conn, &format!("{verb} ROLE %I {attributes} PASSWORD %L"), &[&login.user, password])
                .await?
        }
        None => execute_formatted(conn, &format!("{verb} ROLE %I {attributes}"), &[&login.user]).await?,
    }
    if let Some(group) = group.filter(|g| *g != login.user) {
        if !role_exists(conn, group).await? {
            execute_formatted(conn, "CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS", &[group]).await?;
        }
        execute_formatted(conn, "GRANT %I TO %I", &[group, &login.user]).await?;
    }
    Ok(())
}

/// `venueql db init`: creates the owner, app and platform roles and the database (owned by
/// the owner role), idempotently. With `template`, a new database is cloned from it.
pub async fn init(superuser_url: &str, urls: &RoleUrls, template: Option<&str>) -> Result<(), DbError> {
    let owner = url_parts("DATABASE_OWNER_URL", &urls.owner)?;
    let app = url_parts("DATABASE_URL", &urls.app)?;
    let platform = url_parts("DATABASE_PLATFORM_URL", &urls.platform)?;
    for (name, other) in [("DATABASE_URL", &app), ("DATABASE_PLATFORM_URL", &platform)] {
        if other.database != owner.database {
            return Err(DbError::Url(format!("{name} and DATABASE_OWNER_URL must name the same database")));
        }
        if other.user == owner.user {
            return Err(DbError::Url(format!("{name} must use a different user than DATABASE_OWNER_URL")));
        }
    }
    if app.user == platform.user {
        return Err(DbError::Url("DATABASE_URL and DATABASE_PLATFORM_URL must use different users".into()));
    }

    let mut conn = connect(superuser_url).await?;
    ensure_login_role(&mut conn, &owner, None).await?;
    ensure_login_role(&mut conn, &app, Some(APP_GROUP)).await?;
    ensure_login_role(&mut conn, &platform, Some(PLATFORM_GROUP)).await?;
    ensure_database(&mut conn, &owner, template).await?;
    conn.close().await?;
    Ok(())
}

/// Creates the database of `urls` (when missing) for roles that already exist, e.g. one
/// database per test cloned from a migrated template.
pub async fn create_database(superuser_url: &str, urls: &RoleUrls, template: Option<&str>) -> Result<(), DbError> {
    let owner = url_parts("DATABASE_OWNER_URL", &urls.owner)?;
    let mut conn = connect(superuser_url).await?;
    ensure_database(&mut conn, &owner, template).await?;
    conn.close().await?;
    Ok(())
}

async fn ensure_database(conn: &mut PgConnection, owner: &UrlParts, template: Option<&str>) -> Result<(), DbError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&owner.database)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        match template {
            Some(t) => {
                execute_formatted(conn, "CREATE DATABASE %I OWNER %I TEMPLATE %I", &[&owner.database, &owner.user, t])
                    .await?
            }
            None => execute_formatted(conn, "CREATE DATABASE %I OWNER %I", &[&owner.database, &owner.user]).await?,
        }
    }
    execute_formatted(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", &[&owner.database]).await?;
    execute_formatted(conn, "GRANT CONNECT ON DATABASE %I TO %I, %I", &[&owner.database, APP_GROUP, PLATFORM_GROUP])
        .await?;
    Ok(())
}

/// `venueql migrate`: applies pending migrations as the owner role.
pub async fn migrate(owner_url: &str) -> Result<(), DbError> {
    let mut conn = connect(owner_url).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Whether every embedded migration has been applied (for `/readyz`).
pub async fn migrations_current<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(executor)
        .await?;
    Ok(MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).all(|m| applied.contains(&m.version)))
}

/// Refuses a server role that would not be subject to row-level security: a superuser,
/// a role with BYPASSRLS, a member of one, or an owner of any table. Runs in a transaction
/// so that it works through a transaction pooler too.
pub async fn check_app_role(pool: &PgPool) -> Result<(), DbError> {
    let mut tx = pool.begin_with("BEGIN; DEALLOCATE ALL").await?;
    let (user, privileged, owned): (String, Vec<String>, Vec<String>) = sqlx::query_as(
        "SELECT current_user::text, \
           ARRAY(SELECT r.rolname::text || CASE WHEN r.rolsuper THEN ' (superuser)' ELSE ' (BYPASSRLS)' END \
                 FROM pg_roles r WHERE (r.rolsuper OR r.rolbypassrls) AND pg_has_role(current_user, r.oid, 'MEMBER')), \
           ARRAY(SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
                   AND pg_has_role(current_user, c.relowner, 'MEMBER') ORDER BY 1 LIMIT 5)",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if !privileged.is_empty() {
        return Err(DbError::UnsafeRole(format!(
            "DATABASE_URL connects as {user:?}, which is or can become {}: row-level security would not apply. Use the app role created by `venueql db init`.",
            privileged.join(", ")
        )));
    }
    if !owned.is_empty() {
        return Err(DbError::UnsafeRole(format!(
            "DATABASE_URL connects as {user:?}, which owns tables ({}): the server must not own what it reads. Use the app role, not DATABASE_OWNER_URL's user.",
            owned.join(", ")
        )));
    }
    Ok(())
}
