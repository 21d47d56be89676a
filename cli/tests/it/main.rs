//! The integration tests, one binary (each test file used to be its own, and each
//! recompiled the support modules): a module per area, driving the `stowage` binary
//! against a real registry, real runtimes and the fault proxy, and calling the
//! library directly where a process would prove nothing more.

mod support;

mod archive;
mod archive_refused;
mod containerd;
mod copy;
mod demo;
mod deploy_image;
mod example_embed;
mod factored_artifacts;
mod factored_assemble;
mod factored_compose;
mod factored_handoff;
mod factored_layers;
mod factored_python;
mod fleet;
mod kubernetes;
mod layout_interop;
mod lockfile;
mod peers;
mod policy;
mod pull;
mod pull_basic_tls;
mod pull_bearer;
mod pull_chaos;
mod pull_disk_full;
mod pull_faults;
mod pull_hostile;
mod pull_progress;
mod pull_redirect;
mod referrers_carry;
mod referrers_pull;
mod run_spec;
mod runtime;
mod serve;
mod serve_errors;
mod serve_load;
mod serve_upstream;
mod signatures_travel;
mod store_concurrency;
mod store_eviction;
mod store_processes;
mod store_races;
mod store_scale;
mod unpack;
