//! A Kubernetes node without a Kubernetes server: Debian's containerd with its CRI plugin
//! on a socket of its own, Debian's CNI bridge plugin, and pods created through CRI the
//! way kubelet creates them (`RunPodSandbox` with kubelet's labels, a cgroup parent per pod,
//! then `CreateContainer`/`StartContainer`). Images are the test busybox, built locally and
//! imported into containerd's `k8s.io` namespace (no registry is reachable). Everything
//! is removed on drop.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use faultline_proto::cri::v1::{self as cri, runtime_service_client::RuntimeServiceClient};
use tonic::transport::Channel;

use super::docker;

/// A runtime for one CRI call (the controller's tests have no shared one).
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub const PAUSE: &str = "faultline-test/pause:latest";

/// The images a node needs, saved once per test binary.
fn images_tar() -> PathBuf {
    static TAR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TAR.get_or_init(|| {
        docker::ensure_image();
        if !docker::docker(&["image", "inspect", PAUSE]).status.success() {
            // The sandbox's process only holds the pod's namespaces, as pause does.
            let id = docker::docker_ok(&["create", docker::IMAGE, "true"]);
            let exported = Command::new("docker")
                .args(["export", &id])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = Command::new("docker")
                .args([
                    "import",
                    "--change",
                    r#"ENTRYPOINT ["/bin/sleep", "2147483647"]"#,
                    "-",
                    PAUSE,
                ])
                .stdin(exported.stdout.unwrap())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "docker import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = docker::docker(&["rm", &id]);
        }
        let tar = std::env::temp_dir().join(format!("fl-cri-images-{}.tar", std::process::id()));
        docker::docker_ok(&["save", "-o", tar.to_str().unwrap(), docker::IMAGE, PAUSE]);
        tar
    })
    .clone()
}

/// A node: containerd with CRI on `socket`, pods on bridge `flcriN` (10.89.N.0/24,
/// `fd89:N::/64`).
pub struct Node {
    pub id: u8,
    pub dir: PathBuf,
    pub socket: PathBuf,
    containerd: Child,
    pods: Vec<String>,
}

/// A pod as the test made it.
#[derive(Debug, Clone)]
pub struct TestPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub sandbox: String,
    pub containers: HashMap<String, String>,
}

impl Node {
    pub fn start(id: u8) -> Self {
        let tar = images_tar();
        // On the root file system: overlayfs on /tmp may be unsupported where /tmp is one.
        let dir = PathBuf::from(format!("/var/lib/faultline-test-cri/{id}"));
        // In a directory of its own, as a node keeps it (/run/containerd/containerd.sock):
        // an agent in a container mounts the directory, as its DaemonSet does.
        let socket = PathBuf::from(format!("/run/faultline-test-cri-{id}/containerd.sock"));
        let bridge = format!("flcri{id}");
        // What a crashed earlier run may have left.
        if let Ok(pid) = std::fs::read_to_string(dir.join("containerd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("ip").args(["link", "del", &bridge]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(dir.join("cni"));
        let _ = std::fs::remove_dir_all(dir.join("ipam"));
        let _ = std::fs::remove_dir_all(socket.parent().unwrap());
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": format!("fltest{id}"),
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("ipam"),
                    "ranges": [
                        [{"subnet": format!("10.89.{id}.0/24")}],
                        [{"subnet": format!("fd89:{id}::/64")}]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
                }
            }]
        });
        std::fs::write(dir.join("cni/10-fltest.conflist"), conflist.to_string()).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "/run/faultline-test-cri-{id}"
[grpc]
  address = "{s}"
