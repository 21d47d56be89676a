//! `stowage pull` against the real `docker-registry` with auth turned on, no mocks:
//! bearer tokens from a token issuer written here (JWTs the registry verifies against
//! its `rootcertbundle`), basic auth from an htpasswd file over TLS with a CA made
//! here, and no password or token in anything stowage prints, even with `-vv`.

mod support;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage_store::Store;
use tempfile::TempDir;

use support::auth::{
    basic_credentials_b64, get_with_token, push_as, Htpasswd, IssuerPolicy, KeyRef, TlsFiles,
    TokenIssuer, TokenRequest,
};
use support::fixtures::{self, Compression, Image};
use support::registry::{Registry, RegistryConfig};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// The logging the secret checks run under: `-vv` (debug logs), and `-vv` with
/// `RUST_LOG=trace`, which turns on every crate's trace logs (reqwest, hyper, h2,
/// rustls) as a user chasing a problem would.
const LOUD: [(&str, &[(&str, &str)]); 2] = [("DEBUG", &[]), ("TRACE", &[("RUST_LOG", "trace")])];

/// How long one stowage run may take before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The ref the fixture image has in the source store.
const SOURCE_REF: &str = "fixture";

/// What one stowage run left behind.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Panics with both streams unless the run succeeded.
    fn assert_success(&self, what: &str) {
        assert!(
            self.success,
            "{what} failed:\nstderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
    }

    /// Panics unless the run failed.
    fn assert_failure(&self, what: &str) {
        assert!(
            !self.success,
            "{what} succeeded, but must fail:\nstderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
    }

    /// The `--json` summary on stdout.
    fn report(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Panics unless stderr holds log lines of `level` (else a secret check proves
    /// nothing).
    fn assert_logged(&self, level: &str) {
        assert!(
            self.stderr.contains(level),
            "no {level} log lines on stderr:\n{}",
            self.stderr
        );
    }

    /// Panics if any secret appears in stdout or stderr.
    fn assert_no_secret(&self, secrets: &[String]) {
        for secret in secrets {
            assert!(!secret.is_empty(), "an empty secret matches everything");
            for (stream, text) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret ({} chars) appears in stowage's {stream}:\n{text}",
                    secret.len()
                );
            }
        }
    }
}

/// A source store holding the fixture image, a destination store for pulls, and a
/// HOME without any docker or podman credentials.
struct Workspace {
    _tmp: TempDir,
    source: Store,
    image: Image,
    dest: PathBuf,
    home: PathBuf,
}

impl Workspace {
    /// The fixture is [`fixtures::tagged_image`] (two layers), or with `many_layers`
    /// an image of four layers, so a pull fetches five blobs.
    fn new(many_layers: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = Store::open(tmp.path().join("source")).expect("open the source store");
        let image = if many_layers {
            let layers = (0..4)
                .map(|i| {
                    let compression = if i % 2 == 0 {
                        Compression::Gzip
                    } else {
                        Compression::Zstd
                    };
                    fixtures::put_layer(
                        &source,
                        &fixtures::sample_tree(&format!("layer{i}")),
                        compression,
                    )
                })
                .collect();
            let image = fixtures::put_image(&source, "amd64", layers);
            fixtures::set_ref(&source, SOURCE_REF, &image.descriptor);
            image
        } else {
            fixtures::tagged_image(&source, SOURCE_REF, "amd64")
        };
        let home = tmp.path().join("home");
        fs::create_dir(&home).expect("mkdir home");
        Self {
            dest: tmp.path().join("dest"),
            _tmp: tmp,
            source,
            image,
            home,
        }
    }

    fn source_dir(&self) -> &Path {
        self.source.root()
    }

    fn manifest_digest(&self) -> String {
        self.image.descriptor.digest().to_string()
    }

    /// Runs `stowage --store DEST args`, feeding `stdin` when given; the environment
    /// holds no credentials (HOME is empty; DOCKER_CONFIG, REGISTRY_AUTH_FILE,
    /// XDG_RUNTIME_DIR and RUST_LOG are unset) unless `env` adds some.
    fn stowage(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let out_dir = tempfile::tempdir().expect("tempdir");
        let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
        let mut command = Command::new(BIN);
        command
            .arg("--store")
            .arg(&self.dest)
            .args(args)
            .env("HOME", &self.home)
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("RUST_LOG")
            .env_remove("STOWAGE_STORE")
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        let mut child = command.spawn().expect("run stowage");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for stowage") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stowage {args:?} ran longer than {RUN_TIMEOUT:?}; stderr:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            success: status.success(),
            stdout: fs::read_to_string(&out_path).expect("read stdout"),
            stderr: fs::read_to_string(&err_path).expect("read stderr"),
        }
    }

    /// Checks a successful `--json` pull of `reference`: the registry's manifest is
    /// the fixture's, `blobs` blobs came over the wire, and the store names it.
    fn assert_pulled(&self, run: &Run, reference: &str, blobs: usize) {
        run.assert_success(&format!("stowage pull {reference}"));
        let report = run.report();
        assert_eq!(
            report["manifest_digest"],
            self.manifest_digest(),
            "{report}"
        );
        assert_eq!(
            report["layers"],
            self.image.layers.len(),
            "layers in {report}"
        );
        assert_eq!(report["blobs_fetched"], blobs, "blobs in {report}");
        let name = report["reference"].as_str().expect("a reference");
        let store = Store::open(&self.dest).expect("open the pulled store");
        let stored = store
            .resolve_ref(name)
            .expect("read refs")
            .unwrap_or_else(|| panic!("no ref {name} in the store after the pull"));
        assert_eq!(stored.digest().to_string(), self.manifest_digest());
    }

    /// Removes the destination store, so the next pull fetches everything again.
    fn clear_dest(&self) {
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).expect("remove the destination store");
        }
    }

    /// Panics if the destination store names any image.
    fn assert_nothing_pulled(&self) {
        if !self.dest.exists() {
            return;
        }
        let refs = Store::open(&self.dest)
            .expect("open the pulled store")
            .refs()
            .expect("read refs");
        assert!(refs.is_empty(), "a failed pull left refs: {refs:?}");
    }
}

