//! The command line (DESIGN.md §8): a thin layer that loads configuration
//! and calls into the library.

pub mod admin;
mod approvals;
pub mod decode;
pub mod serve;
mod trace;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ADMIN_TOKEN_VARIABLE, CONFIG_VARIABLE};
use crate::keys;
use crate::policy::{Lifetimes, Policy};

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
    /// The admin token. Prefer the variable: arguments are visible to other
    /// users of the machine.
    #[arg(long, env = ADMIN_TOKEN_VARIABLE, hide_env_values = true)]
    admin_token: Option<admin::AdminToken>,
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
enum PolicyAction {
    /// Validate the whole policy folder.
    Check,
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
        Command::Approvals { action } => return approvals::execute(action, cli.config),
        command => return local(command, cli.config),
    };
    // The config is read only for the default URL, so that `--url` works
    // wherever the command runs.
    let url = match args.url {
        Some(url) => url,
        None if args.admin_token.is_none() => return Err(admin::AdminError::NoToken.to_string()),
        None => load_config(cli.config)?.issuer,
    };
    admin::run(action, &url, args.admin_token).map_err(|error| error.to_string())
}

/// `baton token trace`: the inventory, where the local policy folder loads,
/// names owners and purposes.
fn trace_token(
    token: &str,
    json: bool,
    url: Option<String>,
    admin_token: Option<admin::AdminToken>,
    config: Option<PathBuf>,
) -> Result<(), String> {
    let config = load_config(config)?;
    let issuer = url.unwrap_or_else(|| config.issuer.clone());
    let policy = Policy::load(&config.policies_dir, lifetimes(&config)).ok();
    let client = admin_token
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
        Command::Policy { action: PolicyAction::Check } => {
            let policy = Policy::load(&config.policies_dir, lifetimes(&config)).map_err(|error| error.to_string())?;
            let inventory = policy.inventory();
            let now = clock.now();
            println!(
                "{}: {} agents, {} resources, {} rules: valid",
                config.policies_dir.display(),
                inventory.agents().count(),
                inventory.resources().count(),
                policy.rules().len()
            );
            for agent in inventory.agents().filter(|agent| !agent.is_active(now)) {
                println!("warning: agent `{}` expired on {} and gets nothing", agent.id, agent.expires);
            }
            if policy.rules().is_empty() {
                println!("warning: no rules: every request will be denied");
            }
            Ok(())
        }
        // Handled by `execute`, which reads no config for them.
        Command::Token { .. }
        | Command::Revoke { .. }
        | Command::Reinstate { .. }
        | Command::Agents { .. }
        | Command::Approvals { .. } => Ok(()),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    let default = PathBuf::from("baton.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    Config::load(path.as_deref(), std::env::vars()).map_err(|error| error.to_string())
}

/// The policy's lifetimes from the config.
pub fn lifetimes(config: &Config) -> Lifetimes {
    Lifetimes { max_token_ttl: config.max_token_ttl, agent_token_ttl: config.agent_token_ttl }
}
