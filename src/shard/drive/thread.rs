//! The shard thread and its runtime: a current-thread tokio runtime and a `LocalSet`, or, for
//! `Builder::build_local`, a task of the caller's `LocalSet`.
//!
//! # Shutdown
//!
//! The runtime and `LocalSet` are dropped before `done` is signalled, so by then every socket
//! and queued payload of the shard is dropped.

use super::tick::{Startup, run};
use crate::ShardId;
use std::io;
use tokio::task::LocalSet;

/// Starts the shard thread; returns once its runtime is running.
pub(crate) fn spawn(startup: Startup) -> io::Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let name = format!("shardcast-{}", startup.id.0);
    let pin = startup.config.pin_cores;
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        if pin {
            pin_to_core(startup.id);
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        let local = LocalSet::new();
        let done = local.block_on(&runtime, run(startup));
        drop(local);
        drop(runtime);
        if let Some(done) = done {
            let _ = done.send(());
        }
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other("shard thread died while starting")),
    }
}

/// Starts the shard as a task of the current `LocalSet` (the caller's thread and clock).
pub(crate) fn spawn_local(startup: Startup) {
    tokio::task::spawn_local(async move {
        if let Some(done) = run(startup).await {
            let _ = done.send(());
        }
    });
}

fn pin_to_core(id: ShardId) {
    if let Some(cores) = core_affinity::get_core_ids()
        && !cores.is_empty()
    {
        let core = cores[id.index() % cores.len()];
        if !core_affinity::set_for_current(core) {
            tracing::warn!(shard = id.0, "could not pin shard thread to a core");
        }
    }
}