[ttrpc]
  address = "{s}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/{PAUSE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = dir.display(),
            s = socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let containerd = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (apt: containerd)");
        std::fs::write(dir.join("containerd.pid"), containerd.id().to_string()).unwrap();
        let mut node = Self { id, dir, socket, containerd, pods: Vec::new() };
        let socket = node.socket.clone();
        let answers = || {
            rt().block_on(async {
                let Ok(channel) = containerd_client::connect(&socket).await else { return false };
                RuntimeServiceClient::new(channel)
                    .version(cri::VersionRequest::default())
                    .await
                    .is_ok()
            })
        };
        let since = std::time::Instant::now();
        while !answers() {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "containerd's CRI did not answer on {} (log: {})",
                socket.display(),
                node.dir.join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&node.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "ctr import: {}", String::from_utf8_lossy(&out.stderr));
        // Leftover pods of a crashed run.
        let stale: Vec<String> = node.cri(async |mut c| {
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|s| s.id)
                .collect()
        });
        node.pods = stale;
        node.remove_all();
        node
    }

    pub fn cri<T: Send>(
        &self,
        f: impl AsyncFnOnce(RuntimeServiceClient<Channel>) -> T + Send,
    ) -> T {
        let socket = self.socket.clone();
        rt().block_on(async move {
            let channel = containerd_client::connect(&socket).await.expect("connect to CRI");
            f(RuntimeServiceClient::new(channel)).await
        })
    }

    /// A pod `namespace/name` with `labels` (its own, as a Deployment gives them), its
    /// containers each running `sh -c SCRIPT`.
    pub fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        containers: &[(&str, &str)],
    ) -> TestPod {
        let uid = format!("00000000-0000-4000-8000-{:04}{:08}", self.id, self.pods.len());
        let mut all: HashMap<String, String> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        // kubelet's own, on every sandbox.
        all.insert("io.kubernetes.pod.name".into(), name.into());
        all.insert("io.kubernetes.pod.namespace".into(), namespace.into());
        all.insert("io.kubernetes.pod.uid".into(), uid.clone());
        let ns_options = cri::NamespaceOption {
            network: cri::NamespaceMode::Pod as i32,
            pid: cri::NamespaceMode::Container as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.dir.join("logs").join(&uid).to_string_lossy().into_owned(),
            labels: all,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/faultline-test-pods-{}/pod{uid}", self.id),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(ns_options.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox = self.cri(async |mut c| {
            c.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {namespace}/{name}: {e}"))
            .into_inner()
            .pod_sandbox_id
        });
        self.pods.push(sandbox.clone());
        let mut ids = HashMap::new();
        for (cname, script) in containers {
            let labels = HashMap::from([
                ("io.kubernetes.container.name".to_owned(), (*cname).to_owned()),
                ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
                ("io.kubernetes.pod.namespace".to_owned(), namespace.to_owned()),
                ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
            ]);
            let cc = cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata { name: (*cname).into(), attempt: 0 }),
                image: Some(cri::ImageSpec {
                    image: format!("docker.io/{}", docker::IMAGE),
                    ..Default::default()
                }),
                command: vec!["/bin/sh".into()],
                args: vec!["-c".into(), (*script).into()],
                labels,
                log_path: format!("{cname}.log"),
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(ns_options.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let id = self.cri(async |mut c| {
                let id = c
                    .create_container(cri::CreateContainerRequest {
                        pod_sandbox_id: sandbox.clone(),
                        config: Some(cc),
                        sandbox_config: Some(config.clone()),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("CreateContainer {cname}: {e}"))
                    .into_inner()
                    .container_id;
                c.start_container(cri::StartContainerRequest { container_id: id.clone() })
                    .await
                    .unwrap_or_else(|e| panic!("StartContainer {cname}: {e}"));
                id
            });
            ids.insert((*cname).to_owned(), id);
        }
        TestPod { namespace: namespace.into(), name: name.into(), uid, sandbox, containers: ids }
    }

    /// The pod's addresses (IPv4 first) as its CNI gave them.
    pub fn addresses(&self, p: &TestPod) -> Vec<String> {
        self.cri(async |mut c| {
            let net = c
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: p.sandbox.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap()
                .network
                .unwrap();
            std::iter::once(net.ip).chain(net.additional_ips.into_iter().map(|i| i.ip)).collect()
        })
    }

    /// The pid a container's (or with `None`, the sandbox's) verbose status gives.
    pub fn pid(&self, p: &TestPod, container: Option<&str>) -> u32 {
        let info = self.cri(async |mut c| match container {
            Some(n) => {
                c.container_status(cri::ContainerStatusRequest {
                    container_id: p.containers[n].clone(),
                    verbose: true,
                })
                .await
                .unwrap()
                .into_inner()
                .info
            }
            None => {
                c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: p.sandbox.clone(),
                    verbose: true,
                })
                .await
                .unwrap()
                .into_inner()
                .info
            }
        });
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        u32::try_from(v["pid"].as_u64().unwrap()).unwrap()
    }

    /// The container's state as CRI reports it.
    pub fn state(&self, p: &TestPod, container: &str) -> cri::ContainerState {
        self.cri(async |mut c| {
            let s = c
                .container_status(cri::ContainerStatusRequest {
                    container_id: p.containers[container].clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            cri::ContainerState::try_from(s.state).unwrap()
        })
    }

    /// `ping` from inside pod `from`'s network namespace: (transmitted, received).
    pub fn ping(&self, from: &TestPod, to: &str, count: u32) -> (u32, u32) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid(from, None)))
            .args(["ping", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1", to])
            .output()
            .expect("nsenter (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        docker::ping_counts(&text).unwrap_or_else(|| {
            panic!("ping output: {text} {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    /// The pod's network namespace: qdiscs, filters and links, for comparison.
    pub fn ns_state(&self, p: &TestPod) -> String {
        docker::ns_state(self.pid(p, None))
    }

    /// Stops and removes a pod, as kubelet does when it is deleted.
    pub fn delete(&mut self, p: &TestPod) {
        self.pods.retain(|s| *s != p.sandbox);
        self.remove_sandbox(&p.sandbox);
    }

    fn remove_sandbox(&self, id: &str) {
        self.cri(async |mut c| {
            let _ =
                c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await;
            let _ = c
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() })
                .await;
        });
    }

    fn remove_all(&mut self) {
        for id in std::mem::take(&mut self.pods) {
            self.remove_sandbox(&id);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.remove_all();
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // The shims outlive containerd; their containers are gone with the pods.
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("ip")
            .args(["link", "del", &format!("flcri{}", self.id)])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.socket.parent().unwrap());
        let _ = std::fs::remove_dir_all(&self.dir);
        // The pods' parent cgroup, in each hierarchy runc made it in (v1 has several).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                remove_cgroups(&h.path().join(format!("faultline-test-pods-{}", self.id)));
            }
        }
        let _ = std::fs::remove_dir_all(format!("/run/faultline-test-cri-{}", self.id));
    }
}

/// Removes a cgroup and those under it, deepest first (kubelet removes a pod's cgroup
/// itself; containerd leaves it). Their files are the kernel's: only directories go.
fn remove_cgroups(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
