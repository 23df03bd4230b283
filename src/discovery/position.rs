//! Where a container is first read from when the agent has no checkpoint for it.
//!
//! `initial_position: end` may only skip what a container had written before the agent started
//! on a fresh state directory (its first look at the host). Everything written after that is
//! read, whether the container was running at that moment or was started later (`docker
//! compose up` creates, then starts): so the position is the agent's start time, never the
//! time a `start` event happened to be handled.

use crate::capture::Cursor;
use crate::config::InitialPosition;

/// What decides the start position of a container seen for the first time.
pub struct StartFacts {
    /// The container's saved checkpoint, if any.
    pub checkpoint: Option<Cursor>,
    /// When the container was created (0 if unknown).
    pub created_ns: i64,
    /// When this run of the agent started.
    pub agent_start_ns: i64,
    /// An earlier run of the agent used this state directory.
    pub had_previous_run: bool,
    pub initial_position: InitialPosition,
}

pub fn start_position(f: &StartFacts) -> Cursor {
    if let Some(saved) = f.checkpoint {
        return saved;
    }
    // Created while we run, or (no checkpoint yet an earlier run) created or started while
    // the agent was down: all of it.
    if f.created_ns >= f.agent_start_ns || f.had_previous_run {
        return Cursor::at(0);
    }
    match f.initial_position {
        InitialPosition::Beginning => Cursor::at(0),
        // Skip only what was written before the agent first looked.
        InitialPosition::End => Cursor::at(f.agent_start_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_000_000_000_000;

    fn facts(created_ns: i64, had_previous_run: bool, pos: InitialPosition) -> StartFacts {
        StartFacts {
            checkpoint: None,
            created_ns,
            agent_start_ns: START,
            had_previous_run,
            initial_position: pos,
        }
    }

    #[test]
    fn checkpoint_wins() {
        let mut f = facts(0, false, InitialPosition::End);
        let saved = Cursor::legacy(42, 3);
        f.checkpoint = Some(saved);
        assert_eq!(start_position(&f), saved);
    }

    #[test]
    fn created_after_the_agent_started_is_read_from_its_first_line() {
        let f = facts(START + 1, false, InitialPosition::End);
        assert_eq!(start_position(&f), Cursor::at(0));
    }

    #[test]
    fn end_on_a_fresh_state_dir_starts_at_the_agent_start_not_later() {
        // Whenever it is started (and whenever its start event is handled), the position is
        // the agent's start time: what it writes after that is read.
        let f = facts(START - 1, false, InitialPosition::End);
        assert_eq!(start_position(&f), Cursor::at(START));
    }

    #[test]
    fn beginning_and_earlier_runs_read_everything() {
        let f = facts(START - 1, false, InitialPosition::Beginning);
        assert_eq!(start_position(&f), Cursor::at(0));
        let f = facts(START - 1, true, InitialPosition::End);
        assert_eq!(start_position(&f), Cursor::at(0));
    }
}
