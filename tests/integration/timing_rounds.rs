//! The benchmark programs' timing rounds (`bench::rounds`): when a warm-up counts as settled,
//! and the median and spread they print.

use std::time::Duration;

use bench::rounds::{Settle, median, ratio_spread, warm_up};

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().copied().map(Duration::from_millis).collect()
}

const SETTLE: Settle = Settle {
    window: 3,
    tolerance: 0.1,
    max_steps: 100,
    max_time: Duration::from_secs(60),
};

#[test]
fn a_warm_up_settles_when_its_last_steps_are_all_near_the_fastest() {
    // Autotuning: slow first steps, then steady.
    assert!(SETTLE.settled(&ms(&[400, 120, 20, 10, 10, 11])));
    assert!(SETTLE.settled(&ms(&[10, 10, 10])));
    // Too few steps, however steady.
    assert!(!SETTLE.settled(&ms(&[10, 10])));
    // One of the last three is 20% above the fastest.
    assert!(!SETTLE.settled(&ms(&[10, 10, 12])));
    // A steady plateau above a faster step seen earlier is not settled either.
    assert!(!SETTLE.settled(&ms(&[10, 30, 30, 30])));
}

#[test]
fn a_warm_up_stops_at_its_step_limit_when_the_time_never_settles() {
    let limited = Settle {
        window: 3,
        tolerance: 0.0,
        max_steps: 4,
        max_time: Duration::from_secs(60),
    };
    // Each step sleeps longer than the last: never within 0% of the fastest.
    let mut sleep = 0;
    let warm = warm_up(&limited, || {
        sleep += 2;
        std::thread::sleep(Duration::from_millis(sleep));
    });
    assert_eq!((warm.steps, warm.settled), (4, false));
    // Any step time of the window settles (each a millisecond or so, within a billion times
    // the fastest): it takes exactly `window` steps, and no more run.
    let lenient = Settle {
        tolerance: 1e9,
        ..SETTLE
    };
    let mut steps = 0;
    let warm = warm_up(&lenient, || {
        steps += 1;
        std::thread::sleep(Duration::from_millis(1));
    });
    assert_eq!((warm.steps, warm.settled, steps), (3, true, 3));
}

#[test]
fn the_median_and_the_round_by_round_spread() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(
        median(&[4.0, 1.0, 3.0, 2.0]),
        3.0,
        "the upper middle of an even count"
    );
    assert_eq!(median(&[]), 0.0);
    // Ratios of each round's rates, not of medians: 2/1, 3/2, 8/4.
    assert_eq!(ratio_spread(&[2.0, 3.0, 8.0], &[1.0, 2.0, 4.0]), (1.5, 2.0));
}
