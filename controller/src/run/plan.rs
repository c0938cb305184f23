//! Before anything happens: the scenario read and checked whole, the load's spec, the
//! controller's agents checked against every fault's targets and needs, and the run
//! directory made.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use faultline_proto::controller::v1::{
    self as pb, controller_service_client::ControllerServiceClient,
};
use tonic::transport::Channel;

use super::{
    RunArgs, files,
    scenario::{FaultRequest, Scenario},
    slug, utc_stamp,
};
use crate::load::{LoadSpec, args::LoadArgs};

#[derive(Parser)]
#[command(no_binary_name = true)]
struct LoadOnly {
    #[command(flatten)]
    load: LoadArgs,
}

/// A run ready to start.
pub(super) struct Plan {
    pub(super) scenario: Scenario,
    pub(super) load: LoadSpec,
    pub(super) agents: Vec<pb::Agent>,
    /// Optional faults left out, with why (their agents lack what they need).
    pub(super) skipped: Vec<(usize, String)>,
    pub(super) dir: PathBuf,
}

pub(super) async fn plan(args: &RunArgs, c: &mut ControllerServiceClient<Channel>) -> Result<Plan> {
    // Off the runtime's thread (the controller runs scenarios on its own): the load
    // target's name is resolved here.
    let file = args.scenario.clone();
    let files = args.files;
    let (s, load) = tokio::task::spawn_blocking(move || -> Result<_> {
        let s = super::scenario::load_with(&file, files)?;
        let mut load_argv = s.load_args.clone();
        load_argv.extend([
            "--duration".into(),
            format!("{}ms", s.total().as_millis()),
            "--json".into(),
        ]);
        let load = LoadOnly::try_parse_from(&load_argv)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: load: {}",
                    file.display(),
                    e.to_string().lines().next().unwrap_or("")
                )
            })?
            .load
            .spec_with(files)?;
        Ok((s, load))
    })
    .await??;
    let agents = c
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(crate::remote::explain)?
        .into_inner()
        .agents;
    let skipped = check_targets(&s, &args.scenario, &agents)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{}", slug(&s.name), utc_stamp()))
    });
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the run directory {}", dir.display()))?;
    std::fs::copy(&args.scenario, dir.join(files::SCENARIO_YAML))
        .with_context(|| format!("copying {}", args.scenario.display()))?;
    eprintln!(
        "run {}: {} s ({} warmup, {} baseline, {} fault, {} recovery), {} faults, into {}",
        s.name,
        s.total().as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.baseline.as_secs_f64(),
        s.fault.as_secs_f64(),
        s.recovery.as_secs_f64(),
        s.faults.len(),
        dir.display()
    );
    Ok(Plan { scenario: s, load, agents, skipped, dir })
}

/// The agents a target or partition names, checked against what the controller knows,
/// and the kernel capabilities each fault needs on them. Returns the optional faults to
/// skip, with why; a fault that is not optional and cannot run refuses the scenario.
fn check_targets(s: &Scenario, file: &Path, agents: &[pb::Agent]) -> Result<Vec<(usize, String)>> {
    let names: Vec<String> = agents.iter().map(|a| format!("{} {:?}", a.name, a.labels)).collect();
    let mut skip = Vec::new();
    for f in &s.faults {
        let (selector, named, spec): (String, Vec<String>, _) = match &f.request {
            FaultRequest::Apply(r) => {
                let t = r.target.clone().unwrap_or_default();
                (t.selector, t.agents, r.spec.as_ref())
            }
            FaultRequest::Partition(p) => (
                p.selector.clone(),
                if p.node.is_empty() { vec![] } else { vec![p.node.clone()] },
                None,
            ),
        };
        let sel = crate::targeting::parse_selector(&selector)
            .map_err(|e| anyhow::anyhow!("{}: faults[{}]: {e}", file.display(), f.index))?;
        for n in &named {
            if !agents.iter().any(|a| &a.name == n) {
                bail!(
                    "{}: faults[{}]: no agent {n:?} (agents: {})",
                    file.display(),
                    f.index,
                    names.join("; ")
                );
            }
        }
        let chosen: Vec<&pb::Agent> = if named.is_empty() || spec.is_none() {
            agents
                .iter()
                .filter(|a| crate::targeting::selector_matches(&sel, |k| a.labels.get(k)))
                .collect()
        } else {
            agents.iter().filter(|a| named.contains(&a.name)).collect()
        };
        if chosen.is_empty() {
            bail!(
                "{}: faults[{}]: selector {selector:?} matches no agent (agents: {})",
                file.display(),
                f.index,
                names.join("; ")
            );
        }
        // A partition cuts with the eBPF classifier on every agent it involves.
        let lacking = chosen.iter().find_map(|a| {
            let probes = a.capabilities.as_ref().map(|c| c.probes.as_slice()).unwrap_or_default();
            let partition = faultline_proto::agent::v1::FaultSpec {
                kind: Some(faultline_proto::agent::v1::fault_spec::Kind::Partition(
                    faultline_proto::agent::v1::Partition {},
                )),
                ..Default::default()
            };
            faultline_proto::doctor::missing(spec.unwrap_or(&partition), probes).map(|cap| (a, cap))
        });
        if let Some((a, cap)) = lacking {
            let why = format!("agent {} (kernel {}) lacks {cap}", a.name, a.kernel_release);
            if !f.optional {
                bail!(
                    "{}: faults[{}] ({}): {why}; mark the fault `optional: true` to run the scenario without it on such agents",
                    file.display(),
                    f.index,
                    f.describe
                );
            }
            skip.push((f.index, why));
        }
    }
    Ok(skip)
}
