//! The embedded PostgreSQL cluster: `venueql dev`, the test harness and the benchmark all
//! start a private cluster from the machine's PostgreSQL binaries through [`Cluster`].
//!
//! PostgreSQL refuses to run as root, so when we are root the cluster runs as the
//! `postgres` user (or `nobody`). The postmaster is our child in its own process group
//! (a terminal Ctrl-C reaches only us, and we stop it after the server) and gets SIGQUIT
//! if we die, so no cluster outlives its owner.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// Why the embedded cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

fn fail(message: impl Into<String>) -> ClusterError {
    ClusterError(message.into())
}

/// How to start a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Directory holding `pgdata/` and `postgres.log` (created if missing, reused if not).
    pub dir: PathBuf,
    /// Superuser password (initdb sets it; later runs must pass the same one).
    pub superuser_password: String,
    /// Trade durability for speed (fsync off) and count statements (pg_stat_statements):
    /// for throwaway test and bench clusters.
    pub throwaway: bool,
    /// Listen on this port (a restart keeps its clients' URLs); a free one when `None`.
    pub port: Option<u16>,
    /// More server settings (`-c name=value`): WAL archiving, TLS, recovery targets.
    pub settings: Vec<(String, String)>,
}

/// A running private PostgreSQL cluster listening on 127.0.0.1.
pub struct Cluster {
    port: u16,
    pid: u32,
    superuser_password: String,
    exited: Mutex<mpsc::Receiver<String>>,
}

/// Superuser name of embedded clusters.
pub const SUPERUSER: &str = "venueql_super";

/// Finds `initdb`, `postgres` and `pg_isready`: on PATH, via `pg_config --bindir`, or in
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn find_pg_bindir() -> Result<PathBuf, ClusterError> {
    let has_tools = |dir: &Path| ["initdb", "postgres", "pg_isready"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        fail(
            "PostgreSQL server binaries (initdb, postgres) were not found on PATH, via pg_config, or in \
             /usr/lib/postgresql/*/bin. Install them, e.g. `apt-get install postgresql` (Debian/Ubuntu), \
             `dnf install postgresql-server` (Fedora) or `brew install postgresql@15` (macOS), then run again.",
        )
    })
}

/// The unprivileged user (uid, gid) to run PostgreSQL as when we are root.
fn unprivileged_user() -> Result<Option<(u32, u32)>, ClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| fail(format!("cannot read /etc/passwd: {e}")))?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3
                && fields[0] == wanted
                && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
            {
                return Ok(Some((uid, gid)));
            }
        }
    }
    Err(fail("running as root, but neither a `postgres` nor a `nobody` user exists to run PostgreSQL as"))
}

/// A command for `bin` that runs as the same unprivileged user as the cluster when we are
/// root (PostgreSQL and PgBouncer both refuse root), with `dir` created as its private
/// working directory. Tests start PgBouncer with it.
pub fn unprivileged_command_in(bin: &Path, dir: &Path) -> Result<Command, ClusterError> {
    make_postgres_dir(dir)?;
    Ok(command_as(bin, unprivileged_user()?))
}

/// Creates `dir` as a private directory of the user PostgreSQL runs as (a WAL archive, a
/// base backup's destination).
pub fn make_postgres_dir(dir: &Path) -> Result<(), ClusterError> {
    make_owned_dir(dir, unprivileged_user()?, 0o700)
}

fn command_as(bin: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bin);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn make_owned_dir(path: &Path, user: Option<(u32, u32)>, mode: u32) -> Result<(), ClusterError> {
    fs::create_dir_all(path).map_err(|e| fail(format!("cannot create {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set permissions on {}: {e}", path.display())))?;
    if let Some((uid, gid)) = user {
        chown(path, Some(uid), Some(gid)).map_err(|e| fail(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail(format!("no free port: {e}")))?;
    Ok(listener.local_addr().map_err(|e| fail(e.to_string()))?.port())
}

fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(log) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2000)));
        let _ = file.read_to_string(&mut text);
    }
    text
}

