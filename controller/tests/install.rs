//! dist/install.sh into a scratch root, then `systemd-analyze verify` on the installed units
//! (this host's PID 1 is not systemd; the units run for real in `cargo xtask vm-systemd`).

use std::{os::unix::fs::PermissionsExt, path::PathBuf, process::Command};

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn install_puts_everything_in_place_and_the_units_verify() {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (root, tls) = (tmp.join("root"), tmp.join("tls"));
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_faultline"));
    let bins = cli.parent().unwrap();
    assert!(
        bins.join("faultline-agent").exists(),
        "build the workspace first (cargo test --workspace builds faultline-agent)"
    );
    assert!(sh(Command::new(&cli).args(["certs", "init"]).arg(&tls)).0);

    let install = |role: &str, extra: &[&str]| {
        sh(Command::new(ws.join("dist/install.sh"))
            .args(["--role", role, "--bin"])
            .arg(bins)
            .arg("--tls")
            .arg(&tls)
            .arg("--root")
            .arg(&root)
            .args(extra))
    };
    let agent_flags = [
        "--controller",
        "https://10.0.0.1:7080",
        "--listen",
        "0.0.0.0:7070",
        "--advertise",
        "https://10.0.0.5:7070",
        "--name",
        "db1",
        "--label",
        "role=db",
    ];
    let (ok, out) = install("agent", &agent_flags);
    assert!(ok, "{out}");
    let (ok, out) = install("controller", &[]);
    assert!(ok, "{out}");

    let env = std::fs::read_to_string(root.join("etc/faultline/agent.env")).unwrap();
    assert!(env.contains("FAULTLINE_AGENT_ARGS=\"--listen 0.0.0.0:7070 --controller https://10.0.0.1:7080 --advertise https://10.0.0.5:7070 --name db1 --label role=db\""), "{env}");
    let toml = std::fs::read_to_string(root.join("etc/faultline/controller.toml")).unwrap();
    assert!(toml.contains("listen = \"0.0.0.0:7080\""), "{toml}");
    let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
    for key in ["agent-key.pem", "controller-key.pem", "cli-key.pem"] {
        assert_eq!(mode(&format!("etc/faultline/tls/{key}")), 0o600, "{key}");
    }
    assert!(
        !root.join("etc/faultline/tls/ca-key.pem").exists(),
        "the CA's key must stay off the hosts"
    );
    assert_eq!(mode("usr/local/bin/faultline-agent"), 0o755);

    // Again, with other flags: the configuration is kept.
    let (ok, out) = install("agent", &["--name", "other"]);
    assert!(ok && out.contains("keeping"), "{out}");
    assert_eq!(std::fs::read_to_string(root.join("etc/faultline/agent.env")).unwrap(), env);

    // systemd-analyze resolves units under --root: give it systemd's own.
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    assert!(
        sh(Command::new("cp")
            .arg("-a")
            .arg("/usr/lib/systemd/system")
            .arg(root.join("usr/lib/systemd/")))
        .0
    );
    let units = ["faultline-agent.service", "faultline-controller.service"]
        .map(|u| root.join("etc/systemd/system").join(u));
    let verify = || {
        sh(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(&units))
    };
    let (ok, out) = verify();
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");

    // The check can fail: a unit whose command is missing is reported.
    let agent_unit = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(
        &units[0],
        agent_unit.replace(
            "ExecStart=/usr/local/bin/faultline-agent",
            "ExecStart=/usr/local/bin/faultline-agnt",
        ),
    )
    .unwrap();
    let (ok, out) = verify();
    assert!(!ok && out.contains("faultline-agnt"), "a broken unit passed: {out}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_vagrantfile_validates_with_binaries_and_certificates_in_place() {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vagrant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_faultline"));
    assert!(sh(Command::new(&cli).args(["certs", "init"]).arg(tmp.join("tls"))).0);
    let validate = |tls: &str| {
        sh(Command::new("vagrant")
            .arg("validate")
            .current_dir(ws.join("vagrant"))
            .env("VAGRANT_HOME", tmp.join("home"))
            .env("FAULTLINE_BIN", cli.parent().unwrap())
            .env("FAULTLINE_TLS", tmp.join(tls)))
    };
    let (ok, out) = validate("tls");
    assert!(ok && out.contains("validated successfully"), "vagrant validate (apt: vagrant): {out}");
    // Provisioning without certificates is caught before any VM starts.
    let (ok, out) = validate("no-such-dir");
    assert!(!ok && out.contains("no-such-dir"), "{out}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
