//! Rotation hooks and their process groups, end to end: a hook that leaves a background child
//! running when the daemon is told to stop (SIGTERM) must not outlive the daemon.

use std::time::Duration;

use crate::support::{
    Daemon, Moto, free_port, http, process_is_dead, wait_for_line, wait_process_dead,
};

const TOKEN: &str = "test-admin-token-hooks-0123456789";

/// SIGTERM while a rotation's finish hook runs (its timeout far away): the daemon stops, and
/// the hook's shell and the `sleep 60` it started in the background both die with it.
#[tokio::test]
async fn sigterm_kills_a_running_hooks_background_child() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("app/hooked")
        .secret_string("value-0")
        .send()
        .await
        .expect("create the secret");
    let marks = tempfile::tempdir().expect("temp dir");
    let child_file = marks.path().join("child");
    let shell_file = marks.path().join("shell");
    // The pid files are written to a temporary name and moved, so a line seen is complete.
    let script = format!(
        "echo $$ > {s}.tmp && mv {s}.tmp {s}; sleep 60 & echo $! > {c}.tmp && mv {c}.tmp {c}; wait",
        s = shell_file.display(),
        c = child_file.display()
    );
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"HOOKED\"\nid = \"app/hooked\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", {script:?}], timeout = \"120s\" }}]\n",
        moto.endpoint()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let d = Daemon::start_in_env(dir, free_port(), &config, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url("/rotate/HOOKED"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 202, "rotate: {body}\nlog:\n{}", d.log());

    let shell: u32 = wait_for_line(&shell_file, Duration::from_secs(30))
        .parse()
        .expect("the shell's pid");
    let child: u32 = wait_for_line(&child_file, Duration::from_secs(30))
        .parse()
        .expect("the child's pid");
    assert!(
        !process_is_dead(child),
        "the background child runs before the stop"
    );

    let log_dir = d.terminate(Duration::from_secs(20));
    let log = std::fs::read_to_string(log_dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        wait_process_dead(shell, Duration::from_secs(5)),
        "the hook's shell {shell} outlived the daemon; log:\n{log}"
    );
    let child_died = wait_process_dead(child, Duration::from_secs(5));
    if !child_died {
        // Do not leave it behind for the rest of the suite.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status();
    }
    assert!(
        child_died,
        "the hook's background child {child} outlived the daemon (SIGTERM); log:\n{log}"
    );
}
