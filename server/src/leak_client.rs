//! `latchkey scan --server URL`: the credentials a scan finds, checked by a running server's
//! `POST /api/leaks` rather than by a database file (which the server holds locked).
//!
//! Only the credential-shaped words travel, one a line, never the files they were found in:
//! a scan of a source tree must not upload the tree. The server's answer names its lines,
//! which are mapped back to each word's file line here.

use std::net::IpAddr;
use std::time::Duration;

use latchkey::{Finding, Leak};
use serde_json::{Value, json};
use ureq::http::Uri;

/// Words sent in one request: about 100 KB of JSON at most, well inside any body limit a
/// server is started with, and a page of findings that parses quickly.
const WORDS_PER_REQUEST: usize = 1_000;

/// A server's leak check, with the management token it is called with. `Debug` hides the
/// token.
pub struct LeakClient {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl std::fmt::Debug for LeakClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl LeakClient {
    /// A client of the server at `server` (`https://host[:port][/base]`; plain `http` only to
    /// a loopback address, as the token and the credentials would otherwise cross the network
    /// in the clear). Every problem with either argument is named at once.
    pub fn new(server: &str, token: &str, timeout: Duration) -> Result<LeakClient, String> {
        let mut problems = Vec::new();
        let url = match base_url(server) {
            Ok(url) => Some(url),
            // Not echoed: the part before `@` may be a password.
            Err(problem) if has_userinfo(server) => {
                problems.push(format!("--server: {problem}"));
                None
            }
            Err(problem) => {
                problems.push(format!("--server {server:?}: {problem}"));
                None
            }
        };
        let token = token.trim();
        if token.is_empty() {
            problems.push(
                "no admin token: set LATCHKEY_ADMIN_TOKEN (`latchkey admin-token` prints one; \
                 Stores:View to check, Stores:Edit to --revoke)"
                    .to_owned(),
            );
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            // Not echoed: it may be a secret pasted into the wrong variable.
            problems
                .push("the admin token has spaces or characters a header cannot carry".to_owned());
        }
        match url {
            Some(url) if problems.is_empty() => {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(timeout))
                    .user_agent(concat!("latchkey-scan/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .into();
                Ok(LeakClient {
                    agent,
                    url: format!("{url}/api/leaks"),
                    token: token.to_owned(),
                })
            }
            _ => Err(problems.join("; ")),
        }
    }

    /// Each of `leaks` checked (and with `stop`, the live ones stopped) by the server, in
    /// order, with each finding's line the line its word was found on. A word the server does
    /// not report (a 64-hex string that names no key) has no finding.
    pub fn check(&self, leaks: &[Leak<'_>], stop: bool) -> Result<Vec<Finding>, String> {
        let mut findings = Vec::new();
        for words in leaks.chunks(WORDS_PER_REQUEST) {
            let text = words
                .iter()
                .map(|leak| leak.credential)
                .collect::<Vec<_>>()
                .join("\n");
            for mut finding in self.post(&json!({ "text": text, "stop": stop }))? {
                // Line n of the text sent is the n-th word: where that word was found.
                let Some(word) = finding.line.checked_sub(1).and_then(|i| words.get(i)) else {
                    return Err(format!(
                        "{}: answered for line {} of a {}-line check",
                        self.url,
                        finding.line,
                        words.len()
                    ));
                };
                finding.line = word.line;
                findings.push(finding);
            }
        }
        Ok(findings)
    }

    fn post(&self, body: &Value) -> Result<Vec<Finding>, String> {
        let mut response = self
            .agent
            .post(&self.url)
            .header("authorization", format!("Bearer {}", self.token))
            .send_json(body)
            .map_err(|e| format!("{}: {e}", self.url))?;
        let status = response.status();
        let reply: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("{}: {status}, not a Latchkey answer: {e}", self.url))?;
        if !status.is_success() {
            return Err(format!("{}: {status}: {}", self.url, refusal(&reply)));
        }
        serde_json::from_value(reply["data"].clone())
            .map_err(|e| format!("{}: not a leak check's answer: {e}", self.url))
    }
}

/// The server's base URL without a trailing `/`, or why it cannot be one.
fn base_url(server: &str) -> Result<String, String> {
    let uri: Uri = server.parse().map_err(|e| format!("not a URL ({e})"))?;
    if has_userinfo(server) {
        return Err(
            "no user or password in the address (the admin token goes in LATCHKEY_ADMIN_TOKEN)"
                .to_owned(),
        );
    }
    let host = uri
        .host()
        .ok_or("no host (as in https://keys.example.com)")?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(
                "plain http only to a loopback address: the admin token and the credentials \
                 would cross the network in the clear (use https)"
                    .to_owned(),
            );
        }
        _ => return Err("the scheme must be https (or http to a loopback address)".to_owned()),
    }
    if uri.query().is_some() {
        return Err("a query has no place in a server's address".to_owned());
    }
    Ok(server.trim_end_matches('/').to_owned())
}

