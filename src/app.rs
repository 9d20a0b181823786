//! The one place that wires state, router and server: [`Application::build`] connects,
//! checks the database role, builds both schemas and binds; `run_until_stopped` serves
//! until the shutdown future resolves. Tests call the same two functions with port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::auth::breach::BreachCheck;
use crate::config::{Config, DatabasePoolMode};
use crate::db::{self, DbError};
use crate::http::AppState;
use crate::observability::Metrics;
use crate::schema::{self, SchemaOptions, Services};
use crate::tenancy::Db;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Database connection, role check or migrations state.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A setting cannot be used (e.g. `SMTP_URL`, `MAIL_FROM`).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Could not bind the listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `TLS_CERT_FILE` or `TLS_KEY_FILE` cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
}

/// A built, bound, not yet serving server.
pub struct Application {
    listener: TcpListener,
    /// In-process HTTPS settings, when `TLS_CERT_FILE` and `TLS_KEY_FILE` are set.
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics_listener: Option<TcpListener>,
    stopping: tokio::sync::watch::Sender<bool>,
    state: AppState,
}

/// Opens the app pool the way `DATABASE_POOL_MODE` says and refuses an unsafe role.
async fn connect_app_role(config: &Config) -> Result<Db, StartError> {
    let url = config.database_url.expose_secret();
    let max = config.database_max_connections;
    let pool = match config.database_pool_mode {
        DatabasePoolMode::Direct => db::pool(url, max).await?,
        DatabasePoolMode::Transaction => db::pool_behind_transaction_pooler(url, max).await?,
    };
    db::check_app_role(&pool).await?;
    let mut database = Db::new(pool);
    if config.database_pool_mode == DatabasePoolMode::Transaction {
        database = database.behind_transaction_pooler();
    }
    if let Some(url) = &config.database_listen_url {
        database = database.listening_at(url.clone());
    }
    Ok(database)
}

/// Makes rustls use the ring provider (compiled in already for sqlx) process-wide.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    /// Connects as the app role, refuses an unsafe role, builds schemas and binds.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        install_tls_provider();
        require_shared_keys(&config)?;
        let tls = match &config.tls {
            Some(files) => Some(crate::http::tls::server_config(&files.cert_file, &files.key_file)?),
            None => None,
        };
        let database = connect_app_role(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
        let metrics_listener = match config.metrics_listen_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = config.public_base_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"));
        let payments = crate::payments::Payments::from_config(&config.stripe);
        let orders_hub = crate::orders::live::OrdersHub::start(database.clone(), config.queue_snapshot_max_age);
        orders_hub.spawn_pruning(std::time::Duration::from_secs(30));
        if payments.client().is_ok() && !config.stripe.jobs_interval.is_zero() {
            crate::payments::jobs::spawn_periodic(database.clone(), payments.clone(), config.stripe.jobs_interval);
        }
        start_mail_worker(&config, database.clone(), &issuer)?;
        start_audit_workers(&config, &database)?;
        crate::retention::spawn_periodic(database.clone(), config.retention);
        let limits = crate::limits::Limits::new(&config.rate_limits);
        let stopping = tokio::sync::watch::Sender::new(false);
        limits.spawn_sync(database.clone());
        let breach = BreachCheck::new(&config.breach)?;
        let config = Arc::new(config);
        let services = Services {
            db: database.clone(),
            config: config.clone(),
            payments: payments.clone(),
            refunds: Arc::new(payments.clone()),
            diner_allergens: Arc::new(config.keys.clone()),
            orders_hub: orders_hub.clone(),
            keys: config.keys.clone(),
            breach: breach.clone(),
        };
        let options = SchemaOptions {
            limits: config.limits,
            introspection: config.introspection,
            metrics: Some(metrics.clone()),
            services: Some(services),
        };
        let state = AppState {
            issuer,
            payments,
            orders_hub,
            breach,
            db: database.clone(),
            limits,
            open_sockets: Default::default(),
            shutdown: stopping.subscribe(),
            webhook_permits: Arc::new(tokio::sync::Semaphore::new(config.webhook_max_concurrency)),
            signature_failures: Arc::new(crate::audit::alerts::Burst::new(
                SIGNATURE_BURST,
                std::time::Duration::from_secs(60),
            )),
            staff_schema: schema::staff_schema(&options),
            public_schema: schema::public_schema(&options),
            config,
            metrics,
        };
        Ok(Application { listener, tls, metrics_listener, stopping, state })
    }

    /// The address of the separate metrics listener, when `METRICS_LISTEN_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The OAuth issuer and base URL of the API (`PUBLIC_BASE_URL`, or the bound address).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The bound address (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and closes the pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let db = self.state.db.clone();
        let limits = self.state.limits.clone();
        let metrics = self.metrics_listener.map(|listener| {
            let router = crate::http::metrics_router(self.state.clone());
            tokio::spawn(async move { axum::serve(listener, router).await })
        });
        let router = crate::http::router(self.state);
        tracing::info!(addr = %self.listener.local_addr()?, "venueql serving");
        let stopping = self.stopping;
        let shutdown = async move {
            shutdown.await;
            // Subscription sockets are not HTTP requests the server waits for: tell them.
            let _ = stopping.send(true);
        };
        match self.tls {
            Some(tls) => serve(crate::http::tls::TlsListener::new(self.listener, tls)?, router, shutdown).await?,
            None => serve(self.listener, router, shutdown).await?,
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        limits.retire(&db).await;
        db.close().await;
        tracing::info!("venueql stopped");
        Ok(())
    }
}

