//! Helpers shared by the controller's test binaries.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// HTTP/1.1 on `port`, h2c (prior knowledge) on `port + 1`, loopback only.
    pub fn start(port: u16) -> Self {
        Self::start_in(None, "127.0.0.1", port)
    }

    /// HTTPS (HTTP/1.1) on `port` and HTTPS with h2 on `port + 1`, loopback, with a fresh
    /// self-signed certificate for IP 127.0.0.1 and DNS web.test; returns its PEM path
    /// (openssl from Debian's base system).
    pub fn start_tls(port: u16) -> (Self, PathBuf) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nginx-tls-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=faultline test",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:web.test",
            ])
            // A server certificate, not a CA: rustls refuses a CA certificate as the leaf.
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(ok.status.success(), "openssl: {}", String::from_utf8_lossy(&ok.stderr));
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
               server {{ listen 127.0.0.1:{port} ssl; listen 127.0.0.1:{} ssl http2; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            port + 1
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .spawn()
            .expect("nginx (apt: nginx)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (Self { child, dir }, cert);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    /// The same inside network namespace `ns`, listening on `addr`.
    pub fn start_in(ns: Option<&str>, addr: &str, port: u16) -> Self {
        // Its own directory per address: tests of one binary run side by side, each with
        // an nginx on port 8080 of its own namespace.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nginx-{addr}-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {addr}:{port}; listen {addr}:{} http2; location / {{ return 200 \"ok\\n\"; }} location /missing {{ return 404; }} location = /metrics {{ return 200 \"app_up 1\\n\"; }} }} }}\n",
            port + 1
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nginx"]);
                c
            }
            None => Command::new("nginx"),
        };
        let child = cmd
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .spawn()
            .expect("nginx (apt: nginx)");
        for _ in 0..100 {
            let up = std::fs::read_to_string(dir.join("nginx.pid")).is_ok();
            if up && (ns.is_some() || std::net::TcpStream::connect((addr, port)).is_ok()) {
                return Self { child, dir };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
}

impl Nginx {
    /// Its process (one: `master_process off`), to fault it and nothing else: a name
    /// would match every test's nginx on this host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lets frames between the hosts on a test's bridge through the FORWARD chain, as the lab
/// does for its own (see controller/src/lab/firewall.rs): with Docker's `FORWARD DROP` and
/// `bridge-nf-call-iptables` = 1 they would be dropped. Deleted again on drop; the rule
/// names only this bridge.
pub struct BridgeOpen {
    bridge: String,
}

impl BridgeOpen {
    fn rule(bridge: &str) -> [&str; 10] {
        [
            "-i",
            bridge,
            "-o",
            bridge,
            "-m",
            "comment",
            "--comment",
            "faultline test: its hosts on its bridge",
            "-j",
            "ACCEPT",
        ]
    }

    pub fn new(bridge: &str) -> Self {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-I", "FORWARD"])
            .args(Self::rule(bridge))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables -I FORWARD for {bridge}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { bridge: bridge.to_owned() }
    }
}

impl Drop for BridgeOpen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .args(["-w", "-D", "FORWARD"])
            .args(Self::rule(&self.bridge))
            .output();
    }
}
