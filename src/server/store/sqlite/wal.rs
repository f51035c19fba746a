//! Validation of a SQLite write-ahead log before SQLite opens it.
//!
//! SQLite reads a WAL up to the first frame whose checksum fails and silently ignores the rest,
//! committed transactions included: random bytes in the middle of the log, or a log cut short,
//! lose acknowledged messages without a word. This module reads the log the way SQLite's
//! file-format page describes it and says whether it can be trusted. It never writes.
//!
//! What a legitimate crash (the process killed, the machine still up) leaves behind, with
//! `synchronous=NORMAL`: every `write` the process made is in the page cache, so the log holds
//! every committed transaction intact. Only the transaction being written when the process died
//! can be incomplete: frames without a commit frame, a frame header without its page (SQLite
//! writes the two separately), or a page cut at a kernel page boundary. All of that lies after
//! the last commit frame, is followed by nothing but frames of an older generation (older salts)
//! or the end of the file, and belonged to a commit that never returned, so nothing acknowledged
//! is in it. The wal-index (`-shm`), which the dead process had mapped, also survives a kill and
//! records how many frames were committed (`mxFrame`).
//!
//! So the log is refused when:
//! - it is not empty but its header is short or invalid, or the database beside it is missing
//!   or empty (a log holds only changed pages: without its database it is useless, and SQLite
//!   would take the empty file for a new database);
//! - a frame of the current generation fails its checksum (or carries a wrong salt) and a later
//!   frame of the current generation is a commit frame that verifies against its own
//!   predecessor: committed transactions SQLite would drop;
//! - the wal-index, when present and of the same generation, says more frames were committed
//!   than the log now holds (the log was cut, or damaged at its end);
//! - without a usable wal-index, the file ends in the middle of a frame: nothing vouches that no
//!   commit was lost there, so an operator decides (`confab admin check`, `--repair`).
//!
//! One legitimate state is not covered: SQLite rewrites frames of a transaction that spilled its
//! page cache mid-transaction and fixes their checksums at commit; a crash between the two looks
//! like damage. The server's transactions are far smaller than its page cache, so they never
//! spill.

use std::{collections::BTreeMap, io::ErrorKind, path::Path};

use anyhow::Context;

/// Bytes of the WAL header.
const HEADER: usize = 32;
/// Bytes of a frame header.
const FRAME_HEADER: usize = 24;
/// The WAL format version SQLite writes.
const VERSION: u32 = 3_007_000;
/// Bytes of one copy of the wal-index header in `-shm`.
const SHM_HEADER: usize = 48;

/// What the log holds, and whether it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReport {
    /// Bytes in the log file (0 when it is missing).
    pub bytes: u64,
    /// Frames SQLite will read: the valid prefix up to its last commit frame.
    pub committed_frames: u64,
    /// Why the log cannot be trusted, as a sentence; `None` when it can.
    pub damage: Option<String>,
}

/// The WAL header, as parsed.
struct Header {
    /// Checksum words are big-endian (magic 0x377f0683).
    big_endian: bool,
    page_size: usize,
    salts: [u32; 2],
    checksum: [u32; 2],
}

/// The wal-index header the last writer left in `-shm`.
struct IndexHeader {
    max_frame: u32,
    salts: [u32; 2],
    /// Frames already copied into the database.
    backfilled: u32,
}

/// Checks the log beside the database `db` (at `db` + `-wal`).
///
/// # Errors
/// The files cannot be read.
pub fn check(db: &Path) -> anyhow::Result<WalReport> {
    let wal_path = sibling(db, "-wal");
    // The index first: a writer appends frames before it counts them there, so an index read
    // before the log never counts more than the log holds.
    let shm = read_or_empty(&sibling(db, "-shm"))?;
    let wal = read_or_empty(&wal_path)?;
    let db_len = match std::fs::metadata(db) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", db.display())),
    };
    let mut report = inspect(&wal, index_header(&shm).as_ref());
    if report.damage.is_none() && !wal.is_empty() && db_len == 0 {
        report.damage = Some(format!(
            "{} is {} but its write-ahead log {} holds {} bytes: the log cannot be applied \
             without the database it belongs to",
            db.display(),
            if db.exists() { "empty" } else { "missing" },
            wal_path.display(),
            wal.len()
        ));
    }
    if let Some(damage) = &mut report.damage {
        *damage = format!("{}: {damage}", wal_path.display());
    }
    Ok(report)
}

