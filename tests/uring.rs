//! `Driver::IoUring`: the event loop's writes of a pass go to the kernel as one submission.
//! Every other behaviour test runs on it too when `SHARDCAST_DRIVER=io-uring` (CI does), and
//! the fallback when the kernel refuses a ring is a unit test (`shard::drive::ring`), where the ring's
//! size can be set to one the kernel refuses.
#![cfg(all(target_os = "linux", feature = "io-uring"))]

mod common;

use common::*;
use shardcast::{Audience, Driver, Engine, Payload};

/// Whether this machine lets a process set up an `io_uring` (a container's seccomp policy or
/// `kernel.io_uring_disabled` may not), asked independently of the engine.
fn kernel_has_io_uring() -> bool {
    compio_driver::Proactor::new().is_ok()
}

#[tokio::test]
async fn a_pass_flushes_its_clients_in_one_submission() {
    let shards = 2;
    let (engine, addr) = start(Engine::builder().shards(shards).driver(Driver::IoUring)).await;
    let mut clients = connect_many(&engine, addr, 40).await;
    until(
        || engine.stats().total.event_loop_connections == 40,
        || format!("{:?}", engine.stats().total),
    )
    .await;
    let rings = engine.stats().total.io_uring_rings;
    if !kernel_has_io_uring() {
        // The driver fell back, every shard of it, and still serves (below).
        assert_eq!(rings, 0, "a ring where the kernel refuses one");
    } else {
        assert_eq!(rings, shards as u64, "every shard has its ring");
    }
    let before = engine.stats().total;
    for i in 0..3 {
        engine
            .broadcast(Payload::text(format!("frame {i}")), Audience::ALL)
            .await
            .expect("broadcast");
        for ws in &mut clients {
            assert_eq!(next_text(ws).await, format!("frame {i}"));
        }
    }
    // The shard counts a send once its submission returns: the clients may have read it first.
    until(
        || engine.stats().total.write_syscalls - before.write_syscalls >= 120,
        || format!("{:?}", engine.stats().total),
    )
    .await;
    let after = engine.stats().total;
    let sends = after.write_syscalls - before.write_syscalls;
    let submissions = after.io_uring_submissions - before.io_uring_submissions;
    assert!(sends >= 120, "{sends} sends for 3 frames to 40 clients");
    if rings > 0 {
        // 20 clients a shard, each frame flushed in one pass, 16 sends a submission: two
        // submissions for 20 sends. Fewer than 4 sends a submission would mean the batching
        // is gone.
        assert!(
            submissions > 0 && sends >= 4 * submissions,
            "{sends} sends in {submissions} submissions"
        );
    } else {
        assert_eq!(submissions, 0);
    }
}

#[tokio::test]
async fn large_frames_and_full_sockets_go_out_whole_and_in_order() {
    // Frames larger than `copy_bytes_max` go as shared parts of a vectored send; a client that
    // does not read fills its socket, so sends come back short or would-block, and the rest
    // waits for the writable event. Every byte arrives in order once it reads.
    let (engine, addr) = start(
        Engine::builder()
            .shards(1)
            .driver(Driver::IoUring)
            .client_queue_bytes_max(64 << 20),
    )
    .await;
    let mut clients = connect_many(&engine, addr, 3).await;
    let frames = 64;
    for i in 0..frames {
        let body = format!("{i:04}").repeat(4096); // 16 KiB
        engine
            .broadcast(Payload::text(body), Audience::ALL)
            .await
            .expect("broadcast");
    }
    for ws in &mut clients {
        for i in 0..frames {
            let text = next_text(ws).await;
            assert_eq!(text.len(), 16384);
            assert!(
                text.starts_with(&format!("{i:04}")),
                "frame {i} out of order"
            );
        }
    }
}