fn has_userinfo(server: &str) -> bool {
    let rest = server.split_once("://").map_or(server, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A refusal's wrapper as one line: its code, message and the problems it lists.
fn refusal(reply: &Value) -> String {
    let mut line = String::new();
    if let Some(code) = reply["code"].as_str() {
        line.push_str(code);
        line.push_str(": ");
    }
    let message = reply["message"].as_str().unwrap_or("refused");
    line.push_str(message);
    // A refusal's one problem is often its message again.
    let problems: Vec<_> = reply["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|problem| *problem != message)
        .collect();
    if !problems.is_empty() {
        line.push_str(" (");
        line.push_str(&problems.join("; "));
        line.push(')');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_address_is_https_or_loopback_http_and_every_problem_is_named() {
        for good in [
            "https://keys.example.com",
            "https://keys.example.com:8443/latchkey/",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let client = LeakClient::new(good, "a.b.c", Duration::from_secs(1)).unwrap();
            assert!(!client.url.contains("//api"), "{}", client.url);
            assert!(client.url.ends_with("/api/leaks"), "{}", client.url);
        }
        for (bad, why) in [
            ("keys.example.com", "scheme"),
            ("ftp://keys.example.com", "scheme"),
            ("http://keys.example.com", "in the clear"),
            ("http://10.0.0.7:8080", "in the clear"),
            ("https://keys.example.com/?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let err = LeakClient::new(bad, "a.b.c", Duration::from_secs(1)).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let both = LeakClient::new("ftp://x", " ", Duration::from_secs(1)).unwrap_err();
        assert!(
            both.contains("scheme") && both.contains("LATCHKEY_ADMIN_TOKEN"),
            "{both}"
        );
        let err = LeakClient::new(
            "https://ops:hunter2@k.example",
            "a.b.c",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.contains("no user or password") && !err.contains("hunter2"),
            "{err}"
        );
        let token = "pasted secret\n";
        let err = LeakClient::new("https://k.example", token, Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("header") && !err.contains("pasted"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let client = LeakClient::new(
            "https://k.example",
            "eyJ.secret.sig",
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(
            shown.contains("k.example") && !shown.contains("secret"),
            "{shown}"
        );
    }

    #[test]
    fn a_refusal_reads_as_code_message_and_problems() {
        let reply = json!({
            "success": false, "data": null, "code": "FORBIDDEN",
            "message": "missing permission", "errors": ["Stores:Edit"]
        });
        assert_eq!(
            refusal(&reply),
            "FORBIDDEN: missing permission (Stores:Edit)"
        );
        assert_eq!(refusal(&json!({})), "refused");
        let repeated = json!({"code": "INVALID", "message": "bad token", "errors": ["bad token"]});
        assert_eq!(refusal(&repeated), "INVALID: bad token");
    }
}
