//! One file per line stage (see [`super::stage::Stage`]).

mod extract;
pub mod fields;
pub mod filter;
pub mod json;
pub mod labels;
pub mod level;
pub mod logfmt;
pub mod regex;
pub mod tenant;
pub mod timestamp;

#[cfg(test)]
pub(crate) mod testing;
