//! `confab completions SHELL` and `confab man DIR`, checked by the programs that consume them:
//! bash parses and loads the completion script, groff renders every man page without a warning
//! (Debian's groff-base; scripts/test.sh installs it when missing).

use std::process::Command;

fn confab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .output()
        .expect("run confab")
}

#[test]
fn the_bash_completion_script_loads_and_knows_the_subcommands_and_flags() {
    let out = confab(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "admin",
        "chat",
        "register",
        "--metrics-listen",
        "--log-format",
    ] {
        assert!(script.contains(word), "the script lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confab.bash");
    std::fs::write(&path, &script).unwrap();
    // Loaded into bash, it registers a completion for `confab`, and completing `confab se`
    // offers `serve`.
    let probe = format!(
        "source {}; complete -p confab; COMP_WORDS=(confab se); COMP_CWORD=1; \
         COMP_LINE='confab se'; COMP_POINT=9; _confab confab se confab; echo \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("-F _confab confab"), "{said}");
    assert!(
        said.lines()
            .last()
            .unwrap()
            .split(' ')
            .any(|w| w == "serve"),
        "{said}"
    );

    for shell in ["zsh", "fish"] {
        let out = confab(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = confab(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn man_pages_render_with_groff_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = confab(&["man", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "confab.1",
        "confab-serve.1",
        "confab-admin.1",
        "confab-admin-users.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.contains("relay-server")),
        "hidden commands get no page"
    );
    for page in &pages {
        let out = Command::new("groff")
            // UTF-8 in and out, no bold or underline escapes in the text.
            .args(["-Kutf8", "-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(dir.path().join(page))
            .output()
            .expect("groff (Debian's groff-base; scripts/test.sh installs it)");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        if page == "confab-serve.1" {
            // groff typesets `-` in options as a hyphen or a minus sign, and justifies lines.
            let text = String::from_utf8_lossy(&out.stdout)
                .replace(['\u{2010}', '\u{2212}'], "-")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                text.contains("confab-serve - Run the message center"),
                "{text}"
            );
            assert!(text.contains("--metrics-listen"), "{text}");
            assert!(text.contains("Serve Prometheus metrics"), "{text}");
        }
    }
}
