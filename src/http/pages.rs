//! The hosted pages' shared frame: server-rendered HTML that works without JavaScript,
//! with a strict CSP, no caching, no framing and no referrer (their URLs can carry
//! one-time links), and a CSRF value in an HttpOnly, SameSite=Strict cookie that each
//! form must echo.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::secrets;

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A complete page with `title` and an already-escaped `body`.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}}\
         label{{display:block;margin-top:1rem}}input,button{{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}}\
         button{{margin-top:1.5rem}}.error{{color:#a00;border:1px solid #a00;padding:.5rem}}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// An error paragraph announced to screen readers.
pub fn error_html(message: &str) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
}

/// The value of cookie `name` in the request.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// The CSRF cookie of one hosted page: its own name and path, so pages open in other tabs
/// never overwrite each other's.
#[derive(Clone, Copy, Debug)]
pub struct CsrfCookie {
    /// Cookie name.
    pub name: &'static str,
    /// The page's path.
    pub path: &'static str,
}

/// The hosted login's CSRF cookie.
pub const LOGIN_CSRF: CsrfCookie = CsrfCookie { name: "vq_csrf", path: "/oauth/authorize" };
/// The invitation page's CSRF cookie.
pub const INVITATION_CSRF: CsrfCookie = CsrfCookie { name: "vq_csrf_invitation", path: "/oauth/invitation" };
/// The password reset page's CSRF cookie.
pub const RESET_CSRF: CsrfCookie = CsrfCookie { name: "vq_csrf_reset", path: "/oauth/reset" };

/// A fresh CSRF value for a form.
pub fn new_csrf() -> String {
    secrets::new_secret("")
}

/// Whether the form's CSRF value equals the page's cookie (any cookie of that name the
/// browser sends; compared as hashes, so in constant time with respect to the secret).
pub fn csrf_matches(headers: &HeaderMap, cookie: CsrfCookie, form_value: &str) -> bool {
    if form_value.is_empty() {
        return false;
    }
    let expected = secrets::hash(form_value);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == cookie.name && secrets::hash(value) == expected)
}

/// Sets a page's CSRF cookie (`Secure` when served over https).
pub fn with_csrf_cookie(mut response: Response, https: bool, cookie: CsrfCookie, csrf: &str) -> Response {
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!("{}={csrf}; Path={}; HttpOnly; SameSite=Strict{secure}", cookie.name, cookie.path);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> String {
    format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value))
}
