//! Web origins (`scheme://host[:port]`) as registered for CORS: an SPA client's origins
//! and a venue's diner-page origins. One normal form, the one browsers send in `Origin`,
//! so that an allowed origin is found by plain string equality.

use crate::error::AppError;

/// Most origins one client or venue may list.
pub const MAX_ORIGINS: usize = 20;

/// Normalises one origin as registered: https (http only on a loopback host), a host,
/// an optional port, nothing else (no path, query, fragment, user or wildcard).
pub fn normalize(raw: &str) -> Result<String, AppError> {
    let raw = raw.trim();
    let refuse = |why: &str| AppError::bad_input(format!("origin {raw:?} {why}; write it as https://shop.example.com"));
    if raw.contains('*') {
        return Err(refuse("is a wildcard, which is never allowed"));
    }
    let url = url::Url::parse(raw).map_err(|_| refuse("is not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("has user information"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || raw.ends_with('/') {
        return Err(refuse("has a path, query or fragment (an origin is scheme, host and port only)"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(refuse("uses http, allowed only for localhost")),
        _ => return Err(refuse("must use https")),
    }
    let origin = url.origin().ascii_serialization();
    if origin == "null" {
        return Err(refuse("has no host"));
    }
    Ok(origin)
}

/// Normalises a whole list: each origin once, at most [`MAX_ORIGINS`].
pub fn normalize_all(raw: &[String]) -> Result<Vec<String>, AppError> {
    if raw.len() > MAX_ORIGINS {
        return Err(AppError::bad_input(format!("at most {MAX_ORIGINS} origins may be listed, not {}", raw.len())));
    }
    let mut origins = Vec::with_capacity(raw.len());
    for origin in raw {
        let origin = normalize(origin)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_kept_in_the_form_browsers_send_and_anything_else_is_refused() {
        assert_eq!(normalize("https://Shop.Example.com").unwrap(), "https://shop.example.com");
        assert_eq!(normalize("https://shop.example.com:443").unwrap(), "https://shop.example.com");
        assert_eq!(normalize("https://shop.example.com:8443").unwrap(), "https://shop.example.com:8443");
        assert_eq!(normalize("http://127.0.0.1:5173").unwrap(), "http://127.0.0.1:5173");
        assert_eq!(normalize("http://localhost:3000").unwrap(), "http://localhost:3000");
        for bad in [
            "*",
            "https://*.example.com",
            "http://shop.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/app",
            "https://shop.example.com?x=1",
            "https://user@shop.example.com",
            "ftp://shop.example.com",
            "null",
            "shop.example.com",
            "",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
        let many: Vec<String> = (0..21).map(|i| format!("https://s{i}.example.com")).collect();
        assert!(normalize_all(&many).is_err());
        let twice = ["https://a.example.com".to_string(), "https://A.example.com".to_string()];
        assert_eq!(normalize_all(&twice).unwrap(), ["https://a.example.com"]);
    }
}
