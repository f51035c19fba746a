//! Chunk buffers handed from one thread of a transfer to the other and back: it lets SHA-256
//! and the disk run on one thread while the cipher and the socket run on another (the two
//! halves of the work then share both cores), and a transfer allocates its few buffers once,
//! whatever the file's size.
//!
//! Knows buffers and threads only, never files, sockets or Noise. Either side going away
//! (an error, a cut-off) ends the other's wait: a send to a consumer that is gone fails, and a
//! producer that is gone ends the consumer's loop.

use std::sync::mpsc::{self, Receiver, SyncSender};

/// Items in flight between the two threads. With the one each side holds, a transfer has at
/// most `DEPTH + 2` buffers: about 640 KiB of 64 KiB chunks.
pub(super) const DEPTH: usize = 8;

/// The producing end: hands out empty buffers and sends items.
pub(super) struct Producer<T> {
    items: SyncSender<T>,
    empty: Receiver<Vec<u8>>,
    /// Length of every buffer.
    len: usize,
    /// Buffers made so far; never more than `DEPTH + 2`.
    made: usize,
}

/// The consuming end: receives items and gives their buffers back.
pub(super) struct Consumer<T> {
    items: Receiver<T>,
    empty: SyncSender<Vec<u8>>,
}

/// A producer and a consumer of items carrying buffers of `len` bytes.
pub(super) fn handoff<T>(len: usize) -> (Producer<T>, Consumer<T>) {
    let (items_tx, items_rx) = mpsc::sync_channel(DEPTH);
    let (empty_tx, empty_rx) = mpsc::sync_channel(DEPTH + 2);
    (
        Producer {
            items: items_tx,
            empty: empty_rx,
            len,
            made: 0,
        },
        Consumer {
            items: items_rx,
            empty: empty_tx,
        },
    )
}

impl<T> Producer<T> {
    /// An empty buffer of the handoff's length: one given back, a new one while fewer than
    /// `DEPTH + 2` exist, else the next one given back (waiting for it).
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        if let Ok(buf) = self.empty.try_recv() {
            return buf;
        }
        if self.made < DEPTH + 2 {
            self.made += 1;
            return vec![0; self.len];
        }
        // The consumer is gone when this fails; the next `send` says so.
        self.empty.recv().unwrap_or_else(|_| vec![0; self.len])
    }

    /// Sends `item`, waiting while `DEPTH` are in flight; `false` if the consumer is gone.
    pub(super) fn send(&self, item: T) -> bool {
        self.items.send(item).is_ok()
    }
}

impl<T> Consumer<T> {
    /// The next item; `None` once the producer is gone and everything it sent was received.
    pub(super) fn recv(&self) -> Option<T> {
        self.items.recv().ok()
    }

    /// Gives an item's buffer back for the producer to fill again.
    pub(super) fn give_back(&self, buf: Vec<u8>) {
        // The producer may be gone; the buffer is then simply freed.
        let _ = self.empty.try_send(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_never_more_than_depth_plus_two() {
        let (mut producer, consumer) = handoff::<Vec<u8>>(16);
        let consumer = std::thread::spawn(move || {
            let mut seen = 0;
            while let Some(buf) = consumer.recv() {
                seen += 1;
                consumer.give_back(buf);
            }
            seen
        });
        let mut addresses = std::collections::HashSet::new();
        for _ in 0..1000 {
            let buf = producer.buffer();
            assert_eq!(buf.len(), 16);
            addresses.insert(buf.as_ptr() as usize);
            assert!(producer.send(buf));
        }
        drop(producer);
        assert_eq!(consumer.join().unwrap(), 1000);
        assert!(
            addresses.len() <= DEPTH + 2,
            "{} buffers for 1000 items",
            addresses.len()
        );
    }

    #[test]
    fn a_producer_learns_that_the_consumer_is_gone() {
        let (mut producer, consumer) = handoff::<Vec<u8>>(4);
        drop(consumer);
        let buf = producer.buffer();
        assert!(!producer.send(buf));
    }
}
