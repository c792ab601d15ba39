//! Hostile clients on real sockets: slow headers, slow bodies, idle
//! keep-alive connections, a body declared too large, and one address
//! holding many connections while another is served. The broker is served by
//! `baton::http::serve` on 127.0.0.1 with short timeouts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton::http::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::{basic_header, Harness, Options};

/// A broker served with `limits`; dropping `stop` (or sending on it) shuts it
/// down, and `server` ends once its connections have.
struct Served {
    harness: Harness,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

async fn serve(limits: Limits) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let harness = Harness::with(Options { issuer: format!("http://{address}"), ..Options::default() });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(baton::http::serve(listener, harness.broker.clone(), limits, async move {
        let _ = stopped.await;
    }));
    Served { harness, address, stop: Some(stop), server }
}

/// The value of one series of the broker's metrics (0 when absent).
fn metric(served: &Served, series: &str) -> u64 {
    let text = served.harness.broker.metrics().render().unwrap();
    let line = text.lines().find(|line| line.starts_with(series));
    line.and_then(|line| line.rsplit(' ').next()).map_or(0, |value| value.parse().unwrap())
}

/// Short timeouts, so that the tests wait seconds, not minutes.
fn short() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(4),
        ..Limits::default()
    }
}

/// A connection from `from` (any 127/8 address: Linux routes them all to
/// the loopback interface).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits for the server to close `stream`, reading and dropping whatever it
/// sends first; the time it took, or `None` if not closed within `bound`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Whether the server still holds `stream` open (it sent nothing and did not
/// close it), without waiting.
fn is_open(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(stream.try_read(&mut buffer), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

/// One response read from `stream` (its status, and its body as text), the
/// connection left open after it.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = received.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed before a response: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        while received.len() < head_end + length {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed in a response's body");
            received.extend_from_slice(&buffer[..read]);
        }
        (status, String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned())
    })
    .await
    .expect("no response within 10 s")
}

/// `GET /healthz` on a new connection from `from`.
async fn healthz_from(from: &str, to: SocketAddr) -> u16 {
    let mut stream = connect_from(from, to).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: baton\r\nConnection: close\r\n\r\n").await.unwrap();
    read_response(&mut stream).await.0
}

/// An agent's own token (`client_credentials`) on a new connection from `from`.
async fn token_from(from: &str, to: SocketAddr) -> (u16, String) {
    let mut stream = connect_from(from, to).await;
    let body = "grant_type=client_credentials&audience=planner";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: baton\r\nConnection: close\r\nAuthorization: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        basic_header("orchestrator", "dev-only-orchestrator-secret"),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

/// Writes `bytes` one at a time, `gap` apart, until done or the server
/// closes; in the background.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, gap: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    })
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_closed_within_the_header_timeout() {
    let served = serve(short()).await;
    // A request line and headers, a byte every 100 ms: 20 s to send all.
    let slow = b"POST /token HTTP/1.1\r\nHost: baton\r\nX-Padding: ".iter().copied().chain([b'a'; 160]).collect();
    let (mut reader, writer) = connect_from("127.0.0.1", served.address).await.into_split();
    let start = Instant::now();
    let writing = trickle(writer, slow, Duration::from_millis(100));
    let closed = closed_within(&mut reader, Duration::from_secs(10)).await;
    let took = start.elapsed();
    writing.abort();
    assert!(closed.is_some(), "a slow header held the connection for 10 s with a 1 s header timeout");
    // Not closed for anything else before the timeout.
    // (The server's timer starts at accept, a little before `start`.)
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    eprintln!("slow header: closed after {took:?} (header timeout 1 s)");

    // A connection that sends nothing at all is closed as well.
    let mut silent = connect_from("127.0.0.1", served.address).await;
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a silent connection was held for 10 s with a 1 s header timeout");
    eprintln!("silent connection: closed after {took:?}");
}

#[tokio::test]
async fn a_slow_body_is_answered_408_within_the_body_deadline() {
    let served = serve(Limits { header_timeout: Duration::from_secs(5), ..short() }).await;
    let mut stream = connect_from("127.0.0.1", served.address).await;
    let head = "POST /token HTTP/1.1\r\nHost: baton\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 100\r\n\r\ngrant_type=";
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut reader, writer) = stream.into_split();
    // The other 89 bytes, one every 200 ms: 18 s, each byte well within any
    // per-read timeout; only a deadline on the whole body stops it.
    let writing = trickle(writer, vec![b'a'; 89], Duration::from_millis(200));
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received)).await;
    let took = start.elapsed();
    writing.abort();
    assert!(outcome.is_ok(), "a slow body held the connection for 10 s with a 1 s body deadline");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"invalid_request\""), "{text}");
    assert!(took >= Duration::from_millis(500), "answered after {took:?}");
    eprintln!("slow body: answered 408 and closed after {took:?} (body deadline 1 s)");
    // Evidence: counted with the other refusals of unauthenticated requests.
    assert_eq!(metric(&served, "baton_unauthenticated_refusals_total{reason=\"body_too_slow\"}"), 1);
    assert_eq!(served.harness.broker.flush_refusals().await.unwrap(), 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let served = serve(short()).await;
    let mut stream = connect_from("127.0.0.1", served.address).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: baton\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    // Idle past the header timeout (1 s) but within the idle one (4 s): the
    // connection is still there and serves the next request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(is_open(&stream), "an idle connection was closed at the header timeout");
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    let idle_from = Instant::now();
    let took = closed_within(&mut stream, Duration::from_secs(15)).await;
    let took = took.expect("an idle keep-alive connection was held for 15 s with a 4 s idle timeout");
    assert!(took >= Duration::from_secs(3), "closed after {took:?}, before the idle timeout");
    eprintln!("idle keep-alive: closed after {:?} (idle timeout 4 s)", idle_from.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_responses_is_closed() {
    let served = serve(Limits { idle_timeout: Duration::from_secs(2), ..short() }).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(served.address).await.unwrap();
    let (_reader, mut writer) = stream.into_split();
    // Requests sent back to back, their responses never read: the server's
    // writes stall, then its reads, then ours.
    let request = b"GET /jwks HTTP/1.1\r\nHost: baton\r\n\r\n".repeat(64);
    let start = Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), async { while writer.write_all(&request).await.is_ok() {} })
            .await;
    assert!(outcome.is_ok(), "a client that reads nothing held its connection for 30 s with a 2 s idle timeout");
    eprintln!("stalled reader: closed after {:?} (idle timeout 2 s)", start.elapsed());
}

