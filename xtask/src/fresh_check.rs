//! `cargo xtask fresh-check`: README's commands as a fresh machine would run them. A green
//! CI on a machine that had a tool from an earlier manual install proves nothing, so this
//! takes the committed tree only (a `git clone` of HEAD, no target/ directory: no kernels,
//! root file systems or builds carried over) and, with `--purge`, first removes every
//! package setup would install that the machine's fresh image does not have, and the
//! bpf-linker build. Then it runs `.ci/run` (README's test command, which ends with the
//! demo, README's first command) in the clone and reports how long it took.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{codegen::workspace_root, setup::run_cmd, tools};

/// The package list of the image this machine kind boots from (the workplace's record of a
/// fresh machine). Other machines can name theirs with --fresh-list.
pub const FRESH_LIST: &str = "/usr/share/package-lists/installed-rust.txt";

fn fresh_packages(list: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(list).with_context(|| {
        format!(
            "reading {} (give --fresh-list FILE: lines `apt<TAB>package<TAB>version`)",
            list.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some("apt"))
                .then(|| f.next().unwrap_or("").split(':').next().unwrap_or("").to_owned())
        })
        .collect())
}

/// Packages setup installs that the fresh image lacks: what a purge must remove.
fn purgeable(fresh: &[String]) -> Vec<&'static str> {
    let mut out: Vec<&str> = tools::TOOLS
        .iter()
        .filter_map(|t| match t.source {
            tools::Source::Apt(p) => Some(p),
            _ => None,
        })
        .chain(tools::APT_EXTRA.iter().map(|(p, _)| *p))
        .filter(|p| !fresh.iter().any(|f| f == p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub fn run(purge: bool, fresh_list: &Path) -> Result<()> {
    let ws = workspace_root();
    if !String::from_utf8_lossy(
        &Command::new("git").args(["status", "--porcelain"]).current_dir(&ws).output()?.stdout,
    )
    .trim()
    .is_empty()
    {
        println!("fresh-check: uncommitted changes are not checked (the clone takes HEAD)");
    }
    if purge {
        let fresh = fresh_packages(fresh_list)?;
        let installed: Vec<&str> = purgeable(&fresh)
            .into_iter()
            .filter(|p| {
                Command::new("dpkg").args(["-s", p]).output().is_ok_and(|o| o.status.success())
            })
            .collect();
        // Their dependencies stay (no autoremove): an orphan the fresh image had as automatic
        // must not vanish, and a dependency kept cannot stand in for a listed program.
        if !installed.is_empty() {
            println!("fresh-check: apt-get purge {}", installed.join(" "));
            run_cmd(
                Command::new("apt-get")
                    .args(["purge", "-y", "-q"])
                    .args(&installed)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let linker = Path::new(&home).join(".cargo/bin/bpf-linker");
        if linker.exists() {
            std::fs::remove_file(&linker)?;
            println!("fresh-check: removed {}", linker.display());
        }
    }
    let clone = ws.join("target/fresh-check");
    if clone.exists() {
        std::fs::remove_dir_all(&clone)?;
    }
    run_cmd(Command::new("git").args(["clone", "--quiet", "--no-hardlinks"]).arg(&ws).arg(&clone))?;
    // CI puts ../shared beside the clone; the tests do not read it, but keep the shape.
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(".ci/run")
        .current_dir(&clone)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running .ci/run in the clone")?;
    let took = started.elapsed();
    println!(
        "fresh-check: .ci/run in a clean clone of HEAD {} after {:.1} min",
        if status.success() { "passed" } else { "FAILED" },
        took.as_secs_f64() / 60.0
    );
    if !status.success() {
        bail!(".ci/run failed in {}", clone.display());
    }
    std::fs::remove_dir_all(&clone)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_never_touches_what_the_fresh_image_has() {
        let fresh = vec!["iproute2".to_owned(), "qemu-utils".to_owned(), "systemd".to_owned()];
        let p = purgeable(&fresh);
        assert!(
            p.contains(&"nginx")
                && p.contains(&"vagrant-libvirt")
                && p.contains(&"qemu-system-x86")
        );
        assert!(!p.contains(&"iproute2") && !p.contains(&"qemu-utils") && !p.contains(&"systemd"));
    }
}
