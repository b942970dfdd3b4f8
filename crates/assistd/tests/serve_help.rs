//! `assistd serve --help` lists every setting of the configuration: its TOML key, default and
//! environment variable (the list itself is checked against the file's keys in config.rs).

use assistd::config::SETTINGS_DOC;
use std::process::Command;

#[test]
fn serve_help_lists_every_setting_with_its_env_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_assistd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(SETTINGS_DOC.len() >= 37, "{}", SETTINGS_DOC.len());
    for d in SETTINGS_DOC {
        assert!(
            help.contains(&format!("{} [{}]", d.key, d.default)),
            "serve --help lacks {} [{}]:\n{help}",
            d.key,
            d.default
        );
        if let Some(env) = d.env {
            assert!(help.contains(env), "serve --help lacks {env}");
        }
    }
    for key in [
        "retention_days",
        "relay.max_sessions",
        "signal.code_ttl_minutes",
        "ASSIST_CONFIG",
    ] {
        assert!(help.contains(key), "serve --help lacks {key}");
    }
}
