//! What one small `write` to a loopback TCP socket costs on this machine, the floor under every
//! fan-out figure: `cargo run --release --example send_cost -- 1000` writes 34-byte frames
//! round-robin to that many connected sockets (another thread reads them) and prints the
//! writer's CPU time per write (Linux: `/proc/thread-self/schedstat`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes in total.
const WRITES: usize = 200_000;
/// Bytes per write: a 32-byte payload with its 2-byte header.
const FRAME: usize = 34;

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable schedstat"))
}

fn main() -> std::io::Result<()> {
    let conns: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..conns {
        let client = TcpStream::connect(addr)?;
        client.set_nodelay(true)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        writers.push(server);
        readers.push(client);
    }
    let per_conn = WRITES / conns * FRAME;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        for r in readers.iter_mut() {
            let mut got = 0;
            while got < per_conn {
                got += r.read(&mut buf)?;
            }
        }
        Ok(())
    });
    let frame = [0u8; FRAME];
    let writes = WRITES / conns * conns;
    let (wall, cpu) = (Instant::now(), thread_cpu_ns()?);
    for i in 0..writes {
        writers[i % conns].write_all(&frame)?;
    }
    let (cpu, wall) = (thread_cpu_ns()? - cpu, wall.elapsed());
    reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    println!(
        "{conns} socket(s): {:.0} ns of CPU and {:.0} ns of wall time per write",
        cpu as f64 / writes as f64,
        wall.as_nanos() as f64 / writes as f64
    );
    Ok(())
}
