//! `Secret`: a string that never prints. Access and refresh tokens live in this type from the
//! moment the config is read, so no `{:?}`, `{}` or tracing field can leak one into a log.
//!
//! Also [`redact_userinfo`]: URLs (the server URL, proxy URLs, URLs quoted in error messages) may
//! carry a password (`https://user:password@host`); every URL that is printed goes through it.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that needs it: the HTTP request being built.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("[empty]") } else { write!(f, "[redacted, {} chars]", self.0.chars().count()) }
    }
}

/// What replaces a password in a printed URL.
pub const REDACTED: &str = "[redacted]";

/// `text` with the password of every `scheme://user:password@host` URL in it replaced by
/// `[redacted]` (the user name is kept: it helps, and it is not the secret). Works on any
/// text, so an error message that quotes a URL is safe to print too.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace (or quote, in messages).
        let end = tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | ')' | '>') || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_userinfo("https://bob:hunter2@example.com:8443/x"), "https://bob:[redacted]@example.com:8443/x");
        assert_eq!(redact_userinfo("http://example.com/a@b"), "http://example.com/a@b");
        assert_eq!(redact_userinfo("no url here"), "no url here");
        assert_eq!(
            redact_userinfo("proxy http://u:p%40ss@10.0.0.1:3128 and \"socks5://x:y@h\""),
            "proxy http://u:[redacted]@10.0.0.1:3128 and \"socks5://x:[redacted]@h\""
        );
        assert_eq!(redact_userinfo("http://a:b:c@h"), "http://a:[redacted]@h");
        assert_eq!(redact_userinfo("http://user@h"), "http://user@h");
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2-token");
        assert!(!format!("{s} {s:?} {:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-token");
    }
}
