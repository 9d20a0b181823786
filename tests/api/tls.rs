//! TLS on both sides of the server: HTTPS in process (`TLS_CERT_FILE`, `TLS_KEY_FILE`),
//! and PostgreSQL reached with `sslmode=verify-full` on a cluster that runs with a
//! certificate these tests generate (OpenSSL's command line, a throwaway CA).

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use venueql::db::{self, RoleUrls};
use venueql::dev::{Cluster, ClusterOptions, random_secret};

use crate::helpers::{ServerProcess, TestApp, free_port, serve_on};

/// A throwaway CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// Generates them in a fresh directory owned by the user PostgreSQL runs as (its key
    /// file must be that user's and private).
    fn generate(name: &str) -> Certificates {
        let dir = std::env::temp_dir().join(format!("venueql-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let openssl = |args: &[&str]| {
            let mut command = venueql::dev::cluster::unprivileged_command_in(Path::new("openssl"), &dir).unwrap();
            let output = command.current_dir(&dir).args(args).output().expect("openssl (apt-get install openssl)");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=venueql test {ca}"));
            openssl(
                &[&["req", "-x509"], &ec[..], &["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]]
                    .concat(),
            );
        }
        openssl(
            &[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
        );
        std::os::unix::fs::chown(dir.join("server.key"), None, None).ok();
        std::fs::set_permissions(dir.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Certificates { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn ca(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(self.dir.join("ca.pem")).unwrap()).unwrap()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn https_server(app: &TestApp, certs: &Certificates) -> ServerProcess {
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    app.serve_process(&[("TLS_CERT_FILE", cert.as_str()), ("TLS_KEY_FILE", key.as_str())]).await
}

/// A client that trusts only the test CA and speaks exactly `version`.
fn client_with(certs: &Certificates, version: reqwest::tls::Version) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([certs.ca()])
        .min_tls_version(version)
        .max_tls_version(version)
        .https_only(true)
        .build()
        .unwrap()
}

/// OpenSSL's client against the server with one protocol version: its transcript.
fn s_client(port: u16, version: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_in_process_speaks_tls_1_2_and_1_3_only_sends_hsts_and_ignores_silent_clients() {
    let app = TestApp::spawn().await;
    let certs = Certificates::generate("https");
    let server = https_server(&app, &certs).await;
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();

    for version in [reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_3] {
        let response = client_with(&certs, version).get(format!("{}/readyz", server.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{version:?}");
        assert_eq!(response.headers()["strict-transport-security"], venueql::http::HSTS, "{version:?}");
    }
    // A client that knows no older protocol is refused by the server, not by itself.
    let (ok, transcript) = s_client(port, "-tls1_2");
    assert!(ok && transcript.contains("TLSv1.2"), "{transcript}");
    let (ok, transcript) = s_client(port, "-tls1_1");
    let refused_by_server = transcript.contains("SSL alert number") && transcript.contains("Cipher is (NONE)");
    assert!(!ok && refused_by_server, "the server must refuse TLS 1.1: {transcript}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);

    // Forty connections that never send a ClientHello do not hold up a real client.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let client = client_with(&certs, reqwest::tls::Version::TLS_1_3);
    let answered = tokio::time::timeout(Duration::from_secs(5), client.get(format!("{}/healthz", server.base)).send());
    assert_eq!(answered.await.expect("answered despite silent clients").unwrap().status(), StatusCode::OK);
    drop(silent);

    // The OAuth issuer is the HTTPS address.
    let metadata: serde_json::Value = client
        .get(format!("{}/.well-known/oauth-authorization-server", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(metadata["issuer"].as_str().unwrap().starts_with("https://"), "{metadata}");
}

#[tokio::test]
async fn plain_http_sends_no_hsts_and_unusable_tls_files_stop_the_start() {
    let app = TestApp::spawn().await;
    let plain = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert!(plain.headers().get("strict-transport-security").is_none());

    let certs = Certificates::generate("refused");
    let serve = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_venueql"))
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", &app.urls.app)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("APP_KEY", crate::helpers::TEST_APP_KEY)
            .env("IDENTITY_HMAC_KEY", crate::helpers::TEST_IDENTITY_KEY)
            .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let (cert, key, other_key) = (certs.path("server.pem"), certs.path("server.key"), certs.path("ca.key"));
    for (env, expected) in [
        (vec![("TLS_CERT_FILE", cert.as_str())], "TLS_KEY_FILE is not"),
        (vec![("TLS_CERT_FILE", cert.as_str()), ("TLS_KEY_FILE", "/nonexistent.key")], "/nonexistent.key"),
        (vec![("TLS_CERT_FILE", key.as_str()), ("TLS_KEY_FILE", key.as_str())], "no PEM certificate"),
        (vec![("TLS_CERT_FILE", cert.as_str()), ("TLS_KEY_FILE", other_key.as_str())], "do not make a pair"),
    ] {
        let refused = serve(&env);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains(expected), "{env:?}: {stderr}");
    }
}

/// A private cluster that serves TLS with the test certificate.
fn cluster_with_tls(certs: &Certificates) -> Cluster {
    let dir = std::env::temp_dir().join(format!("venueql-tls-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let settings = [
        ("ssl", "on".to_string()),
        ("ssl_cert_file", certs.path("server.pem")),
        ("ssl_key_file", certs.path("server.key")),
    ];
    Cluster::start(&ClusterOptions {
        dir,
        superuser_password: random_secret(),
        throwaway: true,
        settings: settings.into_iter().map(|(name, value)| (name.to_string(), value)).collect(),
        ..Default::default()
    })
    .expect("a cluster with TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reaches_postgresql_over_verified_tls_and_refuses_a_certificate_it_cannot_verify() {
    venueql::app::install_tls_provider();
    let certs = Certificates::generate("postgres");
    let cluster = cluster_with_tls(&certs);
    let verified = |url: String, ca: &str| format!("{url}?sslmode=verify-full&sslrootcert={}", certs.path(ca));
    let password = random_secret();
    let url = |role: &str| verified(cluster.url(role, &password, "venueql"), "ca.pem");
    let urls = RoleUrls { app: url("venueql_app"), owner: url("venueql_owner"), platform: url("venueql_platform") };
    let superuser = verified(cluster.superuser_url("postgres"), "ca.pem");
    db::init(&superuser, &urls, None).await.expect("db init over TLS");
    db::migrate(&urls.owner).await.expect("migrate over TLS");

    let stripe = venueql::payments::local_stripe::LocalStripe::start().await.unwrap();
    let server = serve_on(&urls.app, stripe.base(), &[]).await;
    assert_eq!(reqwest::get(format!("{}/readyz", server.base)).await.unwrap().status(), StatusCode::OK);
    let admin = db::pool(&superuser, 1).await.unwrap();
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl AND s.version IN ('TLSv1.2', 'TLSv1.3')) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'venueql_app'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(connections > 0 && connections == encrypted, "{encrypted} of {connections} app connections use TLS");

    // A CA that did not sign the server's certificate: verify-full refuses to connect, so
    // the server does not start.
    let wrong_ca = verified(cluster.url("venueql_app", &password, "venueql"), "other-ca.pem");
    let refused = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", &wrong_ca)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("APP_KEY", crate::helpers::TEST_APP_KEY)
        .env("IDENTITY_HMAC_KEY", crate::helpers::TEST_IDENTITY_KEY)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.to_lowercase().contains("certificate"), "{stderr}");
    admin.close().await;
    drop(server);
    cluster.stop();
}
