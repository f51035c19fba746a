//! Phase 4: broadcast fan-out. The first user broadcasts; the time from just before the call to
//! the last of the other users' deliveries is one round. Rounds run one after another (each
//! waits for its last delivery), and the median is reported.

use crate::bench::{
    report::Broadcast,
    stats::{Recorder, median, now_ns},
    target::{Target, User},
};

use super::Ctx;

pub(super) async fn run<T: Target>(ctx: &Ctx<'_, T>) -> anyhow::Result<Broadcast> {
    let s = ctx.settings;
    let recipients = ctx.users.len() - 1;
    let sender = &ctx.users[0];
    let mut last_delivery_ms = Vec::with_capacity(s.broadcasts);
    let mut complete = true;
    for round in 0..s.broadcasts {
        let recorder = Recorder::new();
        ctx.sink.measure(Some(recorder.clone()));
        let label = format!("{} 4 broadcast", ctx.target.name());
        let ticker = ctx.progress.show(label, {
            let (recorder, rounds) = (recorder.clone(), s.broadcasts);
            move || {
                format!(
                    "round {}/{rounds}: {}/{recipients} delivered",
                    round + 1,
                    recorder.received()
                )
            }
        });
        let body = recorder.body(now_ns(), s.body_bytes);
        sender.broadcast(body).await?;
        complete &= recorder.wait_for(recipients as u64, s.grace).await;
        ticker.finish().await;
        last_delivery_ms.push(recorder.max().as_secs_f64() * 1e3);
    }
    ctx.sink.measure(None);
    Ok(Broadcast {
        recipients,
        last_delivery_median_ms: median(&last_delivery_ms).unwrap_or(0.0),
        last_delivery_ms,
        complete,
    })
}
