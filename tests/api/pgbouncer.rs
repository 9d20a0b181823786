//! A real PgBouncer in transaction pooling mode in front of the suite's cluster, for the
//! replica scenarios (`replicas.rs`): the binary the machine has (`scripts/test.sh`
//! installs Debian's `pgbouncer`), its own config and port, stopped when dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::helpers::{KillOnDrop, TestCluster, free_port};

/// The roles the server and the tests use through the pooler.
const ROLES: [&str; 3] = ["venueql_app", "venueql_owner", "venueql_platform"];

/// A running PgBouncer (`pool_mode = transaction`) for every database of the cluster.
pub struct PgBouncer {
    _process: KillOnDrop,
    dir: PathBuf,
    port: u16,
    password: String,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `cluster` and waits until it accepts connections.
    pub fn start(cluster: &TestCluster) -> PgBouncer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("venueql-pgbouncer-{}-{port}", std::process::id()));
        let mut command =
            venueql::dev::cluster::unprivileged_command_in(&binary(), &dir).expect("pgbouncer's directory");
        let users: String = ROLES.iter().map(|role| format!("\"{role}\" \"{}\"\n", cluster.password)).collect();
        std::fs::write(dir.join("userlist.txt"), users).unwrap();
        let config = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 4\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            pg_port = cluster.cluster.port(),
            dir = dir.display(),
        );
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(&ini, config).unwrap();
        let process = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(KillOnDrop)
            .expect("start pgbouncer");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not listen: {}", log(&dir));
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer { _process: process, dir, port, password: cluster.password.clone() }
    }

    /// The URL of `database` as `user` through the pooler.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
}

/// `PGBOUNCER`, else `pgbouncer` on the PATH or Debian's `/usr/sbin/pgbouncer`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBOUNCER") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("pgbouncer")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|candidate| candidate.is_file())
        .expect("pgbouncer is not installed: scripts/test.sh installs it (apt-get install pgbouncer), or set PGBOUNCER")
}
