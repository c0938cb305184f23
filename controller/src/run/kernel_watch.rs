//! The agents' view during a run: each agent's kernel metrics (TCP RTT, retransmits,
//! connects per peer; drops by reason) and host metrics, streamed once a second and put
//! on the run's clock using each agent's measured clock offset.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use faultline_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    controller::v1 as pb,
    transport::{AGENT_NAME, Security},
};

use super::files::{AgentRow, DropRow, HostRow, KernelRow};
use crate::table;

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The samples so far, each with its time as our unix ms (`t_s` is set when written).
#[derive(Default)]
pub struct Collected {
    /// Each healthy agent as the run saw it: its measured clock offset, or why none.
    pub agents: Vec<AgentRow>,
    pub kernel: Vec<(f64, KernelRow)>,
    pub drops: Vec<(f64, DropRow)>,
    pub host: Vec<(f64, HostRow)>,
}

async fn connect(
    security: &Security,
    url: &str,
) -> Result<AgentServiceClient<tonic::transport::Channel>, String> {
    let ep = security.endpoint("url", url, AGENT_NAME).map_err(|e| e.to_string())?;
    Ok(AgentServiceClient::new(ep.connect().await.map_err(|e| format!("connecting: {e}"))?))
}

/// Measures the agent's clock offset: agent time minus the midpoint of our send and
/// receive, from the round trip with the least delay of five. The agent reports whole
/// milliseconds, so its reading is taken as the middle of its millisecond and the
/// uncertainty (half the round trip) grows by half a millisecond.
async fn offset(
    c: &mut AgentServiceClient<tonic::transport::Channel>,
) -> Result<(f64, f64), String> {
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..5 {
        let t0 = now_ms();
        let s = c
            .get_metrics(apb::GetMetricsRequest {})
            .await
            .map_err(|e| faultline_proto::status_in_words(&e))?
            .into_inner();
        let t1 = now_ms();
        let (off, half) = (s.unix_ms as f64 + 0.5 - f64::midpoint(t0, t1), (t1 - t0) / 2.0);
        if best.is_none_or(|b| half < b.1) {
            best = Some((off, half));
        }
    }
    best.map(|(off, half)| (off, half + 0.5)).ok_or_else(|| "no sample".into())
}