/// A registry that trusts `issuer`'s tokens, holding the fixture as `repo:tag`
/// (pushed by skopeo as the issuer's first user, through the token challenge).
fn token_registry(ws: &Workspace, issuer: &TokenIssuer, repo_tag: &str) -> Registry {
    let registry = Registry::start_config(RegistryConfig {
        extra_yaml: issuer.registry_yaml(),
        ready_statuses: vec![401],
        ..RegistryConfig::default()
    });
    let (user, password) = issuer.policy().users[0].clone();
    push_as(
        ws.source_dir(),
        SOURCE_REF,
        &registry,
        repo_tag,
        &format!("{user}:{password}"),
        None,
    );
    let repo = repo_tag.split(':').next().expect("repo");
    let pushed = issuer
        .requests()
        .iter()
        .any(|r| r.authenticated && r.granted.contains(&format!("repository:{repo}:pull,push")));
    assert!(
        pushed,
        "skopeo pushed without a push token from the issuer: {:#?}",
        issuer.requests()
    );
    registry
}

/// The requests the issuer got from index `from` on, with the issuer's whole log
/// in the failure message when there are not exactly `n`.
fn new_requests(issuer: &TokenIssuer, from: usize, n: usize, context: &str) -> Vec<TokenRequest> {
    let all = issuer.requests();
    let new = all[from..].to_vec();
    assert_eq!(
        new.len(),
        n,
        "{context}: expected {n} token request(s), the issuer got {}:\n{new:#?}",
        new.len()
    );
    new
}

/// Every token the issuer handed out, and each one's signature part.
fn issued_tokens(issuer: &TokenIssuer) -> Vec<String> {
    issuer
        .requests()
        .iter()
        .filter_map(|r| r.token.clone())
        .flat_map(|t| {
            let signature = t.rsplit('.').next().unwrap_or_default().to_string();
            [t, signature]
        })
        .collect()
}