/// `db` with `suffix` appended to its file name (`confab.db` → `confab.db-wal`).
pub fn sibling(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

fn read_or_empty(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Checks `wal` against the wal-index header `index`, if there is a usable one.
fn inspect(wal: &[u8], index: Option<&IndexHeader>) -> WalReport {
    let mut report = WalReport {
        bytes: wal.len() as u64,
        committed_frames: 0,
        damage: None,
    };
    if wal.is_empty() {
        // Committed frames that were not copied into the database are gone with the log.
        if let Some(ix) = index.filter(|ix| ix.max_frame > ix.backfilled) {
            report.damage = Some(format!(
                "the log is missing or empty, but {} committed frames had not been copied into \
                 the database yet",
                ix.max_frame - ix.backfilled
            ));
        }
        return report;
    }
    let Some(header) = parse_header(wal) else {
        report.damage = Some("the log's header is damaged".into());
        return report;
    };
    let frame_len = FRAME_HEADER + header.page_size;
    let frames = (wal.len() - HEADER) / frame_len;
    let partial = (wal.len() - HEADER) % frame_len;
    let index = index.filter(|ix| ix.salts == header.salts);

    // SQLite's view: the prefix of frames that verify in one chain, up to its last commit.
    let mut chain = header.checksum;
    let mut first_bad = None;
    for i in 0..frames {
        let frame = &wal[HEADER + i * frame_len..HEADER + (i + 1) * frame_len];
        match verify(&header, frame, chain) {
            Some(sum) => {
                chain = sum;
                if is_commit(frame) {
                    report.committed_frames = i as u64 + 1;
                }
            }
            None => {
                first_bad = Some(i);
                break;
            }
        }
    }
    // Committed frames after the break, each verified against its own predecessor's checksum.
    if let Some(bad) = first_bad {
        for i in bad + 1..frames {
            let frame = &wal[HEADER + i * frame_len..HEADER + (i + 1) * frame_len];
            let before = &wal[HEADER + (i - 1) * frame_len..HEADER + i * frame_len];
            if is_commit(frame) && verify(&header, frame, stored_checksum(before)).is_some() {
                report.damage = Some(format!(
                    "frame {} is damaged, and committed transactions after it (up to frame {}) \
                     would be silently dropped",
                    bad + 1,
                    i + 1
                ));
                return report;
            }
        }
    }
    match index {
        Some(ix) if u64::from(ix.max_frame) > report.committed_frames => {
            report.damage = Some(format!(
                "the database's index says {} frames were committed, but only {} can be read \
                 from the log: it was cut short or damaged",
                ix.max_frame, report.committed_frames
            ));
        }
        Some(_) => {}
        None if partial != 0 => {
            report.damage = Some(format!(
                "the log ends in the middle of a frame ({partial} of {frame_len} bytes), and no \
                 index vouches that nothing committed was lost there"
            ));
        }
        None => {}
    }
    report
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_header(wal: &[u8]) -> Option<Header> {
    if wal.len() < HEADER {
        return None;
    }
    let magic = be32(wal, 0);
    if magic & !1 != 0x377f_0682 || be32(wal, 4) != VERSION {
        return None;
    }
    let page_size = match be32(wal, 8) {
        1 => 65_536,
        n if (512..=32_768).contains(&n) && n.is_power_of_two() => n as usize,
        _ => return None,
    };
    let header = Header {
        big_endian: magic & 1 == 1,
        page_size,
        salts: [be32(wal, 16), be32(wal, 20)],
        checksum: [be32(wal, 24), be32(wal, 28)],
    };
    (checksum(header.big_endian, &wal[..24], [0, 0]) == header.checksum).then_some(header)
}

/// The running checksum after `frame`, if its salts are the header's and its checksum verifies
/// when the chain before it is `seed`.
fn verify(header: &Header, frame: &[u8], seed: [u32; 2]) -> Option<[u32; 2]> {
    if [be32(frame, 8), be32(frame, 12)] != header.salts {
        return None;
    }
    let sum = checksum(header.big_endian, &frame[..8], seed);
    let sum = checksum(header.big_endian, &frame[FRAME_HEADER..], sum);
    (sum == stored_checksum(frame)).then_some(sum)
}

fn stored_checksum(frame: &[u8]) -> [u32; 2] {
    [be32(frame, 16), be32(frame, 20)]
}

/// A commit frame records the database size after the commit; other frames hold 0.
fn is_commit(frame: &[u8]) -> bool {
    be32(frame, 4) != 0
}

/// SQLite's WAL checksum: Fletcher-like over pairs of 32-bit words.
fn checksum(big_endian: bool, data: &[u8], seed: [u32; 2]) -> [u32; 2] {
    let [mut s1, mut s2] = seed;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    [s1, s2]
}

/// The wal-index header, if `shm` holds two identical copies that verify. It is in the byte
/// order of the machine that wrote it, which is this one (the file is never moved between
/// machines: SQLite rebuilds it when no process has it open).
fn index_header(shm: &[u8]) -> Option<IndexHeader> {
    if shm.len() < 2 * SHM_HEADER + 8 || shm[..SHM_HEADER] != shm[SHM_HEADER..2 * SHM_HEADER] {
        return None;
    }
    let ne32 = |at: usize| u32::from_ne_bytes(shm[at..at + 4].try_into().expect("4 bytes"));
    let is_init = shm[12] == 1;
    let big_endian_words = cfg!(target_endian = "big");
    let sum = checksum(big_endian_words, &shm[..40], [0, 0]);
    if ne32(0) != VERSION || !is_init || sum != [ne32(40), ne32(44)] {
        return None;
    }
    Some(IndexHeader {
        max_frame: ne32(16),
        // Copied byte for byte from the log's header, so big-endian like it.
        salts: [be32(shm, 32), be32(shm, 36)],
        backfilled: ne32(2 * SHM_HEADER),
    })
}

/// Whether the database file holds more than the readable prefix of the log `wal`: the index
/// `shm` records a checkpoint that copied frames beyond the prefix, so reading the prefix over
/// the database would mix older pages into a newer one. The database alone is then the better
/// copy.
pub fn prefix_is_stale(wal: &[u8], shm: &[u8]) -> bool {
    let Some(header) = parse_header(wal) else {
        return false;
    };
    let Some(ix) = index_header(shm).filter(|ix| ix.salts == header.salts) else {
        return false;
    };
    u64::from(ix.backfilled) > inspect(wal, None).committed_frames
}

/// The committed pages of a log's readable prefix.
pub struct CommittedPages<'a> {
    /// Bytes per page.
    pub page_size: usize,
    /// The database's size in pages at the last commit.
    pub db_pages: u32,
    /// Page number → the newest committed version of that page.
    pub pages: BTreeMap<u32, &'a [u8]>,
}

/// The database pages the log's readable prefix holds. For rebuilding a database whose file was
/// lost or emptied: pages the log does not hold are missing.
pub fn committed_pages(wal: &[u8]) -> Option<CommittedPages<'_>> {
    let header = parse_header(wal)?;
    let frame_len = FRAME_HEADER + header.page_size;
    let mut chain = header.checksum;
    let mut pending = BTreeMap::new();
    let mut pages = BTreeMap::new();
    let mut db_pages = 0;
    for frame in wal[HEADER..].chunks_exact(frame_len) {
        let Some(sum) = verify(&header, frame, chain) else {
            break;
        };
        chain = sum;
        pending.insert(be32(frame, 0), &frame[FRAME_HEADER..]);
        if is_commit(frame) {
            db_pages = be32(frame, 4);
            pages.append(&mut pending);
        }
    }
    pages.retain(|&pgno, _| pgno <= db_pages);
    Some(CommittedPages {
        page_size: header.page_size,
        db_pages,
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 512;

    /// A log of `commits` transactions of two frames each, salts `salts`.
    fn log(salts: [u32; 2], commits: u32) -> Vec<u8> {
        let mut wal = Vec::new();
        wal.extend(0x377f_0682u32.to_be_bytes());
        wal.extend(VERSION.to_be_bytes());
        wal.extend((PAGE as u32).to_be_bytes());
        wal.extend(0u32.to_be_bytes());
        wal.extend(salts[0].to_be_bytes());
        wal.extend(salts[1].to_be_bytes());
        let mut chain = checksum(false, &wal[..24], [0, 0]);
        wal.extend(chain[0].to_be_bytes());
        wal.extend(chain[1].to_be_bytes());
        for t in 0..commits {
            for (pgno, commit) in [(2 + t, 0), (1, 2 + t)] {
                let mut frame = Vec::new();
                frame.extend(pgno.to_be_bytes());
                frame.extend(commit.to_be_bytes());
                frame.extend(salts[0].to_be_bytes());
                frame.extend(salts[1].to_be_bytes());
                let page = vec![(pgno + t) as u8; PAGE];
                chain = checksum(false, &frame[..8], chain);
                chain = checksum(false, &page, chain);
                frame.extend(chain[0].to_be_bytes());
                frame.extend(chain[1].to_be_bytes());
                frame.extend(page);
                wal.extend(frame);
            }
        }
        wal
    }

    fn index(max_frame: u32, salts: [u32; 2]) -> IndexHeader {
        IndexHeader {
            max_frame,
            salts,
            backfilled: 0,
        }
    }

    const FRAME: usize = FRAME_HEADER + PAGE;
    const SALTS: [u32; 2] = [7, 99];

    #[test]
    fn an_intact_log_is_trusted_with_or_without_an_index() {
        let wal = log(SALTS, 3);
        let r = inspect(&wal, None);
        assert_eq!((r.committed_frames, r.damage), (6, None));
        assert_eq!(inspect(&wal, Some(&index(6, SALTS))).damage, None);
        assert_eq!(inspect(&[], None).damage, None);
    }

    #[test]
    fn what_a_killed_process_leaves_is_trusted() {
        let mut wal = log(SALTS, 3);
        // An uncommitted transaction: one complete frame, then a header whose page never came.
        let uncommitted = log(SALTS, 4)[HEADER + 6 * FRAME..].to_vec();
        wal.extend(&uncommitted[..FRAME + 24]);
        assert_eq!(inspect(&wal, Some(&index(6, SALTS))).damage, None);
        // The same with the page half written over what an older generation left.
        let mut wal = log(SALTS, 3);
        wal.extend(&uncommitted[..FRAME + 24 + PAGE / 2]);
        wal.extend(vec![0xee; PAGE / 2 + 3 * FRAME]);
        let r = inspect(&wal, Some(&index(6, SALTS)));
        assert_eq!((r.committed_frames, r.damage), (6, None));
        // The index not yet updated for a commit whose frames were all written.
        assert_eq!(inspect(&log(SALTS, 3), Some(&index(4, SALTS))).damage, None);
        // Frames of an older generation after the current ones: normal leftovers.
        let mut wal = log(SALTS, 1);
        wal.extend(&log([6, 1], 3)[HEADER + 2 * FRAME..]);
        assert_eq!(inspect(&wal, None).damage, None);
        // An index of another generation says nothing about this log.
        let mut cut = log(SALTS, 3);
        cut.truncate(HEADER + 2 * FRAME);
        assert_eq!(inspect(&cut, Some(&index(6, [6, 1]))).damage, None);
    }

    #[test]
    fn random_bytes_in_the_middle_are_damage() {
        let mut wal = log(SALTS, 3);
        wal[HEADER + 2 * FRAME + 100] ^= 0x5a;
        let r = inspect(&wal, None);
        assert_eq!(r.committed_frames, 2);
        let damage = r.damage.expect("damage");
        assert!(damage.contains("frame 3 is damaged"), "{damage}");
        // A damaged salt reads as an older frame; the commits after it still give it away.
        let mut wal = log(SALTS, 3);
        wal[HEADER + 2 * FRAME + 9] ^= 1;
        assert!(inspect(&wal, None).damage.is_some());
    }

    #[test]
    fn a_cut_log_is_damage() {
        let mut wal = log(SALTS, 4);
        wal.truncate(HEADER + 5 * FRAME + 100);
        let damage = inspect(&wal, None)
            .damage
            .expect("no index: mid-frame is refused");
        assert!(damage.contains("middle of a frame"), "{damage}");
        let damage = inspect(&wal, Some(&index(8, SALTS)))
            .damage
            .expect("the index knows more commits");
        assert!(damage.contains("says 8 frames were committed"), "{damage}");
        // Cut at a frame boundary: only the index can tell.
        let mut wal = log(SALTS, 4);
        wal.truncate(HEADER + 4 * FRAME);
        assert!(inspect(&wal, Some(&index(8, SALTS))).damage.is_some());
        // Emptied entirely while frames were not yet in the database.
        let ix = IndexHeader {
            backfilled: 2,
            ..index(8, SALTS)
        };
        assert!(inspect(&[], Some(&ix)).damage.is_some());
    }

    #[test]
    fn a_damaged_header_is_damage() {
        let mut wal = log(SALTS, 1);
        wal[17] ^= 1;
        assert!(inspect(&wal, None).damage.is_some());
        assert!(inspect(&wal[..20], None).damage.is_some());
    }

    #[test]
    fn committed_pages_are_the_newest_committed_versions() {
        let mut wal = log(SALTS, 3);
        wal.extend(&log(SALTS, 4)[HEADER + 6 * FRAME..HEADER + 7 * FRAME]);
        let CommittedPages {
            page_size,
            db_pages,
            pages,
        } = committed_pages(&wal).unwrap();
        assert_eq!((page_size, db_pages), (PAGE, 4));
        assert_eq!(pages.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        // Page 1 as the third commit wrote it; page 5 was never committed.
        assert_eq!(pages[&1][0], 3);
    }
}
