//! The `venueql` command line: parse, then call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use venueql::access::Permissions;
use venueql::auth::breach::BreachCheck;
use venueql::config::Config;
use venueql::db::{self, RoleUrls};
use venueql::tenancy::CrossTenantDoor;
use venueql::{admin, app, audit, dev, observability, schema};

/// A GraphQL response is built from many small allocations (one map per object, one
/// string per field); mimalloc serves them in about a third of glibc malloc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "venueql", version, about = "Multi-tenant GraphQL ordering and payments API for venues")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (settings from the environment; see README).
    Serve,
    /// Apply pending migrations as the owner role (DATABASE_OWNER_URL).
    Migrate,
    /// Database set-up.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Run the embedded default: a private PostgreSQL cluster, demo venues, the server.
    Dev {
        /// Where the cluster, its secrets and dev.json live.
        #[arg(long, default_value = ".venueql")]
        data_dir: PathBuf,
        /// Listen address (default LISTEN_ADDR or 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(subcommand)]
        command: Option<DevCommand>,
    },
    /// Print the GraphQL schema (SDL) generated from the code.
    Schema {
        /// The diner schema of /v/{slug}/graphql instead of the staff schema.
        #[arg(long)]
        public: bool,
    },
    /// Operator commands; print JSON. Database URLs from the environment.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Delete personal data past its retention period (RETENTION_*), as the server does hourly.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The cross-tenant check for operators and auditors: asks every query and mutation of
    /// a live deployment with venue B's token and venue A's ids; prints a JSON report (a
    /// summary on standard error) and exits 1 if anything of A shows or changes.
    VerifyIsolation {
        /// The deployment's base URL, e.g. https://api.example.com.
        #[arg(long)]
        url: String,
        /// A token of venue A (read-only use: its data is collected and watched).
        #[arg(long)]
        token_a: String,
        /// A token of venue B (used for the attack).
        #[arg(long)]
        token_b: String,
        /// A saved introspection result (JSON), for deployments with introspection off.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// At most this many of A's ids per argument.
        #[arg(long, default_value_t = 25)]
        ids_per_field: usize,
        /// A person's access token at venue B: the fields only a person reaches are
        /// attacked with it too.
        #[arg(long)]
        person_token_b: Option<String>,
        /// A saved introspection result of the diner schema (/v/{slug}/graphql).
        #[arg(long)]
        public_schema: Option<PathBuf>,
        /// Seconds to watch B's subscriptions for A's events (0: not watched).
        #[arg(long, default_value_t = 5)]
        watch_secs: u64,
    },
    /// Data-key tools (DATABASE_PLATFORM_URL, APP_KEY and APP_PREVIOUS_KEYS from the environment).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Exit 0 when the server on this machine is ready (GET /readyz): the container's
    /// HEALTHCHECK (the slim image has no curl).
    Healthcheck {
        /// The readiness URL (default: http://127.0.0.1:<port of LISTEN_ADDR>/readyz, https
        /// when TLS_CERT_FILE is set).
        #[arg(long)]
        url: Option<String>,
    },
    /// Stripe tools (DATABASE_URL and STRIPE_* from the environment).
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print new secrets as env-file lines: APP_KEY and IDENTITY_HMAC_KEY (share them
    /// across every replica and keep them safe: diner data is unreadable without APP_KEY).
    Generate {
        /// Also print database passwords for docker/compose.yaml.
        #[arg(long)]
        database_passwords: bool,
    },
    /// Re-wrap every data key under the current APP_KEY (after moving the old one to APP_PREVIOUS_KEYS).
    RotateMaster,
    /// Give a venue a new data key and re-encrypt its diners' data in batches.
    RotateVenue {
        #[arg(long)]
        venue: String,
    },
}