/// Starts streaming from every healthy agent; each sample's time is put on our clock.
/// Abort the returned tasks to stop.
pub async fn start(
    agents: &[pb::Agent],
    security: &Security,
) -> (Arc<Mutex<Collected>>, Vec<tokio::task::JoinHandle<()>>) {
    let out: Arc<Mutex<Collected>> = Arc::default();
    let mut tasks = Vec::new();
    for a in agents.iter().filter(|a| a.healthy) {
        let mut clock =
            AgentRow { agent: a.name.clone(), url: a.url.clone(), ..AgentRow::default() };
        let mut c = match connect(security, &a.url).await {
            Ok(c) => c,
            Err(e) => {
                clock.error = e;
                super::lock(&out).agents.push(clock);
                continue;
            }
        };
        match offset(&mut c).await {
            Ok((o, u)) => {
                clock.clock_offset_ms = Some(o);
                clock.offset_uncertainty_ms = Some(u);
            }
            Err(e) => clock.error = e,
        }
        let off = clock.clock_offset_ms.unwrap_or(0.0);
        super::lock(&out).agents.push(clock);
        let (out, name) = (out.clone(), a.name.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = c.watch_metrics(apb::WatchMetricsRequest { interval_ms: 1000 }).await
            else {
                return;
            };
            let mut stream = stream.into_inner();
            let mut prev: Option<apb::MetricsSample> = None;
            while let Ok(Some(s)) = stream.message().await {
                let t = s.unix_ms as f64 - off;
                let mut rows = (Vec::new(), Vec::new(), Vec::new());
                if let Some(p) = &prev {
                    let before: BTreeMap<(&str, &str), &apb::PeerMetrics> = p
                        .peers
                        .iter()
                        .map(|x| ((x.container.as_str(), x.peer.as_str()), x))
                        .collect();
                    for peer in &s.peers {
                        let old = before.get(&(peer.container.as_str(), peer.peer.as_str()));
                        let d = |f: fn(&apb::PeerMetrics) -> u64| {
                            f(peer).saturating_sub(old.map_or(0, |o| f(o)))
                        };
                        let (n, sum) = (
                            d(|x| x.srtt.as_ref().map_or(0, |h| h.count)),
                            d(|x| x.srtt.as_ref().map_or(0, |h| h.sum_us)),
                        );
                        let (rt, conn, fail) =
                            (d(|x| x.retransmits), d(|x| x.connects), d(|x| x.connect_failures));
                        if n + rt + conn + fail == 0 {
                            continue;
                        }
                        let srtt_mean_ms =
                            (n > 0).then(|| crate::table::ms3(sum as f64 / n as f64 / 1000.0));
                        let row = KernelRow {
                            t_s: 0.0,
                            agent: name.clone(),
                            container: peer.container.clone(),
                            peer: peer.peer.clone(),
                            srtt_samples: n,
                            srtt_mean_ms,
                            retransmits: rt,
                            connects: conn,
                            connect_failures: fail,
                        };
                        rows.0.push((t, row));
                    }
                    let dropped: BTreeMap<&str, u64> =
                        p.drops.iter().map(|x| (x.reason.as_str(), x.count)).collect();
                    for d in &s.drops {
                        let n = d
                            .count
                            .saturating_sub(dropped.get(d.reason.as_str()).copied().unwrap_or(0));
                        if n > 0 {
                            rows.1.push((
                                t,
                                DropRow {
                                    t_s: 0.0,
                                    agent: name.clone(),
                                    reason: d.reason.clone(),
                                    drops: n,
                                },
                            ));
                        }
                    }
                }
                if s.drops_whole_kernel
                    && let Some(a) = super::lock(&out).agents.iter_mut().find(|a| a.agent == name)
                {
                    a.drops_whole_kernel = true;
                }
                if let Some(h) = &s.host {
                    let round =
                        |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
                    let row = HostRow {
                        t_s: 0.0,
                        agent: name.clone(),
                        cpu_percent: round(h.cpu_percent, 1),
                        memory_used_bytes: h.memory_used_bytes,
                        load1: round(h.load1, 2),
                    };
                    rows.2.push((t, row));
                }
                let mut o = super::lock(&out);
                o.kernel.extend(rows.0);
                o.drops.extend(rows.1);
                o.host.extend(rows.2);
                drop(o);
                prev = Some(s);
            }
        }));
    }
    (out, tasks)
}

impl Collected {
    /// Writes agents.csv, kernel.csv, drops.csv and host.csv, times in seconds from
    /// `run_start_unix_ms`.
    pub fn write(&self, dir: &std::path::Path, run_start_unix_ms: f64) -> anyhow::Result<()> {
        let ms3 = |v: Option<f64>| v.map(table::ms3);
        // Full precision while the run places parts on its clock; milliseconds in the file.
        let agents: Vec<AgentRow> = self
            .agents
            .iter()
            .map(|a| AgentRow {
                clock_offset_ms: ms3(a.clock_offset_ms),
                offset_uncertainty_ms: ms3(a.offset_uncertainty_ms),
                ..a.clone()
            })
            .collect();
        table::write(dir, &agents)?;
        let t_s = |at: f64| table::ms3((at - run_start_unix_ms) / 1000.0);
        table::write(
            dir,
            &self
                .kernel
                .iter()
                .map(|(at, r)| KernelRow { t_s: t_s(*at), ..r.clone() })
                .collect::<Vec<_>>(),
        )?;
        table::write(
            dir,
            &self
                .drops
                .iter()
                .map(|(at, r)| DropRow { t_s: t_s(*at), ..r.clone() })
                .collect::<Vec<_>>(),
        )?;
        table::write(
            dir,
            &self
                .host
                .iter()
                .map(|(at, r)| HostRow { t_s: t_s(*at), ..r.clone() })
                .collect::<Vec<_>>(),
        )
    }
}

/// How long to wait after the load for each agent's last sample.
pub const LAST_SAMPLE: Duration = Duration::from_millis(1200);
