//! `confab completions SHELL` and `confab man DIR`: shell completion scripts and man pages,
//! generated from the same clap definitions that parse the command line, so they cannot fall
//! behind a new flag.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory to write confab.1 and one page per subcommand (confab-serve.1, …) into.
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` on stdout.
///
/// bash: `confab completions bash > /etc/bash_completion.d/confab`; zsh: into a directory on
/// `$fpath` as `_confab`; fish: `~/.config/fish/completions/confab.fish`.
pub(crate) fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "confab", &mut std::io::stdout());
    Ok(())
}

/// Writes the man pages into `args.dir`.
pub(crate) fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let command = Cli::command();
    write_pages(&command, "confab", &args.dir)?;
    Ok(())
}

/// Writes `name.1` for `command` and, recursively, `name-sub.1` for each subcommand.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    // The title is the display name; the synopsis shows the bin name (`confab serve`).
    let page = command
        .clone()
        .display_name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
