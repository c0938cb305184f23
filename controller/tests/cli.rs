//! The CLI on its own: completions and errors that say what to do.

use std::process::{Command, Stdio};

fn faultline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline")).args(args).env_remove("FAULTLINE_CONTROLLER").output().unwrap()
}

#[test]
fn bash_completions_parse_and_know_every_command() {
    let out = faultline(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["partition", "agents", "metrics", "cpu-throttle", "majorities-ring"] {
        assert!(script.contains(word), "completion script lacks {word}");
    }
    let mut bash = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut bash.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n rejects the script");
}

#[test]
fn controller_commands_without_a_controller_say_what_to_do() {
    let out = faultline(&["agents", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --controller URL"));
    let out = faultline(&["fault", "apply", "freeze", "--pid", "1", "--interface", "eth0", "--lease", "1s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interface is for network faults"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    // `faultline completions bash | head -1`: the reader goes away after one line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline")).args(["completions", "bash"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
}
