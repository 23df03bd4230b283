//! The label values of every failure family, one enum per family: the set of reasons is
//! visible and bounded here. `as_label()` is the exported value (never change one: alerts
//! and dashboards match it); `ALL` lists every reason, which all start at 0 (see
//! `Metrics::init_sink`); the `*_REASONS` lists in `metrics` and `kafka_metrics` are
//! `LABELS`, derived from the same table.

/// Defines a reason enum from `Variant => "label"` pairs, with `ALL`, `LABELS` and
/// `as_label()` in the order written.
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every reason, in the order of `LABELS`.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every label value, in the order of `ALL`.
            pub const LABELS: &'static [&'static str] = &[$($label),+];

            /// The label value exported for this reason.
            pub const fn as_label(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_label())
            }
        }
    };
}

reasons! {
    /// Results of a config reload (`log_capturer_config_reloads_total{result}`): `applied` (a
    /// new pipeline generation or log level), `unchanged`, `invalid` (the new file did not
    /// load), `refused` (a key needs a restart), `failed` (valid, but could not be started;
    /// the old config runs again).
    ReloadOutcome {
        Applied => "applied",
        Unchanged => "unchanged",
        Invalid => "invalid",
        Refused => "refused",
        Failed => "failed",
    }
}

reasons! {
    /// Reasons of `log_capturer_container_stream_errors_total`.
    StreamErrorReason {
        Read => "read",
        Decode => "decode",
        DaemonStreamError => "daemon_stream_error",
        OpenTransport => "open_transport",
        OpenTimeout => "open_timeout",
        OpenFailed => "open_failed",
        UnreadableLogDriver => "unreadable_log_driver",
        GoneBeforeRead => "gone_before_read",
        EventsOpen => "events_open",
        EventsDropped => "events_dropped",
        EventsDecode => "events_decode",
        List => "list",
        Inspect => "inspect",
        LineWithoutTimestamp => "line_without_timestamp",
        PauseTimer => "pause_timer",
    }
}

reasons! {
    /// Reasons of `log_capturer_sink_failures_total` for the local sinks (stdout, file,
    /// discard).
    LocalSinkFailureReason {
        Io => "io",
        Permanent => "permanent",
        Closed => "closed",
    }
}

reasons! {
    /// Reasons of `log_capturer_sink_failures_total` for the Loki sink.
    LokiSinkFailureReason {
        Connect => "connect",
        Timeout => "timeout",
        TooManyRequests => "429",
        ServerError => "5xx",
        ClientError => "4xx",
        DeadLetter => "dead_letter",
        Encode => "encode",
    }
}

reasons! {
    /// Reasons of `log_capturer_sink_failures_total{sink="kafka"}` and
    /// `log_capturer_kafka_messages_failed_total` (see `kafka_metrics`).
    KafkaSinkFailureReason {
        TooLarge => "too_large",
        Rejected => "rejected",
        Purged => "purged",
        Timeout => "timeout",
        Error => "error",
        Fatal => "fatal",
        DeadLetter => "dead_letter",
        Producer => "producer",
    }
}

reasons! {
    /// Reasons of `log_capturer_dead_letters_total` for Loki (its answer).
    DeadLetterReason {
        BadRequest => "400",
        TooLarge => "413",
    }
}

reasons! {
    /// Reasons of `log_capturer_dead_letters_total{sink="kafka"}`.
    KafkaDeadLetterReason {
        TooLarge => "too_large",
        Rejected => "rejected",
    }
}

reasons! {
    /// Reasons (operations) of `log_capturer_buffer_errors_total`.
    BufferErrorReason {
        Append => "append",
        Read => "read",
        Consume => "consume",
    }
}

reasons! {
    /// Reasons of `log_capturer_sink_lines_modified_total` (Loki).
    LinesModifiedReason {
        Truncated => "truncated",
        Split => "split",
        LabelValueCut => "label_value_cut",
        LabelInvalid => "label_invalid",
    }
}

reasons! {
    /// Reasons of `log_capturer_http_connections_closed_total`.
    HttpCloseReason {
        HeaderTimeout => "header_timeout",
        OverLimit => "over_limit",
    }
}

reasons! {
    /// Reasons of `log_capturer_file_sink_rotations_total`.
    FileRotationReason {
        Size => "size",
        Age => "age",
        Date => "date",
        External => "external",
    }
}

