//! The Redis protocol (RESP2): a GET/SET mix over keys `faultline:0..N`.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::record::{Failure, Outcome};

#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub addr: SocketAddr,
    /// Percent of requests that are SET (the rest GET).
    pub set_percent: u32,
    pub keys: u64,
    pub value: Vec<u8>,
}

pub struct RedisConn {
    io: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// A RESP command as an array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.clear();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The end of one complete reply in `b`, and whether it is an error reply.
pub fn reply_end(b: &[u8]) -> Result<Option<(usize, bool)>, Failure> {
    let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let num = || {
        std::str::from_utf8(&b[1..eol])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(Failure::Protocol)
    };
    match b.first() {
        Some(b'+' | b':') => Ok(Some((eol + 2, false))),
        Some(b'-') => Ok(Some((eol + 2, true))),
        Some(b'$') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((eol + 2, false)));
            }
            let end = eol + 2 + n as usize + 2;
            Ok((b.len() >= end).then_some((end, false)))
        }
        Some(b'*') => {
            let n = num()?;
            let mut i = eol + 2;
            let mut error = false;
            for _ in 0..n.max(0) {
                match reply_end(&b[i..])? {
                    Some((len, e)) => {
                        i += len;
                        error |= e;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((i, error)))
        }
        Some(_) => Err(Failure::Protocol),
        None => Ok(None),
    }
}

pub async fn call(t: &RedisTarget, conn: &mut Option<RedisConn>, n: u64) -> Outcome {
    if conn.is_none() {
        match TcpStream::connect(t.addr).await {
            Ok(io) => {
                let _ = io.set_nodelay(true);
                *conn = Some(RedisConn {
                    io,
                    buf: Vec::with_capacity(1024),
                    out: Vec::with_capacity(256),
                });
            }
            Err(_) => return Outcome::Failed(Failure::Connect),
        }
    }
    let c = conn.as_mut().expect("just set");
    // A fixed interleaving: request n is a SET when its place in each hundred falls
    // below the percentage, so any window of 100 requests has exactly that share.
    let key = format!("faultline:{}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % t.keys.max(1));
    if (n % 100) < u64::from(t.set_percent) {
        encode(&mut c.out, &[b"SET", key.as_bytes(), &t.value]);
    } else {
        encode(&mut c.out, &[b"GET", key.as_bytes()]);
    }
    c.buf.clear();
    let r = async {
        c.io.write_all(&c.out).await.map_err(|_| Failure::Io)?;
        loop {
            if let Some((_, error)) = reply_end(&c.buf)? {
                return Ok(error);
            }
            if c.buf.len() == c.buf.capacity() {
                c.buf.reserve(c.buf.len().max(1024));
            }
            if c.io.read_buf(&mut c.buf).await.map_err(|_| Failure::Io)? == 0 {
                return Err(Failure::Io);
            }
        }
    }
    .await;
    match r {
        Ok(false) => Outcome::Answer(0),
        Ok(true) => Outcome::Failed(Failure::Rejected),
        Err(f) => {
            *conn = None;
            Outcome::Failed(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_framed() {
        assert_eq!(reply_end(b"+OK\r\n").unwrap(), Some((5, false)));
        assert_eq!(reply_end(b"-ERR wrong\r\n").unwrap(), Some((12, true)));
        assert_eq!(reply_end(b"$-1\r\n").unwrap(), Some((5, false)));
        assert_eq!(reply_end(b"$3\r\nab").unwrap(), None);
        assert_eq!(reply_end(b"$3\r\nabc\r\n").unwrap(), Some((9, false)));
        assert_eq!(reply_end(b"*2\r\n$1\r\na\r\n:5\r\n").unwrap(), Some((15, false)));
        assert_eq!(reply_end(b"*2\r\n$1\r\na\r\n").unwrap(), None);
        assert!(reply_end(b"?\r\n").is_err());
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