impl Cluster {
    /// Creates the cluster in `options.dir` if it does not exist yet, then starts it on a
    /// free loopback port and waits until it accepts connections.
    pub fn start(options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let bindir = find_pg_bindir()?;
        let user = unprivileged_user()?;
        fs::create_dir_all(&options.dir).map_err(|e| fail(format!("cannot create {}: {e}", options.dir.display())))?;
        fs::set_permissions(&options.dir, fs::Permissions::from_mode(0o755)).map_err(|e| fail(e.to_string()))?;
        let pgdata = options.dir.join("pgdata");
        let log = options.dir.join("postgres.log");
        if !pgdata.join("PG_VERSION").exists() {
            initdb(&bindir, user, &options.dir, &pgdata, &options.superuser_password)?;
        }
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| fail(format!("cannot open {}: {e}", log.display())))?;
        let mut command = command_as(&bindir.join("postgres"), user);
        command
            .arg("-D")
            .arg(&pgdata)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(log_file)
            .process_group(0);
        if options.throwaway {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
            // Each log line names its database, so a test can read its own warnings.
            command.args(["-c", "log_line_prefix=%m [%p] db=%d "]);
            // Statement counts for the tests' N+1 checks (a contrib module of the server).
            command.args(["-c", "shared_preload_libraries=pg_stat_statements"]);
        }
        for (name, value) in &options.settings {
            command.args(["-c", &format!("{name}={value}")]);
        }
        // SAFETY: prctl is async-signal-safe; it runs in the child after the uid change,
        // so the parent-death signal survives it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (pid, exited) = spawn_kept(command)?;
        let cluster =
            Cluster { port, pid, superuser_password: options.superuser_password.clone(), exited: Mutex::new(exited) };
        cluster.wait_ready(&bindir, &log)?;
        Ok(cluster)
    }

    fn wait_ready(&self, bindir: &Path, log: &Path) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = self.exited.lock().expect("exit channel").try_recv() {
                return Err(fail(format!("PostgreSQL exited during start ({status}); log tail:\n{}", log_tail(log))));
            }
            let ready = Command::new(bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(format!("PostgreSQL did not become ready in 60 s; log tail:\n{}", log_tail(log))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser URL for database `database`.
    pub fn superuser_url(&self, database: &str) -> String {
        self.url(SUPERUSER, &self.superuser_password, database)
    }

    /// A URL for `user` with `password` on database `database` of this cluster.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        format!("postgres://{}:{}@127.0.0.1:{}/{}", enc(user), enc(password), self.port, enc(database))
    }

    /// Immediate shutdown (SIGQUIT), as a crash would leave it: no checkpoint, the next
    /// start replays the WAL. Waits for PostgreSQL to exit, at most 30 s.
    pub fn stop_immediately(self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGQUIT);
        }
        let _ = self.exited.lock().expect("exit channel").recv_timeout(Duration::from_secs(30));
    }

    /// Fast shutdown (SIGINT): waits for PostgreSQL to exit, at most 30 s.
    pub fn stop(self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGINT);
        }
        let _ = self.exited.lock().expect("exit channel").recv_timeout(Duration::from_secs(30));
    }
}

/// Spawns `command` from a thread that lives exactly as long as the child, so that the
/// parent-death signal (tied to the spawning thread) fires only when this process dies.
fn spawn_kept(mut command: Command) -> Result<(u32, mpsc::Receiver<String>), ClusterError> {
    let (started_tx, started_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let _ = exited_tx.send(status);
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })
        .map_err(|e| fail(format!("cannot spawn keeper thread: {e}")))?;
    let pid =
        started_rx.recv().map_err(|e| fail(e.to_string()))?.map_err(|e| fail(format!("cannot start postgres: {e}")))?;
    Ok((pid, exited_rx))
}

fn initdb(
    bindir: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    pgdata: &Path,
    password: &str,
) -> Result<(), ClusterError> {
    make_owned_dir(pgdata, user, 0o700)?;
    let pwfile = dir.join(".initdb-pw");
    fs::write(&pwfile, password).map_err(|e| fail(format!("cannot write {}: {e}", pwfile.display())))?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).map_err(|e| fail(e.to_string()))?;
    if let Some((uid, gid)) = user {
        chown(&pwfile, Some(uid), Some(gid)).map_err(|e| fail(e.to_string()))?;
    }
    let output = command_as(&bindir.join("initdb"), user)
        .arg("-D")
        .arg(pgdata)
        .args(["-U", SUPERUSER, "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8"])
        .args(["--locale=C", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output();
    let _ = fs::remove_file(&pwfile);
    let output = output.map_err(|e| fail(format!("cannot run initdb: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// A fresh random secret: 32 bytes, URL-safe base64 (used for generated passwords).
pub fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
