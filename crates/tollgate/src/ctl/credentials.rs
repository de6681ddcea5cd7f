//! `ctl credentials`: application credentials (an admin key is needed).
//! Applications present one on a region's check port
//! (`authorization: Bearer tgc_<id>.<secret>`); it is scoped to accounts,
//! products and verbs, replicated to every region as a hash of its secret,
//! and takes effect (or, revoked, stops) at a region once the region has
//! applied the revision the origin answered with.

use super::origin::{seg, Origin};
use super::table::{cell, print_fields, time_cell, Table};
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use tollgate_model::{AccountId, ProductId, Verb};

/// Most credentials `list` prints when `--limit` is not given.
const LIST_LIMIT_DEFAULT: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Create a credential; its token is printed once and never again.
    Create(CreateArgs),
    /// List credentials (ids, scopes, revocations; never secrets).
    List {
        /// Print at most this many credentials.
        #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
        limit: usize,
    },
    /// Read one credential (never its secret).
    Show { id: String },
    /// Revoke a credential: a region refuses it once it has applied the
    /// revision printed.
    Revoke { id: String },
}

// A credential covers nothing unless told: say which accounts and which
// products, or say every one, never both.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("account_targets").required(true).args(["accounts", "all_accounts"])),
    group(ArgGroup::new("product_targets").required(true).args(["products", "all_products"]))
)]
pub struct CreateArgs {
    /// What it is for, for people.
    #[arg(long)]
    name: String,
    /// An account it may act for. Repeat for several.
    #[arg(long = "account", value_name = "ID")]
    accounts: Vec<String>,
    /// Every account, those created later included.
    #[arg(long)]
    all_accounts: bool,
    /// A product whose features it may check. Repeat for several.
    #[arg(long = "product", value_name = "ID")]
    products: Vec<String>,
    /// Every product, those created later included.
    #[arg(long)]
    all_products: bool,
    /// What it may do. Repeat for several.
    #[arg(
        long = "verb",
        value_name = "VERB",
        required = true,
        value_parser = Verb::ALL.map(Verb::name)
    )]
    verbs: Vec<String>,
}

