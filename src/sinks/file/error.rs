//! The file sink's configuration errors ([`FileSinkError`], with [`TemplateError`] for the
//! path template itself). Their texts are what operators and tests read: keep them.

use super::naming::CONTAINER_FIELDS;

/// `sinks.file` refused.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("sinks.file.path: {0}")]
    Path(#[from] TemplateError),
    /// A `{NAME}` placeholder that is neither built in nor a copied label or group field.
    #[error(
        "sinks.file.path: unknown placeholder {{{name}}}: not {{container_name}}, \
         {{container_id}}, {{date}}, a container field ({}), a container label \
         copied by processing.container_labels or a field of a sources.files group",
        container_fields()
    )]
    UnknownPlaceholder { name: String },
    /// A key checked by the config layer (`file_mode`, `directory_mode`): its text as is.
    #[error("{0}")]
    Config(String),
}

/// A path template that leaves no room: a component too long, or too little of it left for
/// the names and values it holds.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "the path component {component:?} is longer than {max} bytes{}",
        rotation_note(*reserve)
    )]
    TooLong {
        component: String,
        max: usize,
        /// Bytes rotation appends to the file name (0: none).
        reserve: usize,
    },
    #[error(
        "the path component {component:?} leaves {budget} bytes for the container name or \
         field value (at least {min} are needed)"
    )]
    NoRoom {
        component: String,
        budget: usize,
        min: usize,
    },
}

fn container_fields() -> String {
    CONTAINER_FIELDS
        .iter()
        .map(|f| format!("{{{f}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rotation_note(reserve: usize) -> String {
    if reserve > 0 {
        format!(" once rotation appends up to {reserve} bytes")
    } else {
        String::new()
    }
}
