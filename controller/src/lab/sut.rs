use super::host_ip;

/// nginx on h1 over the backends. Short proxy timeouts and a retry on the next backend:
/// the way a real balancer is tuned, and what makes a slow or dead backend visible as
/// latency, not only errors.
pub fn balancer_site(hosts: u8) -> String {
    let upstream: String = (2..=hosts)
        .map(|i| format!("server {}:8080 max_fails=1 fail_timeout=2s; ", host_ip(i)))
        .collect();
    format!(
        "  upstream backends {{ {upstream}keepalive 32; }}\n  server {{ listen {}:80; location / {{ proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_connect_timeout 200ms; proxy_read_timeout 500ms; proxy_next_upstream error timeout; add_header X-Backend $upstream_addr; }} }}\n",
        host_ip(1)
    )
}

pub fn backend_site(i: u8, root: &str) -> String {
    format!("  server {{ listen {}:8080; root {root}; }}\n", host_ip(i))
}

/// A 2 KiB page whose first line names the backend: big enough that a bandwidth limit
/// of a few hundred kbit/s is felt at the lab's 100 requests/s.
pub fn page(i: u8) -> String {
    let host = format!("h{i}");
    format!("{host}\n{}\n", "x".repeat(2044 - host.len()))
}

/// redis settings as (name, value): h2 the primary, the others its replicas.
pub fn redis(i: u8) -> Vec<(&'static str, String)> {
    let mut v =
        vec![("bind", host_ip(i)), ("protected-mode", "no".into()), ("save", String::new())];
    if i > 2 {
        v.push(("replicaof", format!("{} 6379", host_ip(2))));
    }
    v
}

pub fn labels(i: u8) -> Vec<String> {
    if i == 1 {
        vec!["role=web".into()]
    } else {
        vec![
            "role=backend".into(),
            format!("zone={}", if i.is_multiple_of(2) { "a" } else { "b" }),
            format!("redis={}", if i == 2 { "primary" } else { "replica" }),
        ]
    }
}
