//! Phase 7: a file over the peer path, between two real `confab chat --json` processes (the
//! client people run): the receiver answers with `--auto-accept --auto-accept-files`, the sender
//! runs `getaddress` then `sendfile`. Timed from the `sendfile` line to the sender's `file_sent`
//! (so it includes the offer and the answer); both clients' resident memory is sampled every
//! 50 ms during the transfer. The receiver's SHA-256 must equal the sender's.
//!
//! The anchor, in the same run: the same file through `scp` to 127.0.0.1, to an `sshd` started
//! here on a free loopback port with a throwaway host key and client key (Debian's
//! openssh-server; without it the anchor is reported missing, with the one command that
//! provides it, and confab's figure stands alone). scp's default cipher is
//! chacha20-poly1305, the peer path's own, so the comparison is like for like. (Today's scp
//! speaks SFTP, hence the `Subsystem` line.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::Ctx;
use crate::bench::{confab::PASSWORD, proc, report::FileTransfer, target::Target};

/// How long the login, the address handshake or the end of a transfer may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the clients' memory is sampled during the transfer.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<FileTransfer> {
    let s = ctx.settings;
    let url = ctx
        .target
        .confab_url()
        .context("the file phase needs a confab server")?
        .to_owned();
    let (a_name, b_name) = (
        format!("{}-file-a", s.prefix),
        format!("{}-file-b", s.prefix),
    );
    ctx.target
        .register(&[a_name.clone(), b_name.clone()], 2)
        .await?;
    let dir = tempfile::Builder::new()
        .prefix("confab-bench-file")
        .tempdir()?;
    let source = dir.path().join("payload.bin");
    write_payload(&source, s.file_bytes)?;

    let receiver = ChatProc::start(
        &url,
        &b_name,
        &[
            "--auto-accept",
            "--auto-accept-files",
            "--download-dir",
            &dir.path().join("received").display().to_string(),
        ],
    )
    .await?;
    let mut sender = ChatProc::start(&url, &a_name, &[]).await?;
    let mut receiver = receiver;
    sender.send(&format!("getaddress {b_name}")).await?;
    sender.expect("address_granted").await?;

    let rss_before = (sender.rss_kib(), receiver.rss_kib());
    let (mut peak_sender, mut peak_receiver) = rss_before;
    let started = Instant::now();
    sender
        .send(&format!("sendfile {b_name} {}", source.display()))
        .await?;
    let sent = loop {
        tokio::select! {
            item = sender.expect_any(&["file_sent", "file_failed"]) => break item?,
            () = tokio::time::sleep(SAMPLE_EVERY) => {
                peak_sender = peak_sender.max(sender.rss_kib());
                peak_receiver = peak_receiver.max(receiver.rss_kib());
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if sent["type"] != "file_sent" {
        bail!("the transfer failed: {}", sent["error"]);
    }
    let received = receiver.expect("file_received").await?;
    if received["sha256"] != sent["sha256"] {
        bail!("the checksums differ: sent {sent}, received {received}");
    }
    sender.logout().await;
    receiver.logout().await;

    let anchor = scp(&source, dir.path()).await;
    let mb = s.file_bytes as f64 / 1e6;
    Ok(FileTransfer {
        bytes: s.file_bytes,
        seconds,
        mb_per_s: mb / seconds,
        sender_rss_kib: (rss_before.0, peak_sender),
        receiver_rss_kib: (rss_before.1, peak_receiver),
        scp_mb_per_s: anchor.as_ref().ok().map(|secs| mb / secs),
        scp_missing: anchor.err().map(|e| format!("{e:#}")),
    })
}

/// `bytes` of incompressible data (scp does not compress by default, but be sure).
fn write_payload(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use rand::RngCore as _;
    use std::io::Write as _;
    let mut block = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut block);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(block.len(), |l| l.min(block.len()));
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// A `confab chat --json` child, driven through stdin.
struct ChatProc {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

impl ChatProc {
    async fn start(server: &str, user: &str, extra: &[&str]) -> anyhow::Result<ChatProc> {
        let exe = std::env::current_exe().context("finding the confab binary")?;
        let mut child = Command::new(exe)
            .args([
                "chat",
                "--server",
                server,
                "--user",
                user,
                "--password-stdin",
            ])
            .args(["--json", "--peer-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting confab chat")?;
        let pid = child.id().context("confab chat exited at once")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut chat = ChatProc {
            child,
            stdin,
            lines,
            pid,
        };
        chat.send(PASSWORD).await?;
        chat.expect("connected").await?;
        Ok(chat)
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn expect(&mut self, kind: &str) -> anyhow::Result<Value> {
        self.expect_any(&[kind]).await
    }

    /// The next output line whose `type` is one of `kinds`; an `error` line fails.
    async fn expect_any(&mut self, kinds: &[&str]) -> anyhow::Result<Value> {
        let next = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow!("confab chat exited"))?;
                let Ok(item) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let kind = item["type"].as_str().unwrap_or_default();
                if kinds.contains(&kind) {
                    return Ok(item);
                }
                if kind == "error" {
                    bail!("confab chat: {}", item["error"]);
                }
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, next)
            .await
            .map_err(|_| anyhow!("no {kinds:?} from confab chat within {STEP_TIMEOUT:?}"))?
    }

    fn rss_kib(&self) -> u64 {
        proc::sample(self.pid).map_or(0, |s| s.rss_kib)
    }

    async fn logout(mut self) {
        let _ = self.send("logout").await;
        let _ = tokio::time::timeout(STEP_TIMEOUT, self.child.wait()).await;
    }
}

/// Where Debian's openssh-server puts the daemon and the SFTP server today's scp speaks to.
const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// The one sentence saying how to get the anchor, when a part of OpenSSH is not installed.
/// The bench installs nothing itself; confab's figure is reported alone meanwhile.
fn openssh_missing() -> Option<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    let mut missing: Vec<&str> = [SSHD, SFTP_SERVER]
        .into_iter()
        .filter(|path| !Path::new(path).is_file())
        .collect();
    missing.extend(
        ["scp", "ssh-keygen"]
            .into_iter()
            .filter(|name| !on_path(name)),
    );
    (!missing.is_empty()).then(|| {
        format!(
            "no {} here, so no scp anchor: `apt-get install openssh-server openssh-client` \
             provides it (the bench starts its own sshd on a free loopback port)",
            missing.join(", ")
        )
    })
}

/// Seconds for `scp` of `source` to 127.0.0.1 through a throwaway sshd.
async fn scp(source: &Path, dir: &Path) -> anyhow::Result<f64> {
    if let Some(why) = openssh_missing() {
        bail!(why);
    }
    let sshd = PathBuf::from(SSHD);
    let ssh = dir.join("ssh");
    std::fs::create_dir_all(&ssh)?;
    // sshd wants its privilege-separation directory.
    std::fs::create_dir_all("/run/sshd").context("creating /run/sshd (run as root)")?;
    for key in ["host_key", "client_key"] {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(ssh.join(key))
            .status()
            .await
            .context("running ssh-keygen")?;
        if !status.success() {
            bail!("ssh-keygen failed");
        }
    }
    std::fs::copy(ssh.join("client_key.pub"), ssh.join("authorized_keys"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
         PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         Subsystem sftp {SFTP_SERVER}\n",
        host = ssh.join("host_key").display(),
        auth = ssh.join("authorized_keys").display(),
    );
    std::fs::write(ssh.join("sshd_config"), config)?;
    let mut daemon = Command::new(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(ssh.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sshd")?;
    // Ready when it accepts connections (it binds right after reading its config).
    let ready = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if ready.elapsed() > Duration::from_secs(10) {
            bail!("sshd did not listen on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dest = dir.join("scp-copy.bin");
    let started = Instant::now();
    let status = Command::new("scp")
        .args(["-q", "-B", "-P", &port.to_string(), "-i"])
        .arg(ssh.join("client_key"))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg(source)
        .arg(format!("127.0.0.1:{}", dest.display()))
        .stdin(Stdio::null())
        .status()
        .await
        .context("running scp")?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = daemon.kill().await;
    if !status.success() {
        bail!("scp failed ({status})");
    }
    Ok(seconds)
}
