//! The summary table: a row per figure, a column per target, then the figure's target, and a
//! warning line per phase that had failures.

use std::fmt::Write as _;

use super::{Offered, Report, TargetReport};
use crate::bench::cpu::PerMessage;
use crate::bench::stats::Latency;

impl Report {
    /// The summary table: a row per figure, a column per target, then issue 6's target.
    pub(crate) fn table(&self) -> String {
        let s = &self.settings;
        let mut rows: Vec<Row> = Vec::new();
        let t = &self.targets;
        let section = |title: String, rows: &mut Vec<Row>| rows.push(Row::Section(title));

        if s.runs(1) {
            section(format!("1 connect {} users", s.users), &mut rows);
            rows.push(row(t, "login (connect + Login)", "", |r| {
                r.connect.as_ref().map(|c| {
                    if r.target == "relay" {
                        "no login".into()
                    } else {
                        format!("{:.0}/s", c.login_per_s)
                    }
                })
            }));
            rows.push(row(t, "subscribe until live", "", |r| {
                r.connect
                    .as_ref()
                    .map(|c| format!("{:.0}/s", c.subscribe_per_s))
            }));
            rows.push(row(
                t,
                "server RSS before → logged in → live",
                "",
                |r| {
                    let c = r.connect.as_ref()?;
                    Some(format!(
                        "{} → {} → {} MiB",
                        mib(c.rss_before_kib?),
                        mib(c.rss_logged_in_kib?),
                        mib(c.rss_after_kib?)
                    ))
                },
            ));
            rows.push(row(
                t,
                "memory per subscribed user",
                "≤ 20 KiB (10 000 users)",
                |r| {
                    r.connect
                        .as_ref()?
                        .memory_per_user_kib
                        .map(|k| format!("{k:.1} KiB"))
                },
            ));
        }
        if s.runs(2) {
            section(
                format!("2 direct messages, {} msg/s offered, open loop", s.rate),
                &mut rows,
            );
            for (name, stream, goal) in [
                ("SendMessage", false, "p99 ≤ 150 ms at 10 000/s"),
                ("SendStream", true, "p99 ≤ 15 ms at 10 000/s"),
            ] {
                rows.push(row(t, &format!("{name} delivered"), "all", |r| {
                    r.offered_on(stream).map(delivered)
                }));
                rows.push(row(t, &format!("{name} latency p50 / p99"), goal, |r| {
                    r.offered_on(stream).map(|o| p50_p99(&o.latency))
                }));
                rows.push(row(t, &format!("{name} latency p999 / max"), "", |r| {
                    r.offered_on(stream)
                        .map(|o| format!("{} / {}", ms(o.latency.p999_us), ms(o.latency.max_us)))
                }));
                rows.push(row(t, &format!("{name} pacing lag p99"), "", |r| {
                    r.offered_on(stream).map(|o| ms(o.pacer_lag.p99_us))
                }));
                rows.push(row(t, &format!("{name} server CPU / msg"), "", |r| {
                    r.offered_on(stream)?.server_cpu.as_ref().map(cpu)
                }));
            }
        }
        if s.runs(3) {
            section(
                format!(
                    "3 saturation, closed loop, {} senders × {} outstanding",
                    s.senders, s.window
                ),
                &mut rows,
            );
            for (path, target) in [("unary", "≤ 38 µs"), ("stream", "≤ 13 µs")] {
                let name = if path == "unary" {
                    "SendMessage"
                } else {
                    "SendStream"
                };
                rows.push(row(t, &format!("{name} msgs/s"), "", |r| {
                    r.saturation(path).map(|x| format!("{:.0}", x.msgs_per_s))
                }));
                rows.push(row(t, &format!("{name} latency p50 / p99"), "", |r| {
                    r.saturation(path).map(|x| p50_p99(&x.latency))
                }));
                rows.push(row(t, &format!("{name} server CPU / msg"), target, |r| {
                    r.saturation(path)?.server_cpu.as_ref().map(cpu)
                }));
                rows.push(row(t, &format!("{name} bench CPU / msg"), "", |r| {
                    r.saturation(path)?
                        .bench_cpu_per_msg_us
                        .map(|c| format!("{c:.1} µs"))
                }));
            }
        }
        if s.runs(4) {
            section(
                format!("4 broadcast to {} users", s.users.saturating_sub(1)),
                &mut rows,
            );
            rows.push(row(
                t,
                &format!("last delivery, median of {}", s.broadcasts),
                "≤ 10 ms (1000) / ≤ 100 ms (10 000)",
                |r| {
                    r.broadcast.as_ref().map(|b| {
                        let incomplete = if b.complete { "" } else { " (incomplete)" };
                        format!("{:.2} ms{incomplete}", b.last_delivery_median_ms)
                    })
                },
            ));
        }
        if s.runs(5) {
            section(
                format!(
                    "5 login storm ({} accounts) during phase 2 load",
                    s.storm_users
                ),
                &mut rows,
            );
            rows.push(row(t, "p99 quiet / storm", "", |r| {
                r.storm.as_ref().map(|x| {
                    format!(
                        "{} / {}",
                        ms(x.quiet.latency.p99_us),
                        ms(x.storm.latency.p99_us)
                    )
                })
            }));
            rows.push(row(t, "p99 storm ÷ quiet", "≤ 2×", |r| {
                r.storm.as_ref().map(|x| format!("{:.2}×", x.p99_ratio))
            }));
            rows.push(row(t, "delivered quiet / storm", "all", |r| {
                r.storm
                    .as_ref()
                    .map(|x| format!("{} / {}", delivered(&x.quiet), delivered(&x.storm)))
            }));
            rows.push(row(t, "storm logins + logouts", "", |r| {
                r.storm
                    .as_ref()
                    .map(|x| format!("{:.0}/s", x.storm_logins_per_s))
            }));
        }
        if s.runs(6) {
            section(
                "6 peer path (connect + Noise IK + message + ack)".into(),
                &mut rows,
            );
            rows.push(row(t, "p50 / p99", "p50 ≤ 1 ms", |r| {
                r.peer.as_ref().map(|p| p50_p99(&p.latency))
            }));
            rows.push(row(t, "messages (errors)", "", |r| {
                r.peer
                    .as_ref()
                    .map(|p| format!("{} ({})", p.messages, p.errors))
            }));
        }
        if s.runs(7) {
            section(
                format!("7 file over the peer path ({} bytes)", s.file_bytes),
                &mut rows,
            );
            rows.push(row(
                t,
                "confab chat → confab chat",
                "≥ scp, ≥ 400 MB/s",
                |r| {
                    r.file
                        .as_ref()
                        .map(|f| format!("{:.0} MB/s ({:.2} s)", f.mb_per_s, f.seconds))
                },
            ));
            rows.push(row(t, "scp to localhost, same run", "", |r| {
                let f = r.file.as_ref()?;
                Some(match (f.scp_mb_per_s, &f.scp_missing) {
                    (Some(mb), _) => format!("{mb:.0} MB/s"),
                    (None, Some(why)) => format!("missing: {why}"),
                    (None, None) => "missing".into(),
                })
            }));
            rows.push(row(
                t,
                "sender RSS before → peak, MiB",
                "a few MiB more",
                |r| {
                    r.file.as_ref().map(|f| {
                        format!("{} → {}", mib(f.sender_rss_kib.0), mib(f.sender_rss_kib.1))
                    })
                },
            ));
            rows.push(row(
                t,
                "receiver RSS before → peak, MiB",
                "a few MiB more",
                |r| {
                    r.file.as_ref().map(|f| {
                        format!(
                            "{} → {}",
                            mib(f.receiver_rss_kib.0),
                            mib(f.receiver_rss_kib.1)
                        )
                    })
                },
            ));
        }
        if s.runs(8) {
            section(
                format!("8 {} users join while the others are online", s.users),
                &mut rows,
            );
            rows.push(row(t, "until the last is live", "≤ 2× relay", |r| {
                r.join
                    .as_ref()
                    .map(|j| format!("{:.2} s ({:.0}/s)", j.seconds, j.joins_per_s))
            }));
            rows.push(row(t, "server CPU", "", |r| {
                r.join.as_ref()?.server_cpu_s.map(|c| format!("{c:.2} s"))
            }));
            rows.push(row(t, "presence events read by then", "", |r| {
                r.join.as_ref().map(|j| j.presence_events.to_string())
            }));
        }
        let ended: Vec<String> = t
            .iter()
            .filter(|r| r.sessions_ended_by_server > 0)
            .map(|r| format!("{}: {}", r.target, r.sessions_ended_by_server))
            .collect();
        let mut out = render(t, &rows);
        if let Some(ratios) = &self.cluster {
            out.push_str(&ratios.table());
        }
        if !ended.is_empty() {
            let _ = writeln!(
                out,
                "\nwarning: the server ended simulated users' sessions ({})",
                ended.join(", ")
            );
        }
        for r in t.iter().filter(|r| r.streams_lost > 0) {
            let _ = writeln!(
                out,
                "warning: {}: {} users' streams ended without SessionEnded, the first with: {}",
                r.target,
                r.streams_lost,
                r.first_stream_loss.as_deref().unwrap_or("(no message)")
            );
        }
        for r in t {
            for (phase, errors, first) in r.failures() {
                let _ = writeln!(
                    out,
                    "warning: {} phase {phase}: {errors} failed, the first with: {}",
                    r.target,
                    first.unwrap_or("(no message)")
                );
            }
        }
        out
    }
}

