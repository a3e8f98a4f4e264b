//! `Engine::listen` refuses an address another socket already listens on, naming it, even when
//! `SO_REUSEPORT` would let it share the port; it still binds ephemeral ports, host names, and
//! a port whose last connections are in TIME_WAIT.

mod common;

use common::*;
use shardcast::ListenError;
use std::net::SocketAddr;
use std::time::Duration;

/// The address a refused `listen` names, or a panic saying what happened instead.
fn refused_address(result: Result<SocketAddr, ListenError>) -> SocketAddr {
    match result {
        Err(ListenError::AddrInUse(addr)) => {
            let message = ListenError::AddrInUse(addr).to_string();
            assert_eq!(message, format!("address {addr} is already in use"));
            addr
        }
        Err(other) => panic!("expected the address to be refused as in use, got {other}"),
        Ok(addr) => panic!("expected the address to be refused as in use, listening on {addr}"),
    }
}

#[tokio::test]
async fn listen_refuses_an_address_a_plain_listener_holds_and_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let engine = builder().shards(2).build().unwrap();

    assert_eq!(refused_address(engine.listen(addr).await), addr);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_second_engine_cannot_listen_on_the_port_of_the_first() {
    let (first, addr) = start(builder().shards(2)).await;
    let second = builder().shards(2).build().unwrap();

    assert_eq!(refused_address(second.listen(addr).await), addr);
    // The first engine still owns every connection to its port.
    let _client = connect(&first, addr).await;
    assert_eq!(first.client_count(), 1);
    assert_eq!(second.connection_count(), 0);
    second.shutdown(Duration::from_secs(1)).await;
    first.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_same_engine_cannot_listen_twice_on_one_port() {
    let (engine, addr) = start(builder().shards(2)).await;

    assert_eq!(refused_address(engine.listen(addr).await), addr);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn listen_on_port_zero_binds_every_shard_to_one_free_port() {
    let (engine, addr) = start(builder().shards(3)).await;

    assert_ne!(addr.port(), 0);
    let clients = connect_many(&engine, addr, 6).await;
    assert_eq!(engine.client_count(), clients.len());
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn listen_resolves_a_host_name() {
    let engine = builder().shards(2).build().unwrap();

    let addr = engine
        .listen("localhost:0")
        .await
        .expect("localhost resolves");
    assert!(addr.ip().is_loopback(), "{addr} is a loopback address");
    let _client = connect(&engine, addr).await;
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_port_left_in_time_wait_by_a_stopped_engine_can_be_listened_on_again() {
    let (engine, addr) = start(builder().shards(2)).await;
    let mut client = connect(&engine, addr).await;
    // The server closes first, so its side of the connection is the one left in TIME_WAIT.
    engine.shutdown(Duration::from_secs(1)).await;
    assert_eq!(close_code(&mut client).await, Some(1001));
    drop(client);

    let again = builder().shards(2).build().unwrap();
    assert_eq!(again.listen(addr).await.expect("listen again"), addr);
    again.shutdown(Duration::from_secs(1)).await;
}
