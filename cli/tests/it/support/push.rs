//! Pushing hand-made documents straight to a registry with curl (the distribution
//! API's monolithic upload), for formats skopeo would rewrite, such as a Docker
//! schema2 manifest list.

use std::process::Command;

use serde_json::json;
use stowage_store::Digest;

use super::fixtures::{build_layer, sample_tree, sha256_digest, Compression};
use super::registry::Registry;

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "-f", "-D", "-", "-o", "/dev/null"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Uploads one blob to `repo` with a monolithic POST + PUT.
pub fn push_blob(registry: &Registry, repo: &str, data: &[u8]) -> Digest {
    let digest = sha256_digest(data);
    let headers = curl(&[
        "-X",
        "POST",
        &format!("{}/v2/{repo}/blobs/uploads/", registry.url()),
    ]);
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .expect("an upload Location")
        .trim()
        .to_string();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", registry.url())
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{location}{separator}digest={digest}"),
    ]);
    digest
}

/// PUTs a manifest (or index) under `reference` (a tag or digest).
pub fn push_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{}/v2/{repo}/manifests/{reference}", registry.url()),
    ]);
    sha256_digest(bytes)
}

/// A Docker schema2 manifest list for linux/amd64 and linux/arm64 pushed as
/// `repo:tag`; returns (list digest, [(arch, manifest digest)]).
pub fn push_docker_manifest_list(
    registry: &Registry,
    repo: &str,
    tag: &str,
) -> (Digest, Vec<(String, Digest)>) {
    let mut entries = Vec::new();
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = build_layer(&sample_tree(&format!("docker-{arch}")), Compression::Gzip);
        push_blob(registry, repo, &layer.blob);
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        }))
        .unwrap();
        let config_digest = push_blob(registry, repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
            "layers": [{"mediaType": DOCKER_LAYER, "size": layer.blob.len(), "digest": layer.descriptor.digest().to_string()}],
        }))
        .unwrap();
        let digest = push_manifest(
            registry,
            repo,
            sha256_digest(&manifest).as_ref(),
            DOCKER_MANIFEST,
            &manifest,
        );
        entries.push(json!({
            "mediaType": DOCKER_MANIFEST,
            "size": manifest.len(),
            "digest": digest.to_string(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        children.push((arch.to_string(), digest));
    }
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": entries,
    }))
    .unwrap();
    let digest = push_manifest(registry, repo, tag, DOCKER_LIST, &list);
    (digest, children)
}

/// PUTs `bytes` (a manifest already pushed to `repo`) under every one of `tags`, over
/// keep-alive connections, eight at a time: how a test makes thousands of refs out of
/// one pushed image without pushing it thousands of times.
pub fn tag_many(registry: &Registry, repo: &str, media_type: &str, bytes: &[u8], tags: &[String]) {
    use futures_util::stream::{self, StreamExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("{}/v2/{repo}/manifests", registry.url());
    runtime.block_on(async {
        let puts = stream::iter(tags)
            .map(|tag| {
                let request = client
                    .put(format!("{base}/{tag}"))
                    .header("Content-Type", media_type)
                    .body(bytes.to_vec());
                async move { (tag, request.send().await) }
            })
            .buffer_unordered(8);
        puts.for_each(|(tag, response)| async move {
            let response = response.unwrap_or_else(|e| panic!("PUT {repo}:{tag}: {e}"));
            assert!(
                response.status().is_success(),
                "PUT {repo}:{tag}: {}",
                response.status()
            );
        })
        .await;
    });
}
