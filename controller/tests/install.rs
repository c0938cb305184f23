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

/// Issue 34's manifests: every overlay renders (`kubectl kustomize`), every object
/// validates against the Kubernetes OpenAPI schemas offline (kubernetes-validate, strict:
/// an unknown field fails) for the oldest release the manifests support and the newest,
/// and the flags they give the binaries are flags the binaries have.
#[test]
fn kubernetes_manifests_render_validate_and_use_real_flags() {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let validator = ws.join("target/pyenv/bin/kubernetes-validate");
    // appArmorProfile and a node's name in service-account tokens: 1.30.
    let validate = |file: &std::path::Path| {
        ["1.30.0", "1.37.0"]
            .map(|k| sh(Command::new(&validator).args(["--strict", "--quiet", "-k", k]).arg(file)))
    };
    let mut rendered = Vec::new();
    for overlay in ["containerd", "k3s"] {
        let (ok, out) = sh(Command::new("kubectl")
            .args(["kustomize"])
            .arg(ws.join("dist/kubernetes/overlays").join(overlay)));
        assert!(ok, "kubectl kustomize {overlay}: {out}");
        let file = tmp.join(format!("{overlay}.yaml"));
        std::fs::write(&file, &out).unwrap();
        for (ok, said) in validate(&file) {
            assert!(ok, "{overlay}: {said}");
        }
        let objects: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&out)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        rendered.push((overlay, objects));
    }
    // The validator fails what is wrong (a field misspelt as users do).
    let bad = tmp.join("bad.yaml");
    let text = std::fs::read_to_string(tmp.join("k3s.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let [(ok, said), _] = validate(&bad);
    assert!(!ok && said.contains("hostPid"), "a misspelt field passed: {said}");

    let find = |objects: &[serde_json::Value], kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    for (overlay, objects) in &rendered {
        let ds = find(objects, "DaemonSet", "faultline-agent");
        let pod = &ds["spec"]["template"]["spec"];
        let socket_dir = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "cri")
            .unwrap()["hostPath"]["path"]
            .clone();
        let want = if *overlay == "k3s" { "/run/k3s/containerd" } else { "/run/containerd" };
        assert_eq!(socket_dir, want, "{overlay}");
        // Host PIDs, not the host's network (the NetworkPolicy must apply); no privileged.
        assert_eq!(pod["hostPID"], true);
        assert!(pod["hostNetwork"].is_null());
        assert_eq!(pod["automountServiceAccountToken"], false);
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(
            sc["capabilities"]["add"],
            serde_json::json!(["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "KILL", "DAC_OVERRIDE"])
        );
        let np = find(objects, "NetworkPolicy", "faultline-agent");
        assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 1);
        assert_eq!(
            np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "faultline-controller"
        );
    }
    // Every flag the manifests pass is one the binary takes (a renamed flag fails here,
    // not in a crash-looping pod).
    let objects = &rendered[0].1;
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_faultline"));
    let agent = cli.parent().unwrap().join("faultline-agent");
    let flags_of = |o: &serde_json::Value| -> Vec<String> {
        o["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str()?.strip_prefix("--")?.split('=').next().map(str::to_owned))
            .collect()
    };
    for (object, help) in [
        (find(objects, "DaemonSet", "faultline-agent"), sh(Command::new(&agent).arg("--help")).1),
        (
            find(objects, "Deployment", "faultline-controller"),
            sh(Command::new(&cli).args(["controller", "serve", "--help"])).1,
        ),
        (
            find(objects, "Job", "faultline-certs"),
            sh(Command::new(&cli).args(["certs", "kubernetes-secrets", "--help"])).1,
        ),
    ] {
        let flags = flags_of(&object);
        assert!(!flags.is_empty());
        for f in flags {
            assert!(help.contains(&format!("--{f}")), "--{f} is not a flag of {}", object["kind"]);
        }
    }
    // The controller's config, as the ConfigMap gives it, is one the controller reads.
    let config = find(objects, "ConfigMap", "faultline-controller");
    let toml = config["data"]["controller.toml"].as_str().unwrap();
    for key in ["listen", "state", "tls_dir", "web_listen", "web_token_file", "web_hosts"] {
        assert!(toml.lines().any(|l| l.starts_with(&format!("{key} = "))), "{key}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
