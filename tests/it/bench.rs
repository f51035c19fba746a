//! The real `confab bench` binary, end to end: a tiny run of every phase against a server it
//! spawns, and against the bare relay, checked through `--json`. The numbers of a debug build
//! on a shared machine mean nothing; what is checked is that every phase ran, everything sent
//! arrived, and the figures are consistent (percentiles ordered, counts positive).

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

/// A run that takes longer than this is stuck; it is killed so the test fails with its output.
const WATCHDOG: Duration = Duration::from_secs(180);

/// Runs `confab ARGS` and returns its output, killing it after [`WATCHDOG`].
fn confab(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start confab");
    let pid = child.id().to_string();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(WATCHDOG).is_err() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let output = child.wait_with_output().expect("wait for confab");
    let _ = done.send(());
    watchdog.join().unwrap();
    output
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

/// p50 ≤ p99 ≤ p999 ≤ max, all positive, and some samples.
fn assert_latency(v: &Value, path: &str) {
    let get = |k: &str| f(v, &format!("{path}/{k}"));
    let (p50, p99, p999, max) = (get("p50_us"), get("p99_us"), get("p999_us"), get("max_us"));
    assert!(get("count") > 0.0, "{path}: no samples");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{path}: percentiles out of order: {p50} {p99} {p999} {max}"
    );
}

fn assert_offered(v: &Value, path: &str) {
    assert!(f(v, &format!("{path}/sent")) > 0.0, "{path}: nothing sent");
    assert_eq!(f(v, &format!("{path}/errors")), 0.0, "{path}: {v:#}");
    assert_eq!(
        f(v, &format!("{path}/delivered_fraction")),
        1.0,
        "{path}: not everything arrived"
    );
    assert_latency(v, &format!("{path}/latency"));
}

#[test]
fn every_phase_runs_against_a_spawned_server_and_the_relay() {
    let out = confab(&[
        "bench",
        "--spawn-server",
        "--baseline",
        "--users",
        "20",
        "--duration",
        "1s",
        "--rate",
        "200",
        "--phases",
        "1,2,3,4,5,6,8",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stderr}"));
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2, "{report:#}");
    let (confab, relay) = (&targets[0], &targets[1]);
    assert_eq!(confab["target"], "confab");
    assert_eq!(relay["target"], "relay");

    for t in [confab, relay] {
        assert_eq!(f(t, "/connect/users"), 20.0);
        assert!(f(t, "/connect/subscribe_per_s") > 0.0);
        assert!(f(t, "/connect/rss_after_kib") > 0.0);
        assert!(f(t, "/connect/memory_per_user_kib") >= 0.0);
        assert_offered(t, "/offered");
        assert_eq!(f(t, "/broadcast/recipients"), 19.0);
        assert_eq!(t["broadcast"]["complete"], true, "{t:#}");
        assert!(f(t, "/broadcast/last_delivery_median_ms") > 0.0);
        assert_eq!(f(t, "/sessions_ended_by_server"), 0.0);
        let unary = &t["saturation"][0];
        assert_eq!(unary["path"], "unary");
        assert!(f(unary, "/delivered") > 0.0 && f(unary, "/msgs_per_s") > 0.0);
        assert_eq!(f(unary, "/delivered"), f(unary, "/sent"), "{unary:#}");
        assert_eq!(f(unary, "/errors"), 0.0, "{unary:#}");
        assert!(f(unary, "/server_cpu_per_msg_us") > 0.0);
        assert_latency(unary, "/latency");
        assert_eq!(f(t, "/join/users"), 20.0);
        assert!(f(t, "/join/seconds") > 0.0 && f(t, "/join/joins_per_s") > 0.0);
    }
    // The relay has no presence to tell anyone.
    assert_eq!(f(relay, "/join/presence_events"), 0.0);

    // Only confab has logins, a streaming send path and the peer path.
    assert!(f(confab, "/connect/login_per_s") > 0.0);
    assert_offered(confab, "/offered_stream");
    assert_eq!(confab["offered_stream"]["path"], "stream");
    assert_eq!(confab["offered"]["path"], "unary");
    assert!(relay["offered_stream"].is_null(), "{relay:#}");
    let stream = &confab["saturation"][1];
    assert_eq!(stream["path"], "stream");
    assert!(f(stream, "/delivered") > 0.0);
    assert_eq!(f(stream, "/delivered"), f(stream, "/sent"), "{stream:#}");
    assert_eq!(f(stream, "/errors"), 0.0, "{stream:#}");
    assert_latency(stream, "/latency");
    assert_offered(confab, "/storm/quiet");
    assert_offered(confab, "/storm/storm");
    assert!(f(confab, "/storm/storm_logins") > 0.0);
    assert!(f(confab, "/peer/messages") > 0.0);
    assert_eq!(f(confab, "/peer/errors"), 0.0, "{confab:#}");
    assert_latency(confab, "/peer/latency");
    assert_eq!(relay["saturation"].as_array().unwrap().len(), 1);
    assert!(relay["storm"].is_null() && relay["peer"].is_null());
}

