//! Hostile requests (issue 19): clients each sending a 2^30 fragment bomb in a loop at
//! both GraphQL endpoints while `/readyz` is asked every 10 ms (its latency is what a
//! load balancer sees), and the reset page asked for an existing and a missing account,
//! interleaved, to show its answer takes as long either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DynError, Sample, summarise};

/// A 2^`levels` fragment bomb on the root type `on`, ending in `leaf`.
fn fragment_bomb(levels: usize, on: &str, leaf: &str) -> String {
    let mut query = String::from("query{...F0}");
    for i in 0..levels {
        query.push_str(&format!(" fragment F{i} on {on}{{...F{} ...F{}}}", i + 1, i + 1));
    }
    query.push_str(&format!(" fragment F{levels} on {on}{{{leaf}}}"));
    serde_json::json!({ "query": query }).to_string()
}

/// `clients` tasks send bombs (half to `/graphql` with `auth`, half to the diner endpoint
/// of `slug`) for `seconds`; meanwhile `/readyz` is timed every 10 ms. Returns the bombs'
/// sample and `/readyz`'s (with its maximum).
pub(super) async fn measure_bombs(
    base: &str,
    auth: &str,
    slug: &str,
    clients: usize,
    seconds: u64,
) -> Result<(Sample, Sample, f64), DynError> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients + 1).build()?;
    let staff = (format!("{base}/graphql"), Some(auth.to_string()), fragment_bomb(30, "StaffQuery", "me{actor}"));
    let public = (format!("{base}/v/{slug}/graphql"), None, fragment_bomb(30, "PublicQuery", "venue{slug}"));
    let targets = Arc::new([staff, public]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut bombers = Vec::new();
    for i in 0..clients {
        let (client, targets) = (client.clone(), targets.clone());
        bombers.push(tokio::spawn(async move {
            let (url, auth, body) = &targets[i % 2];
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut request = client.post(url).header("content-type", "application/json").body(body.clone());
                if let Some(auth) = auth {
                    request = request.header("authorization", auth);
                }
                let refused = match request.send().await {
                    Ok(response) => response.text().await.is_ok_and(|text| text.contains("BAD_USER_INPUT")),
                    Err(_) => false,
                };
                if refused { latencies.push(t.elapsed()) } else { errors += 1 }
            }
            (latencies, errors)
        }));
    }
    let (mut ready, mut ready_errors) = (Vec::new(), 0usize);
    while Instant::now() < deadline {
        let t = Instant::now();
        match client.get(format!("{base}/readyz")).timeout(Duration::from_secs(5)).send().await {
            Ok(response) if response.status().is_success() => ready.push(t.elapsed()),
            _ => ready_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut bombs, mut bomb_errors) = (Vec::new(), 0usize);
    for bomber in bombers {
        let (latencies, errors) = bomber.await?;
        bombs.extend(latencies);
        bomb_errors += errors;
    }
    let elapsed = started.elapsed();
    let slowest = ready.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let bomb_sample = summarise("2^30 fragment bombs refused (HTTP)", clients, elapsed, bombs, bomb_errors);
    let ready_sample = summarise("/readyz during the bombs", 1, elapsed, ready, ready_errors);
    Ok((bomb_sample, ready_sample, slowest))
}

/// How long `/oauth/reset` takes for an email with an account and one without, asked
/// `rounds` times each in an interleaved order; the medians and how often an attacker's
/// best threshold (between the medians) tells them apart.
pub(super) async fn measure_reset_timing(base: &str, known: &str, rounds: usize) -> Result<ResetTiming, DynError> {
    let client = reqwest::Client::new();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..rounds * 2 {
        let exists = (i.wrapping_mul(2_654_435_761) >> 7) % 2 == 0;
        let email = if exists { known.to_string() } else { format!("nobody-{i}@bench.invalid") };
        let t = Instant::now();
        let response = client
            .post(format!("{base}/oauth/reset"))
            .header("accept", "application/json")
            .form(&[("email", email.as_str())])
            .send()
            .await?;
        let took = t.elapsed();
        if response.status().as_u16() != 202 {
            return Err(format!("/oauth/reset answered {}", response.status()).into());
        }
        if exists {
            with.push(took)
        } else {
            without.push(took)
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (with_median, without_median) = (median(&mut with), median(&mut without));
    let threshold = (with_median + without_median) / 2;
    let slower_known = with_median > without_median;
    let right = with.iter().filter(|t| (**t > threshold) == slower_known).count()
        + without.iter().filter(|t| (**t > threshold) != slower_known).count();
    Ok(ResetTiming {
        with_ms: with_median.as_secs_f64() * 1000.0,
        without_ms: without_median.as_secs_f64() * 1000.0,
        classified: right as f64 / (with.len() + without.len()) as f64,
        samples: with.len() + without.len(),
    })
}

/// The reset page's timing, both ways.
pub(super) struct ResetTiming {
    with_ms: f64,
    without_ms: f64,
    classified: f64,
    samples: usize,
}

impl ResetTiming {
    /// Prints the figures.
    pub(super) fn print(&self) {
        println!(
            "reset request: median {:.2} ms with an account, {:.2} ms without; a threshold between them classifies {:.0}% of {} requests (50% is chance)",
            self.with_ms,
            self.without_ms,
            self.classified * 100.0,
            self.samples
        );
    }
}

/// The dearest document the budget admits: 1,999 selections in one 20 KB text (refused
/// later by the complexity limit, after async-graphql's validation has walked all of
/// it). Returns the median and the slowest answer of `runs` in milliseconds.
pub(super) async fn measure_dearest_admitted(base: &str, auth: &str, runs: usize) -> Result<(f64, f64), DynError> {
    let client = reqwest::Client::new();
    let query = format!("{{ me {{ {} }} }}", vec!["actor"; 1998].join(" "));
    let body = serde_json::json!({ "query": query }).to_string();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let response = client
            .post(format!("{base}/graphql"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        response.text().await?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    Ok((times.get(times.len() / 2).map_or(0.0, ms), times.last().map_or(0.0, ms)))
}