#[test]
fn bearer_pull_fetches_one_pull_scoped_token_for_a_many_layer_image() {
    let ws = Workspace::new(true);
    let issuer = TokenIssuer::start(IssuerPolicy::default());
    let registry = token_registry(&ws, &issuer, "auth/many:v1");

    // The registry really demands a token for this manifest.
    let manifest_path = "/v2/auth/many/manifests/v1";
    let (status, challenge) = get_with_token(&registry.addr(), manifest_path, None);
    assert_eq!(
        status, 401,
        "the registry served the manifest without a token"
    );
    let challenge = challenge.expect("a WWW-Authenticate challenge");
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&issuer.realm())
            && challenge.contains("scope=\"repository:auth/many:pull\""),
        "{challenge}"
    );

    let before = issuer.count();
    let reference = format!("{}/auth/many:v1", registry.addr());
    let run = ws.stowage(&["--json", "pull", &reference], None, &[]);
    ws.assert_pulled(&run, &reference, ws.image.layers.len() + 1);

    // One token for the manifest and all five blobs, asked for with the pull scope
    // alone, anonymously, for this registry's service.
    let new = new_requests(&issuer, before, 1, "a pull of 4 layers and a config");
    let request = &new[0];
    assert_eq!(request.method, "GET", "{request:#?}");
    assert_eq!(
        request.scopes,
        ["repository:auth/many:pull"],
        "{request:#?}"
    );
    assert_eq!(
        request.service.as_deref(),
        Some(issuer.policy().service.as_str())
    );
    assert_eq!(request.basic_user, None, "{request:#?}");
    assert_eq!(request.granted, ["repository:auth/many:pull"]);

    // And that token is what opened the registry: it serves the manifest with it.
    let token = request.token.as_deref().expect("a token");
    let (status, _) = get_with_token(&registry.addr(), manifest_path, Some(token));
    assert_eq!(status, 200, "the issued token does not open the manifest");
}

#[test]
fn the_registry_verifies_token_signature_issuer_and_scope() {
    // Guards the harness: a pull that succeeds proves something only if the registry
    // would refuse a token that is forged, for another repository, or read-only.
    let ws = Workspace::new(false);
    let issuer = TokenIssuer::start(IssuerPolicy::default());
    let registry = token_registry(&ws, &issuer, "auth/checked:v1");
    let manifest = "/v2/auth/checked/manifests/v1";

    let good = issuer.mint(None, "repository:auth/checked:pull");
    assert_eq!(
        get_with_token(&registry.addr(), manifest, Some(&good)).0,
        200
    );

    let forger = TokenIssuer::start(IssuerPolicy::default());
    let forged = forger.mint(None, "repository:auth/checked:pull");
    let (status, challenge) = get_with_token(&registry.addr(), manifest, Some(&forged));
    assert_eq!(
        status, 401,
        "a token signed by an untrusted CA was accepted"
    );
    assert!(
        challenge.as_deref().unwrap_or("").contains("invalid_token"),
        "{challenge:?}"
    );

    let other_repo = issuer.mint(None, "repository:auth/other:pull");
    let (status, challenge) = get_with_token(&registry.addr(), manifest, Some(&other_repo));
    assert_eq!(status, 401, "a token for another repository was accepted");
    assert!(
        challenge
            .as_deref()
            .unwrap_or("")
            .contains("insufficient_scope"),
        "{challenge:?}"
    );

    let push_only = issuer.mint(Some("pusher"), "repository:auth/checked:push");
    let (status, _) = get_with_token(&registry.addr(), manifest, Some(&push_only));
    assert_eq!(status, 401, "a token without the pull action was accepted");
}

