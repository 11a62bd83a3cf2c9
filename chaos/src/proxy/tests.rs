//! The proxy against a real echo server on loopback: pass-through, cuts and heals in each direction,
//! delays that keep order, drops that reset, and shutdown. Every test is bounded by [`LIMIT`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::*;

/// No test may take longer than this, whatever the bug.
const LIMIT: Duration = Duration::from_secs(3);
/// How long "no reply" is awaited before concluding the bytes were blackholed.
const SILENCE: Duration = Duration::from_millis(200);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    timeout(LIMIT, test).await.expect("test exceeded its time bound")
}

/// An echo server on loopback; aborting the handle stops it.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut echoes = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            echoes.spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, task)
}

/// A proxy in front of a fresh echo server.
async fn echo_proxy() -> (FaultProxy, JoinHandle<()>) {
    let (target, echo) = echo_server().await;
    (FaultProxy::start(target, 7).await.unwrap(), echo)
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut reply = vec![0u8; message.len()];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// True if the peer closed or reset the connection.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
}

/// True if nothing came back within [`SILENCE`].
async fn silent(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    timeout(SILENCE, stream.read(&mut byte)).await.is_err()
}

#[tokio::test]
async fn pass_through_echoes_many_messages_on_concurrent_connections() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let addr = proxy.local_addr();
        let clients = (0..4u8).map(|c| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut sent = 0;
                for i in 0..50usize {
                    // Mostly small messages, and one larger than a chunk.
                    let len = if i == 25 { 3 * CHUNK_BYTES + 17 } else { 1 + i * 31 };
                    let message: Vec<u8> = (0..len).map(|b| (b as u8) ^ c).collect();
                    assert_eq!(round_trip(&mut stream, &message).await.unwrap(), message);
                    sent += len as u64;
                }
                sent
            })
        });
        let mut total = 0;
        for client in clients.collect::<Vec<_>>() {
            total += client.await.unwrap();
        }
        let stats = proxy.stats();
        assert_eq!((stats.bytes_up, stats.bytes_down), (total, total));
        assert_eq!(stats.connections_accepted, 4);
        assert_eq!(stats.connections_aborted + stats.chunks_blackholed, 0);
    })
    .await;
}

#[tokio::test]
async fn up_cut_accepts_but_blackholes_requests_until_heal_resets_them() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let control = proxy.control();
        control.set(Direction::Up, Fault::Cut);
        let mut cut = TcpStream::connect(proxy.local_addr()).await.unwrap();
        cut.write_all(b"request").await.unwrap();
        assert!(silent(&mut cut).await, "a cut link must not answer");
        let stats = proxy.stats();
        assert_eq!((stats.bytes_up, stats.chunks_blackholed, stats.bytes_blackholed), (0, 1, 7));

        control.heal();
        assert!(closed(&mut cut).await, "a connection that lost bytes is reset at heal");
        let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after heal").await.unwrap(), b"after heal");
        assert_eq!(proxy.stats().connections_closed_on_heal, 1);
    })
    .await;
}

#[tokio::test]
async fn down_cut_blackholes_replies_until_heal_resets_them() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let control = proxy.control();
        let mut idle = TcpStream::connect(proxy.local_addr()).await.unwrap();
        control.set(Direction::Down, Fault::Cut);
        let mut cut = TcpStream::connect(proxy.local_addr()).await.unwrap();
        cut.write_all(b"request").await.unwrap();
        assert!(silent(&mut cut).await, "a reply on a cut link must not arrive");
        let stats = proxy.stats();
        assert_eq!((stats.bytes_up, stats.bytes_down, stats.bytes_blackholed), (7, 0, 7));

        control.heal();
        assert!(closed(&mut cut).await, "a connection that lost bytes is reset at heal");
        assert_eq!(round_trip(&mut idle, b"lost nothing").await.unwrap(), b"lost nothing");
        let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after heal").await.unwrap(), b"after heal");
    })
    .await;
}

#[tokio::test]
async fn delay_on_up_holds_each_request_at_least_the_mean() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let mean = Duration::from_millis(75);
        proxy.control().set(Direction::Up, Fault::Delay { mean, jitter: Duration::ZERO });
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        for _ in 0..2 {
            let started = Instant::now();
            assert_eq!(round_trip(&mut stream, b"slow").await.unwrap(), b"slow");
            assert!(started.elapsed() >= mean, "round trip took only {:?}", started.elapsed());
        }
    })
    .await;
}

