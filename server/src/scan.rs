//! `latchkey scan`: which files it reads (directories walked, `--exclude` globs applied) and
//! how it reports what it finds: lines for people (`file:line: masked (shape) status`), JSON
//! Lines for scripts, or one SARIF 2.1.0 log for code-scanning services (GitHub code scanning
//! takes it as is). Every format shows a credential only masked.

use std::io::Write;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use latchkey::{Finding, LeakShape, LeakStatus};
use serde_json::{Value, json};

/// What a walk skips below the paths it is given (`--exclude`), in gitignore's manner: a
/// pattern without `/` matches a file or directory name at any depth (`node_modules`,
/// `*.min.js`); one with `/` matches the path from the scanned directory (`vendor/**/*.json`;
/// a leading `/` only anchors it). `*` never crosses a `/`; `**` does. A path named on the
/// command line is always read.
#[derive(Debug, Default)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    /// The patterns compiled; every one that is not a glob named at once.
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let mut problems = Vec::new();
        for pattern in patterns {
            let trimmed = pattern.trim_end_matches('/');
            let anchored = trimmed.strip_prefix('/');
            let glob = anchored.unwrap_or(trimmed);
            if glob.is_empty() {
                problems.push(format!("--exclude {pattern:?}: an empty pattern"));
                continue;
            }
            match GlobBuilder::new(glob).literal_separator(true).build() {
                Ok(compiled) if anchored.is_none() && !glob.contains('/') => {
                    names.add(compiled);
                }
                Ok(compiled) => {
                    paths.add(compiled);
                }
                Err(e) => problems.push(format!("--exclude {pattern:?}: {}", e.kind())),
            }
        }
        let build = |set: GlobSetBuilder| set.build().map_err(|e| e.to_string());
        match (problems.is_empty(), build(names), build(paths)) {
            (true, Ok(names), Ok(paths)) => Ok(Excludes { names, paths }),
            (_, names, paths) => {
                problems.extend(names.err());
                problems.extend(paths.err());
                Err(problems.join("; "))
            }
        }
    }

    fn skips(&self, relative: &Path) -> bool {
        relative
            .file_name()
            .is_some_and(|name| self.names.is_match(name))
            || self.paths.is_match(relative)
    }
}

/// Every file under `root` in name order (directories recursively, symbolic links not
/// followed, `excludes` applied below `root`), appended to `out`; a directory that cannot be
/// listed is named in `unreadable` with why, and the walk goes on.
pub fn files(
    root: &Path,
    excludes: &Excludes,
    out: &mut Vec<PathBuf>,
    unreadable: &mut Vec<String>,
) {
    walk(root, root, excludes, out, unreadable);
}

fn walk(
    root: &Path,
    path: &Path,
    excludes: &Excludes,
    out: &mut Vec<PathBuf>,
    unreadable: &mut Vec<String>,
) {
    if path != root
        && path
            .strip_prefix(root)
            .is_ok_and(|relative| excludes.skips(relative))
    {
        return;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                children.sort();
                for child in children {
                    walk(root, &child, excludes, out, unreadable);
                }
            }
            Err(e) => unreadable.push(format!("{}: not read: {e}", path.display())),
        },
        Ok(meta) if meta.is_file() => out.push(path.to_owned()),
        _ => {}
    }
}

/// The report's format (`latchkey scan --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ScanFormat {
    /// `file:line: masked (shape) status`, a line each.
    #[default]
    Text,
    /// One JSON object a credential: path, line, shape, masked, and what the check found.
    Json,
    /// A SARIF 2.1.0 log, written when the scan ends.
    Sarif,
}

/// What a scan found so far, and the SARIF results it holds until the end.
#[derive(Debug)]
pub struct ScanReport {
    format: ScanFormat,
    results: Vec<Value>,
    /// Credentials reported.
    pub found: usize,
    /// Of those, live after the scan (checked ones only).
    pub live: usize,
    /// Of those, stopped by this scan.
    pub stopped: usize,
}