/// Serves `router` on `listener` (plain or TLS) until `shutdown`, then drains. The no-op
/// tap gives both listeners the same peer-address extractor.
async fn serve<L>(
    listener: L,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    fn untouched<Io>(_: &mut Io) {}
    let listener = listener.tap_io(untouched::<L::Io>);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Refused webhook signatures per minute that make a burst (one alert per minute at most,
/// before the alert pipeline's own rate limit).
const SIGNATURE_BURST: u32 = 20;

/// Installs the audit sealing key, then starts the alert worker and, when a bucket is
/// configured, the WORM exporter.
fn start_audit_workers(config: &Config, database: &Db) -> Result<(), StartError> {
    install_audit_key(&config.keys)?;
    let alerts = crate::audit::alerts::AlertWorker::new(database.clone(), config.alerts.clone());
    crate::audit::alerts::spawn_worker(alerts);
    if config.alerts.webhook_url.is_none() {
        tracing::warn!("ALERT_WEBHOOK_URL is not set: critical alerts go to the log and Sentry only");
    }
    match &config.worm {
        Some(settings) => {
            let store = crate::audit::worm::WormStore::new(settings).map_err(crate::config::ConfigError)?;
            let exporter = crate::audit::worm::Exporter::new(database.clone(), store);
            crate::audit::worm::spawn_exporter(exporter, config.audit_export_interval);
        }
        None => tracing::warn!("AUDIT_S3_BUCKET is not set: the audit trail has no write-once copy"),
    }
    Ok(())
}

/// Makes `AUDIT_HMAC_KEY` the process's audit sealing key (see `audit::seal`).
pub fn install_audit_key(keys: &crate::crypto::KeyRing) -> Result<(), crate::config::ConfigError> {
    use secrecy::ExposeSecret;
    let Some(bytes) = &keys.audit else {
        return Err(crate::config::ConfigError("AUDIT_HMAC_KEY is not set".into()));
    };
    let key = crate::audit::seal::SealKey::new(bytes.expose_secret().clone()).map_err(crate::config::ConfigError)?;
    crate::audit::seal::install(key).map_err(crate::config::ConfigError)
}

/// Every replica must share `APP_KEY` (it keys login tickets and wraps every data key) and
/// `IDENTITY_HMAC_KEY` (it identifies diners): a server with keys of its own would log
/// people out between replicas and could not read what the others wrote.
fn require_shared_keys(config: &Config) -> Result<(), StartError> {
    let missing: Vec<&str> = [
        ("APP_KEY", config.keys.master.is_none()),
        ("IDENTITY_HMAC_KEY", config.keys.identity.is_none()),
        ("AUDIT_HMAC_KEY", config.keys.audit.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StartError::Config(crate::config::ConfigError(format!(
        "{} not set: every replica must share them; generate them once with `venueql keys generate` \
         (`venueql dev` makes its own)",
        missing.join(" and ")
    ))))
}

/// Starts the outbox worker when mail has somewhere to go (`SMTP_URL` or `MAIL_DIR`) and
/// the master key can open the outbox; otherwise says why mail waits.
fn start_mail_worker(config: &Config, db: Db, issuer: &str) -> Result<(), StartError> {
    let transport = crate::mail::Transport::from_config(&config.mail)?;
    let from: lettre::message::Mailbox = config.mail.from.parse().map_err(|_| {
        crate::config::ConfigError(format!(
            "MAIL_FROM {:?} is not a mail address (e.g. venueql <no-reply@example.com>)",
            config.mail.from
        ))
    })?;
    match (transport, config.keys.master.clone()) {
        (Some(transport), Some(master)) => {
            let worker = crate::mail::Worker {
                db,
                master,
                transport,
                from,
                base_url: issuer.to_string(),
                retry_base: config.mail.retry_base,
                lease: config.mail.lease,
            };
            crate::mail::spawn_worker(worker);
        }
        (None, _) => tracing::warn!(
            "outgoing mail is not configured (SMTP_URL): invitation and password reset mails wait in the outbox"
        ),
        (Some(_), None) => tracing::warn!("APP_KEY is not set: the mail outbox cannot be opened; mails wait"),
    }
    Ok(())
}

/// Ends the process `grace` after shutdown began if draining has not finished by then
/// (a request that never ends must not keep a stopped server alive). A thread of its own,
/// so it fires even when every async worker is busy.
pub fn exit_after(grace: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        tracing::error!(
            grace_secs = grace.as_secs(),
            "requests still running after the shutdown grace period; exiting"
        );
        std::process::exit(1);
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}
