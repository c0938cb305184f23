//! `cargo xtask vm-systemd`: the units run for real. A Debian rootfs made by debootstrap
//! (systemd as PID 1) on a virtio disk, faultline installed into it by dist/install.sh, the
//! Debian kernel under qemu (TCG); a oneshot unit runs xtask/vm/systemd-test.sh, which
//! reports "vm-test:" lines on the console.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{codegen::workspace_root, setup::run_cmd};

/// What the VMs need besides a minimal Debian: systemd as init, iproute2 and tc, kmod
/// (the kernel loads `sch_netem` through modprobe), ping, procps; nginx and redis for the
/// VM lab's system under test.
const PACKAGES: &str = "systemd,systemd-sysv,iproute2,kmod,iputils-ping,procps,nginx,redis-server";
/// Stage 1 mounts the disk with these (and what they depend on); the rest is modprobe's.
/// `virtio_net` too: without udev in the image nothing else would load it.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4"];
const STAGE1_APPLETS: &[&str] =
    &["sh", "mount", "umount", "insmod", "mkdir", "sleep", "echo", "switch_root", "cat"];

const TEST_UNIT: &str = "[Unit]
Description=faultline: the installed units under systemd
After=faultline-agent.service faultline-controller.service

[Service]
Type=oneshot
ExecStart=/usr/local/bin/faultline-systemd-test
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
";

/// A minimal Debian bookworm with systemd, made once and kept in target/vm.
fn rootfs() -> Result<PathBuf> {
    let dir = workspace_root().join("target/vm/rootfs-bookworm");
    let marker = dir.join(".faultline-rootfs");
    if std::fs::read_to_string(&marker).is_ok_and(|p| p == PACKAGES) {
        return Ok(dir);
    }
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&dir);
    println!("vm-systemd: debootstrap bookworm ({PACKAGES})");
    run_cmd(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PACKAGES}"), "bookworm"])
            .arg(&tmp)
            .arg(crate::setup::debian_uri()?),
    )?;
    std::fs::write(tmp.join(".faultline-rootfs"), PACKAGES)?;
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// Modules in load order: each one's dependencies (from modules.dep) before it.
fn load_order(dep_file: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dep_file)
        .with_context(|| format!("reading {}", dep_file.display()))?;
    let deps: BTreeMap<String, Vec<String>> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.to_owned(), d.split_whitespace().map(str::to_owned).collect()))
        .collect();
    let by_name = |name: &str| {
        deps.keys()
            .find(|k| {
                Path::new(k).file_name().and_then(|f| f.to_str()).is_some_and(|f| {
                    f.split('.').next() == Some(name)
                        || f.split('.').next() == Some(&name.replace('_', "-"))
                })
            })
            .cloned()
    };
    fn visit(m: &str, deps: &BTreeMap<String, Vec<String>>, out: &mut Vec<String>) {
        if out.iter().any(|o| o == m) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, out);
        }
        out.push(m.to_owned());
    }
    let mut out = Vec::new();
    for w in wanted {
        let m = by_name(w).with_context(|| format!("module {w} not in {}", dep_file.display()))?;
        visit(&m, &deps, &mut out);
    }
    Ok(out)
}

/// Busybox, the boot modules, and an /init that mounts /dev/vda and hands over to systemd.
fn stage1(modules: &Path, order: &[String], out: &Path) -> Result<()> {
    let root = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "newroot", "modules"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox-static missing (cargo xtask setup)")?;
    for a in STAGE1_APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    let mut names = Vec::new();
    for m in order {
        let name =
            Path::new(m).file_name().unwrap().to_string_lossy().trim_end_matches(".xz").to_owned();
        let src = modules.join(m);
        if Path::new(m).extension().is_some_and(|e| e.eq_ignore_ascii_case("xz")) {
            let raw = Command::new("xz").arg("-dc").arg(&src).output().context("xz (xz-utils)")?;
            std::fs::write(root.join("modules").join(&name), raw.stdout)?;
        } else {
            std::fs::copy(&src, root.join("modules").join(&name))
                .with_context(|| format!("copying {}", src.display()))?;
        }
        names.push(name);
    }
    let init = format!(
        "#!/bin/sh\nexport PATH=/bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         for m in {}; do insmod /modules/$m || echo \"stage1: insmod $m failed\"; done\n\
         for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done\n\
         mount -t ext4 -o rw /dev/vda /newroot || {{ echo 'vm-test: FAIL stage1 cannot mount /dev/vda'; echo 'vm-test: done'; exit 1; }}\n\
         umount /proc /sys\nexec switch_root /newroot /sbin/init\n",
        names.join(" ")
    );
    std::fs::write(root.join("init"), init)?;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))?;
    run_cmd(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        root.display(),
        out.display()
    )))
}