/// A SARIF rule a shape: its id, name, and what to do about a result.
fn rule(shape: LeakShape) -> (&'static str, &'static str, &'static str) {
    match shape {
        LeakShape::Token => (
            "latchkey/token",
            "Latchkey API token",
            "A Latchkey API token (its checksum holds): whoever reads this file can call the \
             store's API as the key allows.",
        ),
        LeakShape::PairSecret => (
            "latchkey/pair-secret",
            "Latchkey consumer secret",
            "The secret half (cs_) of a Latchkey consumer key pair.",
        ),
        LeakShape::Hex => (
            "latchkey/hex-key",
            "Latchkey hex key",
            "A live Latchkey key in hex form (told from SHA-256 digests by the key index).",
        ),
    }
}

const SHAPES: [LeakShape; 3] = [LeakShape::Token, LeakShape::PairSecret, LeakShape::Hex];

const FIX: &str = "Stop the key (`latchkey scan --revoke`, or revoke or regenerate it where \
                   keys are managed), then remove it from the file and from the history that \
                   still holds it. Give it to programs through their environment or a secret \
                   store instead.";

impl ScanReport {
    pub fn new(format: ScanFormat) -> ScanReport {
        ScanReport {
            format,
            results: Vec::new(),
            found: 0,
            live: 0,
            stopped: 0,
        }
    }

    /// One credential found at `path:line`, with what the key index said of it when the scan
    /// checks (`finding`), written to `out` (SARIF keeps it for [`ScanReport::finish`]).
    pub fn found(
        &mut self,
        out: &mut impl Write,
        path: &Path,
        line: usize,
        shape: LeakShape,
        masked: &str,
        finding: Option<&Finding>,
    ) -> std::io::Result<()> {
        let checked = finding.map(|f| f.status);
        self.found += 1;
        self.live += usize::from(checked.is_some_and(LeakStatus::is_live));
        self.stopped += usize::from(checked.is_some_and(LeakStatus::is_stopped));
        let status = finding.map(describe);
        match self.format {
            ScanFormat::Text => {
                let shape = match shape {
                    LeakShape::Token => "token",
                    LeakShape::PairSecret => "pair secret",
                    LeakShape::Hex => "hex key",
                };
                let status = status.map(|s| format!(" {s}")).unwrap_or_default();
                writeln!(out, "{}:{line}: {masked} ({shape}){status}", path.display())
            }
            ScanFormat::Json => {
                let mut entry = finding.map_or_else(|| json!({}), |f| json!(f));
                entry["path"] = json!(path.to_string_lossy());
                entry["line"] = json!(line);
                entry["shape"] = json!(shape);
                entry["masked"] = json!(masked);
                writeln!(out, "{entry}")
            }
            ScanFormat::Sarif => {
                let (id, name, _) = rule(shape);
                let level = match checked {
                    // Found by its shape, unchecked: a token's checksum and a pair secret's
                    // form make either almost surely real.
                    None => "error",
                    Some(status) if status.is_live() => "error",
                    // Stopped now, but still in the file for anyone to try.
                    Some(status) if status.is_stopped() => "warning",
                    Some(_) => "note",
                };
                let text = match &status {
                    Some(status) => format!("{name} {masked}: {status}."),
                    None => format!("{name} {masked}."),
                };
                self.results.push(json!({
                    "ruleId": id,
                    "ruleIndex": SHAPES.iter().position(|s| *s == shape),
                    "level": level,
                    "message": { "text": text },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": { "uri": path_uri(path) },
                            "region": { "startLine": line }
                        }
                    }]
                }));
                Ok(())
            }
        }
    }

    /// Ends the report: the SARIF log, for that format (nothing more for the others).
    pub fn finish(self, out: &mut impl Write) -> std::io::Result<()> {
        if self.format != ScanFormat::Sarif {
            return Ok(());
        }
        let rules: Vec<Value> = SHAPES
            .iter()
            .map(|&shape| {
                let (id, name, description) = rule(shape);
                json!({
                    "id": id,
                    "name": match shape {
                        LeakShape::Token => "LatchkeyToken",
                        LeakShape::PairSecret => "LatchkeyPairSecret",
                        LeakShape::Hex => "LatchkeyHexKey",
                    },
                    "shortDescription": { "text": format!("{name} in a file") },
                    "fullDescription": { "text": description },
                    "help": { "text": FIX },
                    "defaultConfiguration": { "level": "error" },
                    // GitHub code scanning ranks alerts by this (9.0 and up: critical).
                    "properties": { "tags": ["security", "secret"], "security-severity": "9.0" }
                })
            })
            .collect();
        let log = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {
                    "driver": {
                        "name": "latchkey",
                        "semanticVersion": env!("CARGO_PKG_VERSION"),
                        "rules": rules
                    }
                },
                "results": self.results
            }]
        });
        writeln!(out, "{log}")
    }
}

