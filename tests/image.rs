//! The container image builds, proven without a Docker daemon (CI has none): every input
//! of `cargo build --release` — the manifest, the sources, every file a source includes at
//! compile time, the migrations `sqlx::migrate!` embeds — lies inside what
//! `docker/Dockerfile` copies into its build stage. And the image and compose file keep
//! their promises: non-root, health through the binary, secrets from the env file,
//! `api` health-gated.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the build stage copies: the sources of its `COPY` lines (before the second `FROM`).
fn copied() -> BTreeSet<PathBuf> {
    let dockerfile = read("docker/Dockerfile");
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    let mut copied = BTreeSet::new();
    for line in build_stage.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).filter(|p| !p.starts_with("--")).collect();
        for source in &parts[..parts.len() - 1] {
            copied.insert(PathBuf::from(source.trim_end_matches('/')));
        }
    }
    copied
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The text between the first pair of quotes after `at`.
fn quoted(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

/// Every file a release build reads: the manifest and lock file, every source file, what
/// the sources include at compile time (outside `#[cfg(test)]` modules), the migrations.
fn build_inputs() -> BTreeSet<PathBuf> {
    let mut inputs: BTreeSet<PathBuf> = ["Cargo.toml", "Cargo.lock"].map(PathBuf::from).into();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for file in files {
        let relative = file.strip_prefix(root()).unwrap().to_path_buf();
        let text = std::fs::read_to_string(&file).unwrap();
        // Test modules are not compiled into the image.
        let shipped = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for macro_name in ["include_str!(", "include_bytes!("] {
            for (at, _) in shipped.match_indices(macro_name) {
                let target = quoted(&shipped[at..]).expect("an include names a literal path");
                let resolved = normalize(&relative.parent().unwrap().join(target));
                inputs.insert(resolved);
            }
        }
        for (at, _) in shipped.match_indices("sqlx::migrate!(") {
            let target = quoted(&shipped[at..]).unwrap_or("./migrations");
            inputs.insert(normalize(Path::new(target)));
        }
        inputs.insert(relative);
    }
    let manifest = read("Cargo.toml");
    assert!(!manifest.contains("build = "), "a custom build script path: add it to the inputs");
    if root().join("build.rs").exists() {
        inputs.insert(PathBuf::from("build.rs"));
    }
    for line in manifest.lines().filter(|l| l.contains("path = ")) {
        inputs.insert(normalize(Path::new(quoted(line.split("path = ").nth(1).unwrap()).unwrap())));
    }
    inputs
}

/// `a/b/../c` → `a/c` (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(name) => parts.push(name),
            _ => {}
        }
    }
    parts.iter().collect()
}

#[test]
fn every_input_of_the_release_build_is_inside_the_dockerfiles_build_context() {
    let copied = copied();
    let inputs = build_inputs();
    assert!(inputs.contains(Path::new("stripe/api-subset.json")), "the local Stripe's spec is a compile-time input");
    assert!(inputs.contains(Path::new("migrations")), "the embedded migrations are an input");
    let outside: Vec<String> = inputs
        .iter()
        .filter(|input| !copied.iter().any(|c| input.starts_with(c)))
        .map(|p| p.display().to_string())
        .collect();
    assert!(outside.is_empty(), "docker/Dockerfile does not copy these build inputs: {outside:?} (copies {copied:?})");
    for input in &inputs {
        assert!(root().join(input).exists(), "build input {} does not exist", input.display());
    }
}

#[test]
fn the_image_runs_unprivileged_and_reports_health_through_its_own_binary() {
    let dockerfile = read("docker/Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("the runtime stage sets USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "USER {user} is root");
    let health = runtime.lines().find(|l| l.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    assert!(health.contains("\"/usr/local/bin/venueql\", \"healthcheck\""), "{health}");
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/venueql\"]"));
}

#[test]
fn compose_takes_its_secrets_from_the_env_file_and_gates_the_api_on_readiness() {
    let compose = read("docker/compose.yaml");
    for secret in [
        "APP_KEY",
        "IDENTITY_HMAC_KEY",
        "AUDIT_HMAC_KEY",
        "POSTGRES_PASSWORD",
        "VENUEQL_APP_PASSWORD",
        "VENUEQL_OWNER_PASSWORD",
        "VENUEQL_PLATFORM_PASSWORD",
    ] {
        assert!(compose.contains(&format!("${{{secret}:?")), "{secret} must come from docker/.env, required");
    }
    assert!(!compose.contains("change-me"), "no password is written into the compose file");
    let api = compose.split("\n  api:").nth(1).expect("an api service");
    assert!(api.contains("test: [\"CMD\", \"/usr/local/bin/venueql\", \"healthcheck\"]"), "api is health-gated");
    assert!(compose.contains("setup: { condition: service_completed_successfully }"));
    assert!(compose.contains("keys generate --database-passwords > docker/.env"), "the one-liner is documented");
    assert!(read(".gitignore").lines().any(|l| l.trim() == "docker/.env"), "the secrets file is never committed");
}