#[tokio::test]
async fn a_body_declared_over_the_cap_is_refused_at_once() {
    // A long body deadline: the answer owes nothing to it.
    let served = serve(Limits { body_timeout: Duration::from_secs(60), ..short() }).await;
    let mut stream = connect_from("127.0.0.1", served.address).await;
    let head = "POST /token HTTP/1.1\r\nHost: baton\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 67108864\r\n\r\n";
    let start = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 1024]).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    let took = start.elapsed();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"invalid_request\""), "{body}");
    // Nothing of the rest of the body is waited for.
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await.is_some(), "kept open after the 413");
    eprintln!("declared 64 MiB: 413 after {took:?}");
    assert_eq!(metric(&served, "baton_unauthenticated_refusals_total{reason=\"too_large\"}"), 1);
    assert_eq!(served.harness.broker.flush_refusals().await.unwrap(), 1);
}

/// Sees that this process may open `needed` descriptors, raising its soft
/// limit if it must.
fn allow_descriptors(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < needed) {
        let raised = limit.maximum.map_or(needed, |hard| hard.min(needed));
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum });
    }
    let soft = getrlimit(Resource::Nofile).current;
    assert!(soft.is_none_or(|soft| soft >= needed), "this test needs {needed} descriptors, the limit is {soft:?}");
}

#[tokio::test]
async fn one_address_holding_many_connections_does_not_lock_out_another() {
    const HELD: usize = 1_500;
    // The default cap: the one a broker has unless configured otherwise.
    let per_address = Limits::default().max_connections_per_address;
    // Client and server sockets, both in this process, and some to spare.
    allow_descriptors(2 * HELD as u64 + 1_000);
    // A long header timeout: the held connections stay as long as the test.
    let limits = Limits { header_timeout: Duration::from_secs(60), ..Limits::default() };
    let served = serve(limits).await;
    let start = Instant::now();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(connect_from("127.0.0.2", served.address).await);
    }
    eprintln!("{HELD} connections from 127.0.0.2 opened in {:?}", start.elapsed());
    // The server closes those over the cap as it accepts them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = HELD;
    while Instant::now() < deadline {
        open = held.iter().filter(|stream| is_open(stream)).count();
        if open <= per_address {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, per_address, "the server keeps open {open} of {HELD} connections from one address");
    // Each closed at once is counted.
    assert_eq!(metric(&served, "baton_connections_refused_total"), (HELD - per_address) as u64);

    // Meanwhile another address is served.
    let asked = Instant::now();
    assert_eq!(healthz_from("127.0.0.1", served.address).await, 200);
    let healthz_took = asked.elapsed();
    let asked = Instant::now();
    let (status, body) = token_from("127.0.0.1", served.address).await;
    let token_took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("access_token"), "{body}");
    eprintln!(
        "127.0.0.2 holds {open} of {HELD}; from 127.0.0.1 GET /healthz took {healthz_took:?}, POST /token {token_took:?}"
    );
    // And the held address itself gets no more than its share.
    let mut one_more = connect_from("127.0.0.2", served.address).await;
    assert!(closed_within(&mut one_more, Duration::from_secs(10)).await.is_some());

    // Slots come back when connections end.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect_from("127.0.0.2", served.address).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: baton\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut received = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        if received.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.2 was not served again after its connections closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_overall_cap_holds_across_addresses() {
    let limits = Limits {
        header_timeout: Duration::from_secs(60),
        max_connections: 30,
        max_connections_per_address: 20,
        ..Limits::default()
    };
    let served = serve(limits).await;
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(connect_from("127.0.0.2", served.address).await);
    }
    let mut second = Vec::new();
    for _ in 0..20 {
        second.push(connect_from("127.0.0.3", served.address).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let open = loop {
        let open_first = first.iter().filter(|stream| is_open(stream)).count();
        let open_second = second.iter().filter(|stream| is_open(stream)).count();
        if open_first + open_second <= 30 || Instant::now() > deadline {
            break (open_first, open_second);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(open, (20, 10));
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends_the_server() {
    let mut served = serve(Limits { idle_timeout: Duration::from_secs(60), ..Limits::default() }).await;
    let mut stream = connect_from("127.0.0.1", served.address).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: baton\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    served.stop.take().unwrap().send(()).unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await.is_some(), "idle connection kept at shutdown");
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut served.server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
