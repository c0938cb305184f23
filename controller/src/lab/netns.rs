//! The namespace lab: each host a network namespace on the bridge, with its services and agent.

use super::{
    BRIDGE, Lab, Path, ProcKind, Result, controller_url, host_ip, ip, nginx_conf, save, sut,
};

/// Each host a network namespace with a veth pair into the bridge, its services and its agent.
pub(super) fn namespaces(
    lab: &mut Lab<'_>,
    names: &[String],
    agent_bin: &Path,
    nginx: &Path,
    redis: &Path,
) -> Result<()> {
    let dir = lab.dir;
    let n = lab.state.hosts;
    let tls = dir.join("tls").display().to_string();
    for (i, ns) in (1..=n).zip(names) {
        lab.state.netns.push(ns.clone());
        save(dir, &lab.state)?;
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        ip(&["link", "set", ns, "master", BRIDGE, "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{}/24", host_ip(i)), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    }

    // Backends and redis first, so the balancer and the replicas find them.
    let s = |v: &str| v.to_owned();
    for i in 2..=n {
        let host = format!("h{i}");
        let www = dir.join(format!("{host}-nginx/www"));
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), sut::page(i))?;
        let conf = nginx_conf(
            dir,
            &format!("{host}-nginx"),
            &sut::backend_site(i, &www.display().to_string()),
        )?;
        lab.spawn(
            ProcKind::Nginx,
            &host,
            Some(&names[usize::from(i - 1)]),
            nginx,
            &[
                s("-c"),
                conf.display().to_string(),
                s("-e"),
                dir.join(format!("{host}-nginx/error.log")).display().to_string(),
            ],
        )?;
        let data = dir.join(format!("{host}-redis"));
        std::fs::create_dir_all(&data)?;
        let mut args = vec![
            s("--port"),
            s("6379"),
            s("--appendonly"),
            s("no"),
            s("--dir"),
            data.display().to_string(),
        ];
        for (k, v) in sut::redis(i) {
            // "replicaof" takes host and port as two arguments.
            args.push(format!("--{k}"));
            args.extend(if v.is_empty() {
                vec![v]
            } else {
                v.split(' ').map(str::to_owned).collect()
            });
        }
        lab.spawn(ProcKind::Redis, &host, Some(&names[usize::from(i - 1)]), redis, &args)?;
    }
    let conf = nginx_conf(dir, "h1-nginx", &sut::balancer_site(n))?;
    lab.spawn(
        ProcKind::Nginx,
        "h1",
        Some(&names[0]),
        nginx,
        &[
            s("-c"),
            conf.display().to_string(),
            s("-e"),
            dir.join("h1-nginx/error.log").display().to_string(),
        ],
    )?;

    let url = controller_url();
    for i in 1..=n {
        let host = format!("h{i}");
        let mut args = vec![
            s("--listen"),
            format!("{}:7070", host_ip(i)),
            s("--controller"),
            url.clone(),
            s("--name"),
            host.clone(),
            s("--tls-dir"),
            tls.clone(),
        ];
        args.extend([
            s("--state-dir"),
            dir.join(format!("{host}-agent")).display().to_string(),
            s("--same-netns-only"),
        ]);
        for l in sut::labels(i) {
            args.extend([s("--label"), l]);
        }
        lab.spawn(ProcKind::Agent, &host, Some(&names[usize::from(i - 1)]), agent_bin, &args)?;
    }
    Ok(())
}
