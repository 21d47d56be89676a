//! What an environment tool does with stowage as a library, end to end: the calls of
//! its runtime trait, against a registry, into a store of its own.
//!
//! ```sh
//! cargo run --example embed -- STORE REGISTRY/REPO:TAG MANIFEST_DIGEST LAYER_DIGEST:SIZE...
//! ```
//!
//! 1. `pull_verified` with a wrong digest: refused, nothing recorded;
//! 2. `pull_verified_v2`: the image, its digest and every layer as pinned;
//! 3. `verify_layer_digests` and `is_locally_available`, with no network;
//! 4. `ensure_layers` for the same layers: nothing to fetch;
//! 5. `assemble_image` from those layers under a new name, with no network.
//!
//! It prints one JSON line with what each step found, and exits 1 on any error.

use std::process::ExitCode;
use std::sync::Arc;

use oci_spec::image::ImageManifest;
use stowage::store::{parse_digest, Descriptor, Store, MANIFEST_LIMIT};
use stowage::{
    assemble_image, ensure_layers, is_locally_available, pull_verified, pull_verified_v2,
    verify_layer_digests, AssembleLayer, Client, ClientConfig, ExpectedLayer, PullOptions,
    Reference, RunConfig, Silent,
};

fn main() -> ExitCode {
    match run() {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store_dir, image, digest, layers @ ..] = args.as_slice() else {
        return Err("usage: embed STORE REF MANIFEST_DIGEST LAYER_DIGEST:SIZE...".into());
    };
    let store = Store::open(store_dir)?;
    let image: Reference = image.parse()?;
    let digest = parse_digest(digest)?;
    let layers = layers
        .iter()
        .map(|arg| {
            let (digest, size) = arg.rsplit_once(':').ok_or("a layer is DIGEST:SIZE")?;
            Ok(ExpectedLayer {
                digest: parse_digest(digest)?,
                size: size.parse()?,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let client = Arc::new(Client::new(ClientConfig::default())?);
    let runtime = tokio::runtime::Runtime::new()?;

    // 1. A pin the registry does not match is refused, and nothing is recorded.
    let wrong = parse_digest(&format!("sha256:{}", "0".repeat(64)))?;
    let refused = runtime
        .block_on(pull_verified(
            client.clone(),
            &store,
            &image,
            &wrong,
            Arc::new(Silent),
        ))
        .err()
        .ok_or("a pull pinned to a wrong digest succeeded")?;
    if !store.refs()?.is_empty() {
        return Err("a refused pull recorded a ref".into());
    }

    // 2. The pinned image, every layer as pinned.
    let pulled = runtime.block_on(pull_verified_v2(
        client.clone(),
        &store,
        &image,
        &digest,
        &layers,
        Arc::new(Silent),
    ))?;

    // 3. No network from here on: the store alone answers.
    verify_layer_digests(&store, &pulled.reference, &layers)?;
    let available = is_locally_available(&store, &pulled.reference, &digest);
    if !available {
        return Err("the image pulled is not whole in the store".into());
    }

    // 4. The layers are there (as the stored manifest describes them): nothing to fetch.
    let manifest: ImageManifest =
        serde_json::from_slice(&store.read_blob(&digest, MANIFEST_LIMIT)?)?;
    let descriptors: Vec<Descriptor> = manifest.layers().clone();
    let ensured = runtime.block_on(ensure_layers(
        client,
        &store,
        &image,
        &descriptors,
        &PullOptions::default(),
        Arc::new(Silent),
    ))?;

    // 5. A new image of the same layers, diff_ids computed from their content.
    let assemble: Vec<AssembleLayer> = descriptors
        .into_iter()
        .map(|descriptor| AssembleLayer {
            descriptor,
            diff_id: None,
        })
        .collect();
    let run = RunConfig {
        os: "linux".into(),
        architecture: "amd64".into(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        ..RunConfig::default()
    };
    let assembled = assemble_image(&store, "example/assembled:1", &run, &assemble)?;

    Ok(serde_json::json!({
        "refused": refused.to_string(),
        "pulled": pulled.reference,
        "bytes_fetched": pulled.bytes_fetched,
        "available": available,
        "ensure_fetched": ensured.fetched,
        "assembled": assembled.digest().to_string(),
    }))
}
