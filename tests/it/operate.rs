//! Running `confab serve` as an operator does (SPEC §14), through the real binary: log lines fit
//! for files and collectors, and the config file's place between flags, environment and
//! defaults.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

/// A `confab serve` child, killed on drop.
struct Serve {
    child: Child,
    /// Its stdout lines up to and including `confab listening on …`.
    printed: Vec<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `confab serve ARGS` in `cwd` with `env` added (and no inherited `CONFAB_*` setting), its
/// stderr into `log`; returns once it printed its listening line.
fn serve(cwd: &Path, args: &[&str], env: &[(&str, &str)], log: Stdio) -> Serve {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command.current_dir(cwd).arg("serve").args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("CONFAB_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start confab serve");
    let mut printed = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .expect("read confab serve's output");
        assert!(
            n > 0,
            "confab serve exited before listening; it printed {printed:?}"
        );
        let done = line.starts_with("confab listening on ");
        printed.push(line.trim_end().to_owned());
        if done {
            break;
        }
    }
    Serve { child, printed }
}

/// Runs `confab serve ARGS` to its listening line, with its stderr in a file; that file's text.
fn logs_of(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    // The "listening" log line is written before the listening line is printed.
    drop(serve(dir.path(), &all, env, log.into()));
    std::fs::read_to_string(&log_path).unwrap()
}

#[test]
fn logs_written_to_a_file_carry_no_colour_escapes() {
    let text = logs_of(&[], &[]);
    assert!(text.contains("confab is listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");
}

#[test]
fn json_logs_are_one_object_per_line_by_flag_or_environment() {
    for (args, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("CONFAB_LOG_FORMAT", "json")][..]),
    ] {
        let text = logs_of(args, env);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        let listening = lines
            .iter()
            .find(|l| l["fields"]["message"] == "confab is listening")
            .unwrap_or_else(|| panic!("no listening line in {text}"));
        assert_eq!(listening["level"], "INFO");
        assert!(
            listening["fields"]["addr"].as_str().is_some(),
            "{listening}"
        );
        assert!(listening["timestamp"].is_string(), "{listening}");
    }
}

#[test]
fn an_unknown_log_format_is_refused_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
}

/// Which of `cwd`'s directories got the database.
fn data_dirs(cwd: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(cwd)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.path()
                .join("confab.db")
                .exists()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    found
}

/// Flags, environment, and the directory that must get the database.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn a_flag_beats_the_environment_which_beats_the_config_file_which_beats_the_default() {
    let file =
        "listen = \"127.0.0.1:0\"\ndata-dir = \"file-dir\"\nmetrics-listen = \"127.0.0.1:0\"\n";
    let none = Stdio::null;
    let cases: [Case; 4] = [
        (&["--listen", "127.0.0.1:0"], &[], "confab-data"),
        (&["--config", "confab.toml"], &[], "file-dir"),
        (
            &["--config", "confab.toml"],
            &[("CONFAB_DATA_DIR", "env-dir")],
            "env-dir",
        ),
        (
            &["--config", "confab.toml", "--data-dir", "flag-dir"],
            &[("CONFAB_DATA_DIR", "env-dir")],
            "flag-dir",
        ),
    ];
    for (args, env, expected) in cases {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::write(cwd.path().join("confab.toml"), file).unwrap();
        let server = serve(cwd.path(), args, env, none());
        assert_eq!(data_dirs(cwd.path()), [expected], "{args:?} {env:?}");
        // The file's other settings apply alongside: it asked for metrics.
        let metrics = server
            .printed
            .iter()
            .any(|l| l.starts_with("confab metrics on"));
        assert_eq!(metrics, args.contains(&"--config"), "{:?}", server.printed);
    }
}

#[test]
fn the_config_file_can_be_named_in_the_environment_and_switches_are_booleans() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("confab.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\ndata-dir = \"d\"\nno-registration = true\nallow-insecure = false\nmax-inbox = 7\n",
    )
    .unwrap();
    let server = serve(
        cwd.path(),
        &[],
        &[("CONFAB_CONFIG", file.to_str().unwrap())],
        Stdio::null(),
    );
    assert_eq!(data_dirs(cwd.path()), ["d"]);
    drop(server);
}

/// `confab serve --config FILE` with `text` in FILE: exit code and stderr.
fn refused_config(text: &str) -> (Option<i32>, String) {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("confab.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .current_dir(cwd.path())
        .args(["serve", "--config", "confab.toml"])
        .output()
        .unwrap();
    assert!(
        data_dirs(cwd.path()).is_empty() && !cwd.path().join("confab-data").exists(),
        "a refused config must not start anything"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_file_is_refused_with_a_sentence_naming_the_problem() {
    let (code, stderr) = refused_config("data_dir = \"x\"\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown setting `data_dir`"), "{stderr}");
    let (code, stderr) = refused_config("listen = \n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("confab.toml is not valid TOML"), "{stderr}");
    let (code, stderr) = refused_config("no-registration = \"yes\"\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("`no-registration` is a switch"), "{stderr}");
    let (code, stderr) = refused_config("max-inbox = [1]\n");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`max-inbox` must be a string or a number"),
        "{stderr}"
    );
    let (code, stderr) = refused_config("max-inbox = \"many\"\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--max-inbox"), "{stderr}");
    let (code, stderr) = refused_config("config = \"other.toml\"\n");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown setting `config`"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--config", "/nonexistent/confab.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the config file /nonexistent/confab.toml"),
        "{stderr}"
    );
}

/// The README's certificate recipe: its shell lines from `# The CA` up to the first `confab`.
fn readme_tls_recipe() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("# The CA")
        .expect("README has the certificate recipe");
    let end = start
        + readme[start..]
            .find("\nconfab serve")
            .expect("the recipe ends before confab serve");
    readme[start..end].to_owned()
}

#[test]
fn the_readme_certificate_recipe_makes_a_certificate_confab_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .current_dir(dir.path())
        .args(["-euo", "pipefail", "-c", &readme_tls_recipe()])
        .output()
        .expect("run bash");
    assert!(
        made.status.success(),
        "the README's openssl lines failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = serve(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
        ],
        &[],
        Stdio::null(),
    );
    let addr = server.printed.last().unwrap();
    let port = addr.rsplit(':').next().unwrap();
    let mut register = Command::new(env!("CARGO_BIN_EXE_confab"))
        .current_dir(dir.path())
        .args([
            "register",
            "--user",
            "alice",
            "--password-stdin",
            "--ca",
            "ca.pem",
        ])
        .arg("--server")
        .arg(format!("https://localhost:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(register.stdin.take().unwrap(), "correct horse battery").unwrap();
    let out = register.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "registering over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "registered alice"
    );
}
