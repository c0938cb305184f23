//! Files the `faultline` command reads for the user who runs it (`--body @FILE`,
//! `--cacert`, `--peers-file`): bounded in size, regular files only, so a device, a FIFO or
//! `/proc/self/fd/N` cannot make it wait forever or fill memory. Nothing a remote caller
//! sends reaches this module: the controller refuses paths in what callers send
//! (`load::args::Files::Refused`), it never opens them.

use std::io::Read;

/// Reads `path` whole if it is a regular file of at most `max` bytes; the error names
/// `field` and says why.
pub fn read(path: &std::path::Path, max: u64, field: &str) -> Result<Vec<u8>, String> {
    let shown = path.display();
    // Non-blocking open: a FIFO with no writer must not hold us before the check below.
    let file = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        nix::fcntl::OFlag::O_NONBLOCK.bits(),
    )
    .open(path)
    .map_err(|e| format!("{field}: {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{field}: {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{field}: {shown}: not a regular file"));
    }
    if meta.len() > max {
        return Err(format!("{field}: {shown}: {} bytes; at most {max}", meta.len()));
    }
    let mut out = Vec::new();
    // The size can grow after the check (a log being written): read no more than allowed.
    file.take(max + 1).read_to_end(&mut out).map_err(|e| format!("{field}: {shown}: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!("{field}: {shown}: more than {max} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_large_files_are_refused_naming_the_field() {
        let e = read(std::path::Path::new("/dev/zero"), 1024, "--body").unwrap_err();
        assert!(e.starts_with("--body: /dev/zero") && e.contains("not a regular file"), "{e}");
        let dir = std::env::temp_dir().join(format!("faultline-localfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // No writer: a blocking open would wait here for ever.
        let e = read(&fifo, 1024, "--body").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(read(&big, 1024, "--cacert").unwrap_err().contains("2048 bytes; at most 1024"));
        assert_eq!(read(&big, 4096, "--cacert").unwrap().len(), 2048);
        assert!(read(&dir.join("none"), 10, "--body").unwrap_err().starts_with("--body: "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
