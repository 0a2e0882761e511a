//! Nothing but a home for `tests/compiletest.rs`: the compile-fail tests of
//! `#[derive(Scatter, Gather)]`, one mistake per file in `tests/ui`.