pub async fn run(global: &Global, command: CredentialsCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        CredentialsCommand::Create(args) => {
            let body = create_body(&args)?;
            let issued = origin.post("/v1/credentials", Some(&body)).await?;
            let credential = &issued["credential"];
            let revision = cell(&issued["revision"]);
            let notes = [
                "The token is shown only once: keep it now, the origin cannot show it again."
                    .to_string(),
                "Applications present it on a region's check port as \
                 `authorization: Bearer <token>`; tollgate ctl (ctl check included) and bench take it \
                 from TOLLGATE_CREDENTIAL (or --credential)."
                    .to_string(),
                format!("A region accepts it once it has applied revision {revision}."),
            ];
            match global.output {
                Format::Json => {
                    print_json(&issued);
                    // stdout stays one JSON document for scripts.
                    for note in &notes {
                        eprintln!("{note}");
                    }
                }
                Format::Table => {
                    print_fields(&[
                        ("id", cell(&credential["id"])),
                        ("name", cell(&credential["name"])),
                        ("accounts", list_cell(&credential["accounts"])),
                        ("products", list_cell(&credential["products"])),
                        ("verbs", list_cell(&credential["verbs"])),
                        ("revision", revision),
                        ("token", cell(&issued["token"])),
                    ]);
                    println!();
                    for note in &notes {
                        println!("{note}");
                    }
                }
            }
        }
        CredentialsCommand::List { limit } => {
            let items = super::admin::list_all(&origin, "/v1/credentials", limit).await?;
            match global.output {
                Format::Json => print_json(&Value::Array(items)),
                Format::Table => {
                    let mut table = Table::new(&[
                        "ID", "NAME", "ACCOUNTS", "PRODUCTS", "VERBS", "CREATED", "REVOKED",
                    ]);
                    for c in &items {
                        table.row(vec![
                            cell(&c["id"]),
                            cell(&c["name"]),
                            list_cell(&c["accounts"]),
                            list_cell(&c["products"]),
                            list_cell(&c["verbs"]),
                            time_cell(&c["created_at"]),
                            time_cell(&c["revoked_at"]),
                        ]);
                    }
                    table.print();
                }
            }
        }
        CredentialsCommand::Show { id } => {
            let c = origin.get(&format!("/v1/credentials/{}", seg(&id))).await?;
            match global.output {
                Format::Json => print_json(&c),
                Format::Table => print_fields(&[
                    ("id", cell(&c["id"])),
                    ("name", cell(&c["name"])),
                    ("accounts", list_cell(&c["accounts"])),
                    ("products", list_cell(&c["products"])),
                    ("verbs", list_cell(&c["verbs"])),
                    ("created", time_cell(&c["created_at"])),
                    ("revoked", time_cell(&c["revoked_at"])),
                ]),
            }
        }
        CredentialsCommand::Revoke { id } => {
            let done = origin
                .post(&format!("/v1/credentials/{}/revoke", seg(&id)), None)
                .await?;
            match global.output {
                Format::Json => print_json(&done),
                Format::Table => {
                    let revision = cell(&done["revision"]);
                    println!(
                        "revoked {id} at revision {revision}; a region refuses it once it has \
                         applied that revision"
                    );
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `POST /v1/credentials`'s body, ids checked here as the origin would
/// check them so a typo names its flag.
fn create_body(args: &CreateArgs) -> CtlResult<Value> {
    fn targets<T>(
        flag: &str,
        ids: &[String],
        every: bool,
        check: impl Fn(&str) -> Result<T, tollgate_model::ModelError>,
    ) -> CtlResult<Value> {
        if every {
            return Ok(json!("*"));
        }
        if ids.is_empty() {
            // clap's groups refuse this first; kept so the body is never
            // an empty list, which covers nothing.
            return Err(CtlError::usage(format!(
                "name what it covers: --{flag} ID (repeat for several) or --all-{flag}s"
            )));
        }
        for id in ids {
            check(id).map_err(|e| CtlError::usage(format!("--{flag} {id:?}: {e}")))?;
        }
        Ok(json!(ids))
    }
    Ok(json!({
        "name": args.name,
        "accounts": targets("account", &args.accounts, args.all_accounts, |id| AccountId::new(id))?,
        "products": targets("product", &args.products, args.all_products, |id| ProductId::new(id))?,
        "verbs": args.verbs,
    }))
}

/// `*` (every one), or the ids joined with commas.
fn list_cell(value: &Value) -> String {
    value
        .as_array()
        .map(|s| s.iter().map(cell).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| cell(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: CredentialsCommand,
    }

    fn create(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let cli = Cli::try_parse_from(["credentials", "create"].iter().chain(args))?;
        let CredentialsCommand::Create(args) = cli.command else {
            panic!("expected create");
        };
        Ok(args)
    }

    #[test]
    fn create_takes_repeated_accounts_products_and_verbs() {
        let args = create(&[
            "--name",
            "acme app",
            "--account",
            "acme",
            "--account",
            "globex",
            "--all-products",
            "--verb",
            "check",
            "--verb",
            "report_usage",
        ])
        .unwrap();
        assert_eq!(
            create_body(&args).unwrap(),
            json!({
                "name": "acme app",
                "accounts": ["acme", "globex"],
                "products": "*",
                "verbs": ["check", "report_usage"],
            })
        );
    }

    #[test]
    fn create_refuses_a_credential_that_covers_nothing_or_is_ambiguous() {
        let base = ["--name", "x", "--verb", "check"];
        for (why, extra, kind) in [
            (
                "no accounts",
                &["--product", "studio"][..],
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
            (
                "no products",
                &["--account", "acme"][..],
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
            (
                "accounts listed and every account",
                &["--account", "acme", "--all-accounts", "--all-products"][..],
                clap::error::ErrorKind::ArgumentConflict,
            ),
            (
                "an unknown verb",
                &["--all-accounts", "--all-products", "--verb", "admin"][..],
                clap::error::ErrorKind::InvalidValue,
            ),
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            let error = create(&args)
                .err()
                .unwrap_or_else(|| panic!("{why}: accepted"));
            assert_eq!(error.kind(), kind, "{why}: {error}");
        }
        let error = create(&["--name", "x", "--all-accounts", "--all-products"])
            .err()
            .unwrap();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "a credential needs a verb"
        );
    }

    #[test]
    fn create_names_the_flag_of_an_invalid_id() {
        let args = create(&[
            "--name",
            "x",
            "--account",
            "bad id!",
            "--all-products",
            "--verb",
            "check",
        ])
        .unwrap();
        let error = create_body(&args).unwrap_err();
        assert_eq!(error.exit, exit::INVALID_INPUT);
        assert!(
            error.message.starts_with("--account \"bad id!\""),
            "{error}"
        );
    }

    #[test]
    fn every_verb_is_accepted_by_name() {
        for verb in Verb::ALL {
            create(&[
                "--name",
                "x",
                "--all-accounts",
                "--all-products",
                "--verb",
                verb.name(),
            ])
            .unwrap();
        }
    }

    #[test]
    fn targets_read_as_star_or_a_list() {
        assert_eq!(list_cell(&json!("*")), "*");
        assert_eq!(list_cell(&json!(["acme", "globex"])), "acme,globex");
        assert_eq!(list_cell(&Value::Null), "-");
    }
}
