//! Sink entries of the status board and their JSON view.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::clock::now_ns;
use crate::docker::timestamp::format_rfc3339_nanos;

use super::lock;

/// The current failure of a sink.
#[derive(Clone, Debug)]
pub(super) struct SinkError {
    /// What failed: an error of one kind is cleared only by a success of that kind (a Loki
    /// push that works again does not clear a failing disk).
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) since_ns: i64,
    pub(super) failures: u64,
}

/// One sink's entry.
pub struct SinkStatus {
    pub(super) name: &'static str,
    pub(super) in_flight: AtomicI64,
    pub(super) queue_bytes: AtomicI64,
    /// The sink has an on-disk buffer and dead-letter store (Loki).
    pub(super) has_stores: bool,
    pub(super) buffered_records: AtomicU64,
    pub(super) buffered_bytes: AtomicU64,
    pub(super) dead_letters: AtomicU64,
    pub(super) error: Mutex<Option<SinkError>>,
}

impl SinkStatus {
    pub fn new(name: &'static str, has_stores: bool) -> Self {
        SinkStatus {
            name,
            in_flight: AtomicI64::new(0),
            queue_bytes: AtomicI64::new(0),
            has_stores,
            buffered_records: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    /// The sink took a batch holding `bytes` of the queue budget.
    pub fn received(&self, bytes: usize) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.queue_bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    /// The sink is done with a batch (acknowledged it, or released it unwritten).
    pub fn finished(&self, bytes: usize) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.queue_bytes.fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    pub fn set_buffered(&self, records: u64, bytes: u64) {
        self.buffered_records.store(records, Ordering::Relaxed);
        self.buffered_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn set_dead_letters(&self, records: u64) {
        self.dead_letters.store(records, Ordering::Relaxed);
    }

    /// An attempt of `kind` failed; the sink is failing since the first such failure.
    pub fn failed(&self, kind: &'static str, message: &str) {
        let mut error = lock(&self.error);
        match error.as_mut() {
            Some(e) if e.kind == kind => {
                e.failures += 1;
                e.message = message.to_string();
            }
            _ => {
                *error = Some(SinkError {
                    kind,
                    message: message.to_string(),
                    since_ns: now_ns(),
                    failures: 1,
                })
            }
        }
    }

    /// An attempt of `kind` worked: a failure of that kind is over.
    pub fn recovered(&self, kind: &'static str) {
        let mut error = lock(&self.error);
        if error.as_ref().is_some_and(|e| e.kind == kind) {
            *error = None;
        }
    }

    /// The entry as served.
    pub fn view(&self) -> SinkView {
        let error = lock(&self.error).clone();
        let stores = |v: &AtomicU64| self.has_stores.then(|| v.load(Ordering::Relaxed));
        SinkView {
            name: self.name.to_string(),
            queue_bytes: self.queue_bytes.load(Ordering::Relaxed).max(0) as u64,
            in_flight_batches: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            buffered_records: stores(&self.buffered_records),
            buffered_bytes: stores(&self.buffered_bytes),
            dead_letters: stores(&self.dead_letters),
            failing: error.is_some(),
            failures: error.as_ref().map_or(0, |e| e.failures),
            failing_since: error.as_ref().map(|e| format_rfc3339_nanos(e.since_ns)),
            failing_since_ns: error.as_ref().map(|e| e.since_ns),
            last_error: error.map(|e| e.message),
        }
    }
}

/// One element of `GET /api/v1/sinks` (documented in the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SinkView {
    pub name: String,
    pub queue_bytes: u64,
    pub in_flight_batches: u64,
    pub buffered_records: Option<u64>,
    pub buffered_bytes: Option<u64>,
    pub dead_letters: Option<u64>,
    pub failing: bool,
    pub failures: u64,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub failing_since_ns: Option<i64>,
}
