//! The standard `process_*` families (as Prometheus' own clients export them), computed at
//! scrape time from `/proc/self` and the open-files limit, and the build description for
//! `log_capturer_build_info`.
//!
//! Read directly from `/proc` (a few fields of two files) rather than with the `procfs`
//! crate: that crate brings a large API and its own dependencies for five numbers.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Labels of `log_capturer_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
    pub rustc: &'static str,
}

/// This binary's version, git commit and compiler (captured by build.rs; "unknown" when
/// the build had no git checkout).
pub fn build_labels() -> BuildLabels {
    BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("LOG_CAPTURER_GIT_COMMIT"),
        rustc: env!("LOG_CAPTURER_RUSTC_VERSION"),
    }
}

/// What `/proc/self/stat` and `/proc/stat` say of this process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the epoch.
    pub start_time: f64,
}

impl ProcessStats {
    /// None where `/proc` is missing or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let system = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        ProcessStats::parse(&stat, &system, ticks, page)
    }

    /// Parses `/proc/self/stat` (fields after the command name, which may hold spaces and
    /// parentheses) and the boot time (`btime`) of `/proc/stat`; see proc(5).
    pub fn parse(stat: &str, system: &str, ticks: f64, page: u64) -> Option<ProcessStats> {
        let after_comm = &stat[stat.rfind(')')? + 1..];
        // Field 3 (state) is the first here, so field N is at index N - 3.
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let (utime, stime, start, vsize, rss) =
            (field(14)?, field(15)?, field(22)?, field(23)?, field(24)?);
        let boot: u64 = system
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / ticks,
            resident_bytes: rss * page,
            virtual_bytes: vsize,
            start_time: boot as f64 + start as f64 / ticks,
        })
    }
}

/// The soft open-files limit (what `open()` is held to); None when unlimited.
pub fn max_fds() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Encodes the `process_*` families on every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Encodes one family of one sample.
fn put(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let fds = super::resources::open_fds() as u64;
        put(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            &ConstGauge::new(saturating_i64(fds)),
        )?;
        if let Some(max) = max_fds() {
            put(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                None,
                &ConstGauge::new(saturating_i64(max)),
            )?;
        }
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        put(
            e,
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            &ConstCounter::new(stats.cpu_seconds),
        )?;
        put(
            e,
            "process_resident_memory",
            "Resident memory size in bytes.",
            Some(&Unit::Bytes),
            &ConstGauge::new(saturating_i64(stats.resident_bytes)),
        )?;
        put(
            e,
            "process_virtual_memory",
            "Virtual memory size in bytes.",
            Some(&Unit::Bytes),
            &ConstGauge::new(saturating_i64(stats.virtual_bytes)),
        )?;
        put(
            e,
            "process_start_time",
            "Start time of the process since unix epoch in seconds.",
            Some(&Unit::Seconds),
            &ConstGauge::new(stats.start_time),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_command_holding_spaces_and_parens() {
        let stat = "4242 (log (cap) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 8 0 1000 123456789 300 18446744073709551615";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let s = ProcessStats::parse(stat, system, 100.0, 4096).expect("parsed");
        assert_eq!(
            s,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 300 * 4096,
                virtual_bytes: 123456789,
                start_time: 1700000010.0,
            }
        );
        assert_eq!(ProcessStats::parse("garbage", system, 100.0, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().expect("/proc on Linux");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(s.start_time > 1.0e9 && s.start_time <= now + 1.0, "{s:?}");
    }
}
