//! `kareo-dock mapping import FORM` / `mapping export`: the practice's mapping form
//! ([`form`]) in and out of a tenant config. `import` reads the form, reports every problem by
//! line and column, makes the rules, puts them in place of the config's `rules:` (enabling the
//! families they read), checks the whole config as `tenant put` would, and with `--check` every
//! Dock name live (`check --dock-only`), each failure placed on the form's rows.

pub mod form;

use std::path::PathBuf;
use std::process::ExitCode;

use domain::TenantConfig;

use crate::common::{self, Exit, Outcome};

/// `mapping` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Read the practice's form (CSV, or a Markdown table) into a tenant config's `rules:`.
    /// Without `--write`, print the config it would write.
    Import(ImportArgs),
    /// Write a tenant config's rules as the form (Markdown, or CSV with `--csv`).
    Export(ExportArgs),
}

/// `mapping import` options.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The form: CSV, or a Markdown table (first non-blank line starts with `|`).
    form: PathBuf,
    /// The tenant config whose `rules:` the form replaces.
    #[arg(long)]
    config: PathBuf,
    /// Write the config file (default: print it).
    #[arg(long)]
    write: bool,
    /// Then check every Dock name the rules use, live (needs the Dock secret).
    #[arg(long)]
    check: bool,
    /// Secrets file (for `--check`); without it, Secrets Manager.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
}

/// `mapping export` options.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The tenant config.
    #[arg(long)]
    config: PathBuf,
    /// CSV instead of a Markdown table.
    #[arg(long)]
    csv: bool,
}

/// Exit codes: 0 done; 1 the form has problems (each printed by line and column) or the
/// config it makes is invalid; 2 the tenant config is invalid; 3 Dock could not be reached;
/// 4 `--check` found a Dock name that fails (each placed on its rows).
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async {
        common::finish(match verb {
            Verb::Import(a) => import(a).await,
            Verb::Export(a) => export(a),
        })
    })
}

fn export(args: ExportArgs) -> Outcome {
    let t =
        TenantConfig::from_file(&args.config).map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    print!("{}", form::export(&t.mapping, &t.hooks.rules, !args.csv));
    Ok(ExitCode::SUCCESS)
}

/// Whether `line` is the key `key` (`key:` followed by anything).
fn keyed(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|r| r.trim_start().starts_with(':'))
}

/// The lines `[start, end)` of the top-level section `key`: its key line up to the next
/// top-level key.
fn section<S: AsRef<str>>(lines: &[S], key: &str) -> Option<(usize, usize)> {
    let top =
        |l: &str| l.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && l.contains(':');
    let start = lines.iter().position(|l| keyed(l.as_ref(), key))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| top(l.as_ref()))
        .map_or(lines.len(), |n| start + 1 + n);
    Some((start, end))
}

/// `text` with its top-level `rules:` section replaced by `rules` (appended when absent) and
/// each of `families` enabled under a block-style `families:` (`name: {}`).
fn splice(text: &str, rules: &str, families: &[&str]) -> Result<String, String> {
    let mut out: Vec<String> = text.lines().map(str::to_string).collect();
    let Some((fs, fe)) = section(&out, "families") else {
        return Err("the config has no `families:` section".into());
    };
    if !out[fs].trim_end().ends_with(':') {
        let missing: Vec<&str> = families
            .iter()
            .copied()
            .filter(|f| !out[fs].contains(f))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "`families:` is written inline: enable {} there by hand",
                missing.join(", ")
            ));
        }
    } else {
        let mut add: Vec<&str> = Vec::new();
        for f in families.iter().copied() {
            let present = out[fs + 1..fe].iter().any(|l| keyed(l.trim_start(), f));
            if !present && !add.contains(&f) {
                add.push(f);
            }
        }
        for (i, f) in add.iter().enumerate() {
            out.insert(fs + 1 + i, format!("  {f}: {{}}"));
        }
    }
    // The rules replace their section, or follow everything.
    let (start, end) = section(&out, "rules").unwrap_or((out.len(), out.len()));
    let mut text = String::new();
    for l in &out[..start] {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(rules);
    for l in &out[end..] {
        text.push_str(l);
        text.push('\n');
    }
    Ok(text)
}

