//! The operator's admin token: read from its file, or generated there at first start,
//! readable by the owner only (SPEC §9).

use std::{io::Write, path::Path};

use anyhow::{Context, bail};

use crate::types::Secret;

/// Reads the admin token from `path`, or creates one there readable by the owner only.
pub(super) fn load_or_create(path: &Path) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if token.len() < 16 {
            bail!(
                "the admin token in {} is shorter than 16 characters",
                path.display()
            );
        }
        return Ok(Secret::new(token));
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the admin token file {}", path.display()))?;
    writeln!(file, "{token}")?;
    tracing::info!(path = %path.display(), "generated the admin token");
    Ok(Secret::new(token))
}
