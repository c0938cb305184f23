//! Everything that changes the kernel, one module per mechanism.

pub mod bpf;
pub mod caps;
pub mod cgroup;
pub mod fds;
pub mod link;
pub mod netns;
pub mod procfs;
pub mod tc;
pub mod tc_encode;
pub mod trace;
