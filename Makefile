# stowage: the targets a newcomer and CI use. `make demo` and `make test` install what
# they need first (Debian packages; run as root or with sudo available).

CARGO ?= cargo
# System tools the tests and the demo drive for real.
APT_PACKAGES := docker-registry skopeo umoci podman runc busybox-static apache2-utils curl ca-certificates bc jq python3.11-minimal containerd debootstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup build test soak bench demo lint cycles fuzz

setup:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
	@# deploy/kubernetes is validated offline against the Kubernetes schemas this ships;
	@# rendering it needs kubectl's client (kustomize), which no Debian package carries.
	@command -v kubernetes-validate >/dev/null || python3 -m pip install -q 'kubernetes-validate==1.37.0'
	@command -v kubectl >/dev/null || echo "warning: no kubectl here: the deploy/kubernetes test needs kubectl (1.32) to render"

build:
	$(CARGO) build --release

test: setup
	$(CARGO) test --workspace --no-fail-fast

# The reliability suites' long variants: more SIGKILL rounds than `make test` runs.
SOAK_ROUNDS ?= 300
soak: setup
	STOWAGE_CHAOS_ROUNDS=$(SOAK_ROUNDS) $(CARGO) test -p stowage-cli --test it -- pull_chaos --nocapture
	$(CARGO) test -p stowage-cli --test it -- store_concurrency pull_disk_full pull_hostile serve_load --nocapture

bench: setup build
	bash benches/run.sh
	bash benches/mirror.sh
	bash benches/factored.sh
	bash benches/scale.sh
	bash benches/local.sh
	bash benches/fleet.sh

demo: setup build
	bash scripts/demo.sh

lint: cycles
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -p stowage --no-deps

# Import cycles between source files (issue #19): none may exist.
cycles:
	python3 scripts/module_cycles.py

# Fuzzing (not part of `test`: it needs a nightly toolchain). Each target runs
# FUZZ_SECONDS from its seed corpus in fuzz/corpus/; inputs libFuzzer finds go to a
# scratch dir (given first, so it is the one written to) and crashes to
# $(FUZZ_SCRATCH)/artifacts, so a run leaves the repository as it was.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := reference manifest lockfile bvlock www_authenticate conda_metadata
FUZZ_SCRATCH ?= $(or $(TMPDIR),/tmp)/stowage-fuzz

fuzz:
	@$(CARGO) +nightly --version >/dev/null 2>&1 || { \
	  echo "make fuzz needs the nightly Rust toolchain (cargo fuzz builds with sanitizers);"; \
	  echo "install it with: rustup toolchain install nightly"; exit 1; }
	@$(CARGO) +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	$(CARGO) +nightly fuzz build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_SCRATCH)/corpus/$$t $(FUZZ_SCRATCH)/artifacts/$$t && \
	  echo "== $$t ($(FUZZ_SECONDS) s)" && \
	  $(CARGO) +nightly fuzz run $$t $(FUZZ_SCRATCH)/corpus/$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_SCRATCH)/artifacts/$$t/ \
	    -print_final_stats=1 || exit 1; \
	done
