//! The worst `Stripe-Signature` an unauthenticated sender can send: 6,000 `v1=` entries
//! with a current timestamp over a 1 MB body. Timed in the verifier itself (the CPU a
//! runtime worker spends) and end to end over HTTP; beside it, the dearest header the
//! verifier accepts to check (the most signatures allowed, two secrets, the largest body
//! the webhook route takes).

use std::time::{Duration, Instant};

use secrecy::SecretString;

use venueql::payments::signature::{self, MAX_SIGNATURES};

type DynError = Box<dyn std::error::Error + Send + Sync>;

const ENTRIES: usize = 6_000;
const BODY_BYTES: usize = 1024 * 1024;
/// The webhook route's default body limit (`WEBHOOK_MAX_BODY_BYTES`).
const ROUTE_BODY_BYTES: usize = 512 * 1024;
const RUNS: usize = 200;

/// Timings of the three cases, in milliseconds.
pub(super) struct SignatureFigures {
    hostile_verify: Timing,
    dearest_verify: Timing,
    /// Over HTTP with the 1 MB body (refused by the body limit) and with a body just
    /// under the limit (refused by the signature check).
    hostile_http: Vec<(usize, u16, Timing)>,
}

struct Timing {
    median_ms: f64,
    max_ms: f64,
}

fn timing(mut runs: Vec<Duration>) -> Timing {
    runs.sort_unstable();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    Timing { median_ms: runs.get(runs.len() / 2).map_or(0.0, ms), max_ms: runs.last().map_or(0.0, ms) }
}

fn hostile_header(now: i64) -> String {
    let entry = format!(",v1={}", "ab".repeat(32));
    format!("t={now}{}", entry.repeat(ENTRIES))
}

fn time_verify(body: &[u8], header: &str, secrets: &[&SecretString], now: i64) -> (Timing, bool) {
    let mut runs = Vec::with_capacity(RUNS);
    let mut refused = true;
    for _ in 0..RUNS {
        let started = Instant::now();
        let outcome = signature::verify(body, Some(header), secrets, 300, now);
        runs.push(started.elapsed());
        refused &= outcome.is_err();
    }
    (timing(runs), refused)
}

/// Measures the three cases against the server at `base`.
pub(super) async fn measure(client: &reqwest::Client, base: &str) -> Result<SignatureFigures, DynError> {
    let now = chrono::Utc::now().timestamp();
    let (current, previous) =
        (SecretString::from("whsec_bench_current".to_string()), SecretString::from("whsec_bench_previous".to_string()));
    let secrets = [&current, &previous];
    let body = vec![b'x'; BODY_BYTES];
    let header = hostile_header(now);
    let (hostile_verify, refused) = time_verify(&body, &header, &secrets, now);
    if !refused {
        return Err("the 6,000-entry signature header was accepted".into());
    }
    // The dearest header the verifier works on: the most entries it takes, none matching,
    // one HMAC per secret over the largest body the route lets through.
    let route_body = vec![b'x'; ROUTE_BODY_BYTES];
    let entry = format!(",v1={}", "cd".repeat(32));
    let dearest = format!("t={now}{}", entry.repeat(MAX_SIGNATURES));
    let (dearest_verify, _) = time_verify(&route_body, &dearest, &secrets, now);

    let mut hostile_http = Vec::new();
    for size in [BODY_BYTES, ROUTE_BODY_BYTES - 1024] {
        let (status, timing) = time_http(client, base, &header, vec![b'x'; size]).await?;
        hostile_http.push((size, status, timing));
    }
    Ok(SignatureFigures { hostile_verify, dearest_verify, hostile_http })
}

async fn time_http(
    client: &reqwest::Client,
    base: &str,
    header: &str,
    body: Vec<u8>,
) -> Result<(u16, Timing), DynError> {
    let url = format!("{base}/webhooks/stripe");
    let mut runs = Vec::with_capacity(20);
    let mut status = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let response = client
            .post(&url)
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        status = response.status().as_u16();
        let _ = response.bytes().await;
        runs.push(started.elapsed());
    }
    if (200..300).contains(&status) {
        return Err("the server accepted the 6,000-entry signature header".into());
    }
    Ok((status, timing(runs)))
}

impl SignatureFigures {
    /// Prints the figures as text and one JSON line.
    pub(super) fn print(&self) {
        println!(
            "worst Stripe-Signature ({ENTRIES} v1 entries, 1 MB body): refused by the verifier in {:.2} µs median \
             ({:.2} µs max of {RUNS})",
            self.hostile_verify.median_ms * 1000.0,
            self.hostile_verify.max_ms * 1000.0,
        );
        for (size, status, timing) in &self.hostile_http {
            println!(
                "  over HTTP with a {size}-byte body: {status} in {:.2} ms median ({:.2} ms max of 20, upload included)",
                timing.median_ms, timing.max_ms
            );
        }
        println!(
            "dearest header the verifier checks ({MAX_SIGNATURES} entries, 2 secrets, 512 KiB body): {:.3} ms median \
             ({:.3} ms max)",
            self.dearest_verify.median_ms, self.dearest_verify.max_ms
        );
        println!(
            "{}",
            serde_json::json!({ "measurement": "worst signature header", "verify_median_ms": self.hostile_verify.median_ms,
                "verify_max_ms": self.hostile_verify.max_ms,
                "http": self.hostile_http.iter().map(|(size, status, t)| serde_json::json!({ "body_bytes": size,
                    "status": status, "median_ms": t.median_ms, "max_ms": t.max_ms })).collect::<Vec<_>>(),
                "dearest_accepted_check_median_ms": self.dearest_verify.median_ms })
        );
    }
}
