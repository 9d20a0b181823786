//! Breached-password check against the Have I Been Pwned corpus: online through the
//! k-anonymity range API (only the first 5 hex digits of the SHA-1 leave the process,
//! with response padding on), or offline from a local copy of the corpus in its
//! downloadable sorted `SHA1:COUNT` format, binary-searched on disk.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::config::{BreachMode, BreachSettings, ConfigError};
use crate::error::AppError;

/// Where breached passwords are looked up (`HIBP_MODE`).
#[derive(Clone, Debug)]
pub enum BreachSource {
    /// No check (`off`).
    Off,
    /// The range API at `base` (`online`, `HIBP_API_BASE`).
    Online {
        /// API base URL, e.g. `https://api.pwnedpasswords.com`.
        base: String,
        /// HTTP client with the configured timeout.
        client: reqwest::Client,
    },
    /// A local, sorted `SHA1:COUNT` file (`offline`, `HIBP_OFFLINE_FILE`).
    Offline(PathBuf),
}

/// The breach check with its policy for when the source cannot be consulted.
#[derive(Clone, Debug)]
pub struct BreachCheck {
    /// Where to look.
    pub source: BreachSource,
    /// Accept the password (with a warning) when the source cannot be reached
    /// (`HIBP_FAIL_OPEN`, default true); otherwise refuse it.
    pub fail_open: bool,
}

impl BreachCheck {
    /// No check at all.
    pub fn off() -> BreachCheck {
        BreachCheck { source: BreachSource::Off, fail_open: true }
    }

    /// The check the settings describe (`HIBP_*`).
    pub fn new(settings: &BreachSettings) -> Result<BreachCheck, ConfigError> {
        let source = match &settings.mode {
            BreachMode::Off => BreachSource::Off,
            BreachMode::Online { base, timeout } => {
                let client = reqwest::Client::builder()
                    .timeout(*timeout)
                    .user_agent("venueql")
                    .build()
                    .map_err(|e| ConfigError(format!("cannot build the HIBP client: {e}")))?;
                BreachSource::Online { base: base.trim_end_matches('/').to_string(), client }
            }
            BreachMode::Offline(path) => BreachSource::Offline(path.clone()),
        };
        Ok(BreachCheck { source, fail_open: settings.fail_open })
    }

    /// Refuses a password found in the corpus, saying so; applies the fail-open policy
    /// (and logs) when the source cannot be consulted.
    pub async fn check(&self, password: &str) -> Result<(), AppError> {
        let hash = hex_upper(&Sha1::digest(password.as_bytes()));
        let found = match &self.source {
            BreachSource::Off => return Ok(()),
            BreachSource::Online { base, client } => range_lookup(client, base, &hash).await,
            BreachSource::Offline(path) => {
                let path = path.clone();
                let hash = hash.clone();
                tokio::task::spawn_blocking(move || offline_lookup(&path, &hash))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match found {
            Ok(0) => Ok(()),
            Ok(count) => Err(AppError::bad_input(format!(
                "this password appears in {count} known data breaches (Have I Been Pwned); choose another"
            ))),
            Err(reason) if self.fail_open => {
                tracing::warn!(reason = %reason, "breached-password check unavailable: accepting the password (HIBP_FAIL_OPEN=true)");
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(reason = %reason, "breached-password check unavailable: refusing the password (HIBP_FAIL_OPEN=false)");
                Err(AppError::bad_input("the breached-password check is unavailable right now; try again later"))
            }
        }
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Asks the range API for the 5-character prefix; padded lines (count 0) are ignored.
async fn range_lookup(client: &reqwest::Client, base: &str, hash: &str) -> Result<u64, String> {
    let (prefix, suffix) = hash.split_at(5);
    let response = client
        .get(format!("{base}/range/{prefix}"))
        .header("Add-Padding", "true")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("range API answered {}", response.status()));
    }
    let body = response.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
    Ok(count_in_range(&body, suffix))
}

/// The count for `suffix` in a range response (`SUFFIX:COUNT` lines).
fn count_in_range(body: &str, suffix: &str) -> u64 {
    body.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .find(|(s, _)| s.eq_ignore_ascii_case(suffix))
        .and_then(|(_, count)| count.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads the first line that starts at or after `offset`: seek to the byte before it and
/// skip through the next newline. Returns the line's start, its bytes including the line
/// ending, and its trimmed text.
fn line_at_or_after(reader: &mut BufReader<std::fs::File>, offset: u64) -> Result<Option<(u64, u64, String)>, String> {
    let mut start = offset;
    if offset > 0 {
        reader.seek(SeekFrom::Start(offset - 1)).map_err(|e| e.to_string())?;
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped).map_err(|e| e.to_string())?;
        start = offset - 1 + n as u64;
    } else {
        reader.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    }
    let mut line = String::new();
    let read = reader.by_ref().take(200).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok((read > 0).then(|| (start, read as u64, line.trim().to_string())))
}

/// Binary search of a sorted `SHA1:COUNT` file by byte offset. Memory use is one line,
/// whatever the file's size (the full corpus is tens of GB).
pub fn offline_lookup(path: &Path, hash: &str) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut reader = BufReader::new(file);
    // Invariant: every line starting before `low` sorts below `hash`; every line starting
    // at or after `high` sorts above it.
    let (mut low, mut high) = (0u64, len);
    while low < high {
        let mid = low + (high - low) / 2;
        let Some((start, raw_len, line)) = line_at_or_after(&mut reader, mid)? else {
            high = mid;
            continue;
        };
        if start >= high {
            high = mid;
            continue;
        }
        let key = line.get(..40).unwrap_or(&line).to_ascii_uppercase();
        match key.as_str().cmp(hash) {
            std::cmp::Ordering::Equal => {
                return Ok(line.split_once(':').and_then(|(_, c)| c.trim().parse().ok()).unwrap_or(1));
            }
            std::cmp::Ordering::Less => low = start + raw_len,
            std::cmp::Ordering::Greater => high = mid,
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(text: &str) -> String {
        hex_upper(&Sha1::digest(text.as_bytes()))
    }

    #[test]
    fn range_bodies_ignore_padding_and_case() {
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n00D4F6E8FA6EECAD2A3AA415EEC418D38EC:0\r\n011053FD0102E94D6AE2F8B83D76FAF94F6:13\r\n";
        assert_eq!(count_in_range(body, "011053fd0102e94d6ae2f8b83d76faf94f6"), 13);
        assert_eq!(count_in_range(body, "00D4F6E8FA6EECAD2A3AA415EEC418D38EC"), 0);
        assert_eq!(count_in_range(body, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), 0);
    }

    #[test]
    fn offline_search_finds_first_middle_last_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("venueql-hibp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut hashes: Vec<(String, u64)> = (0..500).map(|i| (sha1_hex(&format!("pw{i}")), i + 1)).collect();
        hashes.sort();
        for ending in ["\r\n", "\n"] {
            let body: String = hashes.iter().map(|(h, c)| format!("{h}:{c}{ending}")).collect();
            let path = dir.join("pwned.txt");
            std::fs::write(&path, body).unwrap();
            for (index, (hash, count)) in hashes.iter().enumerate() {
                assert_eq!(offline_lookup(&path, hash).unwrap(), *count, "entry {index} with {ending:?}");
            }
            assert_eq!(offline_lookup(&path, &sha1_hex("not in the file")).unwrap(), 0);
            assert_eq!(offline_lookup(&path, "0000000000000000000000000000000000000000").unwrap(), 0);
            assert_eq!(offline_lookup(&path, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF").unwrap(), 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
