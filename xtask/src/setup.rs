//! Installs what building and testing faultline needs. Idempotent: each step checks first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{codegen::workspace_root, tools};

/// Keeps apt from starting the services it installs (nginx, prometheus): tests run their
/// own instances with their own configs. Removed afterwards unless it was already there.
struct NoServiceStart(bool);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStart {
    fn new() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self(false));
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# faultline setup: no service starts during install\nexit 101\n",
        )?;
        std::fs::set_permissions(POLICY_RC_D, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self(true))
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// The release binaries every lab, VM test, bench and image starts (`extra`: more
/// packages built alongside, e.g. the Compose platform's demo-service-b).
pub fn build_release(extra: &[&str]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "-p", "faultline-agent", "-p", "faultline-controller"]);
    for p in extra {
        cmd.args(["-p", p]);
    }
    run_cmd(cmd.current_dir(crate::codegen::workspace_root()))
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// grpcio, schemathesis and Playwright from `PyPI` in a venv of its own (the host's Python
/// stays as it is): the controller's gRPC API is tested from a Python client generated from
/// our .proto files, its Web API by schemathesis from its OpenAPI description, its console
/// by Playwright driving Debian's chromium (Playwright's own browser download is never
/// run: it needs a CDN this machine cannot reach).
pub const PY_VENV: &str = "target/pyenv";
/// Chaos Toolkit 1.19.0 and its lib 1.44.0: the last releases for Debian 12's Python 3.11
/// (1.20 and later need 3.12).
const PY_PACKAGES: &[&str] = &[
    "grpcio==1.76.0",
    "grpcio-tools==1.76.0",
    "schemathesis==4.32.5",
    "playwright==1.65.2",
    "chaostoolkit==1.19.0",
    "chaostoolkit-lib==1.44.0",
    // The Kubernetes manifests are validated against the API's OpenAPI schemas, which it
    // bundles (offline: no cluster here).
    "kubernetes-validate==1.37.0",
];

fn python_client_env() -> Result<()> {
    let venv = workspace_root().join(PY_VENV);
    let python = venv.join("bin/python");
    let imports = "import grpc, grpc_tools, schemathesis, playwright, chaoslib, chaosfaultline, kubernetes_validate";
    if ok(Command::new(&python).args(["-c", imports])) {
        return Ok(());
    }
    println!("setup: python venv {} with {}", venv.display(), PY_PACKAGES.join(" "));
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_cmd(Command::new(venv.join("bin/pip")).args(["install", "-q"]).args(PY_PACKAGES))?;
    // This repository's Chaos Toolkit extension, editable: the tests run the checkout's code.
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--no-deps", "-e"])
            .arg(workspace_root().join("integrations/chaostoolkit")),
    )
}

/// The codename of this Debian release (bookworm), to ask apt for the release's own build.
fn codename() -> Option<String> {
    let os = std::fs::read_to_string("/etc/os-release").ok()?;
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
}

fn apt_install(packages: &[String], allow_downgrades: bool) -> Result<()> {
    let _guard = NoServiceStart::new()?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    if allow_downgrades {
        cmd.arg("--allow-downgrades");
    }
    run_cmd(&mut cmd)
}

