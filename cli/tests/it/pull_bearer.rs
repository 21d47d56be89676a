//! `stowage pull` against the real `docker-registry` with `auth: token`, no mocks:
//! bearer tokens from a token issuer written here (JWTs the registry verifies against
//! its `rootcertbundle`, named by `x5c` or `kid`), one pull-scoped token per pull,
//! a login to the token service for a private repository, and no password or token
//! in anything stowage prints, even with `-vv`.

use crate::support::auth_client::{basic_credentials_b64, get_with_token, push_as};
use crate::support::jwt::KeyRef;
use crate::support::registry::{Registry, RegistryConfig};
use crate::support::token_issuer::{IssuerPolicy, TokenIssuer, TokenRequest};
use crate::support::workspace::{Workspace, LOUD, SOURCE_REF};

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
