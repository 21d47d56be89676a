//! deploy/Dockerfile builds, for real, with docker: the image deploy/kubernetes runs
//! has stowage and ctr, and serves a store. This machine reaches no container
//! registry, so the base is a Debian 12 minbase made here by debootstrap (from
//! Debian's mirror, as `make setup` installs debootstrap) and imported once as
//! `stowage-test/bookworm-minbase`, kept between runs; the image itself is removed.

use std::path::Path;
use std::process::Command;

use crate::runtime::tools::{assert_ok, docker_available, DockerImages};
use crate::support::pulling::BIN;
use crate::support::serving::curl;

const BASE: &str = "stowage-test/bookworm-minbase";
const IMAGE: &str = "stowage-test/stowage:it";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Removes the container it names when the test ends, passed or not (before the
/// image guard, declared earlier, removes the image it runs).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// The Debian 12 base, made with debootstrap the first time.
fn base_image(dir: &Path) {
    if docker(&["image", "inspect", BASE]).status.success() {
        return;
    }
    let root = dir.join("rootfs");
    let made = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg("http://deb.debian.org/debian")
        .output()
        .unwrap_or_else(|e| panic!("cannot run debootstrap (make setup installs it): {e}"));
    assert_ok(&made, "debootstrap --variant=minbase bookworm");
    let imported = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | docker import - {BASE}",
            root.display()
        ))
        .output()
        .unwrap();
    assert_ok(&imported, "docker import of the debootstrap tree");
}

#[test]
fn the_deploy_image_builds_and_serves_a_store() {
    if !docker_available("the_deploy_image_builds_and_serves_a_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    base_image(dir.path());
    // The build context as .dockerignore leaves it: the binary, where the
    // Dockerfile copies it from (this test's build of it).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let context = dir.path().join("context");
    std::fs::create_dir_all(context.join("target/release")).unwrap();
    std::fs::copy(BIN, context.join("target/release/stowage")).unwrap();
    let _image = DockerImages(vec![IMAGE.to_string()]);
    let dockerfile = repo.join("deploy/Dockerfile");
    let built = docker(&[
        "build",
        "-q",
        "-f",
        dockerfile.to_str().unwrap(),
        "--build-arg",
        &format!("BASE={BASE}"),
        "-t",
        IMAGE,
        context.to_str().unwrap(),
    ]);
    assert_ok(&built, "docker build -f deploy/Dockerfile");
    let ctr = docker(&["run", "--rm", "--entrypoint", "ctr", IMAGE, "--version"]);
    assert_ok(&ctr, "ctr in the image");
    assert!(String::from_utf8_lossy(&ctr.stdout).contains("containerd"));

    // Its entrypoint is stowage: a serve on the host's network answers the API.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("stowage-it-serve-{}", std::process::id());
    let addr = format!("127.0.0.1:{port}");
    let started = docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--network",
        "host",
        IMAGE,
        "--store",
        "/var/lib/stowage",
        "serve",
        "--addr",
        &addr,
    ]);
    let _container = Container(name.clone());
    assert_ok(&started, "docker run the image's serve");
    let listening = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let response = listening.then(|| curl(&[&format!("http://{addr}/v2/")]));
    let response = response.expect("the image's stowage serve never listened");
    assert_eq!(response.status, 200);
}
