//! Raw TCP: a connect alone, or bytes sent and an expected answer read back.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::record::{Failure, Outcome};

#[derive(Debug, Clone)]
pub struct TcpTarget {
    pub addr: SocketAddr,
    /// None: the request is the connect itself (and the connection is closed).
    pub send: Option<Vec<u8>>,
    /// Read until these bytes have arrived (empty: until the first byte).
    pub expect: Vec<u8>,
    pub reuse: bool,
}

pub struct TcpConn {
    io: TcpStream,
    buf: Vec<u8>,
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let io = TcpStream::connect(addr).await.map_err(|_| Failure::Connect)?;
    let _ = io.set_nodelay(true);
    Ok(io)
}

pub async fn call(t: &TcpTarget, conn: &mut Option<TcpConn>) -> Outcome {
    let Some(send) = &t.send else {
        return match connect(t.addr).await {
            Ok(_) => Outcome::Answer(0),
            Err(f) => Outcome::Failed(f),
        };
    };
    if conn.is_none() {
        match connect(t.addr).await {
            Ok(io) => *conn = Some(TcpConn { io, buf: Vec::with_capacity(1024) }),
            Err(f) => return Outcome::Failed(f),
        }
    }
    let c = conn.as_mut().expect("just set");
    c.buf.clear();
    let outcome = async {
        c.io.write_all(send).await.map_err(|_| Failure::Io)?;
        loop {
            if c.buf.len() == c.buf.capacity() {
                c.buf.reserve(c.buf.len().max(1024));
            }
            if c.io.read_buf(&mut c.buf).await.map_err(|_| Failure::Io)? == 0 {
                return Err(Failure::Io);
            }
            if t.expect.is_empty()
                || c.buf.windows(t.expect.len()).any(|w| w == t.expect.as_slice())
            {
                return Ok(());
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            if !t.reuse {
                *conn = None;
            }
            Outcome::Answer(0)
        }
        Err(f) => {
            *conn = None;
            Outcome::Failed(f)
        }
    }
}