#[test]
fn bearer_tokens_named_by_kid_work_as_well_as_x5c() {
    // docker-registry 2.8 finds the signing key from `x5c` (a chain to the bundle) or
    // from `kid` (the libtrust fingerprint of a key in the bundle); stowage does not
    // care which, since it never reads the token.
    let ws = Workspace::new(false);
    let issuer = TokenIssuer::start(IssuerPolicy {
        key_ref: KeyRef::Kid,
        ..IssuerPolicy::default()
    });
    let registry = token_registry(&ws, &issuer, "auth/kid:v1");
    let before = issuer.count();
    let reference = format!("{}/auth/kid:v1", registry.addr());
    let run = ws.stowage(&["--json", "pull", &reference], None, &[]);
    ws.assert_pulled(&run, &reference, ws.image.layers.len() + 1);
    let new = new_requests(&issuer, before, 1, "a pull of 2 layers and a config");
    assert_eq!(new[0].scopes, ["repository:auth/kid:pull"]);
}

/// A token issuer that grants nothing without credentials, and `reader` who may pull.
fn private_policy() -> IssuerPolicy {
    IssuerPolicy {
        users: vec![
            ("pusher".into(), "push-secret-7f3a".into()),
            ("reader".into(), "read-secret-91c2".into()),
        ],
        anonymous: Vec::new(),
        ..IssuerPolicy::default()
    }
}

#[test]
fn bearer_pull_of_a_private_repository_logs_in_to_the_token_service() {
    let ws = Workspace::new(false);
    let issuer = TokenIssuer::start(private_policy());
    let registry = token_registry(&ws, &issuer, "private/app:1.0");
    let reference = format!("{}/private/app:1.0", registry.addr());

    // Without credentials the issuer grants no action and the registry refuses.
    let before = issuer.count();
    let run = ws.stowage(&["pull", &reference], None, &[]);
    run.assert_failure("an anonymous pull of a private repository");
    assert!(
        run.stderr.contains("authentication failed"),
        "stderr: {}",
        run.stderr
    );
    let new = new_requests(&issuer, before, 1, "an anonymous pull");
    assert_eq!(new[0].basic_user, None);
    assert_eq!(new[0].granted, ["repository:private/app:"]);
    ws.assert_nothing_pulled();

    // With them, the token request carries basic auth and the pull goes through.
    let before = issuer.count();
    let run = ws.stowage(
        &[
            "--json",
            "pull",
            "--username",
            "reader",
            "--password-stdin",
            &reference,
        ],
        Some("read-secret-91c2\n"),
        &[],
    );
    ws.assert_pulled(&run, &reference, ws.image.layers.len() + 1);
    let new = new_requests(&issuer, before, 1, "a pull as reader");
    assert_eq!(new[0].basic_user.as_deref(), Some("reader"));
    assert!(new[0].authenticated, "{:#?}", new[0]);
    assert_eq!(new[0].scopes, ["repository:private/app:pull"]);
    assert_eq!(new[0].granted, ["repository:private/app:pull"]);
}

#[test]
fn bearer_secrets_stay_out_of_debug_output() {
    let ws = Workspace::new(false);
    let issuer = TokenIssuer::start(private_policy());
    let registry = token_registry(&ws, &issuer, "private/app:1.0");
    let reference = format!("{}/private/app:1.0", registry.addr());
    let args = [
        "-vv",
        "pull",
        "--username",
        "reader",
        "--password-stdin",
        &reference,
    ];
    let mut secrets = vec![
        "read-secret-91c2".to_string(),
        basic_credentials_b64("reader", "read-secret-91c2"),
        "wrong-secret-5d0e".to_string(),
        basic_credentials_b64("reader", "wrong-secret-5d0e"),
    ];
    for (level, env) in LOUD {
        ws.clear_dest();
        let run = ws.stowage(&args, Some("read-secret-91c2\n"), env);
        run.assert_success(&format!("a -vv pull as reader ({level})"));
        run.assert_logged(level);
        secrets.extend(issued_tokens(&issuer));
        run.assert_no_secret(&secrets);

        // A wrong password: the token service refuses it, and stowage says so.
        ws.clear_dest();
        let run = ws.stowage(&args, Some("wrong-secret-5d0e\n"), env);
        run.assert_failure(&format!("a pull with a wrong password ({level})"));
        assert!(
            run.stderr.contains("authentication failed"),
            "stderr: {}",
            run.stderr
        );
        run.assert_logged(level);
        run.assert_no_secret(&secrets);
    }
}

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
