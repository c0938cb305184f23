//! What this kernel offers, found from files only (no probing changes to the host).

use std::{io::Read, path::Path};

#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub netem: bool,
    pub netem_detail: String,
    pub htb: bool,
    pub tbf: bool,
    pub ifb: bool,
    pub cgroup_v2_freeze: bool,
    pub cgroup_v2_cpu: bool,
    pub systemd: bool,
}

/// Where a kernel feature was found: built in, loaded, or loadable as a module.
fn feature(config: &str, symbol: &str, module: &str) -> Option<String> {
    if config.lines().any(|l| l == format!("{symbol}=y")) {
        return Some(format!("built in ({symbol}=y)"));
    }
    if Path::new("/sys/module").join(module).exists() {
        return Some(format!("module {module} loaded"));
    }
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let moddir = Path::new("/lib/modules").join(&release);
    if let Ok(builtin) = std::fs::read_to_string(moddir.join("modules.builtin")) {
        if builtin.lines().any(|l| l.ends_with(&format!("/{module}.ko"))) {
            return Some(format!("built in ({module})"));
        }
    }
    if let Ok(dep) = std::fs::read_to_string(moddir.join("modules.dep")) {
        if dep.lines().any(|l| l.split(':').next().is_some_and(|p| p.contains(&format!("/{module}.ko")))) {
            return Some(format!("module {module} available"));
        }
    }
    None
}

fn kernel_config() -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        let _ = flate2::read::GzDecoder::new(f).read_to_string(&mut text);
    }
    if text.is_empty() {
        let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        text = std::fs::read_to_string(format!("/boot/config-{release}")).unwrap_or_default();
    }
    text
}

pub const NETEM_MISSING: &str = "this kernel has no netem qdisc (sch_netem): `modprobe sch_netem`, or use a kernel built with CONFIG_NET_SCH_NETEM (Debian's stock kernels have it)";

pub fn detect() -> Capabilities {
    let config = kernel_config();
    let netem = feature(&config, "CONFIG_NET_SCH_NETEM", "sch_netem");
    let cgroup2 = super::cgroup::mount();
    Capabilities {
        netem: netem.is_some(),
        netem_detail: netem.unwrap_or_else(|| NETEM_MISSING.to_owned()),
        htb: feature(&config, "CONFIG_NET_SCH_HTB", "sch_htb").is_some(),
        tbf: feature(&config, "CONFIG_NET_SCH_TBF", "sch_tbf").is_some(),
        ifb: feature(&config, "CONFIG_IFB", "ifb").is_some(),
        // cgroup.freeze exists in every non-root cgroup2 directory since 5.2.
        cgroup_v2_freeze: cgroup2.is_some(),
        // Children of the root can be throttled when the root delegates cpu to them.
        cgroup_v2_cpu: cgroup2.is_some_and(|m| std::fs::read_to_string(m.join("cgroup.subtree_control")).is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))),
        systemd: super::cgroup::systemd_booted(),
    }
}
