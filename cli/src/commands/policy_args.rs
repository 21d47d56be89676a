//! `--policy FILE` on `pull`, `sync`, `import`, `run` and `load`: the signature policy
//! (containers-policy.json(5); without the flag, the file podman would read, else
//! none: digests only), checked offline against the signatures in the store.
//!
//! `pull`, `sync` and `import` record refs inside the library, before the command can
//! check them; so the check runs after, and a refused image's ref is put back as it
//! was before the command (removed when the command made it, restored when it named
//! another image before). Blobs stay, for `gc`. `run` and `load` check before any
//! runtime is called.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use stowage::store::{
    parse_digest, Descriptor, Digest, MediaType, Store, INDEX_ANNOTATION, MANIFEST_LIMIT,
};
use stowage::{
    signed_subjects, Client, Pin, Policy, RawManifest, Reference, ReferrerFilter, SignedIndexes,
    StoredImage, SyncReport, SyncStatus, Verdict, ARTIFACT_COSIGN_SIGNATURE,
};
use tokio::runtime::Runtime;

/// The signature policy; shared by the commands that check it.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The signature policy (containers-policy.json(5): insecureAcceptAnything, reject,
    /// sigstoreSigned with keyPath/keyData), checked offline against the cosign
    /// signatures in the store. Default: $HOME/.config/containers/policy.json, else
    /// /etc/containers/policy.json, else none (digests only).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl PolicyArgs {
    /// The policy in force, if any.
    pub fn load(&self) -> anyhow::Result<Option<Policy>> {
        let policy =
            Policy::given_or_default(self.policy.as_deref()).with_context(|| {
                match &self.policy {
                    Some(_) => "the --policy file cannot be used".to_string(),
                    None => "the signature policy podman would use cannot be used by stowage \
                         (give --policy FILE to use another)"
                        .to_string(),
                }
            })?;
        match policy {
            // Debian's own policy: nothing to refuse, so no check and no cost.
            Some(policy) if policy.accepts_anything() => {
                tracing::debug!(
                    "signature policy {}: insecureAcceptAnything everywhere",
                    policy.path().display()
                );
                Ok(None)
            }
            Some(policy) => {
                tracing::debug!("signature policy: {}", policy.path().display());
                Ok(Some(policy))
            }
            None => Ok(None),
        }
    }
}

/// The refs of the store as they were before a command (for putting back those of a
/// refused image).
pub struct RefsBefore(HashMap<String, Descriptor>);

impl RefsBefore {
    pub fn take(store: &Store) -> anyhow::Result<Self> {
        let mut refs = HashMap::new();
        store.for_each_ref(|name, d| {
            refs.insert(name.to_string(), d.clone());
        })?;
        Ok(Self(refs))
    }

    /// Puts `name` back as it was: removed if the command made it, else pointed at
    /// what it named before; only while it still names one of `recorded` (what the
    /// command recorded): a ref another process changed meanwhile is left as it is.
    pub fn restore(&self, store: &Store, name: &str, recorded: &[Digest]) -> anyhow::Result<()> {
        let reverted = store
            .revert_ref(name, recorded, self.0.get(name))
            .with_context(|| format!("putting back {name} as it was"))?;
        if !reverted {
            tracing::warn!(
                name,
                "not put back: the ref no longer names what this command recorded \
                 (another process changed it meanwhile), so it is left as that one set it"
            );
        }
        Ok(())
    }
}

/// The digests whose signatures stand for a stored image naming `digest`: its own,
/// `index` (the index a pull chose it from, or the index a ref names), and any stored
/// index with referrers that lists it.
pub fn subjects(
    store: &Store,
    digest: &Digest,
    index: Option<&Digest>,
) -> anyhow::Result<Vec<Digest>> {
    let mut subjects = signed_subjects(store, digest)?;
    if let Some(index) = index.filter(|i| !subjects.contains(i)) {
        subjects.push(index.clone());
    }
    Ok(subjects)
}

