//! Seed replay: every target on the inputs committed under `tests/fuzz_seeds/<target>/`, so that
//! plain `cargo test` (stable) runs them.

use std::path::Path;

/// Runs `target` on every file in `tests/fuzz_seeds/<name>/`; fails if there is none.
fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_seeds")).join(name);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    let failed: Vec<String> = paths
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("seed file");
            std::panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "seeds failed: {failed:#?}");
}

#[test]
fn client_frames_seeds_pass() {
    replay("client_frames", super::client_frames);
}

#[test]
fn server_frames_seeds_pass() {
    replay("server_frames", super::server_frames);
}

#[test]
fn batch_envelope_seeds_pass() {
    replay("batch_envelope", super::batch_envelope);
}

#[test]
fn broker_message_seeds_pass() {
    replay("broker_message", super::broker_message);
}

#[test]
fn handshake_seeds_pass() {
    replay("handshake", super::handshake);
}

#[test]
fn shard_ops_seeds_pass() {
    replay("shard_ops", super::shard_ops);
}

#[test]
fn deflate_offer_seeds_pass() {
    replay("deflate_offer", super::deflate_offer);
}

#[test]
fn compressed_frames_seeds_pass() {
    replay("compressed_frames", super::compressed_frames);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    /// Random inputs besides the seeds, at every `cargo test`: the fuzzer's job in small.
    #[test]
    fn broker_message_holds_on_random_inputs(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 2..300)) {
        super::broker_message(&data);
    }

    #[test]
    fn shard_ops_holds_on_random_inputs(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 6..600)) {
        super::shard_ops(&data);
    }
}
