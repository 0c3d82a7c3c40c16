//! Every harness over its seeds and over simple mutations of them (each byte flipped, the
//! input cut at every length): the harnesses compile, hold on known inputs, and never panic
//! on these, with or without AFL.

use std::path::Path;

#[test]
fn every_harness_holds_on_its_seeds_and_their_mutations() {
    for target in latchkey_fuzz::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).expect("seeds") {
            let data = std::fs::read(entry.expect("entry").path()).expect("seed");
            seeds += 1;
            latchkey_fuzz::run(target, &data);
            for cut in 0..data.len() {
                latchkey_fuzz::run(target, &data[..cut]);
            }
            for i in 0..data.len() {
                for bit in [0x01u8, 0x20, 0x80] {
                    let mut mutated = data.clone();
                    mutated[i] ^= bit;
                    latchkey_fuzz::run(target, &mutated);
                }
            }
        }
        assert!(seeds > 0, "{target} has no seeds");
    }
}