impl TargetReport {
    /// Phase 2 over `SendStream` (`stream`) or `SendMessage`.
    fn offered_on(&self, stream: bool) -> Option<&Offered> {
        if stream {
            self.offered_stream.as_ref()
        } else {
            self.offered.as_ref()
        }
    }

    /// Every phase part with failures: (phase, count, first error). A server started without
    /// bench limits shows up here as rate-limit errors rather than as a puzzling figure.
    fn failures(&self) -> Vec<(String, u64, Option<&str>)> {
        let mut all = Vec::new();
        for o in self.offered.iter().chain(&self.offered_stream) {
            all.push((format!("2 {}", o.path), o.errors, o.first_error.as_deref()));
        }
        for s in &self.saturation {
            all.push((format!("3 {}", s.path), s.errors, s.first_error.as_deref()));
        }
        if let Some(s) = &self.storm {
            all.push((
                "5 quiet".into(),
                s.quiet.errors,
                s.quiet.first_error.as_deref(),
            ));
            all.push((
                "5 storm".into(),
                s.storm.errors,
                s.storm.first_error.as_deref(),
            ));
            let first = s.storm_first_error.as_deref();
            all.push(("5 storm logins".into(), s.storm_errors, first));
        }
        if let Some(p) = &self.peer {
            all.push(("6".into(), p.errors, p.first_error.as_deref()));
        }
        all.retain(|(_, errors, _)| *errors > 0);
        all
    }
}

