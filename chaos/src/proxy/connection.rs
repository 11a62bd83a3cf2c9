//! One proxied connection: dials the target, then pumps each direction through a bounded FIFO
//! queue of release-timed chunks, asking the [`Link`] what each fault does to each chunk. Owns the
//! two sockets, and resets both (zero linger) when a drop, a heal or an I/O error ends it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{Direction, Link, Verdict, CHUNK_BYTES, QUEUE_CHUNKS};

/// Loopback targets answer at once or not at all; this only bounds a wedged accept backlog.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection must end abruptly: reset both sides.
struct Abort;

/// Removes the connection from the link's table however the task ends, including when aborted.
struct Registration<'a> {
    link: &'a Link,
    id: u64,
    kill: Arc<Notify>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.link.deregister(self.id);
    }
}

/// Serves one accepted connection until both directions have closed or it is aborted.
pub(super) async fn serve(mut client: TcpStream, target: SocketAddr, link: Arc<Link>) {
    let (id, kill) = link.register();
    let registration = Registration { link: &link, id, kill };
    let _ = client.set_nodelay(true);
    let server = tokio::select! {
        connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)) => connected,
        () = registration.kill.notified() => return reset(&client),
    };
    let mut server = match server {
        Ok(Ok(server)) => server,
        Ok(Err(_)) | Err(_) => {
            link.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            return unreachable_target(&registration, client).await;
        }
    };
    let _ = server.set_nodelay(true);
    let ended = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(&link, id, Direction::Up, client_read, server_write);
        let down = pump(&link, id, Direction::Down, server_read, client_write);
        tokio::select! {
            ended = async { tokio::try_join!(up, down) } => ended.map(|_| ()),
            () = registration.kill.notified() => Err(Abort),
        }
    };
    if ended.is_err() {
        reset(&client);
        reset(&server);
    }
}

/// The target refused. Behind an `Up` cut the dialer cannot know that: it keeps the connection
/// and blackholes what it sends until the cut heals (which then resets it, as it lost bytes) or the
/// proxy shuts down. Otherwise it is reset at once, the nearest thing to a refused connection.
async fn unreachable_target(registration: &Registration<'_>, mut client: TcpStream) {
    let link = registration.link;
    if link.deliverable(registration.id, Direction::Up, None) {
        return reset(&client);
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let swallow = async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if link.deliverable(registration.id, Direction::Up, Some(n)) {
                        // Healed between the kill signal and this read: nothing to forward to.
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = swallow => {}
        () = registration.kill.notified() => {}
    }
    reset(&client);
}

/// Closes with RST rather than FIN, so the peer fails fast instead of reading a clean end.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Moves bytes one way until EOF (forwarded as a FIN after the queue drains) or an abort.
async fn pump(
    link: &Link,
    id: u64,
    direction: Direction,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
) -> Result<(), Abort> {
    let (queue, mut released) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = from.read(&mut buf).await.map_err(|_| Abort)?;
            if n == 0 {
                // Dropping `queue` lets the writer drain and then forward the FIN.
                return Ok(());
            }
            match link.admit(id, direction, n) {
                Verdict::Forward(at) => {
                    if queue.send((at, buf[..n].to_vec())).await.is_err() {
                        // The writer has already failed and is reporting it.
                        return Ok(());
                    }
                }
                Verdict::Blackhole => {}
                Verdict::Abort => return Err(Abort),
            }
        }
    };
    let write = async move {
        // FIFO with release times: a later chunk never overtakes an earlier one.
        while let Some((at, chunk)) = released.recv().await {
            tokio::time::sleep_until(at).await;
            if link.deliverable(id, direction, Some(chunk.len())) {
                to.write_all(&chunk).await.map_err(|_| Abort)?;
                link.forwarded(direction, chunk.len());
            }
        }
        if link.deliverable(id, direction, None) {
            to.shutdown().await.map_err(|_| Abort)?;
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}