reasons! {
    /// Reasons of `log_capturer_file_source_errors_total` (the host-file source).
    FileSourceErrorReason {
        /// A matched file could not be opened (permissions, gone between scan and open).
        Open => "open",
        /// Reading an open file failed.
        Read => "read",
        /// stat/fstat failed (size, identity at the path).
        Stat => "stat",
        /// A directory of a glob could not be listed.
        Scan => "scan",
        /// The file's fingerprint could not be read.
        Fingerprint => "fingerprint",
        /// A closed (idle) file was replaced or removed before it could be reopened: the
        /// bytes it got after it was closed are not read.
        LostWhileClosed => "lost_while_closed",
        /// The group's processing pipeline could not be instantiated (lines pass unprocessed).
        Pipeline => "pipeline",
    }
}

reasons! {
    /// Kinds of `log_capturer_file_rotations_total`: a host file rotated away (renamed) or
    /// deleted, read to its end. (Not the file sink's rotations: [`FileRotationReason`].)
    HostFileRotationKind {
        Rename => "rename",
        Delete => "delete",
    }
}

reasons! {
    /// Reasons of `log_capturer_json_file_fallbacks_total`: why a container is read through
    /// the Engine API although `docker.capture` is `json_file`.
    JsonFileFallbackReason {
        /// Its log driver is not json-file (`none`, `local`, `journald` …).
        LogDriver => "log_driver",
        /// Docker's containers directory cannot be read by the agent.
        ContainersDirUnreadable => "containers_dir_unreadable",
        /// The container's log file exists but cannot be opened (permissions).
        LogFileUnreadable => "log_file_unreadable",
        /// The container's log file is not there: 10 s after the container started, or at
        /// its stop (`docker.containers_dir` wrong, or the log moved).
        LogFileMissing => "log_file_missing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` and `LABELS` are the same table, and no family names a value twice.
    #[test]
    fn labels_follow_all_and_are_unique() {
        fn check<T: Copy>(all: &[T], labels: &[&str], label: fn(T) -> &'static str) {
            let derived: Vec<&str> = all.iter().map(|&r| label(r)).collect();
            assert_eq!(derived, labels);
            let mut unique = derived.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), derived.len(), "{derived:?}");
        }
        check(
            ReloadOutcome::ALL,
            ReloadOutcome::LABELS,
            ReloadOutcome::as_label,
        );
        check(
            StreamErrorReason::ALL,
            StreamErrorReason::LABELS,
            StreamErrorReason::as_label,
        );
        check(
            LocalSinkFailureReason::ALL,
            LocalSinkFailureReason::LABELS,
            LocalSinkFailureReason::as_label,
        );
        check(
            LokiSinkFailureReason::ALL,
            LokiSinkFailureReason::LABELS,
            LokiSinkFailureReason::as_label,
        );
        check(
            KafkaSinkFailureReason::ALL,
            KafkaSinkFailureReason::LABELS,
            KafkaSinkFailureReason::as_label,
        );
        check(
            DeadLetterReason::ALL,
            DeadLetterReason::LABELS,
            DeadLetterReason::as_label,
        );
        check(
            KafkaDeadLetterReason::ALL,
            KafkaDeadLetterReason::LABELS,
            KafkaDeadLetterReason::as_label,
        );
        check(
            BufferErrorReason::ALL,
            BufferErrorReason::LABELS,
            BufferErrorReason::as_label,
        );
        check(
            LinesModifiedReason::ALL,
            LinesModifiedReason::LABELS,
            LinesModifiedReason::as_label,
        );
        check(
            HttpCloseReason::ALL,
            HttpCloseReason::LABELS,
            HttpCloseReason::as_label,
        );
        check(
            FileRotationReason::ALL,
            FileRotationReason::LABELS,
            FileRotationReason::as_label,
        );
        check(
            FileSourceErrorReason::ALL,
            FileSourceErrorReason::LABELS,
            FileSourceErrorReason::as_label,
        );
        check(
            HostFileRotationKind::ALL,
            HostFileRotationKind::LABELS,
            HostFileRotationKind::as_label,
        );
        check(
            JsonFileFallbackReason::ALL,
            JsonFileFallbackReason::LABELS,
            JsonFileFallbackReason::as_label,
        );
    }
}