/// Listed packages installed at a version none of apt's sources offers: a build from
/// elsewhere (the machine image's qemu-utils from backports), which may conflict with the
/// release's packages that setup installs.
fn foreign_listed() -> Vec<String> {
    let mut out: Vec<String> = tools::TOOLS
        .iter()
        .filter_map(|t| match t.source {
            tools::Source::Apt(p) => Some(p),
            _ => None,
        })
        .filter(|p| {
            let installed = Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let offered = Command::new("apt-cache")
                .args(["madison", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            !installed.is_empty()
                && !offered
                    .lines()
                    .any(|l| l.split('|').nth(1).is_some_and(|v| v.trim() == installed))
        })
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

/// Installs the packages of every program in `tools::TOOLS` that is missing, then checks
/// each is really there. A machine image may carry a newer build of a listed package that
/// conflicts with the release's others: this one's qemu-utils from backports breaks
/// Debian's qemu-system-x86, and apt then either removes qemu-utils (the program is gone
/// after a "successful" install) or gives up. So: what is still missing after the first
/// attempt is installed again, and if apt gave up, together with the one foreign build
/// whose release version makes apt's plan work without removing anything (tried by simulation; `qemu-utils/bookworm`,
/// a downgrade). Setup fails loudly, naming program and package, if anything is still
/// missing after that.
/// What the machine's image must bring: setup cannot install it, and a test that needs it
/// must fail rather than skip, so setup says at once what is absent.
fn image_tools() -> Result<()> {
    let absent: Vec<String> = tools::missing_image()
        .into_iter()
        .map(|(t, from)| format!("{} (from {from}; for {})", t.program, t.why))
        .collect();
    if !absent.is_empty() {
        bail!(
            "setup: missing, and not installable from this machine's package sources: {}",
            absent.join(", ")
        );
    }
    Ok(())
}

fn apt_packages() -> Result<()> {
    let extra = || -> Vec<String> {
        tools::APT_EXTRA
            .iter()
            .filter(|(p, _)| !ok(Command::new("dpkg").args(["-s", p])))
            .map(|(p, _)| (*p).to_owned())
            .collect()
    };
    let wanted = || -> Vec<String> {
        let mut w: Vec<String> = tools::missing_apt()
            .into_iter()
            .map(|(_, pkg)| pkg.to_owned())
            .chain(extra())
            .collect();
        w.sort();
        w.dedup();
        w
    };
    let first = wanted();
    if first.is_empty() {
        return Ok(());
    }
    println!("setup: apt-get install {}", first.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    let attempt = apt_install(&first, false);
    let mut again = wanted();
    if let Err(e) = attempt {
        let release = codename().context("no VERSION_CODENAME in /etc/os-release")?;
        let foreign = foreign_listed();
        let fix = foreign.iter().map(|f| format!("{f}/{release}")).find(|pin| {
            let plan: Vec<&str> = again.iter().map(String::as_str).chain([pin.as_str()]).collect();
            // A plan that works by removing something is no fix.
            Command::new("apt-get")
                .args(["install", "-s", "-q", "--no-install-recommends", "--allow-downgrades"])
                .args(&plan)
                .output()
                .is_ok_and(|o| {
                    o.status.success()
                        && !String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .any(|l| l.starts_with("Remv "))
                })
        });
        let Some(fix) = fix else {
            bail!(
                "{e:#}; no release build of the foreign packages ({}) resolves it",
                foreign.join(", ")
            );
        };
        println!("setup: apt gave up; {fix} (a build from elsewhere is installed) resolves it");
        again.push(fix);
    }
    if !again.is_empty() {
        println!("setup: apt-get install {}", again.join(" "));
        apt_install(&again, true)?;
    }
    let missing: Vec<String> = tools::missing_apt()
        .into_iter()
        .map(|(t, pkg)| format!("{} (apt: {pkg}; for {})", t.program, t.why))
        .chain(extra())
        .collect();
    if !missing.is_empty() {
        bail!("setup: still missing after apt-get install: {}", missing.join(", "));
    }
    Ok(())
}

pub fn run() -> Result<()> {
    apt_packages()?;
    image_tools()?;
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("setup: installing the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let sysroot = String::from_utf8(
        Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .output()?
            .stdout,
    )?;
    let sysroot = sysroot.trim();
    if !Path::new(sysroot).join("lib/rustlib/src/rust/library/core").exists() {
        println!("setup: rustup component add rust-src --toolchain nightly");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    // bpf-linker loads the toolchain's libLLVM, which rustup puts on the library path.
    if !ok(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"])) {
        // bpf-linker must use an LLVM of rustc's major version; none is packaged,
        // but the nightly toolchain ships one: link bpf-linker against it.
        let libdir = Path::new(sysroot).join("lib");
        let lib = std::fs::read_dir(&libdir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so.")))
            .context("nightly toolchain ships no libLLVM.so")?;
        let major = lib
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("libLLVM.so.")
            .split('.')
            .next()
            .unwrap_or("")
            .to_owned();
        let prefix = workspace_root().join("target/llvm");
        std::fs::create_dir_all(prefix.join("lib"))?;
        let link = prefix.join("lib/libLLVM.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
        println!("setup: building bpf-linker against LLVM {major} from {}", lib.display());
        run_cmd(
            Command::new("cargo")
                .args([
                    "+nightly",
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--no-default-features",
                    "--features",
                ])
                .arg(format!("llvm-{major}"))
                .env("LLVM_PREFIX", &prefix),
        )?;
    }
    python_client_env()?;
    for (label, suite) in KERNELS {
        kernel(label, suite)?;
    }
    println!("setup: done");
    Ok(())
}

/// Debian kernels the VM tests boot, each with netem: the stable one (`cls_bpf` attach,
/// no bpf redirect into IFB) and the backports one (TCX, everything).
pub const KERNELS: &[(&str, &str)] =
    &[("debian-stable", "bookworm"), ("debian-backports", "bookworm-backports")];

/// The Debian mirror this machine already uses (no host is written into faultline).
pub fn debian_uri() -> Result<String> {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    deb822
        .lines()
        .find_map(|l| {
            l.strip_prefix("URIs:").map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
        })
        .or_else(|| {
            classic
                .lines()
                .find(|l| l.starts_with("deb "))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .filter(|u| !u.is_empty())
        .context("no Debian mirror in /etc/apt/sources.list(.d)")
}

/// Downloads and unpacks the kernel of `suite` into target/vm/<label>; returns that directory.
pub fn kernel(label: &str, suite: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("target/vm").join(label);
    if dir.join("boot").exists() {
        return Ok(dir);
    }
    // A private apt state, so the host's own sources stay as they are.
    let apt = workspace_root().join("target/vm/apt").join(label);
    std::fs::create_dir_all(apt.join("lists/partial"))?;
    std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
    std::fs::write(apt.join("sources.list"), format!("deb {} {suite} main\n", debian_uri()?))?;
    // An empty dpkg status: the host's own installed kernel (say a newer one from
    // bookworm-security) must not become the candidate, which `download` then cannot
    // fetch from this suite ("Can't find a source to download version").
    std::fs::write(apt.join("status"), "")?;
    let opts = [
        format!("-oDir::Etc::SourceList={}", apt.join("sources.list").display()),
        "-oDir::Etc::SourceParts=/dev/null".to_owned(),
        format!("-oDir::State::Lists={}", apt.join("lists").display()),
        format!("-oDir::State::status={}", apt.join("status").display()),
        format!("-oDir::Cache={}", apt.join("cache").display()),
    ];
    run_cmd(Command::new("apt-get").args(&opts).args(["update", "-q"]))?;
    let deps =
        Command::new("apt-cache").args(&opts).args(["depends", "linux-image-amd64"]).output()?;
    let pkg = String::from_utf8_lossy(&deps.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").map(str::to_owned))
        .filter(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("no linux-image-amd64 in {suite}"))?;
    println!("setup: fetching {pkg} ({suite}) for VM tests");
    let dl = apt.join("dl");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run_cmd(Command::new("apt-get").args(&opts).args(["download", &pkg]).current_dir(&dl))?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("kernel .deb missing")?;
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    std::fs::rename(&tmp, &dir)?;
    Ok(dir)
}