enum Row {
    Section(String),
    Figure {
        name: String,
        values: Vec<String>,
        target: String,
    },
}

fn row(
    targets: &[TargetReport],
    name: &str,
    target: &str,
    value: impl Fn(&TargetReport) -> Option<String>,
) -> Row {
    Row::Figure {
        name: format!("  {name}"),
        values: targets
            .iter()
            .map(|t| value(t).unwrap_or_else(|| "—".into()))
            .collect(),
        target: target.into(),
    }
}

fn render(targets: &[TargetReport], rows: &[Row]) -> String {
    let width = |s: &str| s.chars().count();
    let mut header = vec!["".to_owned()];
    header.extend(targets.iter().map(|t| t.target.to_owned()));
    header.push("target (issue 6)".into());
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        if let Row::Figure {
            name,
            values,
            target,
        } = r
        {
            let cells = std::iter::once(name)
                .chain(values)
                .chain(std::iter::once(target));
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(width(c));
            }
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - width(c);
            if i == 0 || i == cells.len() - 1 {
                // Names and targets read left to right; numbers line up on the right.
                let _ = write!(l, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(l, "{}{c}", " ".repeat(pad));
            }
            l.push_str("  ");
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header);
    for r in rows {
        match r {
            Row::Section(title) => {
                let _ = writeln!(out, "{title}");
            }
            Row::Figure {
                name,
                values,
                target,
            } => {
                let mut cells = vec![name.clone()];
                cells.extend(values.iter().cloned());
                cells.push(target.clone());
                out.push_str(&line(&cells));
            }
        }
    }
    out
}

