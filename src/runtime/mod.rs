//! Container runtimes: handing images from the store to podman or docker.
