//! `edgewatch check rules` and `edgewatch test rules`: promtool's
//! `check rules` and `test rules` over the aggregator's own rule parser
//! ([`crate::rules::file`]) and rule engine, so rule files are tested in CI
//! with exactly what will evaluate them, and the same test files run under
//! both tools.
//!
//! - `spec.rs`: the test file format (strict: unknown fields are errors);
//! - `series.rs`: series notation and the expanding `values` notation;
//! - `run.rs`: one test group over synthetic time;
//! - `report.rs`: promtool's wording of failures.
//!
//! Output follows promtool's: progress and `SUCCESS` on stdout, `FAILED:`
//! and the failures on stderr.

mod report;
mod run;
mod series;
mod spec;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use run::RuleGroup;
pub use series::{expand_values, parse_labels, SeriesError};
pub use spec::TestFile;

use super::file;

/// promtool's default `evaluation_interval`.
const DEFAULT_EVAL_MS: i64 = 60_000;

/// `check rules`: parses each rule file; true when all are valid.
pub fn check_rules(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut ok = true;
    for path in files {
        let _ = writeln!(out, "Checking {}", path.display());
        match read_rule_file(path) {
            Ok(groups) => match duplicate_rules(&groups) {
                // promtool's default lint: reported, but not a failure.
                Some(lint) => {
                    let _ = writeln!(err, "  FAILED:\n{lint}");
                }
                None => {
                    let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                    let _ = writeln!(out, "  SUCCESS: {n} rules found");
                }
            },
            Err(e) => {
                let _ = writeln!(err, "  FAILED:\n{e}");
                ok = false;
            }
        }
        let _ = writeln!(out);
    }
    ok
}

/// promtool's `duplicate-rules` lint: rules of one name with the same
/// labels, which would write the same series. None if there are none.
fn duplicate_rules(groups: &[RuleGroup]) -> Option<String> {
    let mut rules: Vec<(&str, Vec<(&str, &str)>)> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .map(|r| {
            let labels = r
                .labels
                .iter()
                .map(|(k, t)| (k.as_str(), t.raw()))
                .collect();
            (r.name(), labels)
        })
        .collect();
    rules.sort();
    let mut dups: Vec<&(&str, Vec<(&str, &str)>)> = Vec::new();
    for pair in rules.windows(2) {
        if pair[0] == pair[1] && dups.last() != Some(&&pair[1]) {
            dups.push(&pair[1]);
        }
    }
    if dups.is_empty() {
        return None;
    }
    let mut msg = format!("lint error {} duplicate rule(s) found.\n", dups.len());
    for (name, labels) in dups {
        msg.push_str(&format!("Metric: {name}\nLabel(s):\n"));
        for (k, v) in labels {
            msg.push_str(&format!("\t{k}: {v}\n"));
        }
    }
    msg.push_str("Might cause inconsistency while recording expressions");
    Some(msg)
}

/// `test rules`: runs each unit-test file; true when every test passes.
pub fn test_rules(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    let mut ok = true;
    for path in files {
        let _ = writeln!(out, "Unit Testing:  {}", path.display());
        let failures = test_file(path, err);
        if failures.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            let _ = writeln!(err, "  FAILED:");
            for f in failures {
                let _ = writeln!(err, "{f}");
                let _ = writeln!(out);
            }
            ok = false;
        }
        let _ = writeln!(out);
    }
    ok
}

/// The failures of one test file (empty when it passes); warnings go to `err`.
fn test_file(path: &Path, err: &mut dyn Write) -> Vec<String> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{origin}: {e}")],
    };
    let tf = match spec::parse(&text, &origin) {
        Ok(tf) => tf,
        Err(e) => return vec![e.to_string()],
    };
    let groups = match rule_groups(path, &tf, err) {
        Ok(g) => g,
        // promtool loads the rules for each test group and reports a failure
        // each time (but passes a file without tests: that is not followed).
        Err(e) => return vec![e; tf.tests.len().max(1)],
    };
    let eval_ms = match tf.evaluation_interval.map(|d| d.get().as_millis() as i64) {
        Some(ms) if ms > 0 => ms,
        _ => DEFAULT_EVAL_MS,
    };
    let src = Source {
        origin: &origin,
        text: &text,
    };
    tf.tests
        .iter()
        .flat_map(|tg| run::run_test_group(tg, &groups, eval_ms, &src))
        .collect()
}

/// Where the test file holds a piece of text (an input series or its
/// values), as `FILE:LINE`, for errors found after parsing.
pub(crate) struct Source<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// `FILE:LINE: message` where `needle` first occurs, else `FILE: message`.
    pub(crate) fn error_at(&self, needle: &str, message: impl std::fmt::Display) -> String {
        let line = (!needle.is_empty())
            .then(|| self.text.lines().position(|l| l.contains(needle)))
            .flatten();
        match line {
            Some(n) => format!("{}:{}: {message}", self.origin, n + 1),
            None => format!("{}: {message}", self.origin),
        }
    }
}

/// The rule files of a test file (relative to it, globs), their groups in
/// `group_eval_order` (the others after them, in file order).
fn rule_groups(path: &Path, tf: &TestFile, err: &mut dyn Write) -> Result<Vec<RuleGroup>, String> {
    let mut order: HashMap<&str, usize> = HashMap::new();
    for (i, g) in tf.group_eval_order.iter().enumerate() {
        if order.insert(g.as_str(), i).is_some() {
            return Err(format!("group name repeated in evaluation order: {g}"));
        }
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let mut groups = Vec::new();
    for pattern in &tf.rule_files {
        let full = clean(&base.join(pattern)).to_string_lossy().into_owned();
        let matches: Vec<PathBuf> = glob::glob(&full)
            .map_err(|e| format!("rule_files: invalid pattern {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .collect();
        if matches.is_empty() {
            let _ = writeln!(err, "  WARNING: no file match pattern {full}");
        }
        for m in matches {
            groups.extend(read_rule_file(&m)?);
        }
    }
    // Unlisted groups sort with the first listed one, as in promtool.
    groups.sort_by_key(|g| order.get(g.name.as_str()).copied().unwrap_or(0));
    Ok(groups)
}

/// The path with `.` and `dir/..` taken out, as Go's `filepath.Join` leaves
/// it (promtool prints rule file paths so).
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

fn read_rule_file(path: &Path) -> Result<Vec<RuleGroup>, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let f = file::parse(&text, &origin).map_err(|e| e.to_string())?;
    Ok(f.groups
        .into_iter()
        .map(|g| RuleGroup {
            name: g.name,
            file: origin.clone(),
            rules: g.rules,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_go_joins_them() {
        for (input, want) in [
            ("dir/./rules.yml", "dir/rules.yml"),
            ("./rules.yml", "rules.yml"),
            ("a/b/../rules/*.yml", "a/rules/*.yml"),
            ("../rules.yml", "../rules.yml"),
            ("/etc/./x.yml", "/etc/x.yml"),
            (".", "."),
        ] {
            assert_eq!(clean(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }
}
