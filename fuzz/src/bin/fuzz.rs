//! `cargo afl fuzz … target/debug/fuzz <target>`: one binary, the harness named by its argument.

fn main() {
    let target = std::env::args().nth(1).unwrap_or_default();
    assert!(
        latchkey_fuzz::TARGETS.contains(&target.as_str()),
        "usage: fuzz <{}>",
        latchkey_fuzz::TARGETS.join("|")
    );
    afl::fuzz!(|data: &[u8]| latchkey_fuzz::run(&target, data));
}
