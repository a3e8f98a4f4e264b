//! `Builder::build` refuses settings out of range, naming the field, and starts nothing.

use shardcast::{BuildError, Coalescing, Engine};
use std::time::Duration;

fn refused_field(result: Result<Engine, BuildError>) -> &'static str {
    match result {
        Err(BuildError::Invalid { field, .. }) => field,
        Err(other) => panic!("expected an invalid setting, got {other}"),
        Ok(_) => panic!("expected an invalid setting, the engine was built"),
    }
}

#[test]
fn every_out_of_range_setting_is_refused_by_name() {
    let b = Engine::builder;
    assert_eq!(refused_field(b().shards(0).build()), "shards");
    assert_eq!(refused_field(b().shards(1025).build()), "shards");
    assert_eq!(
        refused_field(b().shard_queue_capacity(0).build()),
        "shard_queue_capacity"
    );
    assert_eq!(refused_field(b().clients_max(0).build()), "clients_max");
    assert_eq!(
        refused_field(b().client_queue_bytes_max(10).build()),
        "client_queue_bytes_max"
    );
    assert_eq!(
        refused_field(b().heartbeat_timeout(Duration::ZERO).build()),
        "heartbeat_timeout"
    );
    assert_eq!(
        refused_field(b().sweep_interval(Duration::ZERO).build()),
        "sweep_interval"
    );
    assert_eq!(
        refused_field(b().auth_deadline(Some(Duration::ZERO)).build()),
        "auth_deadline"
    );
    assert_eq!(
        refused_field(b().frame_bytes_max(10).build()),
        "frame_bytes_max"
    );
    assert_eq!(
        refused_field(b().frame_bytes_max(4096).message_bytes_max(1024).build()),
        "message_bytes_max"
    );
    assert_eq!(
        refused_field(b().handshake_bytes_max(16).build()),
        "handshake_bytes_max"
    );
    assert_eq!(
        refused_field(
            b().coalescing(Coalescing {
                frames_max: 0,
                ..Coalescing::BALANCED
            })
            .build()
        ),
        "coalescing"
    );
    assert_eq!(
        refused_field(b().envelope_bytes_max(8).build()),
        "envelope_bytes_max"
    );
    assert_eq!(
        refused_field(b().read_buffer_bytes(100).build()),
        "read_buffer_bytes"
    );
    assert_eq!(
        refused_field(b().copy_bytes_max(8192).write_buffer_bytes(4096).build()),
        "write_buffer_bytes"
    );
    assert_eq!(
        refused_field(b().allowed_origins(Some(Vec::new())).build()),
        "allowed_origins"
    );
    for (result, field) in [
        (
            b().bridge_outbound_capacity(0).build(),
            "bridge_outbound_capacity",
        ),
        (
            b().bridge_inbound_capacity(0).build(),
            "bridge_inbound_capacity",
        ),
        (
            b().bridge_outbound_bytes_max(0).build(),
            "bridge_outbound_bytes_max",
        ),
        (
            b().bridge_inbound_bytes_max(0).build(),
            "bridge_inbound_bytes_max",
        ),
    ] {
        assert_eq!(refused_field(result), field);
    }
}

#[test]
fn a_refusal_says_which_setting_and_why() {
    let err = Engine::builder().shards(0).build().expect_err("refused");
    assert_eq!(err.to_string(), "invalid shards: must be 1 to 1024");
}

#[tokio::test]
async fn defaults_build_and_are_the_documented_ones() {
    let engine = Engine::builder().build().expect("defaults build");
    let c = engine.config();
    assert_eq!(c.client_queue_bytes_max, 1 << 20);
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(20));
    assert_eq!(c.sweep_interval, Duration::from_secs(5));
    assert_eq!(c.message_bytes_max, 64 << 10);
    assert_eq!(c.frame_bytes_max, 64 << 10);
    assert_eq!(c.coalescing, Coalescing::PER_TICK);
    assert_eq!(c.bridge_outbound_bytes_max, 64 << 20);
    assert_eq!(c.bridge_inbound_bytes_max, 64 << 20);
    assert_eq!(
        engine.shard_count(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    engine.shutdown(Duration::from_millis(100)).await;
}
