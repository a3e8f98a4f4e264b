//! Pinned shards run on one core each. (A file of its own: the test reads every thread of the
//! process, so no other engine may run beside it.)

mod common;

use std::time::Duration;

#[cfg(target_os = "linux")]
#[tokio::test]
async fn pinned_shards_are_bound_to_one_core_each() {
    let engine = common::builder()
        .shards(2)
        .pin_cores(true)
        .build()
        .expect("engine");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pinned = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let path = task.expect("task").path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim().starts_with("shardcast-") {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).expect("status");
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_owned();
        pinned.push((name.trim().to_owned(), allowed));
    }
    pinned.sort();
    assert_eq!(pinned.len(), 2, "shard threads: {pinned:?}");
    for (i, (_, allowed)) in pinned.iter().enumerate() {
        // Shard i is pinned to the i-th core the process may use (i modulo their number).
        assert!(
            !allowed.contains(['-', ',']),
            "shard {i} allowed on {allowed}"
        );
        if cores > 1 {
            assert_ne!(
                pinned[0].1, pinned[1].1,
                "both shards on one core: {pinned:?}"
            );
        }
    }
    engine.shutdown(Duration::from_millis(100)).await;
}
