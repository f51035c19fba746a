//! The `confab` command line: one binary, one subcommand per role. Every flag has a `CONFAB_*`
//! environment fallback; durations are written like `60s` or `5m`.

mod admin;
mod chat;
mod config_file;
mod generate;
mod logs;
mod serve;
mod stats;
mod storage;
mod table;

use clap::{Parser, Subcommand};
// The subcommands' `value_parser = super::duration`; `bench` uses the same parser directly.
use crate::types::parse_duration as duration;

/// confab: a small, durable chat system.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the message center.
    Serve(Box<serve::ServeArgs>),
    /// Create an account on a server.
    Register(admin::RegisterArgs),
    /// Operator commands (need the server's admin token).
    Admin(admin::AdminArgs),
    /// Chat: log in and type commands (message, broadcast, getaddress, private, …; try help).
    Chat(chat::ChatArgs),
    /// Load-test a server with simulated users and print what it measured.
    Bench(Box<crate::bench::BenchArgs>),
    /// Print a shell completion script (bash, zsh, fish, …) on stdout.
    Completions(generate::CompletionsArgs),
    /// Write man pages (confab.1, confab-serve.1, …) into a directory.
    Man(generate::ManArgs),
}

/// Parses the command line and runs it; the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match config_file::parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The chat client shares the terminal with the person typing: only warnings by default.
    let level = match cli.command {
        Command::Chat(_) => "warn",
        _ => "info",
    };
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => logs::LogFormat::Text,
    };
    logs::init(level, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("confab: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Register(args) => admin::register(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Bench(args) => crate::bench::run(*args).await,
            Command::Completions(args) => generate::completions(args),
            Command::Man(args) => generate::man(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Already shown to the user, in the chat's own format.
        Err(e) if e.is::<crate::client::SessionOver>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("confab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