/// Checks the stored image `name` (naming `digest`) against `policy`; on refusal the
/// ref is put back as `before` had it.
pub fn check_recorded(
    store: &Store,
    policy: &Policy,
    name: &str,
    digests: &[Digest],
    before: &RefsBefore,
) -> anyhow::Result<Verdict> {
    match policy.check(store, name, digests) {
        Ok(verdict) => {
            tracing::info!(
                "{name}: accepted by {} (scope {}): {}",
                verdict.policy.display(),
                verdict.scope,
                verdict.accepted_by.join("; ")
            );
            Ok(verdict)
        }
        Err(refused) => {
            before
                .restore(store, name, digests)
                .with_context(|| format!("after refusing it: {refused}"))?;
            Err(refused).context(format!(
                "{name}: its ref is as it was before this command (blobs stay until gc)"
            ))
        }
    }
}

/// `run` and `load`: the stored image must pass before a runtime is called.
pub fn check_stored(store: &Store, args: &PolicyArgs, reference: &str) -> anyhow::Result<()> {
    let Some(policy) = args.load()? else {
        return Ok(());
    };
    let image = StoredImage::open(store, reference)?;
    let recorded = store.resolve_ref(&image.store_ref)?;
    let named = recorded.as_ref().map(|d| d.digest().clone());
    let subjects = subjects(store, image.manifest.digest(), named.as_ref())?;
    let verdict = policy.check(store, &image.store_ref, &subjects).map_err(|refused| {
        // A platform chosen from an index that is not stored: the index's signatures
        // (cosign signs what a tag names) cannot stand for it, since nothing stored
        // shows that the index lists it. Say so rather than leave "no signature".
        let index = recorded
            .as_ref()
            .and_then(|d| d.annotations().as_ref()?.get(INDEX_ANNOTATION).cloned())
            .filter(|i| parse_digest(i).is_ok_and(|i| !store.has(&i)));
        match index {
            Some(index) => anyhow::Error::from(refused).context(format!(
                "{} was chosen from the index {index}, which the store does not hold, so                  the index's signatures cannot be checked for it (pull it with                  --all-platforms to keep the index)",
                image.store_ref
            )),
            None => refused.into(),
        }
    })?;
    tracing::info!(
        "{}: accepted by {} (scope {}): {}",
        image.store_ref,
        verdict.policy.display(),
        verdict.scope,
        verdict.accepted_by.join("; ")
    );
    Ok(())
}

/// `import`: every image the import recorded must pass, or none stays recorded (an
/// import is all or nothing, as the library's own checks make it).
pub fn check_imported(
    store: &Store,
    policy: &Policy,
    images: &[(String, Digest)],
    before: &RefsBefore,
) -> anyhow::Result<()> {
    let mut refusals = Vec::new();
    let indexes = SignedIndexes::read(store)?;
    for (name, digest) in images {
        let subjects = indexes.subjects(digest);
        match policy.check(store, name, &subjects) {
            Ok(verdict) => tracing::info!(
                "{name}: accepted (scope {}): {}",
                verdict.scope,
                verdict.accepted_by.join("; ")
            ),
            Err(refused) => refusals.push(refused.to_string()),
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    for (name, digest) in images {
        before.restore(store, name, std::slice::from_ref(digest))?;
    }
    anyhow::bail!(
        "{}; so no ref of this import is recorded (its refs are as they were before; \
         blobs stay until gc)",
        refusals.join("; ")
    )
}

/// Where signatures are fetched from before a check: the command's client, unless
/// it runs offline.
pub struct Fetch<'a> {
    pub tokio: &'a Runtime,
    pub client: &'a Arc<Client>,
    pub offline: bool,
}

/// `pull`: fetch the image's signatures when its scope needs them (unless offline),
/// then check it; refused, its ref is put back as `before` had it.
pub struct Pulled<'a> {
    pub reference: &'a Reference,
    /// The ref the pull recorded, and the digests from its report.
    pub name: &'a str,
    pub manifest_digest: &'a str,
    pub index_digest: Option<&'a str>,
}

