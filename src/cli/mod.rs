//! The command line (DESIGN.md §8): a thin layer that loads configuration
//! and calls into the library.

pub mod admin;
mod approvals;
mod audit;
pub mod decode;
mod policy;
mod serve;
mod trace;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::lifetimes;
use crate::clock::{Clock, SystemClock, UnixTime};
use crate::config::{Config, ADMIN_TOKEN_VARIABLE, CONFIG_VARIABLE};
use crate::keys;
use crate::policy::Policy;

/// Baton: a token broker for delegation between AI agents.
#[derive(Parser, Debug)]
#[command(name = "baton", version, about)]
pub struct Cli {
    /// Config file (default: `baton.toml` when present).
    #[arg(long, global = true, env = CONFIG_VARIABLE)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve,
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Work with the policy folder.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Inspect tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Revoke a token, or deprovision an agent or a subject (admin API).
    Revoke {
        #[command(subcommand)]
        action: RevokeAction,
    },
    /// Lift the block of a deprovisioned agent or subject (admin API).
    Reinstate {
        #[command(subcommand)]
        action: ReinstateAction,
    },
    /// The agent inventory with its use, and warnings about expiry (admin API).
    Agents {
        /// Print the broker's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit trail, newest first, filtered (admin API).
    Audit(audit::AuditArgs),
    /// List, approve or deny requests waiting for a person's approval (admin API).
    Approvals {
        #[command(subcommand)]
        action: approvals::ApprovalsAction,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Args, Debug)]
struct AdminArgs {
    /// The broker's base URL [default: the config's `issuer`].
    #[arg(long)]
    url: Option<String>,
    /// The admin token. Prefer the variable, or `BATON_ADMIN_TOKEN_FILE`
    /// naming a file that holds it: arguments are visible to other users of
    /// the machine.
    #[arg(long, env = ADMIN_TOKEN_VARIABLE, hide_env_values = true)]
    admin_token: Option<admin::AdminToken>,
}

impl AdminArgs {
    /// The admin token given, wherever it was given ([`admin_token`]).
    fn token(&self) -> Result<Option<admin::AdminToken>, String> {
        admin_token(self.admin_token.clone())
    }
}

/// The admin token: `--admin-token`, else `BATON_ADMIN_TOKEN`, else the
/// content of the file `BATON_ADMIN_TOKEN_FILE` names (its trailing newline
/// trimmed). Both variables set is an error naming both.
fn admin_token(given: Option<admin::AdminToken>) -> Result<Option<admin::AdminToken>, String> {
    let from_environment = crate::config::secret_variable(ADMIN_TOKEN_VARIABLE, |name| std::env::var(name).ok())
        .map_err(|error| error.to_string())?;
    Ok(given.or(from_environment.map(admin::AdminToken::from)))
}

#[derive(Subcommand, Debug)]
enum RevokeAction {
    /// Revoke a token, and so every token that descends from it.
    Token {
        /// The token's `jti`, or the whole token.
        // A jti may start with `-`: base64url.
        #[arg(allow_hyphen_values = true)]
        token: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deprovision an agent: every token it obtained, holds or appears in dies,
    /// and it cannot authenticate until reinstated.
    Agent {
        /// The agent's id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deprovision a subject: every token issued on its authority dies.
    Subject {
        /// The subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ReinstateAction {
    /// Let a deprovisioned agent authenticate again; its old tokens stay dead.
    Agent {
        /// The agent's id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let new tokens on a deprovisioned subject's authority live; old ones stay dead.
    Subject {
        /// The subject (`sub`).
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create the first signing key.
    Generate,
    /// Replace the signing key; the old one stays published until its tokens expire.
    Rotate,
    /// List keys and their state.
    List,
}

#[derive(Subcommand, Debug)]
// Parsed once per run: the size of the explain arguments costs nothing.
#[allow(clippy::large_enum_variant)]
enum PolicyAction {
    /// Validate the whole policy folder: schema, inventory, names the rules
    /// use, rules that can never match, agents near or past expiry.
    Check,
    /// Run the test cases in the folder's `tests/*.toml`.
    Test,
    /// Dry-run a token request: per scope, whether it would be granted and
    /// which rules permitted or forbade it. Nothing is issued.
    Explain(ExplainArgs),
}

/// A token request to dry-run against the local policy folder.
#[derive(Args, Debug)]
struct ExplainArgs {
    /// `issue` (an agent's own token) or `exchange`.
    #[arg(long, value_parser = ["issue", "exchange"], default_value = "exchange")]
    action: String,
    /// The acting agent.
    #[arg(long)]
    agent: String,
    /// The chain's subject (for `issue`, the agent).
    #[arg(long)]
    subject: Option<String>,
    /// The target (`audience` / `resource`) [default: the agent's `default_audience`].
    #[arg(long)]
    target: Option<String>,
    /// The asked scopes, space-separated [default: every permitted one].
    #[arg(long)]
    scope: Option<String>,
    /// The parent token's scopes, space-separated (for `exchange`).
    #[arg(long)]
    parent_scope: Option<String>,
    /// The agents that already acted, newest first, comma-separated.
    #[arg(long, value_delimiter = ',')]
    chain: Vec<String>,
    /// The new token's depth [default: the chain's length + 1].
    #[arg(long)]
    depth: Option<u32>,
    /// Ask as for a DPoP-bound token.
    #[arg(long)]
    dpop_bound: bool,
    /// Ask as for a token whose whole chain is DPoP-bound.
    #[arg(long)]
    chain_dpop_bound: bool,
    /// Seconds the parent token has left.
    #[arg(long, allow_hyphen_values = true)]
    ttl: Option<i64>,
    /// When to ask (RFC 3339) [default: now].
    #[arg(long)]
    at: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl ExplainArgs {
    /// The question, through the same parser the admin API and the test
    /// cases use.
    fn question(&self) -> Result<crate::policy::explain::Question, String> {
        let split = |text: &Option<String>| {
            text.as_ref().map(|text| text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        };
        let value = serde_json::json!({
            "action": self.action,
            "agent": self.agent,
            "subject": self.subject,
            "target": self.target,
            "scopes": split(&self.scope),
            "parent_scopes": split(&self.parent_scope),
            "chain": self.chain,
            "depth": self.depth,
            "dpop_bound": self.dpop_bound,
            "chain_dpop_bound": self.chain_dpop_bound,
            "ttl": self.ttl,
        });
        serde_json::from_value(value).map_err(|error| error.to_string())
    }
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Verify a token against its issuer's JWKS and print its chain as a
    /// tree, with owners and purposes, and with the admin API each token's
    /// status and the descendants.
    Trace {
        /// The token.
        token: String,
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
        /// The broker's base URL [default: the config's `issuer`].
        #[arg(long)]
        url: Option<String>,
        /// The admin token, for statuses and descendants (optional).
        #[arg(long, env = ADMIN_TOKEN_VARIABLE, hide_env_values = true)]
        admin_token: Option<admin::AdminToken>,
    },
    /// Print a token's chain as a tree (the signature is not checked).
    Decode {
        /// The token.
        token: String,
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<(), String> {
    let (action, args) = match cli.command {
        Command::Token { action: TokenAction::Decode { token, json } } => return decode::print(&token, json),
        Command::Token { action: TokenAction::Trace { token, json, url, admin_token } } => {
            return trace_token(&token, json, url, admin_token, cli.config)
        }
        Command::Revoke { action: RevokeAction::Token { token, admin } } => (admin::Action::RevokeToken(token), admin),
        Command::Revoke { action: RevokeAction::Agent { id, admin } } => (admin::Action::DeprovisionAgent(id), admin),
        Command::Revoke { action: RevokeAction::Subject { id, admin } } => {
            (admin::Action::DeprovisionSubject(id), admin)
        }
        Command::Reinstate { action: ReinstateAction::Agent { id, admin } } => {
            (admin::Action::ReinstateAgent(id), admin)
        }
        Command::Reinstate { action: ReinstateAction::Subject { id, admin } } => {
            (admin::Action::ReinstateSubject(id), admin)
        }
        Command::Agents { json, admin } => (admin::Action::Agents { json }, admin),
        Command::Audit(args) => {
            let action = admin::Action::Audit { query: args.query()?, limit: args.limit(), json: args.json };
            (action, args.admin)
        }
        Command::Approvals { action } => return approvals::execute(action, cli.config),
        command => return local(command, cli.config),
    };
    // The config is read only for the default URL, so that `--url` works
    // wherever the command runs.
    let token = args.token()?;
    let url = match args.url {
        Some(url) => url,
        None if token.is_none() => return Err(admin::AdminError::NoToken.to_string()),
        None => load_config(cli.config)?.issuer.into_string(),
    };
    admin::run(action, &url, token).map_err(|error| error.to_string())
}

/// `baton token trace`: the inventory, where the local policy folder loads,
/// names owners and purposes.
fn trace_token(
    token: &str,
    json: bool,
    url: Option<String>,
    admin_token_given: Option<admin::AdminToken>,
    config: Option<PathBuf>,
) -> Result<(), String> {
    let config = load_config(config)?;
    let issuer = url.unwrap_or_else(|| config.issuer.to_string());
    let policy = Policy::load(&config.policies_dir, lifetimes(&config)).ok();
    let client = admin_token(admin_token_given)?
        .map(|token| admin::AdminClient::new(&issuer, token))
        .transpose()
        .map_err(|error| error.to_string())?;
    trace::run(token, json, &issuer, policy.as_ref().map(Policy::inventory), client)
}

/// The commands that work on this machine's config, keys and policy.
fn local(command: Command, config: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(config)?;
    let clock = SystemClock;
    match command {
        Command::Serve => serve::run(config),
        Command::Keys { action } => {
            let dir = &config.keys_dir;
            let (now, ttl) = (clock.now(), config.max_token_ttl);
            match action {
                KeysAction::Generate => {
                    let kid =
                        keys::generate(dir, config.signing_algorithm, ttl, now).map_err(|error| error.to_string())?;
                    println!("generated {} key {kid} in {}", config.signing_algorithm.name(), dir.display());
                }
                KeysAction::Rotate => {
                    let kid =
                        keys::rotate(dir, config.signing_algorithm, ttl, now).map_err(|error| error.to_string())?;
                    println!("rotated: {kid} now signs; earlier keys stay published until their tokens expire");
                    println!("a running broker picks the new key up within {} seconds", keys::RELOAD_INTERVAL);
                }
                KeysAction::List => {
                    for key in keys::list(dir, ttl, now).map_err(|error| error.to_string())? {
                        let state = match key.state {
                            keys::KeyState::Current => "current".to_owned(),
                            keys::KeyState::Published { until } => format!("retired, published until {until}"),
                            keys::KeyState::Expired => "expired".to_owned(),
                        };
                        println!("{}  {:<5}  created {}  {state}", key.kid, key.algorithm.name(), key.created_at);
                    }
                }
            }
            Ok(())
        }
        Command::Policy { action } => {
            let dir = &config.policies_dir;
            match action {
                PolicyAction::Check => policy::check(dir, lifetimes(&config), clock.now()),
                PolicyAction::Test => policy::test(dir, lifetimes(&config), clock.now()),
                PolicyAction::Explain(args) => {
                    let at = match &args.at {
                        Some(text) => time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                            .map(|moment| UnixTime(moment.unix_timestamp()))
                            .map_err(|error| format!("--at `{text}`: {error}"))?,
                        None => clock.now(),
                    };
                    policy::explain(dir, lifetimes(&config), &args.question()?, at, args.json)
                }
            }
        }
        // Handled by `execute`, which reads no config for them.
        Command::Token { .. }
        | Command::Revoke { .. }
        | Command::Reinstate { .. }
        | Command::Agents { .. }
        | Command::Audit(_)
        | Command::Approvals { .. } => Ok(()),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    let default = PathBuf::from("baton.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    Config::load(path.as_deref(), std::env::vars()).map_err(|error| error.to_string())
}
