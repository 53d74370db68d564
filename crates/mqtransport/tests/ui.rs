//! Compile errors explain themselves: a wrong handler argument or return type, and bad
//! `#[message(...)]` attributes.

#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