#[derive(Subcommand)]
enum StripeCommand {
    /// Expire unpaid checkouts and report paid PaymentIntents without an order; exit 1
    /// when any paid PaymentIntent has no order.
    Reconcile,
    /// Fetch an event from Stripe's API and apply it as the webhook would.
    Replay {
        /// The event id (evt_…).
        event_id: String,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Pay a checkout of the running dev server: confirm its PaymentIntent at the local
    /// Stripe stand-in and send the signed payment_intent.succeeded webhook.
    Pay {
        /// The clientSecret startCheckout returned.
        #[arg(long)]
        client_secret: String,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create the owner, app and platform roles and the database, idempotently.
    Init {
        /// A superuser connection, used only for this command.
        #[arg(long)]
        superuser_url: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a venue.
    CreateVenue {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Create a staff identity.
    CreateStaff {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
    },
    /// Set a staff member's permissions at a venue.
    Grant {
        #[arg(long)]
        venue: String,
        #[arg(long)]
        email: String,
        /// Comma-separated names (e.g. MENU_VIEW,MENU_EDIT) or ALL.
        #[arg(long)]
        permissions: String,
    },
    /// Issue a venue API token (shown once).
    IssueToken {
        #[arg(long)]
        venue: String,
        #[arg(long)]
        name: String,
        /// Comma-separated names (e.g. MENU_VIEW,MENU_EDIT) or ALL.
        #[arg(long)]
        permissions: String,
    },
    /// Register an OAuth client; prints client_id (and client_secret, shown once).
    CreateClient {
        /// spa (public, hosted login), integration (client credentials) or pos (PIN).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        name: String,
        /// The venue of an integration or POS client (an SPA client with a venue signs
        /// people in to that venue only).
        #[arg(long)]
        venue: Option<String>,
        /// Exact redirect URI (repeatable; SPA clients).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Web origin the SPA is served from, e.g. https://kitchen.example.com (repeatable;
        /// browsers there may call the token endpoint and the API).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Permissions of an integration's client-credentials tokens.
        #[arg(long, default_value = "")]
        permissions: String,
    },
    /// Replace an SPA client's redirect URIs and web origins.
    UpdateClient {
        #[arg(long)]
        client_id: String,
        /// Exact redirect URI (repeatable; at least one).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Web origin (repeatable; none: same-origin pages only).
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Mail a person a password reset link (a running server sends it; APP_KEY needed).
    ResetPassword {
        #[arg(long)]
        email: String,
    },
    /// Remove a person's two-factor authentication (lost authenticator) and end their sessions.
    ResetMfa {
        #[arg(long)]
        email: String,
    },
    /// Offboard a venue: destroy its data keys (its diners' health data becomes unreadable).
    OffboardVenue {
        #[arg(long)]
        venue: String,
    },
    /// Revoke a venue API token.
    RevokeToken {
        #[arg(long)]
        venue: String,
        #[arg(long)]
        token_id: Uuid,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Run one pass over every venue now; prints what was deleted.
    Run,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every venue's audit hash chain and check every row's keyed seal
    /// (AUDIT_HMAC_KEY); exit 1 if anything is wrong.
    Verify {
        /// Also compare each venue with the WORM copy (AUDIT_S3_* settings): catches a
        /// deleted tail or an inserted row.
        #[arg(long)]
        against_worm: bool,
    },
    /// Once, after upgrading from a version without keyed seals: seal every audit row that
    /// has none (each venue's plain chain must verify first).
    SealExisting,
}

type DynError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::install_tls_provider();
    observability::init_logging();
    let _sentry = observability::init_sentry();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("venueql: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable output"));
}

fn app_error(error: venueql::error::AppError) -> DynError {
    format!("{}: {}", error.code(), error.client_message()).into()
}

fn permissions(list: &str) -> Result<Permissions, DynError> {
    Ok(Permissions::parse_list(list)?)
}

async fn door() -> Result<CrossTenantDoor, DynError> {
    app::install_tls_provider();
    let url = std::env::var("DATABASE_PLATFORM_URL").map_err(|_| "DATABASE_PLATFORM_URL is not set")?;
    Ok(CrossTenantDoor::new(db::pool(&url, 2).await?))
}

async fn run(command: Command) -> Result<ExitCode, DynError> {
    // Commands that write or verify audit rows seal with AUDIT_HMAC_KEY when it is set
    // (a malformed key ring is reported by the commands that need it).
    match venueql::config::key_ring_from_env() {
        Ok(keys) if keys.audit.is_some() => app::install_audit_key(&keys)?,
        Err(error) if std::env::var_os("AUDIT_HMAC_KEY").is_some() => return Err(error.into()),
        _ => {}
    }
    match command {
        Command::Serve => {
            let config = Config::from_env()?;
            let grace = config.shutdown_grace;
            let application = app::Application::build(config).await?;
            let shutdown = async move {
                app::shutdown_signal().await;
                app::exit_after(grace);
            };
            application.run_until_stopped(shutdown).await?;
        }
        Command::Migrate => {
            app::install_tls_provider();
            let url = std::env::var("DATABASE_OWNER_URL").map_err(|_| "DATABASE_OWNER_URL is not set")?;
            db::migrate(&url).await?;
            print_json(&serde_json::json!({ "migrated": true }));
        }
        Command::Db { command: DbCommand::Init { superuser_url } } => {
            app::install_tls_provider();
            db::init(&superuser_url, &RoleUrls::from_env()?, None).await?;
            print_json(&serde_json::json!({ "initialised": true }));
        }
        Command::Dev { data_dir, listen: _, command: Some(DevCommand::Pay { client_secret }) } => {
            print_json(&dev::pay(&data_dir, &client_secret).await?)
        }
        Command::Dev { data_dir, listen, command: None } => dev::run(dev::DevOptions { data_dir, listen }).await?,
        Command::Schema { public } => print!("{}", if public { schema::public_sdl() } else { schema::staff_sdl() }),
        Command::Admin { command } => run_admin(command).await?,
        Command::Audit { command: AuditCommand::Verify { against_worm } } => {
            let store = if against_worm { Some(worm_store()?) } else { None };
            let reports =
                audit::verify_all(&door().await?, &admin::operator_actor(), store.as_ref()).await.map_err(app_error)?;
            let intact = reports.iter().all(|r| r.problems.is_empty());
            print_json(&serde_json::json!({ "intact": intact, "venues": reports }));
            if !intact {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Audit { command: AuditCommand::SealExisting } => {
            let reports = audit::seal_existing(&door().await?, &admin::operator_actor()).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "venues": reports }));
        }
        Command::Stripe { command } => return run_stripe(command).await,
        Command::VerifyIsolation {
            url,
            token_a,
            token_b,
            schema,
            ids_per_field,
            person_token_b,
            public_schema,
            watch_secs,
        } => {
            app::install_tls_provider();
            let read = |path: Option<PathBuf>| -> Result<Option<serde_json::Value>, DynError> {
                let Some(path) = path else { return Ok(None) };
                let bytes = std::fs::read(&path)?;
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?))
            };
            let options = venueql::verify_isolation::Options {
                url,
                token_a,
                token_b,
                schema: read(schema)?,
                ids_per_field,
                person_token_b,
                public_schema: read(public_schema)?,
                watch: std::time::Duration::from_secs(watch_secs),
            };
            let report = venueql::verify_isolation::run(options).await?;
            eprint!("{}", report.summary());
            print_json(&report);
            if !report.leaks.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Retention { command: RetentionCommand::Run } => {
            let config = Config::from_env()?;
            let pool = db::pool(secrecy::ExposeSecret::expose_secret(&config.database_url), 2).await?;
            let database = venueql::tenancy::Db::new(pool);
            let report = venueql::retention::run_once(&database, &config.retention).await.map_err(app_error)?;
            print_json(&report);
            if report.errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Keys { command } => run_keys(command).await?,
        Command::Healthcheck { url } => return healthcheck(url).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The WORM copy named by the `AUDIT_S3_*` settings.
fn worm_store() -> Result<audit::worm::WormStore, DynError> {
    app::install_tls_provider();
    let settings = venueql::config::WormSettings::read(venueql::config::Env::new(&|name| std::env::var(name).ok()))?
        .ok_or("--against-worm needs AUDIT_S3_BUCKET (and AUDIT_S3_ENDPOINT, AUDIT_S3_REGION, credentials)")?;
    Ok(audit::worm::WormStore::new(&settings)?)
}

/// Prints `NAME=value` lines for an env file.
fn generate_secrets(database_passwords: bool) {
    println!("APP_KEY={}", venueql::crypto::random_key_base64());
    println!("IDENTITY_HMAC_KEY={}", venueql::crypto::random_key_base64());
    println!("AUDIT_HMAC_KEY={}", venueql::crypto::random_key_base64());
    if database_passwords {
        for name in ["POSTGRES_PASSWORD", "VENUEQL_OWNER_PASSWORD", "VENUEQL_APP_PASSWORD", "VENUEQL_PLATFORM_PASSWORD"]
        {
            println!("{name}={}", dev::random_secret());
        }
    }
}

/// `venueql healthcheck`: 0 when `/readyz` answers 200 within 3 seconds.
async fn healthcheck(url: Option<String>) -> Result<ExitCode, DynError> {
    let url = match url {
        Some(url) => url,
        None => {
            let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
            let port = listen.rsplit_once(':').map_or("8080", |(_, port)| port).to_string();
            let scheme = if std::env::var("TLS_CERT_FILE").is_ok_and(|f| !f.is_empty()) { "https" } else { "http" };
            format!("{scheme}://127.0.0.1:{port}/readyz")
        }
    };
    // The local server's own certificate names its public host, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(true)
        .build()?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(response) => {
            eprintln!("venueql healthcheck: {url} answered {}", response.status());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            eprintln!("venueql healthcheck: {url}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run_keys(command: KeysCommand) -> Result<(), DynError> {
    if let KeysCommand::Generate { database_passwords } = command {
        generate_secrets(database_passwords);
        return Ok(());
    }
    let config_keys = venueql::config::key_ring_from_env()?;
    let master = config_keys.master().map_err(app_error)?;
    let door = door().await?;
    let actor = admin::operator_actor();
    match command {
        KeysCommand::RotateMaster => {
            let rewrapped = venueql::keys::rotate_master(&door, &actor, master).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "rewrapped_keys": rewrapped, "master_key_id": master.current().id() }));
        }
        KeysCommand::Generate { .. } => unreachable!("handled above"),
        KeysCommand::RotateVenue { venue } => {
            let id = admin::venue_id(&door, &actor, &venue, "keys rotate-venue").await.map_err(app_error)?;
            let (version, rows) =
                venueql::diners::rotate_venue_key(&door, &actor, master, id).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "venue": venue, "key_version": version, "reencrypted_rows": rows }));
        }
    }
    Ok(())
}

async fn run_stripe(command: StripeCommand) -> Result<ExitCode, DynError> {
    let config = Config::from_env()?;
    let database =
        venueql::tenancy::Db::new(db::pool(secrecy::ExposeSecret::expose_secret(&config.database_url), 2).await?);
    let payments = venueql::payments::Payments::from_config(&config.stripe);
    match command {
        StripeCommand::Reconcile => {
            let report = venueql::payments::jobs::run_once(&database, &payments).await.map_err(app_error)?;
            print_json(&report);
            if !report.paid_without_order.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        StripeCommand::Replay { event_id } => {
            let outcome = venueql::payments::jobs::replay(&database, &payments, &event_id).await.map_err(app_error)?;
            let json = match outcome {
                venueql::payments::intake::Ingested::Applied { outcome, .. } => {
                    serde_json::json!({ "event": event_id, "applied": true, "outcome": outcome })
                }
                venueql::payments::intake::Ingested::Duplicate => {
                    serde_json::json!({ "event": event_id, "applied": false, "outcome": "already received; nothing done" })
                }
            };
            print_json(&json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_admin(command: AdminCommand) -> Result<(), DynError> {
    let door = door().await?;
    let actor = admin::operator_actor();
    match command {
        AdminCommand::CreateVenue { slug, name, currency } => {
            print_json(&admin::create_venue(&door, &actor, &slug, &name, &currency).await.map_err(app_error)?)
        }
        AdminCommand::CreateStaff { email, password } => {
            let settings =
                venueql::config::BreachSettings::read(venueql::config::Env::new(&|name| std::env::var(name).ok()))?;
            let breach = BreachCheck::new(&settings)?;
            print_json(&admin::create_staff(&door, &actor, &email, &password, &breach).await.map_err(app_error)?)
        }
        AdminCommand::Grant { venue, email, permissions: list } => {
            let granted = permissions(&list)?;
            admin::grant(&door, &actor, &venue, &email, granted).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "venue": venue, "email": email, "permissions": granted.names() }));
        }
        AdminCommand::IssueToken { venue, name, permissions: list } => {
            print_json(&admin::issue_token(&door, &actor, &venue, &name, permissions(&list)?).await.map_err(app_error)?)
        }
        AdminCommand::CreateClient { kind, name, venue, redirect_uris, origins, permissions: list } => {
            let new = venueql::auth::clients::NewClient {
                kind: &kind,
                name: &name,
                redirect_uris: &redirect_uris,
                allowed_origins: &origins,
                permissions: permissions(&list)?,
            };
            print_json(&admin::create_client(&door, &actor, &new, venue.as_deref()).await.map_err(app_error)?)
        }
        AdminCommand::UpdateClient { client_id, redirect_uris, origins } => print_json(
            &admin::update_client(&door, &actor, &client_id, &redirect_uris, &origins).await.map_err(app_error)?,
        ),
        AdminCommand::ResetPassword { email } => {
            let keys = venueql::config::key_ring_from_env()?;
            let staff = admin::reset_password(&door, &actor, &email, keys.master().map_err(app_error)?)
                .await
                .map_err(app_error)?;
            print_json(&serde_json::json!({ "email": email, "staff_id": staff, "reset_link_queued": true }));
        }
        AdminCommand::ResetMfa { email } => {
            let staff = admin::reset_mfa(&door, &actor, &email).await.map_err(app_error)?;
            print_json(
                &serde_json::json!({ "email": email, "staff_id": staff, "mfa_removed": true, "sessions_ended": true }),
            );
        }
        AdminCommand::OffboardVenue { venue } => {
            let destroyed = admin::offboard_venue(&door, &actor, &venue).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "venue": venue, "offboarded": true, "data_keys_destroyed": destroyed }));
        }
        AdminCommand::RevokeToken { venue, token_id } => {
            admin::revoke_token(&door, &actor, &venue, token_id).await.map_err(app_error)?;
            print_json(&serde_json::json!({ "revoked": true, "token_id": token_id }));
        }
    }
    Ok(())
}