pub fn check_pulled(
    fetch: &Fetch,
    store: &Store,
    policy: &Policy,
    pulled: &Pulled,
    before: &RefsBefore,
) -> anyhow::Result<()> {
    let manifest = parse_digest(pulled.manifest_digest)?;
    let index = pulled.index_digest.map(parse_digest).transpose()?;
    let mut fetched: Vec<Digest> = vec![manifest.clone()];
    fetched.extend(index.clone());
    fetch_if_needed(fetch, store, policy, pulled.reference, &fetched).or_else(|e| {
        before.restore(store, pulled.name, &fetched)?;
        Err(e)
    })?;
    let subjects = subjects(store, &manifest, index.as_ref())?;
    check_recorded(store, policy, pulled.name, &subjects, before)?;
    Ok(())
}

/// `sync`: each image the sync made whole is checked as `pull` checks it (the
/// signatures of its pinned digests fetched first, unless offline); a refused one is
/// marked failed with the refusal as its detail, and its ref put back.
pub fn check_synced(
    fetch: &Fetch,
    store: &Store,
    policy: &Policy,
    pins: &[Pin],
    report: &mut SyncReport,
    before: &RefsBefore,
) -> anyhow::Result<()> {
    let by_name: HashMap<&str, &Pin> = pins.iter().map(|p| (p.name.as_str(), p)).collect();
    // The report names images as the lockfile does; the store, by reference.
    let mut checked = Vec::new();
    for (i, image) in report.images.iter_mut().enumerate() {
        let Some(pin) = by_name.get(image.name.as_str()) else {
            continue;
        };
        let store_name = pin.store_name();
        let recorded = match store.resolve_ref(&store_name)? {
            Some(d) if image.status.is_whole() => d.digest().clone(),
            _ => continue,
        };
        let mut digests = vec![recorded];
        for pinned in [Some(&pin.digest), pin.manifest.as_ref()]
            .into_iter()
            .flatten()
        {
            if !digests.contains(pinned) {
                digests.push(pinned.clone());
            }
        }
        let fetched = pin
            .reference
            .parse::<Reference>()
            .map_err(anyhow::Error::from)
            .and_then(|r| fetch_if_needed(fetch, store, policy, &r, &digests));
        match fetched {
            Ok(()) => checked.push((i, store_name, digests)),
            Err(e) => {
                before.restore(store, &store_name, &digests)?;
                image.status = SyncStatus::Failed;
                image.detail = Some(format!("{e:#}"));
            }
        }
    }
    // Read once, after every fetch: a signed index may list several of the images.
    let indexes = SignedIndexes::read(store)?;
    for (i, store_name, digests) in checked {
        let mut subjects = indexes.subjects(&digests[0]);
        for digest in &digests[1..] {
            if !subjects.contains(digest) {
                subjects.push(digest.clone());
            }
        }
        if let Err(e) = check_recorded(store, policy, &store_name, &subjects, before) {
            let image = &mut report.images[i];
            image.status = SyncStatus::Failed;
            image.detail = Some(format!("{e:#}"));
        }
    }
    Ok(())
}

/// Fetches the signatures of `digests` from `reference`'s repository when the scope
/// that applies to it needs them; offline, the store's alone are checked.
fn fetch_if_needed(
    fetch: &Fetch,
    store: &Store,
    policy: &Policy,
    reference: &Reference,
    digests: &[Digest],
) -> anyhow::Result<()> {
    if fetch.offline || !policy.needs_signatures(reference) {
        return Ok(());
    }
    let filter = ReferrerFilter::Types(vec![ARTIFACT_COSIGN_SIGNATURE.to_string()]);
    for digest in digests {
        let subject = subject_descriptor(store, digest);
        let found = fetch
            .tokio
            .block_on(stowage::pull_referrers(
                fetch.client,
                store,
                reference,
                &subject,
                &filter,
            ))
            .with_context(|| format!("fetching the signatures of {reference} ({digest})"))?;
        tracing::info!(
            "{reference}: {} signature(s) of {digest} stored",
            found.len()
        );
    }
    Ok(())
}

/// The descriptor a referrers lookup names `digest` by: the stored manifest's, else
/// (an index a pull did not keep) one naming the digest alone.
fn subject_descriptor(store: &Store, digest: &Digest) -> Descriptor {
    match store.read_blob(digest, MANIFEST_LIMIT) {
        Ok(bytes) => RawManifest::from_stored(bytes, digest.clone()).descriptor(),
        Err(_) => Descriptor::new(MediaType::ImageIndex, 0, digest.clone()),
    }
}
