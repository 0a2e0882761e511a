//! The job's watchdog: no silent hang anywhere in the job, inside a training step or outside
//! (the bare model's run, validation, the test split, saving).
//!
//! A replica that stalls inside a `DataParallel` step is the step deadline's to catch. Work
//! outside the steps has no deadline of its own, so the job watches itself: every batch it
//! builds is a beat, and every phase it enters is one. When no beat comes for the limit
//! (`--step-deadline`), the job prints the phase that stalled and exits with
//! [`STALLED_EXIT_CODE`], rather than hang with no output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The exit code of a job the watchdog stopped.
pub const STALLED_EXIT_CODE: i32 = 4;

/// When the job started: beats count in milliseconds from it.
static STARTED: OnceLock<Instant> = OnceLock::new();
/// The time of the last beat, in milliseconds since [`STARTED`].
static LAST_BEAT: AtomicU64 = AtomicU64::new(0);
/// The phase the job is in, in words.
static PHASE: Mutex<&str> = Mutex::new("starting");

/// A sign of progress: a batch was built, or a phase began.
pub fn beat() {
    LAST_BEAT.store(now_ms(), Ordering::Relaxed);
}

/// The job enters `phase` (for example "training the bare model"): named if it stalls.
pub fn phase(phase: &'static str) {
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = phase;
    beat();
}

/// Starts watching: from now on, `limit` without a beat stops the job. A watchdog that cannot
/// start (the system refused a thread) is reported and the job goes on unwatched.
pub fn start(limit: Duration) {
    beat();
    let watching = thread::Builder::new()
        .name("digits-watchdog".to_string())
        .spawn(move || {
            let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                thread::sleep(every);
                let idle = Duration::from_millis(
                    now_ms().saturating_sub(LAST_BEAT.load(Ordering::Relaxed)),
                );
                if idle > limit {
                    let phase = *PHASE.lock().unwrap_or_else(PoisonError::into_inner);
                    eprintln!(
                        "error: no progress for {idle:.1?} while {phase} (the limit is \
                         --step-deadline, {limit:?}): a device or a Burn server stopped \
                         answering; stopping the job instead of hanging"
                    );
                    std::process::exit(STALLED_EXIT_CODE);
                }
            }
        });
    if let Err(error) = watching {
        eprintln!("warning: the job runs without its watchdog: {error}");
    }
}

fn now_ms() -> u64 {
    let started = STARTED.get_or_init(Instant::now);
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_moves_the_last_beat_forward() {
        beat();
        let first = LAST_BEAT.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(5));
        phase("testing");
        assert!(LAST_BEAT.load(Ordering::Relaxed) > first);
        assert_eq!(
            *PHASE.lock().unwrap_or_else(PoisonError::into_inner),
            "testing"
        );
    }
}
