//! `ctl portal-users`: the portal's users at the origin (an admin key is
//! needed). `invite` is how a deployment gets its first vendor
//! administrator: it prints the invitation's full URL, which the person
//! opens to choose a password; `reinvite` gives an existing user a fresh
//! link (a lost one, or a forgotten password: the old password keeps
//! working until the link is used).

use super::admin::{list_pages, print_items, print_write, LIST_LIMIT_DEFAULT};
use super::origin::{seg, Origin};
use super::table::{cell, print_fields, time_cell};
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum PortalUsersCommand {
    /// List portal users in id order: name, role, account, state (active,
    /// invited, disabled, locked). Never hashes or tokens.
    List(ListArgs),
    /// Create a user with an invitation valid 7 days and print its URL
    /// (shown once). A vendor role takes no --account, a customer role
    /// needs one.
    Invite(InviteArgs),
    /// A fresh invitation for an existing user (a lost link, a forgotten
    /// password); the earlier link stops working.
    Reinvite {
        /// The user's e-mail address.
        id: String,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Remove a user and end every session of theirs.
    Remove {
        /// The user's e-mail address.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this customer account's users.
    #[arg(long)]
    account: Option<String>,
    /// Print at most this many users.
    #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
    limit: usize,
    /// Start after this cursor, as a previous `list` printed it.
    #[arg(long)]
    after: Option<String>,
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The user's e-mail address: their sign-in name.
    #[arg(long)]
    email: String,
    /// The name the portal shows (the e-mail address without it).
    #[arg(long)]
    name: Option<String>,
    #[arg(
        long,
        value_parser = ["vendor_admin", "vendor_support", "customer_admin", "customer_member"]
    )]
    role: String,
    /// The account of a customer role.
    #[arg(long)]
    account: Option<String>,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The origin's URL as the user reaches it, for the printed link
    /// (default: --origin).
    #[arg(long)]
    portal_url: Option<String>,
}

pub async fn run(global: &Global, command: PortalUsersCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        PortalUsersCommand::List(args) => {
            if args.limit == 0 {
                return Err(CtlError::usage("--limit: must be at least 1"));
            }
            let path = match &args.account {
                Some(account) => format!("/v1/portal-users?account={}", seg(account)),
                None => "/v1/portal-users".to_string(),
            };
            let (items, next) = list_pages(&origin, &path, args.limit, args.after).await?;
            print_items(
                global,
                &items,
                &["ID", "NAME", "ROLE", "ACCOUNT", "STATE", "INVITE_EXPIRES"],
                |u| {
                    vec![
                        cell(&u["id"]),
                        cell(&u["name"]),
                        cell(&u["role"]),
                        cell(&u["account"]),
                        cell(&u["state"]),
                        time_cell(&u["invite_expires_at"]),
                    ]
                },
            );
            if let Some(next) = next {
                // On stderr, so the JSON on stdout stays one document.
                eprintln!(
                    "note: more portal users follow; continue with --after {next} (or raise --limit)"
                );
            }
        }
        PortalUsersCommand::Invite(args) => {
            let email = args.email.trim().to_lowercase();
            let mut body = json!({
                "email": email,
                "name": args.name.unwrap_or_else(|| email.clone()),
                "role": args.role,
            });
            if let Some(account) = args.account {
                body["account"] = json!(account);
            }
            let base = portal_base(global, &args.link)?;
            let invite = origin.post("/v1/portal-users", Some(&body)).await?;
            print_invite(global, &base, invite)?;
        }
        PortalUsersCommand::Reinvite { id, link } => {
            let base = portal_base(global, &link)?;
            let invite = origin
                .post(&format!("/v1/portal-users/{}/invite", seg(&id)), None)
                .await?;
            print_invite(global, &base, invite)?;
        }
        PortalUsersCommand::Remove { id } => {
            let done = origin
                .delete(&format!("/v1/portal-users/{}", seg(&id)))
                .await?;
            print_write(global, &done, &format!("portal user {id} removed"));
        }
    }
    Ok(exit::OK)
}

/// The base the invitation's path is put under: `--portal-url`, or the
/// origin `ctl` talks to.
fn portal_base(global: &Global, link: &LinkArgs) -> CtlResult<String> {
    let base = link
        .portal_url
        .as_deref()
        .unwrap_or(&global.origin)
        .trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(CtlError::usage(format!(
            "--portal-url {base:?}: expected https://host[:port]"
        )));
    }
    Ok(base.to_string())
}

/// `{id, invite_path, expires_at, revision}` with the full URL.
fn print_invite(global: &Global, base: &str, mut invite: Value) -> CtlResult<()> {
    let Some(path) = invite["invite_path"].as_str() else {
        return Err(CtlError::new(
            exit::FAILURE,
            "UNEXPECTED_ANSWER",
            format!("the origin answered without an invitation: {invite}"),
        ));
    };
    let url = format!("{base}{path}");
    match global.output {
        Format::Json => {
            invite["invite_url"] = json!(url);
            print_json(&invite);
        }
        Format::Table => print_fields(&[
            ("id", cell(&invite["id"])),
            ("invite url", url),
            ("expires", time_cell(&invite["expires_at"])),
            ("revision", cell(&invite["revision"])),
        ]),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PortalUsersCommand,
    }

    #[test]
    fn invite_takes_a_known_role_and_no_name_is_needed() {
        let cli = Cli::try_parse_from([
            "portal-users",
            "invite",
            "--email",
            "ops@example.com",
            "--role",
            "vendor_admin",
        ])
        .unwrap();
        let PortalUsersCommand::Invite(args) = cli.command else {
            panic!("expected invite");
        };
        assert_eq!(args.email, "ops@example.com");
        assert_eq!(args.role, "vendor_admin");
        assert_eq!(args.name, None);
        assert!(Cli::try_parse_from([
            "portal-users",
            "invite",
            "--email",
            "a@b.c",
            "--role",
            "owner"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["portal-users", "invite", "--email", "a@b.c"]).is_err());
    }
}
