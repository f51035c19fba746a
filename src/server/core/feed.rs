//! The presence feed: every login and logout in order, read by each stream at its own pace.
//!
//! A login used to be pushed onto every online stream's queue, one push (and one task wake-up)
//! per stream per change: a login storm of N users cost N² pushes. Now a change is appended here
//! once, and streams are woken once per window (at most [`WINDOW`] after the first change) to
//! read everything new in one go, so N logins cost each stream a handful of wake-ups. The events
//! are encoded once and shared. Each change carries who may not see it (SPEC §3: the users its
//! subject blocks, taken when it changed), and the range every stream reads after a wake-up is
//! put together once and shared; only a stream's own range (up to a queued item's mark) is
//! filtered for that stream alone.
//!
//! A stream that asked for batches (`Subscribe(presence_batches)`) gets each read as
//! `PresenceBatch` events instead of one event per change; the batches of the shared range are
//! built once, so a window costs such a stream one shared event whatever the number of changes.
//!
//! Order with other events is kept exactly: every queued item carries the feed's position at the
//! time it was pushed ([`super::Outbound::presence_mark`]), and a stream emits the changes up to
//! that mark before the item. So a user's "online" always comes before its first message, and a
//! message sent before a logout comes before the "offline".

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, OnceLock, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};

use crate::server::{store::UserId, wire::EncodedEvent};

/// Longest a change waits for company before streams are woken for it, with up to a few
/// thousand streams open.
pub const WINDOW: Duration = Duration::from_millis(50);
/// With more streams the window grows by this much per stream: waking every stream and writing
/// to its connection costs the server ≈ 5 µs each (measured at 10 000 streams), so a window ten
/// times that keeps presence to a tenth of one core however many come and go. 10 000 streams
/// wait up to half a second.
const WINDOW_PER_STREAM: Duration = Duration::from_micros(50);
/// The window never grows beyond this.
const WINDOW_MAX: Duration = Duration::from_secs(1);
/// Changes kept for streams that are behind. A stream further behind than this has stopped
/// reading, and is ended `TOO_SLOW` like one whose queue filled up.
const KEEP: usize = 64 * 1024;

/// One login or logout.
#[derive(Debug, Clone)]
struct Change {
    /// Position in the feed, from 1.
    seq: u64,
    /// Whose presence changed.
    user: UserId,
    /// The `PresenceChanged` event, encoded once for everybody.
    event: EncodedEvent,
    /// Who may not see it: the users `user` blocked when it changed.
    hidden: HashSet<UserId>,
}

/// The changes of a range, with the users who may not see all of them.
#[derive(Debug)]
struct Range {
    events: Vec<EncodedEvent>,
    /// `events` as batches, built by the first stream that wants them.
    batches: OnceLock<Vec<EncodedEvent>>,
    /// The subjects themselves and everyone a subject blocks.
    excluded: HashSet<UserId>,
}

/// Ranges up to one position, by their start.
#[derive(Debug, Default)]
struct Memo {
    to: u64,
    ranges: HashMap<u64, Arc<Range>>,
}

/// How a stream takes presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One `presence` event per change.
    Single,
    /// The changes of each read as `presence_batch` events.
    Batched,
}

/// Puts presence events together as batch events (`wire::presence_batches`).
pub type Batcher = fn(&[EncodedEvent]) -> Vec<EncodedEvent>;

/// A stream fell so far behind that the changes it has not read are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

/// The feed. One per server; appended to by the core, read by every stream.
pub struct PresenceFeed {
    log: RwLock<VecDeque<Change>>,
    /// Seq of the newest change appended. Written under the log's write lock, so every change up
    /// to a value read here is in the log (or was trimmed from it).
    latest: Arc<AtomicU64>,
    /// The newest change streams have been woken for.
    published: watch::Sender<u64>,
    /// A change is waiting for its window to close (or the feed is being dropped).
    pending: Arc<Notify>,
    /// The ranges streams read up to the newest published change, by where they start, shared
    /// with the streams that read the same one. Most streams start where the last wake-up left
    /// them; a stream that opened since starts elsewhere and gets a range of its own, without
    /// taking the shared one's place.
    memo: Mutex<Memo>,
    batcher: Batcher,
}

impl PresenceFeed {
    /// An empty feed whose batches `batcher` builds. Call [`PresenceFeed::run`] to wake streams.
    pub fn new(batcher: Batcher) -> Arc<Self> {
        Arc::new(PresenceFeed {
            log: RwLock::default(),
            latest: Arc::default(),
            published: watch::Sender::new(0),
            pending: Arc::default(),
            memo: Mutex::default(),
            batcher,
        })
    }

    /// The feed's position, shared with the session table so each push can be stamped with it.
    pub fn position(&self) -> Arc<AtomicU64> {
        self.latest.clone()
    }

