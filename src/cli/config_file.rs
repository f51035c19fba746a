//! `confab serve --config FILE`: settings from a TOML file whose keys are the flag names of
//! `confab serve` (`data-dir = "/var/lib/confab"`, `max-inbox = 5000`, `allow-insecure = true`).
//! `confab chat` reads its own the same way: `--config FILE`, else the user's
//! `~/.config/confab/config.toml` (`$XDG_CONFIG_HOME` honoured) when it exists
//! (`server = "https://chat.example.org:4119"`, `user = "alice"`, `ca = "/etc/confab/ca.pem"`);
//! `confab register` takes from that file the settings it shares with the chat.
//!
//! Precedence is decided by clap alone (SPEC §14): a flag beats its environment variable, which
//! beats the file, which beats the default. The file's values are turned into flags and the
//! command line is parsed again with them appended, but only for settings whose value clap
//! says came from a default; the defaults themselves stay written once, in
//! `server::config::defaults`, through the `default_value`s of [`super::serve::ServeArgs`].

use std::{ffi::OsString, path::Path};

use clap::{
    CommandFactory, FromArgMatches,
    error::{Error, ErrorKind},
    parser::{ArgMatches, ValueSource},
};

use super::Cli;

/// Parses the process's command line, merging in `confab serve --config FILE`.
///
/// # Errors
/// A clap error (bad flags, `--help`, `--version`) or an unreadable or invalid file, ready to
/// be printed by `Error::exit`.
pub(crate) fn parse() -> Result<Cli, Error> {
    parse_from(std::env::args_os().collect())
}

fn parse_from(mut argv: Vec<OsString>) -> Result<Cli, Error> {
    let mut command = Cli::command();
    let mut matches = command.try_get_matches_from_mut(&argv)?;
    let file = match matches.subcommand() {
        Some((name @ "serve", args)) => args
            .get_one::<std::path::PathBuf>("config")
            .map(|path| (name, args, path.clone())),
        // The user's own file is optional; one named with --config must exist.
        Some((name @ "chat", args)) => args
            .get_one::<std::path::PathBuf>("config")
            .cloned()
            .or_else(|| crate::client::dirs::config_file().filter(|p| p.exists()))
            .map(|path| (name, args, path)),
        // `confab register` reads the chat's file for what the two share (server, CA, user).
        Some((name @ "register", args)) => crate::client::dirs::config_file()
            .filter(|p| p.exists())
            .map(|path| (name, args, path)),
        _ => None,
    };
    if let Some((name, args, path)) = file {
        let subcommand = command
            .find_subcommand(name)
            .expect("confab has this subcommand");
        let from_file = file_flags(&path, args, subcommand, name == "register")?;
        if !from_file.is_empty() {
            argv.extend(from_file);
            matches = command.try_get_matches_from_mut(&argv)?;
        }
    }
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// The flags the file at `path` contributes: one per key whose setting was not given as a flag
/// or in the environment. With `borrowed` (another command's file) a key `subcommand` has no
/// flag for is left alone instead of refused.
fn file_flags(
    path: &Path,
    given: &ArgMatches,
    subcommand: &clap::Command,
    borrowed: bool,
) -> Result<Vec<OsString>, Error> {
    let name = subcommand.get_name();
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::raw(
            ErrorKind::Io,
            format!("cannot read the config file {shown}: {e}\n"),
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::raw(
            ErrorKind::InvalidValue,
            format!("the config file {shown} is not valid TOML: {e}"),
        )
    })?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = subcommand
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != "config");
        if arg.is_none() && borrowed {
            continue;
        }
        let arg = arg.ok_or_else(|| {
            Error::raw(
                ErrorKind::UnknownArgument,
                format!(
                    "{shown}: unknown setting `{key}`; the keys are the flag names of \
                         `confab {name}` (see `confab {name} --help`), e.g. `{example}`\n",
                    example = if name == "serve" {
                        "data-dir"
                    } else {
                        "server"
                    },
                ),
            )
        })?;
        if matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let flag = format!("--{key}");
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            // `server = ["http://…", "http://…"]`: the nodes of a cluster, as `confab chat`
            // takes them.
            toml::Value::Array(items) if key == "server" => {
                let urls: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
                match urls {
                    Some(urls) => urls.join(","),
                    None => {
                        return Err(Error::raw(
                            ErrorKind::InvalidValue,
                            format!("{shown}: `server` must be a URL or a list of URLs\n"),
                        ));
                    }
                }
            }
            toml::Value::Boolean(on) if !takes_value => {
                if on {
                    flags.push(flag.into());
                }
                continue;
            }
            other => {
                return Err(Error::raw(
                    ErrorKind::InvalidValue,
                    format!(
                        "{shown}: `{key}` must be {}, not {}\n",
                        if takes_value {
                            "a string or a number"
                        } else {
                            "true or false"
                        },
                        other.type_str()
                    ),
                ));
            }
        };
        if !takes_value {
            return Err(Error::raw(
                ErrorKind::InvalidValue,
                format!("{shown}: `{key}` is a switch: write `{key} = true` or leave it out\n"),
            ));
        }
        // `--key=value`, so a value starting with `-` is not taken for a flag.
        flags.push(format!("{flag}={value}").into());
    }
    Ok(flags)
}