// Long: the steps in the order the module doc gives, each reporting by the form's rows.
async fn import(args: ImportArgs) -> Outcome {
    let before =
        TenantConfig::from_file(&args.config).map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let form_text = std::fs::read_to_string(&args.form)
        .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.form.display())))?;
    let name = args.form.display().to_string();
    let report = |problems: &[form::Problem]| {
        for p in problems {
            eprintln!("{name}: {p}");
        }
        Exit(
            common::USAGE,
            format!("{}: {} problem(s); nothing written", name, problems.len()),
        )
    };
    let rows = form::read_table(&form_text).map_err(|p| report(&p))?;
    let imported = form::import(&rows);
    for (line, iface, why) in &imported.writes {
        println!("{name}: line {line}: '{iface}' is not automatable from the form: {why}");
    }
    if !imported.problems.is_empty() {
        return Err(report(&imported.problems));
    }
    let families: Vec<&str> = imported.rules.iter().map(|r| r.family.name()).collect();
    let mut text = splice(
        &before.to_yaml(),
        &form::rules_yaml(&imported.rules),
        &families,
    )
    .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.config.display())))?;
    if !imported.hooks.is_empty() {
        if text.lines().any(|l| l.starts_with("webhooks:")) {
            return Err(Exit(
                common::USAGE,
                format!(
                    "{}: the config already has a `webhooks:` section: add the form's write rows there by hand (nothing written):\n{}",
                    args.config.display(),
                    form::hooks_yaml(&imported.hooks)
                ),
            ));
        }
        text.push_str(&form::hooks_yaml(&imported.hooks));
    }
    let source = args.config.display().to_string();
    // The rule a problem's text names (the longest name it contains, as names can nest).
    let named: Vec<(&str, usize)> = imported
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.line))
        .chain(imported.hooks.iter().map(|h| (h.name.as_str(), h.line)))
        .collect();
    let row_of = |text: &str| {
        named
            .iter()
            .filter(|(n, _)| text.contains(n))
            .max_by_key(|(n, _)| n.len())
            .map(|(_, line)| *line)
    };
    let after = match TenantConfig::from_yaml(&text, &source) {
        Ok(c) => c,
        Err(e) => {
            // Reasons start with the rule's name: place them on its row.
            let placed: Vec<String> = e
                .reason
                .lines()
                .map(|l| match row_of(l) {
                    Some(line) => format!("{name}: line {line}: {}", l.trim()),
                    None => format!("{source}: {}", l.trim()),
                })
                .collect();
            for p in &placed {
                eprintln!("{p}");
            }
            return Err(Exit(
                common::USAGE,
                "the rules the form makes are not valid; nothing written".into(),
            ));
        }
    };
    if !args.write {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(&args.config, &text)
        .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.config.display())))?;
    println!(
        "{}: {} rule(s) and {} webhook rule(s) from {name} ({} before); families: {}",
        args.config.display(),
        after.mapping.rules.len(),
        after.hooks.rules.len(),
        before.mapping.rules.len(),
        after
            .families
            .keys()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !args.check {
        return Ok(ExitCode::SUCCESS);
    }
    check_names(&args, &imported, &name).await
}

/// `check --dock-only` on the written config, each failing name placed on the rows using it.
async fn check_names(args: &ImportArgs, imported: &form::Imported, name: &str) -> Outcome {
    let verdicts = crate::check::verdicts(crate::check::Args::dock_only(
        args.config.clone(),
        args.secrets.clone(),
    ))
    .await?;
    let mut failed = 0;
    for v in &verdicts {
        if v.ok {
            continue;
        }
        failed += 1;
        let Some((what, rules)) = &v.names else {
            println!("{}: FAIL: {}", v.item, v.detail);
            continue;
        };
        let column = match *what {
            "list" => form::Column::List,
            "group" => form::Column::Group,
            "template" => form::Column::Workflow,
            _ => form::Column::Assignee,
        };
        for r in imported.rules.iter().filter(|r| rules.contains(&r.name)) {
            println!(
                "{name}: line {}, {}: FAIL: {} ({})",
                r.line,
                column.header(),
                v.detail,
                v.item
            );
        }
    }
    println!("{} Dock check(s), {failed} failed", verdicts.len());
    Ok(if failed > 0 {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_the_rules_and_enables_families_keeping_the_rest() {
        let text = "tenant: acme # the practice\nfamilies:\n  patients: {}\nrules:\n  - name: old\n    interface: patients\n# trailing comment\nwebhooks:\n  x: 1\n";
        let got = splice(
            text,
            "rules:\n  - name: new\n",
            &["appointments", "patients"],
        )
        .unwrap();
        assert_eq!(
            got,
            "tenant: acme # the practice\nfamilies:\n  appointments: {}\n  patients: {}\nrules:\n  - name: new\nwebhooks:\n  x: 1\n"
        );
        let got = splice("tenant: a\nfamilies:\n  patients: {}\n", "rules: []\n", &[]).unwrap();
        assert_eq!(got, "tenant: a\nfamilies:\n  patients: {}\nrules: []\n");
        assert!(
            splice("families: { patients: {} }\n", "rules: []\n", &["charges"])
                .unwrap_err()
                .contains("charges")
        );
    }
}
