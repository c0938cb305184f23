//! The controller's memory across restarts (SQLite): agents seen, faults it applied
//! and still holds, and the event history.
//!
//! Written synchronously under one lock: each write is one small statement in WAL
//! mode, far below a fan-out's network round trips.

use std::{collections::BTreeMap, path::Path, sync::Mutex};

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};
use prost::Message;
use rusqlite::{Connection, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredAgent {
    pub name: String,
    pub url: String,
    pub labels: BTreeMap<String, String>,
    pub source: String,
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredFault {
    pub id: String,
    pub spec: apb::FaultSpec,
    /// (agent, its fault id)
    pub placements: Vec<(String, String)>,
    pub cut_from: BTreeMap<String, Vec<String>>,
    pub applied_ms: i64,
    pub expires_ms: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    labels TEXT NOT NULL,
    source TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    placements TEXT NOT NULL,
    cut_from TEXT NOT NULL,
    applied_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    unix_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    fault_id TEXT NOT NULL,
    agents TEXT NOT NULL,
    message TEXT NOT NULL
);
";

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |detail| StoreError::Corrupt { what, detail }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory is reported by SQLite with the path, below.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Self::init(conn).map_err(|e| match e {
            StoreError::Sql(source) => {
                StoreError::Open { path: path.display().to_string(), source }
            }
            e => e,
        })
    }

    #[cfg(test)]
    pub fn memory() -> Self {
        Self::init(Connection::open_in_memory().expect("in-memory SQLite")).expect("schema")
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        // WAL + NORMAL: a committed row survives a controller crash (not a power cut,
        // which the agents' leases cover anyway).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn put_agent(&self, a: &StoredAgent) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&a.labels).expect("string map");
        self.conn().execute(
            "INSERT INTO agents (name, url, labels, source, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET url = ?2, labels = ?3, source = ?4, last_seen_ms = ?5",
            params![a.name, a.url, labels, a.source, a.last_seen_ms],
        )?;
        Ok(())
    }

    pub fn delete_agent(&self, name: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM agents WHERE name = ?1", params![name])?;
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<StoredAgent>, StoreError> {
        let conn = self.conn();
        let mut q = conn
            .prepare("SELECT name, url, labels, source, last_seen_ms FROM agents ORDER BY name")?;
        let rows = q.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.map(|r| {
            let (name, url, labels, source, last_seen_ms) = r?;
            let labels = serde_json::from_str(&labels)
                .map_err(|e| corrupt("agent labels")(format!("{name}: {e}")))?;
            Ok(StoredAgent { name, url, labels, source, last_seen_ms })
        })
        .collect()
    }

    /// Inserts or updates an active fault (its placements change as agents lose them).
    pub fn put_fault(&self, f: &StoredFault) -> Result<(), StoreError> {
        let placements = serde_json::to_string(&f.placements).expect("pairs of strings");
        let cut_from = serde_json::to_string(&f.cut_from).expect("string map");
        self.conn().execute(
            "INSERT INTO faults (id, spec, placements, cut_from, applied_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET placements = ?3, cut_from = ?4, expires_ms = ?6",
            params![f.id, f.spec.encode_to_vec(), placements, cut_from, f.applied_ms, f.expires_ms],
        )?;
        Ok(())
    }

    pub fn end_fault(&self, id: &str, ended_ms: i64, reason: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE faults SET ended_ms = ?2, end_reason = ?3 WHERE id = ?1 AND ended_ms IS NULL",
            params![id, ended_ms, reason],
        )?;
        Ok(())
    }

    /// Faults applied and not yet ended, oldest first.
    pub fn active_faults(&self) -> Result<Vec<StoredFault>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id, spec, placements, cut_from, applied_ms, expires_ms FROM faults WHERE ended_ms IS NULL ORDER BY rowid")?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.map(|r| {
            let (id, spec, placements, cut_from, applied_ms, expires_ms) = r?;
            let bad = |e: &dyn std::fmt::Display| corrupt("fault")(format!("{id}: {e}"));
            Ok(StoredFault {
                spec: apb::FaultSpec::decode(spec.as_slice()).map_err(|e| bad(&e))?,
                placements: serde_json::from_str(&placements).map_err(|e| bad(&e))?,
                cut_from: serde_json::from_str(&cut_from).map_err(|e| bad(&e))?,
                id,
                applied_ms,
                expires_ms,
            })
        })
        .collect()
    }

    /// The largest fault number used so far, so ids are never reused.
    pub fn max_fault_number(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id FROM faults")?;
        let ids = q.query_map([], |r| r.get::<_, String>(0))?;
        let mut max = 0;
        for id in ids {
            if let Some(n) = id?.strip_prefix("c-").and_then(|n| n.parse::<u64>().ok()) {
                max = max.max(n);
            }
        }
        Ok(max)
    }

    /// Stores an event and gives it its sequence number.
    pub fn append_event(&self, mut e: pb::Event) -> Result<pb::Event, StoreError> {
        let conn = self.conn();
        let agents = serde_json::to_string(&e.agents).expect("strings");
        conn.execute(
            "INSERT INTO events (unix_ms, kind, fault_id, agents, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.unix_ms, e.kind, e.fault_id, agents, e.message],
        )?;
        e.seq = conn.last_insert_rowid() as u64;
        Ok(e)
    }

    /// Events after `after_seq`; with `last` > 0, only the latest `last` of them.
    pub fn events(&self, after_seq: u64, last: u32) -> Result<Vec<pb::Event>, StoreError> {
        let limit = if last == 0 { -1 } else { i64::from(last) };
        self.query_events("SELECT seq, unix_ms, kind, fault_id, agents, message FROM (SELECT * FROM events WHERE seq > ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq", after_seq, limit)
    }

    /// Up to `limit` events after `after_seq`, oldest first: one page of a replay.
    pub fn events_page(&self, after_seq: u64, limit: u32) -> Result<Vec<pb::Event>, StoreError> {
        self.query_events("SELECT seq, unix_ms, kind, fault_id, agents, message FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2", after_seq, i64::from(limit))
    }

    /// Events by `sql`, which selects the event columns with `?1` the seq to start after
    /// and `?2` a row limit (-1: none).
    fn query_events(
        &self,
        sql: &str,
        after_seq: u64,
        limit: i64,
    ) -> Result<Vec<pb::Event>, StoreError> {
        let conn = self.conn();
        let mut q = conn.prepare(sql)?;
        // A seq past i64 is past every event (not -1, which would replay them all).
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let rows = q.query_map(params![after, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        rows.map(|r| {
            let (seq, unix_ms, kind, fault_id, agents, message) = r?;
            let agents = serde_json::from_str(&agents)
                .map_err(|e| corrupt("event agents")(format!("{seq}: {e}")))?;
            Ok(pb::Event { seq: seq as u64, unix_ms, kind, fault_id, agents, message })
        })
        .collect()
    }

    /// Forgets events older than `before_unix_ms` and all but the newest `keep`; returns
    /// how many went. The newest always stays, so seqs go on counting from it (a watcher
    /// resuming after a seq must never see numbers reused).
    pub fn prune_events(&self, before_unix_ms: i64, keep: u64) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        Ok(self.conn().execute(
            "DELETE FROM events WHERE (unix_ms < ?1 OR seq <= (SELECT MAX(seq) FROM events) - ?2) AND seq < (SELECT MAX(seq) FROM events)",
            params![before_unix_ms, keep],
        )?)
    }

    #[cfg(test)]
    fn fault_end(&self, id: &str) -> Option<(i64, String)> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT ended_ms, end_reason FROM faults WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(id: &str) -> StoredFault {
        StoredFault {
            id: id.into(),
            spec: apb::FaultSpec {
                interface: "eth0".into(),
                lease_ms: 60_000,
                kind: Some(apb::fault_spec::Kind::Partition(apb::Partition {})),
                ..Default::default()
            },
            placements: vec![("h1".into(), "f-1".into()), ("h2".into(), "f-9".into())],
            cut_from: BTreeMap::from([("h1".into(), vec!["h2".into()])]),
            applied_ms: 1,
            expires_ms: 60_001,
        }
    }

    #[test]
    fn faults_round_trip_and_ended_ones_are_not_active() {
        let s = Store::memory();
        s.put_fault(&fault("c-7")).unwrap();
        s.put_fault(&fault("c-12")).unwrap();
        let mut changed = fault("c-7");
        changed.placements.pop();
        s.put_fault(&changed).unwrap();
        assert_eq!(s.active_faults().unwrap(), vec![changed, fault("c-12")]);
        s.end_fault("c-7", 5, "reverted").unwrap();
        assert_eq!(s.active_faults().unwrap(), vec![fault("c-12")]);
        assert_eq!(s.fault_end("c-7"), Some((5, "reverted".into())));
        // Ending twice keeps the first reason.
        s.end_fault("c-7", 9, "expired").unwrap();
        assert_eq!(s.fault_end("c-7"), Some((5, "reverted".into())));
        assert_eq!(s.max_fault_number().unwrap(), 12);
    }

    #[test]
    fn agents_upsert_by_name() {
        let s = Store::memory();
        let mut a = StoredAgent {
            name: "h1".into(),
            url: "https://10.0.0.1:7070".into(),
            labels: BTreeMap::from([("role".into(), "db".into())]),
            source: "registered".into(),
            last_seen_ms: 1,
        };
        s.put_agent(&a).unwrap();
        a.url = "https://10.0.0.2:7070".into();
        s.put_agent(&a).unwrap();
        assert_eq!(s.agents().unwrap(), vec![a]);
    }

    #[test]
    fn events_are_paged_and_pruned_by_age_and_count() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        for i in 0..10 {
            s.append_event(pb::Event {
                unix_ms: i * 1000,
                message: format!("e{i}"),
                ..Default::default()
            })
            .unwrap();
        }
        let page: Vec<u64> = s.events_page(3, 4).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(page, [4, 5, 6, 7]);
        assert!(s.events_page(10, 4).unwrap().is_empty());
        // Older than 2 s go (seq 1, 2), then all but the newest 5.
        assert_eq!(s.prune_events(2000, 1000).unwrap(), 2);
        assert_eq!(s.prune_events(0, 5).unwrap(), 3);
        let left: Vec<u64> = s.events(0, 0).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(left, [6, 7, 8, 9, 10]);
        // Everything is old: the newest stays, and numbering goes on after it.
        assert_eq!(s.prune_events(i64::MAX, 1000).unwrap(), 4);
        assert_eq!(s.append_event(pb::Event::default()).unwrap().seq, 11);
    }

    #[test]
    fn events_are_numbered_and_replayed_after_a_seq_or_the_last_n() {
        let s = Store::memory();
        for i in 0..5 {
            let e = s
                .append_event(pb::Event {
                    unix_ms: i,
                    kind: pb::EventKind::FaultApplied as i32,
                    message: format!("e{i}"),
                    agents: vec!["h1".into()],
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(e.seq, i as u64 + 1);
        }
        assert!(s.events(u64::MAX, 0).unwrap().is_empty(), "a seq past the end replays nothing");
        let msgs = |v: Vec<pb::Event>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
        assert_eq!(msgs(s.events(3, 0).unwrap()), ["e3", "e4"]);
        assert_eq!(msgs(s.events(0, 2).unwrap()), ["e3", "e4"]);
        assert_eq!(s.events(0, 0).unwrap()[0].agents, ["h1"]);
    }

    #[test]
    fn a_file_survives_reopening() {
        let path = std::env::temp_dir().join(format!("faultline-store-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let s = Store::open(&path).unwrap();
            s.put_fault(&fault("c-1")).unwrap();
            s.append_event(pb::Event { message: "x".into(), ..Default::default() }).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.active_faults().unwrap(), vec![fault("c-1")]);
        assert_eq!(s.events(0, 0).unwrap().len(), 1);
        drop(s);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
    }

    #[test]
    fn an_unopenable_path_names_itself() {
        let e = Store::open(Path::new("/proc/self/nope/controller.db")).err().unwrap();
        assert!(e.to_string().contains("/proc/self/nope/controller.db"), "{e}");
    }
}
