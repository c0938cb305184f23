//! `faultline lab demo`: up, the lab scenario under load, analysis and report, down.

use super::{Instant, LAB_SCENARIO, Opts, PathBuf, Result, bail, controller, down, security, up};

pub(super) async fn demo(
    o: &Opts,
    keep: bool,
    out: Option<PathBuf>,
    scenario: Option<PathBuf>,
) -> Result<()> {
    let started = Instant::now();
    up(o).await?;
    let result = demo_run(o, out, scenario).await;
    if keep {
        println!("the lab stays up (--keep): `faultline lab down` removes it");
    } else {
        down(&o.dir)?;
    }
    let (dir, report) = result?;
    println!(
        "demo done in {:.0} s: run directory {}, report {}",
        started.elapsed().as_secs_f64(),
        dir.display(),
        report.display()
    );
    Ok(())
}

async fn demo_run(
    o: &Opts,
    out: Option<PathBuf>,
    scenario: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf)> {
    let file = if let Some(f) = scenario {
        f
    } else {
        let f = o.dir.join("lab.yaml");
        std::fs::write(&f, LAB_SCENARIO)?;
        f
    };
    crate::run::scenario::load(&file)?;
    let out = out
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("lab-{}", crate::run::utc_stamp())));
    let outcome = crate::run::execute(
        &crate::run::RunArgs::new(file, Some(out)),
        controller(&o.dir).await?,
        &security(&o.dir)?,
    )
    .await?;
    // The lab's logs go with the run: the lab directory is removed by `down`.
    let logs = outcome.dir.join("lab-logs");
    std::fs::create_dir_all(&logs)?;
    for e in std::fs::read_dir(o.dir.join("logs"))? {
        let p = e?.path();
        std::fs::copy(&p, logs.join(p.file_name().unwrap_or_default()))?;
    }
    let files = crate::report::write(&outcome.dir, None)?;
    crate::report::llm::add_to_report(&outcome.dir).await;
    let analysis = crate::report::analyze::analyze(&outcome.dir, None)?;
    crate::report::analyze::print(&analysis);
    let summary = crate::run::files::Summary::read(&outcome.dir)?;
    for f in &summary.faults {
        if let Some(why) = &f.skipped {
            let hint = if why.ends_with("netem") {
                " This kernel has no sch_netem, so it cannot delay packets: `cargo xtask demo --vm` runs the same lab and scenario with each host a qemu VM on a Debian kernel, delay included."
            } else {
                ""
            };
            println!("note: {} was skipped: {why}.{hint}", f.fault);
        }
    }
    // A failed hypothesis is the demo's finding, not its failure; an aborted run is.
    if let Some(reason) = &outcome.aborted {
        bail!("the run was aborted ({reason}); what was collected is in {}", outcome.dir.display());
    }
    let report = files
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "html"))
        .unwrap_or_else(|| outcome.dir.join("report.html"));
    Ok((outcome.dir, report))
}
