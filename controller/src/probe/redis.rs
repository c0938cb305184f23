//! A Redis probe: PING must answer PONG, or one INFO field is read (`role`,
//! `master_link_status`) and matched.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::MAX_ANSWER;

#[derive(Debug, Clone)]
pub struct Redis {
    pub addr: SocketAddr,
    pub info: Option<String>,
    pub pattern: Option<regex_lite::Regex>,
}

impl Redis {
    pub async fn check(&self) -> Result<String, String> {
        let mut io = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let cmd: &[u8] =
            if self.info.is_some() { b"*1\r\n$4\r\nINFO\r\n" } else { b"*1\r\n$4\r\nPING\r\n" };
        io.write_all(cmd).await.map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        let reply = loop {
            let mut chunk = [0u8; 8192];
            let n = io.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_ANSWER {
                return Err(format!("an answer of more than {MAX_ANSWER} bytes"));
            }
            if let Some(r) = reply(&buf)? {
                break r;
            }
        };
        let seen = match &self.info {
            None => reply,
            Some(field) => reply
                .lines()
                .find_map(|l| l.strip_prefix(field.as_str()).and_then(|r| r.strip_prefix(':')))
                .map(str::to_owned)
                .ok_or_else(|| format!("INFO has no field {field:?}"))?,
        };
        match (&self.pattern, &self.info) {
            (Some(p), _) if !p.is_match(&seen) => {
                Err(format!("{seen:?} does not match {:?}", p.as_str()))
            }
            (None, None) if seen != "PONG" => Err(format!("PING answered {seen:?}")),
            _ => Ok(seen),
        }
    }
}

/// A whole simple-string or bulk reply's text, None while incomplete; an error reply
/// (`-LOADING`, `-NOAUTH`) is a failure.
fn reply(b: &[u8]) -> Result<Option<String>, String> {
    let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let line = String::from_utf8_lossy(&b[1..eol]).into_owned();
    match b.first() {
        Some(b'+') => Ok(Some(line)),
        Some(b'-') => Err(format!("error reply: {line}")),
        Some(b'$') => {
            let n: usize = line.parse().map_err(|_| format!("a bulk length {line:?}"))?;
            let start = eol + 2;
            Ok((b.len() >= start + n)
                .then(|| String::from_utf8_lossy(&b[start..start + n]).into_owned()))
        }
        _ => Err(format!("not a Redis reply: {}", String::from_utf8_lossy(&b[..eol.min(40)]))),
    }
}

#[cfg(test)]
mod tests {
    use super::reply;

    #[test]
    fn replies_are_read_whole() {
        assert_eq!(reply(b"+PONG\r\n").unwrap().as_deref(), Some("PONG"));
        assert_eq!(reply(b"+PO").unwrap(), None);
        assert_eq!(reply(b"$11\r\nrole:master\r\n").unwrap().as_deref(), Some("role:master"));
        assert_eq!(reply(b"$11\r\nrole:ma").unwrap(), None);
        assert!(reply(b"-LOADING Redis is loading\r\n").unwrap_err().contains("LOADING"));
        assert!(reply(b"HTTP/1.1 400\r\n").is_err());
    }
}
