//! `stowage pull` against the real `docker-registry` speaking only HTTPS with a
//! certificate from a CA made here and asking for basic auth from an htpasswd file,
//! no mocks: the pull works with `--ca-cert`, fails on the certificate without it,
//! fails clearly on a wrong password, and no password is in anything stowage prints,
//! even with `-vv`.

use crate::support::auth_client::{basic_credentials_b64, push_as};
use crate::support::registry::{Registry, RegistryConfig};
use crate::support::tls::{Htpasswd, TlsFiles};
use crate::support::workspace::{Workspace, LOUD, SOURCE_REF};

/// The basic-auth user and password of the TLS registry.
const TLS_USER: &str = "user";
const TLS_PASSWORD: &str = "pass-6e1b-right";
const WRONG_PASSWORD: &str = "pass-0c4d-wrong";

/// A registry on `127.0.0.1` speaking only HTTPS with a certificate from its own CA,
/// asking for basic auth from an htpasswd file, holding the fixture as `tls/app:1.0`
/// (pushed by skopeo trusting that CA).
struct TlsRegistry {
    tls: TlsFiles,
    _htpasswd: Htpasswd,
    registry: Registry,
}

impl TlsRegistry {
    fn start(ws: &Workspace) -> Self {
        let tls = TlsFiles::new(&["127.0.0.1", "localhost"]);
        let htpasswd = Htpasswd::new(TLS_USER, TLS_PASSWORD);
        let registry = Registry::start_config(RegistryConfig {
            extra_yaml: htpasswd.auth_yaml(),
            http_yaml: tls.http_yaml(),
            // Plain HTTP to an HTTPS listener: Go answers 400.
            ready_statuses: vec![400],
        });
        push_as(
            ws.source_dir(),
            SOURCE_REF,
            &registry,
            "tls/app:1.0",
            &format!("{TLS_USER}:{TLS_PASSWORD}"),
            Some(&tls.cert_dir()),
        );
        Self {
            tls,
            _htpasswd: htpasswd,
            registry,
        }
    }

    fn reference(&self) -> String {
        format!("{}/tls/app:1.0", self.registry.addr())
    }

    fn ca_cert(&self) -> String {
        self.tls.ca_pem().display().to_string()
    }

    /// Both passwords and the base64 `user:password` of each.
    fn secrets() -> Vec<String> {
        vec![
            TLS_PASSWORD.into(),
            WRONG_PASSWORD.into(),
            basic_credentials_b64(TLS_USER, TLS_PASSWORD),
            basic_credentials_b64(TLS_USER, WRONG_PASSWORD),
        ]
    }
}

#[test]
fn basic_auth_over_tls_pulls_with_the_ca_cert() {
    let ws = Workspace::new(false);
    let server = TlsRegistry::start(&ws);
    let reference = server.reference();
    let ca = server.ca_cert();
    let run = ws.stowage(
        &[
            "--json",
            "pull",
            "--ca-cert",
            &ca,
            "--username",
            TLS_USER,
            "--password-stdin",
            &reference,
        ],
        Some(&format!("{TLS_PASSWORD}\n")),
        &[],
    );
    ws.assert_pulled(&run, &reference, ws.image.layers.len() + 1);
    run.assert_no_secret(&TlsRegistry::secrets());
}

#[test]
fn tls_registry_without_the_ca_cert_fails_on_the_certificate() {
    let ws = Workspace::new(false);
    let server = TlsRegistry::start(&ws);
    let run = ws.stowage(
        &[
            "pull",
            "--username",
            TLS_USER,
            "--password-stdin",
            &server.reference(),
        ],
        Some(&format!("{TLS_PASSWORD}\n")),
        &[],
    );
    run.assert_failure("a pull from a registry whose CA is not trusted");
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "the error does not name the certificate:\n{}",
        run.stderr
    );
    run.assert_no_secret(&TlsRegistry::secrets());
    ws.assert_nothing_pulled();
}

#[test]
fn basic_auth_with_a_wrong_password_fails_clearly_without_printing_it() {
    let ws = Workspace::new(false);
    let server = TlsRegistry::start(&ws);
    let ca = server.ca_cert();
    let run = ws.stowage(
        &[
            "pull",
            "--ca-cert",
            &ca,
            "--username",
            TLS_USER,
            "--password-stdin",
            &server.reference(),
        ],
        Some(&format!("{WRONG_PASSWORD}\n")),
        &[],
    );
    run.assert_failure("a pull with a wrong password");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].contains("authentication failed"),
        "expected one 'authentication failed' line on stderr:\n{}",
        run.stderr
    );
    run.assert_no_secret(&TlsRegistry::secrets());
    ws.assert_nothing_pulled();
}

#[test]
fn basic_auth_secrets_stay_out_of_debug_output() {
    let ws = Workspace::new(false);
    let server = TlsRegistry::start(&ws);
    let ca = server.ca_cert();
    let reference = server.reference();
    let args = [
        "-vv",
        "pull",
        "--ca-cert",
        &ca,
        "--username",
        TLS_USER,
        "--password-stdin",
        &reference,
    ];
    for (level, env) in LOUD {
        for (password, right) in [(TLS_PASSWORD, true), (WRONG_PASSWORD, false)] {
            ws.clear_dest();
            let run = ws.stowage(&args, Some(&format!("{password}\n")), env);
            if right {
                run.assert_success(&format!("a -vv pull with the right password ({level})"));
            } else {
                run.assert_failure(&format!("a -vv pull with a wrong password ({level})"));
            }
            run.assert_logged(level);
            run.assert_no_secret(&TlsRegistry::secrets());
        }
    }
}

#[test]
fn one_username_is_never_sent_to_two_registries() {
    let ws = Workspace::new(false);
    // Two loopback hosts where nothing listens: the refusal comes before any request.
    let run = ws.stowage(
        &[
            "lock",
            "--username",
            TLS_USER,
            "--password-stdin",
            "127.0.0.1:9/a/x:1",
            "127.0.0.2:9/b/y:1",
        ],
        Some(&format!("{WRONG_PASSWORD}\n")),
        &[],
    );
    run.assert_failure("a lock with --username across two registries");
    assert!(
        run.stderr
            .contains("2 registries (127.0.0.1:9, 127.0.0.2:9)"),
        "{}",
        run.stderr
    );
    run.assert_no_secret(&TlsRegistry::secrets());
}