#[test]
fn the_table_names_every_phase_and_the_targets() {
    let out = confab(&[
        "bench",
        "--spawn-server",
        "--users",
        "5",
        "--duration",
        "200ms",
        "--rate",
        "50",
        "--phases",
        "1,2,4",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab bench failed:\n{stderr}");
    let table = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "1 connect 5 users",
        "memory per subscribed user",
        "2 direct messages, 50 msg/s offered",
        "4 broadcast to 4 users",
        "target (issue 6)",
    ] {
        assert!(table.contains(expected), "no {expected:?} in\n{table}");
    }
    assert!(
        !table.contains("saturation"),
        "phase 3 was not asked for:\n{table}"
    );
    // Progress goes to stderr, a plain line at a time when it is not a terminal.
    assert!(!stderr.contains('\r'), "{stderr}");
}

#[test]
fn bad_settings_are_refused_with_the_flag_to_change() {
    let out = confab(&["bench", "--users", "1", "--spawn-server"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--users must be at least 2"), "{stderr}");

    let out = confab(&["bench", "--spawn-server", "--server-pid", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// Phase 8 after phase 1 holds twice `--users` connections: a run the open-file limit cannot
/// hold is refused before it starts, not halfway through phase 8.
#[test]
fn a_run_beyond_the_open_file_limit_is_refused_before_it_starts() {
    let bench = format!(
        "ulimit -n 400 && ulimit -Hn 400 && exec {} bench --spawn-server --users 100 --phases 1,8",
        env!("CARGO_BIN_EXE_confab")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &bench])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("456 open files are needed but the hard limit is 400"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("1 connect"),
        "refused before any phase: {stderr}"
    );
}

#[test]
fn compare_prints_the_ratio_of_each_figure_to_an_earlier_run() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--spawn-server",
            "--users",
            "4",
            "--phases",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = confab(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "confab bench failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    };
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("earlier.json");
    std::fs::write(&earlier, run(&[]).0).unwrap();
    let (stdout, stderr) = run(&["--compare", earlier.to_str().unwrap()]);
    // stdout stays one JSON document; the comparison goes to stderr beside it.
    let _: Value = serde_json::from_str(&stdout).expect("stdout is the JSON report");
    assert!(stderr.contains("new ÷ old"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("targets.confab.connect.login_per_s"))
        .unwrap_or_else(|| panic!("no login rate compared in\n{stderr}"));
    assert!(line.trim_end().ends_with('×'), "{line}");

    // A file that is not a report is refused before anything runs.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    let out = confab(&[
        "bench",
        "--spawn-server",
        "--compare",
        junk.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the JSON of `confab bench --json`")
    );
}

/// `--soak`, one minute and a few hundred users: everything acknowledged arrives, users log out
/// and in (some as killed clients), and the server's memory and open files are sampled often
/// enough for the growth rule to judge.
#[test]
fn a_one_minute_soak_loses_nothing_and_judges_memory_and_files() {
    let out = confab(&[
        "bench",
        "--spawn-server",
        "--soak",
        "60s",
        "--users",
        "200",
        "--soak-rate",
        "40",
        "--soak-churn",
        "2",
        "--soak-sample",
        "2s",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the soak failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("the soak's JSON");
    assert_eq!(f(&v, "/users"), 200.0);
    assert!(f(&v, "/acknowledged") > 1000.0, "{v:#}");
    assert_eq!(f(&v, "/lost"), 0.0, "{v:#}");
    assert!(f(&v, "/logins") > 50.0 && f(&v, "/kills") > 5.0, "{v:#}");
    assert!(f(&v, "/samples") >= 25.0, "{v:#}");
    for series in ["rss_mib", "fds"] {
        let start = f(&v, &format!("/{series}/start"));
        let max = f(&v, &format!("/{series}/max"));
        assert!(0.0 < start && start <= max, "{series}: {v:#}");
        assert!(
            f(&v, &format!("/{series}/last_third_growth"))
                <= f(&v, &format!("/{series}/allowed_growth"))
        );
    }
    // 200 connected users hold at least 200 sockets in the server.
    assert!(f(&v, "/fds/start") >= 200.0, "{v:#}");
}

#[test]
fn a_soak_too_short_for_its_samples_is_refused_before_it_starts() {
    let out = confab(&[
        "bench",
        "--spawn-server",
        "--soak",
        "10s",
        "--soak-sample",
        "5s",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--soak-sample"), "{stderr}");
}

/// Every message of a cluster run reached its recipient, on every target.
fn assert_cluster_target(t: &Value, name: &str) {
    assert_eq!(t["target"], name, "{t:#}");
    assert_offered(t, "/offered");
    assert_offered(t, "/offered_stream");
    for (i, path) in ["unary", "stream"].iter().enumerate() {
        let s = &t["saturation"][i];
        assert_eq!(s["path"], *path, "{t:#}");
        assert!(f(s, "/delivered") > 0.0, "{s:#}");
        assert_eq!(f(s, "/delivered"), f(s, "/sent"), "{s:#}");
        assert_eq!(f(s, "/errors"), 0.0, "{s:#}");
    }
    assert_eq!(f(t, "/sessions_ended_by_server"), 0.0, "{t:#}");
}

/// `--spawn-cluster` on the suite's PostgreSQL and NATS: the SQLite node, the PostgreSQL node
/// and a two-node cluster in one run, every message delivered, each target's CPU by part, and
/// no figure for the servers the bench did not start.
#[test]
fn a_spawned_cluster_runs_beside_the_single_nodes_and_delivers_everything() {
    let (postgres, nats) = (
        crate::common::pg::server_url(),
        crate::common::nats::server_url(),
    );
    let out = confab(&[
        "bench",
        "--spawn-cluster",
        "2",
        "--cluster-postgres",
        &postgres,
        "--cluster-nats",
        &nats,
        "--users",
        "12",
        "--senders",
        "6",
        "--window",
        "2",
        "--duration",
        "1s",
        "--rate",
        "200",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stderr}"));
    assert_eq!(f(&report, "/settings/rate"), 200.0);
    assert_eq!(
        f(&report, "/settings/cluster/spawn/nodes"),
        2.0,
        "{report:#}"
    );
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3, "{report:#}");
    for (t, name) in targets.iter().zip(["sqlite", "postgres", "cluster"]) {
        assert_cluster_target(t, name);
        // Phase 4 was not asked for: the cluster default is phases 1 to 3.
        assert!(t["broadcast"].is_null(), "{t:#}");
        assert!(f(t, "/offered/server_cpu/nodes_us") > 0.0, "{t:#}");
    }
    let [sqlite, postgres, cluster] = [&targets[0], &targets[1], &targets[2]];

    // The lone SQLite node is the whole server: its total is known.
    let cpu = &sqlite["offered"]["server_cpu"];
    assert_eq!(f(cpu, "/total_us"), f(cpu, "/nodes_us"), "{cpu:#}");
    assert!(f(sqlite, "/saturation/0/server_cpu_per_msg_us") > 0.0);
    // PostgreSQL and NATS ran before the bench did: named as missing, never counted as zero.
    let cpu = &postgres["saturation"][0]["server_cpu"];
    assert_eq!(cpu["missing"], serde_json::json!(["PostgreSQL"]), "{cpu:#}");
    assert!(
        cpu["total_us"].is_null() && cpu["postgres_us"].is_null(),
        "{cpu:#}"
    );
    let cpu = &cluster["offered"]["server_cpu"];
    assert_eq!(
        cpu["missing"],
        serde_json::json!(["PostgreSQL", "NATS"]),
        "{cpu:#}"
    );
    assert!(cluster["saturation"][0]["server_cpu_per_msg_us"].is_null());
    // One node's memory is reported; the cluster's is not summed into one figure.
    assert!(f(postgres, "/connect/rss_after_kib") > 0.0);
    assert!(cluster["connect"]["rss_after_kib"].is_null(), "{cluster:#}");

    // The ratios against the SQLite node: latency known for both, CPU not for the cluster.
    assert!(
        f(&report, "/cluster/cluster/offered_p99") > 0.0,
        "{report:#}"
    );
    assert!(f(&report, "/cluster/postgres/unary_msgs_per_s") > 0.0);
    assert!(report["cluster"]["cluster"]["offered_cpu"].is_null());
}

/// Several `--server` URLs are one cluster's nodes: users spread over them, every message
/// delivered across nodes, and no CPU figure for processes the bench does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_server_urls_are_measured_as_one_cluster() {
    let cluster = crate::cluster::TestCluster::start(3).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let servers = urls.join(",");
    let out = tokio::task::spawn_blocking(move || {
        confab(&[
            "bench",
            "--server",
            &servers,
            "--users",
            "9",
            "--senders",
            "3",
            "--window",
            "2",
            "--duration",
            "1s",
            "--rate",
            "100",
            "--json",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confab bench failed:\n{stderr}");
    assert!(
        stderr.contains("CPU and memory are not available"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 1, "{report:#}");
    assert_cluster_target(&targets[0], "cluster");
    assert!(targets[0]["offered"]["server_cpu"].is_null(), "{report:#}");
    assert_eq!(
        report["settings"]["cluster"]["external"]["urls"],
        serde_json::json!(urls)
    );
    assert!(
        report["cluster"].is_null(),
        "no single nodes to compare with: {report:#}"
    );

    // Users were spread round-robin: bench00000 on n0, bench00001 on n1, … Their sessions
    // outlive the bench's connections until the session timeout, so the cluster still lists
    // them.
    let listed = cluster.nodes[0]
        .admin()
        .await
        .list_sessions(confab::pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let mut placed: Vec<(String, String)> =
        listed.into_iter().map(|s| (s.username, s.node)).collect();
    placed.sort();
    let expected: Vec<(String, String)> = (0..9)
        .map(|i| (format!("bench{i:05}"), format!("n{}", i % 3)))
        .collect();
    assert_eq!(placed, expected);
}

#[test]
fn bad_cluster_settings_are_refused_with_the_flag_to_change() {
    let refused = |args: &[&str], why: &str| {
        let out = confab(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(why), "{args:?}: no {why:?} in {stderr}");
    };
    refused(
        &["bench", "--spawn-cluster", "1"],
        "--spawn-cluster must be 2 to 16",
    );
    refused(
        &["bench", "--spawn-cluster", "17"],
        "--spawn-cluster must be 2 to 16",
    );
    refused(
        &["bench", "--spawn-cluster", "3", "--phases", "1,5"],
        "only phases 1 to 4 run",
    );
    refused(
        &["bench", "--spawn-cluster", "3", "--spawn-server"],
        "cannot be used with",
    );
    refused(
        &["bench", "--spawn-cluster", "3", "--baseline"],
        "cannot be used with",
    );
    refused(
        &[
            "bench",
            "--cluster-postgres",
            "postgres://x/y",
            "--cluster-nats",
            "nats://x",
        ],
        "--spawn-cluster",
    );
    let two = "http://127.0.0.1:1,http://127.0.0.1:2";
    refused(
        &["bench", "--server", two, "--server-pid", "1"],
        "--server-pid names one process",
    );
    refused(&["bench", "--server", two, "--baseline"], "not a cluster");
    refused(
        &[
            "bench",
            "--server",
            "http://127.0.0.1:1",
            "--server",
            "http://127.0.0.1:1",
        ],
        "given twice",
    );
    refused(
        &[
            "bench",
            "--server",
            "http://127.0.0.1:1,,http://127.0.0.1:2",
        ],
        "an empty URL",
    );
}

/// Ctrl-C in the middle of `--spawn-cluster` stops the PostgreSQL and nats-server it started
/// and removes their directory: nothing outlives the run.
#[test]
fn an_interrupted_cluster_run_leaves_no_server_behind() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args([
            "bench",
            "--spawn-cluster",
            "2",
            "--users",
            "4",
            "--phases",
            "2",
        ])
        .args(["--rate", "20", "--duration", "10m"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start confab");
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first target's measurement has begun: PostgreSQL and NATS are up.
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("sqlite 2 offered") {
            break;
        }
    }
    let prefix = format!("confab-bench-cluster-{pid}-");
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    let [dir] = &dirs[..] else {
        let _ = child.kill();
        panic!("expected one directory {prefix}*, found {dirs:?}; stderr:\n{seen}");
    };
    let first_line = |p: &str| {
        let text = std::fs::read_to_string(dir.join(p)).unwrap();
        text.lines().next().unwrap().trim().to_owned()
    };
    let servers = [first_line("pg/data/postmaster.pid"), first_line("nats/pid")];
    for server in &servers {
        assert!(
            Path::new(&format!("/proc/{server}")).exists(),
            "{server} is not running"
        );
    }

    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    // The phase would run for ten minutes: a run that waits it out is killed, and fails below.
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "not a prompt exit with an error: {status}"
    );
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "stderr after the signal: {rest:?}"
    );
    // pg_ctl and nats.sh wait for their servers to exit; the kernel may take a moment longer to
    // forget them once their new parent has reaped them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for server in &servers {
        let proc_dir = format!("/proc/{server}");
        while Path::new(&proc_dir).exists() && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !Path::new(&proc_dir).exists(),
            "process {server} outlived the run"
        );
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