/// A finding's status as the text report words it (no leading space).
pub fn describe(finding: &Finding) -> String {
    let key = finding.key_id.as_deref().unwrap_or_default();
    let store = finding
        .store_id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    match finding.status {
        LeakStatus::NotLive => "not live".to_owned(),
        LeakStatus::Live if finding.replaced => format!(
            "live: old secret of {key} (store {store}), in its overlap; {}",
            last_use(finding)
        ),
        LeakStatus::Live => format!("live key {key} (store {store}); {}", last_use(finding)),
        LeakStatus::Revoked => format!("revoked {key}"),
        LeakStatus::OverlapEnded => format!("stopped: old secret of {key}, its overlap ended"),
        LeakStatus::SecretReplaced => format!(
            "stopped: default key {key} has a new secret, not shown (regenerate it to get one)"
        ),
        LeakStatus::NotStopped => format!(
            "live key {key}, not stopped: {}",
            finding.error.as_deref().unwrap_or_default()
        ),
        // Only through --server, with a token limited to some stores.
        LeakStatus::OutOfScope => "live, in a store the admin token does not cover".to_owned(),
    }
}

/// When and from where a found credential was last presented: whether the leak was used.
fn last_use(finding: &Finding) -> String {
    let Some(at) = finding.last_used_at else {
        return "never used".to_owned();
    };
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    match finding.last_used_ip {
        Some(ip) => format!("last used {at} from {ip}"),
        None => format!("last used {at}"),
    }
}

