//! The generated gRPC code is committed so that building faultline needs no protoc;
//! `--check` (run by `cargo xtask test`) keeps it in step with the .proto files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

const PROTOS: &[&str] =
    &["faultline/agent/v1/agent.proto", "faultline/controller/v1/controller.proto"];

const CRI: &str = "k8s/cri/v1/api.proto";

pub fn run(check: bool) -> Result<()> {
    let root = workspace_root();
    let proto_dir = root.join("proto/proto");
    let committed = root.join("proto/src/gen");
    let out = if check {
        let tmp = std::env::temp_dir().join(format!("faultline-codegen-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        tmp
    } else {
        std::fs::create_dir_all(&committed)?;
        committed.clone()
    };
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    tonic_prost_build::configure()
        .out_dir(&out)
        .file_descriptor_set_path(out.join("descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&proto_dir))
        .context("protoc failed (is protobuf-compiler installed? `cargo xtask setup`)")?;
    // Kubernetes' CRI (kubernetes/cri-api, runtime/v1, verbatim): the agent asks a node's
    // runtime for its pods. A client only, and outside faultline's descriptor set (its
    // reflection shows faultline's own services).
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_server(false)
        .compile_protos(&[proto_dir.join(CRI)], std::slice::from_ref(&proto_dir))
        .context("protoc failed on the CRI proto")?;
    if check {
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(&out)? {
            let entry = entry?;
            let name = entry.file_name();
            let fresh = std::fs::read(entry.path())?;
            let old = std::fs::read(committed.join(&name)).unwrap_or_default();
            if fresh != old {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
        std::fs::remove_dir_all(&out)?;
        if !stale.is_empty() {
            bail!("generated code is stale: {stale:?}; run `cargo xtask codegen`");
        }
        println!("codegen: generated code is fresh");
    }
    Ok(())
}
