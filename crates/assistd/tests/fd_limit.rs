//! Issue 15 item 1: the server raises its open-files soft limit to the hard limit at start (a
//! soft limit of 1024 let about 1,100 idle connections make `accept` fail). Its own test binary,
//! because it changes a limit of the whole process.

mod common;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

#[tokio::test]
async fn start_raises_the_open_files_soft_limit_to_the_hard_limit() {
    let hard = getrlimit(Resource::Nofile).maximum;
    // Start low, as many service managers do.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard.unwrap_or(u64::MAX).min(512)),
            maximum: hard,
        },
    )
    .expect("lowering the soft limit is always allowed");
    assert_ne!(
        getrlimit(Resource::Nofile).current,
        hard,
        "the test starts below the hard limit"
    );

    let dir = tempfile::tempdir().unwrap();
    let s = common::TestServer::start(dir.path()).await;
    let now = getrlimit(Resource::Nofile);
    assert_eq!(now.current, hard, "soft limit raised to the hard limit");
    assert_eq!(now.maximum, hard, "hard limit unchanged");
    s.server.shutdown().await;
}
