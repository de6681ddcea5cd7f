//! `ctl api-keys`: the origin's REST API keys (an admin key is needed).
//! A key is the tenant's (the vendor's staff, CRM, billing: every account,
//! within its scopes) or, with `--account`, one customer account's (the
//! self-service portal's: that account only, with `read`,
//! `accounts:write` and `access:request` at most).

use super::origin::{seg, Origin};
use super::table::{cell, print_fields, time_cell, Table};
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key; its token is printed once and never again.
    Create {
        /// What it is for, for people.
        #[arg(long)]
        name: String,
        /// A scope: admin, catalog:write, accounts:write, orders:write,
        /// access:request, access:approve, read. Repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The customer account the key belongs to; without it, a tenant
        /// key.
        #[arg(long)]
        account: Option<String>,
    },
    /// List keys (ids, owners, scopes; never secrets).
    List,
    /// Revoke a key: it is refused from the next request on.
    Revoke { id: String },
}

pub async fn run(global: &Global, command: ApiKeysCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        ApiKeysCommand::Create {
            name,
            scopes,
            account,
        } => {
            let mut body = json!({"name": name, "scopes": scopes});
            if let Some(account) = account {
                body["account"] = json!(account);
            }
            let key = origin.post("/v1/api-keys", Some(&body)).await?;
            match global.output {
                Format::Json => print_json(&key),
                Format::Table => print_fields(&[
                    ("id", cell(&key["id"])),
                    ("owner", owner(&key["owner"])),
                    ("scopes", scopes_cell(&key["scopes"])),
                    ("revision", cell(&key["revision"])),
                    ("token", cell(&key["token"])),
                ]),
            }
        }
        ApiKeysCommand::List => {
            let keys = origin.get("/v1/api-keys").await?;
            match global.output {
                Format::Json => print_json(&keys),
                Format::Table => {
                    let mut table =
                        Table::new(&["ID", "NAME", "OWNER", "SCOPES", "CREATED", "REVOKED"]);
                    // An answer of another shape is an error, not an empty table.
                    let keys = keys.as_array().ok_or_else(|| {
                        CtlError::new(exit::FAILURE, "UNEXPECTED_ANSWER", format!("the origin answered /v1/api-keys with something other than a list: {keys}"))
                    })?;
                    for k in keys {
                        table.row(vec![
                            cell(&k["id"]),
                            cell(&k["name"]),
                            owner(&k["owner"]),
                            scopes_cell(&k["scopes"]),
                            time_cell(&k["created_at"]),
                            cell(&k["revoked"]),
                        ]);
                    }
                    table.print();
                }
            }
        }
        ApiKeysCommand::Revoke { id } => {
            let done = origin.delete(&format!("/v1/api-keys/{}", seg(&id))).await?;
            match global.output {
                Format::Json => print_json(&done),
                Format::Table => println!("revoked {id} at revision {}", cell(&done["revision"])),
            }
        }
    }
    Ok(exit::OK)
}

/// `tenant`, or `account:<id>`.
fn owner(value: &Value) -> String {
    match value["account"].as_str() {
        Some(account) => format!("account:{account}"),
        None => cell(value),
    }
}

fn scopes_cell(value: &Value) -> String {
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
        command: ApiKeysCommand,
    }

    #[test]
    fn create_takes_an_account_and_repeated_scopes() {
        let cli = Cli::try_parse_from([
            "api-keys",
            "create",
            "--name",
            "acme portal",
            "--account",
            "acme",
            "--scope",
            "read",
            "--scope",
            "accounts:write",
        ])
        .unwrap();
        let ApiKeysCommand::Create {
            name,
            scopes,
            account,
        } = cli.command
        else {
            panic!("expected create");
        };
        assert_eq!(name, "acme portal");
        assert_eq!(scopes, ["read", "accounts:write"]);
        assert_eq!(account.as_deref(), Some("acme"));
        assert!(
            Cli::try_parse_from(["api-keys", "create", "--name", "x"]).is_err(),
            "a key needs a scope"
        );
    }

    #[test]
    fn owners_read_as_tenant_or_account() {
        assert_eq!(owner(&json!("tenant")), "tenant");
        assert_eq!(owner(&json!({"account": "acme"})), "account:acme");
        assert_eq!(
            scopes_cell(&json!(["read", "access:request"])),
            "read,access:request"
        );
    }
}
