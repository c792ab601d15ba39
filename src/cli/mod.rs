//! The command line (DESIGN.md §8): a thin layer that loads configuration
//! and calls into the library.

pub mod decode;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, CONFIG_VARIABLE};
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
    if let Command::Token { action: TokenAction::Decode { token, json } } = &cli.command {
        return decode::print(token, *json);
    }
    let config = load_config(cli.config)?;
    let clock = SystemClock;
    match cli.command {
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
        Command::Token { .. } => Ok(()),
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
