//! Compile-fail tests of the derives, one mistake per file in `tests/ui`, each with the
//! compiler's message in its `.stderr`. Regenerate with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
