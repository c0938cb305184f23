//! `faultline certs kubernetes-secrets`: what the certificates Job of dist/kubernetes runs.
//! It makes the CA and the certificates as `certs init` does, in a private temporary
//! directory, and stores them as the namespace's Secrets, each holding only what its reader
//! needs: the controller's (the CA key, to issue enrolled agents' certificates), the
//! agents' shared bootstrap pair (names no agent: it can only enrol), the operators'.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::kube::{CREDENTIALS, KubeApi};

/// The Secrets, in the order they are written: the controller's last, because its
/// existence is what says the set is complete (a Job stopped half-way writes them all again).
const SECRETS: [(&str, &[&str]); 3] = [
    ("faultline-agent-bootstrap", &["ca.pem", "agent.pem", "agent-key.pem"]),
    (
        "faultline-operator",
        &[
            "ca.pem",
            "cli.pem",
            "cli-key.pem",
            "viewer.pem",
            "viewer-key.pem",
            "operator-token",
            "viewer-token",
        ],
    ),
    // cli.pem too: scenario runs started through the Web API call the controller as the
    // CLI does (issue 31 takes that self-call away).
    (
        "faultline-controller",
        &[
            "ca.pem",
            "ca-key.pem",
            "controller.pem",
            "controller-key.pem",
            "cli.pem",
            "cli-key.pem",
            "web-tokens",
        ],
    ),
];

pub async fn run(
    namespace: &str,
    web_hosts: &[String],
    api: Option<&str>,
    credentials: Option<&Path>,
) -> Result<()> {
    // It becomes part of the API paths below.
    if !crate::kube::is_dns_label(namespace) {
        bail!("--namespace {namespace:?}: not a Kubernetes namespace (a DNS label)");
    }
    let api = KubeApi::new(api, credentials.map_or_else(|| CREDENTIALS.into(), Path::to_path_buf))
        .map_err(anyhow::Error::msg)?;
    let base = format!("/api/v1/namespaces/{namespace}/secrets");
    let last = SECRETS[SECRETS.len() - 1].0;
    match api.call(hyper::Method::GET, &format!("{base}/{last}"), None).await {
        Ok(_) => {
            println!("secret {namespace}/{last} exists: the CA was made before; nothing changed");
            return Ok(());
        }
        Err(e) if e.status == Some(404) => {}
        Err(e) => bail!("reading secret {namespace}/{last}: {e}"),
    }
    let dir = private_dir()?;
    let made = make(&dir, web_hosts);
    let stored = match made {
        Ok(()) => store(&api, &base, &dir).await,
        Err(e) => Err(e),
    };
    // The CA key leaves no copy behind, whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    stored?;
    for (name, _) in SECRETS {
        println!("secret {namespace}/{name}");
    }
    Ok(())
}

fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("faultline-certs-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn make(dir: &Path, web_hosts: &[String]) -> Result<()> {
    // init_with makes the directory's content; it must not exist yet.
    let tls = dir.join("tls");
    faultline_proto::transport::certgen::init_with(&tls, web_hosts)?;
    let operator = token()?;
    let viewer = token()?;
    for (file, text) in [
        ("operator-token", format!("{operator}\n")),
        ("viewer-token", format!("{viewer}\n")),
        ("web-tokens", format!("operator {operator}\nviewer {viewer}\n")),
    ] {
        std::fs::write(tls.join(file), text).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

/// 32 random bytes in hex, from the kernel's generator.
fn token() -> Result<String> {
    use std::{fmt::Write, io::Read};
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

async fn store(api: &KubeApi, base: &str, dir: &Path) -> Result<()> {
    for (name, files) in SECRETS {
        let mut data = serde_json::Map::new();
        for f in files {
            let text = std::fs::read_to_string(dir.join("tls").join(f))
                .with_context(|| format!("reading {f}"))?;
            data.insert((*f).to_owned(), json!(text));
        }
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "faultline"}},
            "type": "Opaque",
            // PEM is text: stringData, no base64 by hand.
            "stringData": data,
        });
        match api.call(hyper::Method::POST, base, Some(&secret)).await {
            Ok(_) => {}
            // Left by a run stopped before the controller's Secret: from another CA, replaced.
            Err(e) if e.status == Some(409) => {
                api.call(hyper::Method::PUT, &format!("{base}/{name}"), Some(&secret))
                    .await
                    .map_err(|e| anyhow::anyhow!("replacing secret {name}: {e}"))?;
            }
            Err(e) => bail!("creating secret {name}: {e}"),
        }
    }
    Ok(())
}