#[tokio::test]
async fn jittered_delay_keeps_a_numbered_stream_in_order() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let delay = Fault::Delay { mean: Duration::from_millis(20), jitter: Duration::from_millis(15) };
        for direction in Direction::BOTH {
            proxy.control().set(direction, delay.clone());
        }
        let stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        const COUNT: u32 = 100;
        let writer = tokio::spawn(async move {
            for n in 0..COUNT {
                write.write_all(&n.to_be_bytes()).await.unwrap();
                // Separate writes, so that most numbers travel as chunks of their own.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            write
        });
        for expected in 0..COUNT {
            let mut number = [0u8; 4];
            read.read_exact(&mut number).await.unwrap();
            assert_eq!(u32::from_be_bytes(number), expected);
        }
        drop(writer.await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn certain_drop_resets_the_connection() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        proxy.control().set(Direction::Up, Fault::Drop { probability: 1.0 });
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        stream.write_all(b"lost").await.unwrap();
        assert!(closed(&mut stream).await);
        let stats = proxy.stats();
        assert_eq!((stats.chunks_dropped, stats.connections_aborted, stats.bytes_up), (1, 1, 0));
    })
    .await;
}

#[tokio::test]
async fn zero_probability_drop_never_resets() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        for direction in Direction::BOTH {
            proxy.control().set(direction, Fault::Drop { probability: 0.0 });
        }
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        for i in 0..200u32 {
            let message = i.to_be_bytes();
            assert_eq!(round_trip(&mut stream, &message).await.unwrap(), message);
        }
        assert_eq!(proxy.stats().connections_aborted, 0);
        assert_eq!(proxy.stats().bytes_down, 800);
    })
    .await;
}

#[tokio::test]
async fn heal_restores_pass_through_in_both_directions() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let control = proxy.control();
        control.set(Direction::Up, Fault::Drop { probability: 1.0 });
        control.set(Direction::Down, Fault::Delay { mean: Duration::from_secs(10), jitter: Duration::ZERO });
        control.heal();
        assert_eq!((control.get(Direction::Up), control.get(Direction::Down)), (Fault::None, Fault::None));
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"clean").await.unwrap(), b"clean");
        let stats = proxy.stats();
        assert_eq!((stats.bytes_up, stats.bytes_down, stats.connections_aborted), (5, 5, 0));
    })
    .await;
}

#[tokio::test]
async fn unreachable_target_resets_unless_up_is_cut() {
    bounded(async {
        // A port nobody listens on any more.
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxy = FaultProxy::start(target, 1).await.unwrap();
        let mut refused = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert!(closed(&mut refused).await);

        proxy.control().set(Direction::Up, Fault::Cut);
        let mut cut = TcpStream::connect(proxy.local_addr()).await.unwrap();
        cut.write_all(b"anyone?").await.unwrap();
        assert!(silent(&mut cut).await, "behind a cut, a dead target looks like a silent one");
        proxy.control().heal();
        assert!(closed(&mut cut).await);
        assert_eq!(proxy.stats().target_connect_failures, 2);
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_accepting() {
    bounded(async {
        let (proxy, _echo) = echo_proxy().await;
        let addr = proxy.local_addr();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hi").await.unwrap(), b"hi");
        let control = proxy.control();
        proxy.shutdown();
        assert!(closed(&mut stream).await);
        assert!(TcpStream::connect(addr).await.is_err());
        assert_eq!(control.stats().connections_open, 0);
    })
    .await;
}

#[test]
fn rng_jitter_stays_within_bounds_and_chance_honours_the_extremes() {
    let mut rng = Rng::new(42);
    let (mean, jitter) = (Duration::from_millis(75), Duration::from_millis(50));
    for _ in 0..1000 {
        let delay = rng.jittered(mean, jitter);
        assert!(delay >= mean - jitter && delay <= mean + jitter, "{delay:?}");
        assert!(rng.chance(1.0) && !rng.chance(0.0));
    }
    assert!(rng.jittered(Duration::from_millis(10), Duration::from_millis(50)) <= Duration::from_millis(60));
}