    /// The newest change appended so far (0: none).
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// Appends `user`'s change, which the users in `hidden` (those `user` blocks) must not see;
    /// streams learn of it within [`WINDOW`], or sooner with the next event pushed to them.
    pub fn append(&self, user: UserId, event: EncodedEvent, hidden: HashSet<UserId>) {
        {
            let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
            let seq = self.latest.load(Ordering::Relaxed) + 1;
            log.push_back(Change {
                seq,
                user,
                event,
                hidden,
            });
            if log.len() > KEEP {
                log.pop_front();
            }
            self.latest.store(seq, Ordering::Release);
        }
        self.pending.notify_one();
    }

    /// A receiver that changes when streams should read the feed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The changes after `*cursor` up to `upto` that `me` may see, oldest first, in `shape`;
    /// moves the cursor.
    ///
    /// The range every stream reads when the feed wakes it is worked out once and shared; a
    /// read up to a queued item's mark (a stream's own range) filters just its few changes.
    ///
    /// # Errors
    /// [`Lagged`] when changes after the cursor were trimmed before this stream read them.
    pub fn read(
        &self,
        cursor: &mut u64,
        upto: u64,
        me: UserId,
        shape: Shape,
    ) -> Result<Vec<EncodedEvent>, Lagged> {
        if upto <= *cursor {
            return Ok(Vec::new());
        }
        let (from, to) = (*cursor, upto);
        *cursor = upto;
        let shared = {
            let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.to == to
                && let Some(r) = memo.ranges.get(&from)
            {
                Some(r.clone())
            } else if to == *self.published.borrow() {
                if memo.to != to {
                    *memo = Memo {
                        to,
                        ranges: HashMap::new(),
                    };
                }
                let r = Arc::new(self.range(from, to)?);
                memo.ranges.insert(from, r.clone());
                Some(r)
            } else {
                None
            }
        };
        if let Some(r) = shared
            && !r.excluded.contains(&me)
        {
            return Ok(match shape {
                Shape::Single => r.events.clone(),
                Shape::Batched => r.batches.get_or_init(|| (self.batcher)(&r.events)).clone(),
            });
        }
        // This stream's own range, or one it may not see all of: filter change by change.
        let events: Vec<_> = {
            let log = self.log.read().unwrap_or_else(|p| p.into_inner());
            Self::changes(&log, from, to)?
                .filter(|c| c.user != me && !c.hidden.contains(&me))
                .map(|c| c.event.clone())
                .collect()
        };
        Ok(match shape {
            Shape::Single => events,
            Shape::Batched => (self.batcher)(&events),
        })
    }

    fn range(&self, from: u64, to: u64) -> Result<Range, Lagged> {
        let log = self.log.read().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let mut excluded = HashSet::new();
        for change in Self::changes(&log, from, to)? {
            events.push(change.event.clone());
            excluded.insert(change.user);
            excluded.extend(change.hidden.iter().copied());
        }
        Ok(Range {
            events,
            batches: OnceLock::new(),
            excluded,
        })
    }

