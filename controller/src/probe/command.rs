//! A command probe: a program run on the controller's host (no shell), judged by its
//! exit code and its output. Killed when the probe's timeout ends (kill on drop).

use tokio::io::AsyncReadExt;

use super::MAX_ANSWER;

#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub exit: i32,
    pub pattern: Option<regex_lite::Regex>,
}

impl Command {
    pub async fn check(&self) -> Result<String, String> {
        let mut child = tokio::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.argv[0]))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (so, se) = (child.stdout.take(), child.stderr.take());
        let read_out = async {
            if let Some(p) = so {
                let _ = p.take(MAX_ANSWER as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(p) = se {
                let _ = p.take(MAX_ANSWER as u64).read_to_end(&mut err).await;
            }
        };
        let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
        let status = status.map_err(|e| format!("wait: {e}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        let code =
            status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
        if status.code() != Some(self.exit) {
            return Err(format!("{code} (expected exit {}): {}", self.exit, text.trim()));
        }
        if let Some(p) = &self.pattern
            && !p.is_match(&text)
        {
            return Err(format!("{code}, output does not match {:?}: {}", p.as_str(), text.trim()));
        }
        Ok(format!("{code}: {}", text.trim()))
    }
}