/// `path` as a SARIF artifact location: a relative reference for a relative path (what code
/// scanning resolves against the repository's root), a `file://` URI for an absolute one;
/// every byte outside the unreserved set and `/` percent-encoded.
fn path_uri(path: &Path) -> String {
    let text = path.to_string_lossy();
    let text = text.strip_prefix("./").unwrap_or(&text);
    let mut uri = String::with_capacity(text.len() + 8);
    if path.is_absolute() {
        uri.push_str("file://");
    }
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(status: LeakStatus) -> Finding {
        Finding {
            line: 3,
            shape: LeakShape::Token,
            masked: "lk_shop_…Xy9Z".into(),
            status,
            key_id: Some("key_1".into()),
            store_id: latchkey::StoreId::parse("shop1234"),
            replaced: false,
            last_used_at: None,
            last_used_ip: None,
            error: None,
        }
    }

    fn write(format: ScanFormat, findings: &[Option<Finding>]) -> (String, ScanReport) {
        let mut report = ScanReport::new(format);
        let mut out = Vec::new();
        for finding in findings {
            report
                .found(
                    &mut out,
                    Path::new("./src/my config.env"),
                    7,
                    LeakShape::Token,
                    "lk_shop_…Xy9Z",
                    finding.as_ref(),
                )
                .unwrap();
        }
        (String::from_utf8(out).unwrap(), report)
    }

    #[test]
    fn text_and_json_lines_name_the_place_the_shape_and_the_status() {
        let all = [
            None,
            Some(finding(LeakStatus::Live)),
            Some(finding(LeakStatus::Revoked)),
        ];
        let (text, report) = write(ScanFormat::Text, &all);
        assert_eq!(
            text,
            "./src/my config.env:7: lk_shop_…Xy9Z (token)\n\
             ./src/my config.env:7: lk_shop_…Xy9Z (token) live key key_1 (store shop1234); never used\n\
             ./src/my config.env:7: lk_shop_…Xy9Z (token) revoked key_1\n"
        );
        assert_eq!((report.found, report.live, report.stopped), (3, 1, 1));

        let (lines, _) = write(ScanFormat::Json, &all);
        let entries: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0],
            json!({"path": "./src/my config.env", "line": 7, "shape": "token", "masked": "lk_shop_…Xy9Z"})
        );
        // The file's line, not the line of the text the check was sent.
        assert_eq!(entries[1]["line"], 7);
        assert_eq!(entries[1]["status"], "live");
        assert_eq!(entries[1]["key_id"], "key_1");
        assert_eq!(entries[2]["status"], "revoked");
    }

    #[test]
    fn sarif_is_one_log_with_a_rule_a_shape_and_a_level_by_status() {
        let (early, report) = write(
            ScanFormat::Sarif,
            &[
                Some(finding(LeakStatus::Live)),
                Some(finding(LeakStatus::Revoked)),
                Some(finding(LeakStatus::NotLive)),
            ],
        );
        assert!(early.is_empty(), "SARIF is written whole, at the end");
        let mut out = Vec::new();
        report.finish(&mut out).unwrap();
        let log: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(log["version"], "2.1.0");
        let run = &log["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        let results = run["results"].as_array().unwrap();
        let levels: Vec<_> = results
            .iter()
            .map(|r| r["level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["error", "warning", "note"]);
        let first = &results[0];
        assert_eq!(
            rules[first["ruleIndex"].as_u64().unwrap() as usize]["id"],
            first["ruleId"]
        );
        assert_eq!(first["ruleId"], "latchkey/token");
        let location = &first["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "src/my%20config.env");
        assert_eq!(location["region"]["startLine"], 7);
        assert!(
            first["message"]["text"]
                .as_str()
                .unwrap()
                .contains("lk_shop_…Xy9Z: live key key_1"),
            "{first}"
        );
    }

    #[test]
    fn excludes_match_names_anywhere_and_paths_from_the_root_and_the_root_is_always_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "app/.env",
            "app/bundle.min.js",
            "app/main.js",
            "node_modules/pkg/index.js",
            "vendor/a/b/data.json",
            "vendor/readme.md",
            "docs/vendor/data.json",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let walked = |patterns: &[&str], from: &Path| {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            let excludes = Excludes::new(&patterns).unwrap();
            let (mut out, mut unreadable) = (Vec::new(), Vec::new());
            files(from, &excludes, &mut out, &mut unreadable);
            assert!(unreadable.is_empty());
            out.iter()
                .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(walked(&[], root).len(), 7);
        assert_eq!(
            walked(&["node_modules/", "*.min.js", "/vendor/**/*.json"], root),
            [
                "app/.env",
                "app/main.js",
                "docs/vendor/data.json",
                "vendor/readme.md"
            ]
        );
        // `*` stops at a `/`: `/*/*.js` is one directory deep, not two.
        assert_eq!(
            walked(&["/*/*.js"], root),
            [
                "app/.env",
                "docs/vendor/data.json",
                "node_modules/pkg/index.js",
                "vendor/a/b/data.json",
                "vendor/readme.md"
            ]
        );
        // A path given is read even when a pattern names it.
        assert_eq!(
            walked(&["node_modules"], &root.join("node_modules")),
            ["node_modules/pkg/index.js"]
        );
        let err = Excludes::new(&["a[".into(), "/".into(), "ok".into()]).unwrap_err();
        assert!(
            err.contains("\"a[\"") && err.contains("\"/\": an empty pattern"),
            "{err}"
        );
    }

    #[test]
    fn an_absolute_path_is_a_file_uri() {
        assert_eq!(path_uri(Path::new("/srv/app/.env")), "file:///srv/app/.env");
        assert_eq!(path_uri(Path::new("a/é#1")), "a/%C3%A9%231");
    }
}
