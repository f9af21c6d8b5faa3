//! faultproxy: a TCP proxy on loopback that delays traffic and loses replies, to put a slow or
//! flaky network between the object tier and its gateway (this kernel has no netem).
//!
//! ```text
//! faultproxy --to 127.0.0.1:7480 [--listen 127.0.0.1:0] [--delay-ms N] [--drop-replies N]
//!            [--reset-replies N]
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts connections, then one line on stderr
//! per fault. `--delay-ms` holds every chunk, either way, that long before passing it on; a
//! held chunk that opens a request is reported with the request line (`connection N: holding
//! the request "PUT /bucket/name HTTP/1.1" for D ms`), so that a test can tell that a request
//! is stalled in the middle.
//! `--drop-replies N`: the first N replies (across connections) never reach the client: when
//! the server starts answering a request, the proxy closes both sides instead. The server has
//! done the request by then; the client sees a connection closed without an answer, as when
//! a reply is lost in the network. `--reset-replies N`: the next N replies (after the dropped
//! ones) are cut after their first 12 bytes by a connection reset (RST), as when the link dies
//! mid-reply. Replies are told apart as HTTP/1.1 without pipelining has them: the server's
//! first bytes after the client sent some.
//!
//! Only loopback addresses are accepted on either side: it is a test tool.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

struct Args {
    listen: SocketAddr,
    to: SocketAddr,
    delay: Duration,
    drop_replies: usize,
    reset_replies: usize,
}

const USAGE: &str = "usage: faultproxy --to HOST:PORT [--listen HOST:PORT] [--delay-ms N] [--drop-replies N] [--reset-replies N]";

fn loopback(what: &str, s: &str) -> Result<SocketAddr, String> {
    let addr = s
        .to_socket_addrs()
        .map_err(|e| format!("{what} {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} {s:?}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{what} {s:?}: only loopback addresses (127.0.0.0/8, ::1)"
        ));
    }
    Ok(addr)
}

fn parse_args() -> Result<Args, String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut to = None;
    let mut delay_ms = 0u64;
    let mut drop_replies = 0usize;
    let mut reset_replies = 0usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--listen" => listen = value()?,
            "--to" => to = Some(value()?),
            "--delay-ms" => delay_ms = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?,
            "--drop-replies" => {
                drop_replies = value()?
                    .parse()
                    .map_err(|e| format!("--drop-replies: {e}"))?
            }
            "--reset-replies" => {
                reset_replies = value()?
                    .parse()
                    .map_err(|e| format!("--reset-replies: {e}"))?
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    let to = to.ok_or_else(|| format!("--to is required\n{USAGE}"))?;
    Ok(Args {
        listen: loopback("--listen", &listen)?,
        to: loopback("--to", &to)?,
        delay: Duration::from_millis(delay_ms),
        drop_replies,
        reset_replies,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultproxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    println!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    let _ = std::io::stdout().flush();
    let faults = Arc::new(Faults {
        drops_left: AtomicUsize::new(args.drop_replies),
        resets_left: AtomicUsize::new(args.reset_replies),
    });
    for (n, client) in listener.incoming().enumerate() {
        let Ok(client) = client else { continue };
        let server = match TcpStream::connect(args.to) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("faultproxy: connection {n}: cannot reach {}: {e}", args.to);
                continue;
            }
        };
        let (delay, faults) = (args.delay, Arc::clone(&faults));
        thread::spawn(move || relay(n, client, server, delay, &faults));
    }
    ExitCode::SUCCESS
}

struct Faults {
    drops_left: AtomicUsize,
    resets_left: AtomicUsize,
}

fn take_one(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
        .is_ok()
}

/// Closes the socket with a reset instead of an orderly FIN (SO_LINGER with a zero timeout).
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and an option value of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// The request line that `chunk` opens (`METHOD TARGET HTTP/1.x`), if it opens one.
fn request_line(chunk: &[u8]) -> Option<&str> {
    let end = chunk.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = std::str::from_utf8(&chunk[..end]).ok()?;
    let mut words = line.split(' ');
    let method = words.next()?;
    let is_request = !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && words.next().is_some()
        && words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    is_request.then_some(line)
}

fn relay(n: usize, client: TcpStream, server: TcpStream, delay: Duration, faults: &Faults) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Set when the client sent bytes the server has not answered yet.
    let asked = Arc::new(AtomicBool::new(false));
    let up = {
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let asked = Arc::clone(&asked);
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let k = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => k,
                };
                if !delay.is_zero() {
                    if let Some(line) = request_line(&buf[..k]) {
                        eprintln!(
                            "faultproxy: connection {n}: holding the request {line:?} for {} ms",
                            delay.as_millis()
                        );
                    }
                    thread::sleep(delay);
                }
                asked.store(true, Ordering::SeqCst);
                if to.write_all(&buf[..k]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let (mut from, mut to) = (server, client);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        if asked.swap(false, Ordering::SeqCst) {
            if take_one(&faults.drops_left) {
                eprintln!("faultproxy: connection {n}: dropped a reply (the server had answered)");
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                break;
            }
            if take_one(&faults.resets_left) {
                eprintln!("faultproxy: connection {n}: reset a reply after its first bytes");
                let _ = to.write_all(&buf[..k.min(12)]);
                let _ = from.shutdown(Shutdown::Both);
                // The reset goes out when the last descriptor of the client's socket closes:
                // wait for the other thread's clone (its read ends once the server side is shut).
                let _ = to.shutdown(Shutdown::Read);
                let _ = up.join();
                reset(to);
                return;
            }
        }
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if to.write_all(&buf[..k]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn a_request_line_is_told_from_other_bytes() {
        assert_eq!(
            request_line(b"PUT /b/seg/1 HTTP/1.1\r\nHost: x\r\n\r\nbody"),
            Some("PUT /b/seg/1 HTTP/1.1")
        );
        assert_eq!(request_line(b"GET / HTTP/1.1\r\n"), Some("GET / HTTP/1.1"));
        assert_eq!(request_line(b"PUT /b/seg/1 HTTP/1.1"), None, "no line end");
        assert_eq!(request_line(b"\x00\x01body bytes\r\n"), None);
        assert_eq!(request_line(b"HTTP/1.1 200 OK\r\n"), None, "a reply");
        assert_eq!(request_line(b"some body text HTTP/1.1\r\n"), None);
    }
}