/// A VM's root file system, ready to customise: a copy of the Debian rootfs with the
/// Debian kernel's modules indexed for modprobe. Returns (root, kernel directory).
pub fn stage(name: &str) -> Result<(PathBuf, PathBuf)> {
    let ws = workspace_root();
    crate::setup::build_release(&[])?;
    let kernel_dir = crate::setup::kernel("debian-stable", "bookworm")?;
    let base = rootfs()?;
    let root = ws.join("target/vm").join(format!("{name}-root"));
    let _ = std::fs::remove_dir_all(&root);
    run_cmd(Command::new("cp").arg("-a").arg(&base).arg(&root))?;
    let release = std::fs::read_dir(kernel_dir.join("lib/modules"))?
        .next()
        .context("no kernel modules")??
        .file_name()
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(root.join("usr/lib/modules"))?;
    run_cmd(
        Command::new("cp")
            .arg("-a")
            .arg(kernel_dir.join("lib/modules").join(&release))
            .arg(root.join("usr/lib/modules").join(&release)),
    )?;
    run_cmd(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    Ok((root, kernel_dir))
}

/// The disk image (ext4 from `root`), the stage-1 initramfs and the kernel, in `out`:
/// disk.img, stage1.gz, vmlinuz.
pub fn image(root: &Path, kernel_dir: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let disk = out.join("disk.img");
    let _ = std::fs::remove_file(&disk);
    run_cmd(
        Command::new("mke2fs").args(["-q", "-t", "ext4", "-d"]).arg(root).arg(&disk).arg("2G"),
    )?;
    let release = std::fs::read_dir(root.join("usr/lib/modules"))?
        .next()
        .context("no kernel modules")??
        .path();
    let order = load_order(&release.join("modules.dep"), BOOT_MODULES)?;
    stage1(&release, &order, &out.join("stage1.gz"))?;
    std::fs::copy(crate::vm::vmlinuz(kernel_dir)?, out.join("vmlinuz"))?;
    Ok(())
}

/// Installs faultline into `root` the way a user does, with certificates from `tls`.
pub fn install(root: &Path, tls: &Path, role: &str, extra: &[&str]) -> Result<()> {
    let ws = workspace_root();
    if !tls.join("ca.pem").exists() {
        run_cmd(
            Command::new(ws.join("target/release/faultline")).args(["certs", "init"]).arg(tls),
        )?;
    }
    // An agent registers only under the name its certificate carries.
    if let Some(name) = extra.iter().position(|a| *a == "--name").and_then(|i| extra.get(i + 1))
        && role == "agent"
        && !tls.join(format!("agent-{name}.pem")).exists()
    {
        run_cmd(
            Command::new(ws.join("target/release/faultline"))
                .args(["certs", "issue", "agent", name, "--dir"])
                .arg(tls),
        )?;
    }
    run_cmd(
        Command::new(ws.join("dist/install.sh"))
            .args(["--role", role, "--force", "--bin"])
            .arg(ws.join("target/release"))
            .arg("--tls")
            .arg(tls)
            .arg("--root")
            .arg(root)
            .args(extra),
    )
}

pub fn systemctl(root: &Path, args: &[&str]) -> Result<()> {
    run_cmd(Command::new("systemctl").arg(format!("--root={}", root.display())).args(args))
}

pub fn run() -> Result<()> {
    let ws = workspace_root();
    let vm = ws.join("target/vm");
    let (root, kernel_dir) = stage("systemd")?;
    let tls = vm.join("systemd-tls");
    install(&root, &tls, "controller", &["--listen", "127.0.0.1:7080"])?;
    install(
        &root,
        &tls,
        "agent",
        &[
            "--controller",
            "https://127.0.0.1:7080",
            "--listen",
            "127.0.0.1:7070",
            "--name",
            "vm",
            "--label",
            "role=test",
        ],
    )?;
    std::fs::write(root.join("etc/systemd/system/faultline-vm-test.service"), TEST_UNIT)?;
    let script = root.join("usr/local/bin/faultline-systemd-test");
    std::fs::copy(ws.join("xtask/vm/systemd-test.sh"), &script)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(root.join("etc/hostname"), "faultline-vm\n")?;
    // The system under test of the VM lab has no part here.
    systemctl(&root, &["disable", "nginx.service", "redis-server.service"])?;
    systemctl(
        &root,
        &[
            "enable",
            "faultline-agent.service",
            "faultline-controller.service",
            "faultline-vm-test.service",
        ],
    )?;
    let out = vm.join("systemd");
    image(&root, &kernel_dir, &out)?;
    std::fs::remove_dir_all(&root)?;
    println!(
        "vm-systemd: booting the Debian kernel with systemd from {} (TCG)",
        out.join("disk.img").display()
    );
    let drive = format!("file={},format=raw,if=virtio", out.join("disk.img").display());
    crate::vm::qemu(
        "systemd",
        &out.join("vmlinuz"),
        &out.join("stage1.gz"),
        &["-smp", "2", "-drive", &drive],
        "console=ttyS0 panic=-1 quiet systemd.show_status=0",
        &out.join("console.log"),
    )
}