fn ms(us: f64) -> String {
    if us < 10_000.0 {
        format!("{:.3} ms", us / 1_000.0)
    } else {
        format!("{:.1} ms", us / 1_000.0)
    }
}

fn p50_p99(l: &Latency) -> String {
    format!("{} / {}", ms(l.p50_us), ms(l.p99_us))
}

/// CPU per message: the total, or its parts when there are several (`?` for a part whose CPU
/// is not known).
fn cpu(c: &PerMessage) -> String {
    let mut parts = vec![format!("{:.1}", c.nodes_us)];
    for (name, us) in [("PG", c.postgres_us), ("NATS", c.nats_us)] {
        if let Some(us) = us {
            parts.push(format!("{us:.1} {name}"));
        }
    }
    for name in &c.missing {
        parts.push(format!("? {name}"));
    }
    let total = c
        .total_us
        .map_or_else(|| "?".to_owned(), |t| format!("{t:.1}"));
    if parts.len() == 1 {
        format!("{total} µs")
    } else {
        format!("{} = {total} µs", parts.join(" + "))
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn delivered(o: &Offered) -> String {
    format!("{:.2}% of {}", o.delivered_fraction * 100.0, o.sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Peer;

    #[test]
    fn the_table_lines_up_targets_and_marks_missing_figures() {
        let mut confab = TargetReport::new("confab");
        confab.peer = Some(Peer {
            messages: 10,
            errors: 0,
            latency: Latency {
                count: 10,
                p50_us: 400.0,
                p99_us: 900.0,
                p999_us: 900.0,
                max_us: 900.0,
                mean_us: 450.0,
            },
            first_error: None,
        });
        let relay = TargetReport::new("relay");
        let rows = vec![
            Row::Section("6 peer".into()),
            row(
                &[confab.clone(), relay.clone()],
                "p50 / p99",
                "p50 ≤ 1 ms",
                |r| r.peer.as_ref().map(|p| p50_p99(&p.latency)),
            ),
        ];
        let table = render(&[confab, relay], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].contains("confab") && lines[0].contains("relay"));
        assert!(lines[2].contains("0.400 ms / 0.900 ms"), "{table}");
        assert!(
            lines[2].contains('—') && lines[2].ends_with("p50 ≤ 1 ms"),
            "{table}"
        );
        // Columns line up: the target column starts at the same character in every line.
        let col = |l: &str, pat: &str| l[..l.find(pat).unwrap()].chars().count();
        assert_eq!(col(lines[0], "target"), col(lines[2], "p50 ≤"), "{table}");
    }

    #[test]
    fn cpu_shows_its_parts_and_an_unknown_total() {
        let mut c = PerMessage {
            nodes_us: 12.0,
            postgres_us: None,
            nats_us: None,
            total_us: Some(12.0),
            missing: vec![],
        };
        assert_eq!(cpu(&c), "12.0 µs");
        c.postgres_us = Some(20.0);
        c.nats_us = Some(3.3);
        c.total_us = Some(35.3);
        assert_eq!(cpu(&c), "12.0 + 20.0 PG + 3.3 NATS = 35.3 µs");
        c.postgres_us = None;
        c.nats_us = None;
        c.total_us = None;
        c.missing = vec!["PostgreSQL", "NATS"];
        assert_eq!(cpu(&c), "12.0 + ? PostgreSQL + ? NATS = ? µs");
    }

    #[test]
    fn durations_are_shown_in_milliseconds() {
        assert_eq!(ms(280.0), "0.280 ms");
        assert_eq!(ms(16_400.0), "16.4 ms");
    }
}