    /// The changes with `from < seq <= to`.
    fn changes(
        log: &VecDeque<Change>,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = &Change>, Lagged> {
        let first = log.front().map_or(to + 1, |c| c.seq);
        if from + 1 < first && from < to {
            return Err(Lagged);
        }
        let skip = (from + 1).saturating_sub(first) as usize;
        Ok(log.iter().skip(skip).take_while(move |c| c.seq <= to))
    }

    /// How long a change waits for company with `streams` streams reading the feed.
    fn window(streams: usize) -> Duration {
        (WINDOW_PER_STREAM * u32::try_from(streams).unwrap_or(u32::MAX)).clamp(WINDOW, WINDOW_MAX)
    }

    /// Wakes streams at most once per window ([`WINDOW`], longer with many thousand streams)
    /// while changes keep coming; ends when the feed is dropped.
    pub async fn run(feed: Weak<PresenceFeed>) {
        let Some(pending) = feed.upgrade().map(|f| f.pending.clone()) else {
            return;
        };
        loop {
            pending.notified().await;
            let Some(streams) = feed.upgrade().map(|f| f.published.receiver_count()) else {
                return;
            };
            tokio::time::sleep(Self::window(streams)).await;
            let Some(f) = feed.upgrade() else { return };
            f.published.send_replace(f.latest());
        }
    }
}

impl Drop for PresenceFeed {
    fn drop(&mut self) {
        // Lets `run` notice that the feed is gone.
        self.pending.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(n: u8) -> EncodedEvent {
        EncodedEvent::new(Bytes::from(vec![n]))
    }

    fn nobody() -> HashSet<UserId> {
        HashSet::new()
    }

    #[test]
    fn a_stream_reads_each_change_once_in_order_and_never_its_own() {
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        let mut cursor = feed.latest();
        feed.append(1, event(1), nobody());
        feed.append(2, event(2), nobody());
        feed.append(3, event(3), nobody());
        let upto = feed.latest();
        assert_eq!(
            feed.read(&mut cursor, upto, 9, Shape::Single).unwrap(),
            vec![event(1), event(2), event(3)]
        );
        assert!(
            feed.read(&mut cursor, upto, 9, Shape::Single)
                .unwrap()
                .is_empty()
        );
        // User 2 does not see its own change.
        let mut cursor = 0;
        assert_eq!(
            feed.read(&mut cursor, upto, 2, Shape::Single).unwrap(),
            vec![event(1), event(3)]
        );
    }

    #[test]
    fn reading_up_to_a_mark_leaves_later_changes_for_later() {
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        let mut cursor = 0;
        feed.append(1, event(1), nobody());
        let mark = feed.latest();
        feed.append(2, event(2), nobody());
        assert_eq!(
            feed.read(&mut cursor, mark, 9, Shape::Single).unwrap(),
            vec![event(1)]
        );
        let upto = feed.latest();
        assert_eq!(
            feed.read(&mut cursor, upto, 9, Shape::Single).unwrap(),
            vec![event(2)]
        );
    }

    #[test]
    fn a_blocked_user_does_not_see_the_blockers_presence_but_others_share_the_range() {
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        // User 1 blocks user 7.
        feed.append(1, event(1), HashSet::from([7]));
        feed.append(2, event(2), nobody());
        let upto = feed.latest();
        // As when the feed wakes the streams: the range is worked out once and shared.
        feed.published.send_replace(upto);
        let mut seven = 0;
        assert_eq!(
            feed.read(&mut seven, upto, 7, Shape::Single).unwrap(),
            vec![event(2)]
        );
        let mut eight = 0;
        assert_eq!(
            feed.read(&mut eight, upto, 8, Shape::Single).unwrap(),
            vec![event(1), event(2)]
        );
        // The same rule on a stream's own range (up to a queued item's mark).
        let mut seven = 0;
        assert!(
            feed.read(&mut seven, 1, 7, Shape::Single)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn batched_streams_share_one_batch_per_window_and_blocks_still_filter() {
        use crate::server::wire::presence;
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        // User 1 blocks user 7.
        feed.append(1, presence("one", true), HashSet::from([7]));
        feed.append(2, presence("two", true), nobody());
        let upto = feed.latest();
        feed.published.send_replace(upto);
        let (mut eight, mut nine, mut seven) = (0, 0, 0);
        let a = feed.read(&mut eight, upto, 8, Shape::Batched).unwrap();
        let b = feed.read(&mut nine, upto, 9, Shape::Batched).unwrap();
        assert_eq!(a.len(), 1);
        // The very same bytes, built once for both streams.
        assert_eq!(a[0].bytes().as_ptr(), b[0].bytes().as_ptr());
        let batch =
            crate::server::wire::presence_batches(&[presence("one", true), presence("two", true)]);
        assert_eq!(a, batch);
        // The blocked user gets a batch of its own, without the blocker.
        assert_eq!(
            feed.read(&mut seven, upto, 7, Shape::Batched).unwrap(),
            crate::server::wire::presence_batches(&[presence("two", true)])
        );
        // Nothing new: no batch at all, not an empty one.
        assert!(
            feed.read(&mut eight, upto, 8, Shape::Batched)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_stream_behind_what_is_kept_is_told_it_lagged() {
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        let mut cursor = 0;
        for n in 0..=KEEP {
            feed.append(n as UserId, event(1), nobody());
        }
        let upto = feed.latest();
        assert_eq!(feed.read(&mut cursor, upto, 0, Shape::Single), Err(Lagged));
        let mut recent = upto - 1;
        assert_eq!(
            feed.read(&mut recent, upto, 0, Shape::Single)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_window_grows_with_the_streams_it_wakes_within_bounds() {
        assert_eq!(PresenceFeed::window(0), WINDOW);
        assert_eq!(PresenceFeed::window(1_000), WINDOW);
        assert_eq!(PresenceFeed::window(10_000), Duration::from_millis(500));
        assert_eq!(PresenceFeed::window(usize::MAX), WINDOW_MAX);
    }

    #[tokio::test]
    async fn streams_are_woken_once_for_a_burst_of_changes() {
        let feed = PresenceFeed::new(crate::server::wire::presence_batches);
        tokio::spawn(PresenceFeed::run(Arc::downgrade(&feed)));
        let mut woken = feed.subscribe();
        for n in 0..10 {
            feed.append(n, event(1), nobody());
        }
        woken.changed().await.unwrap();
        assert_eq!(*woken.borrow_and_update(), 10);
        feed.append(10, event(1), nobody());
        woken.changed().await.unwrap();
        assert_eq!(*woken.borrow_and_update(), 11);
    }
}
