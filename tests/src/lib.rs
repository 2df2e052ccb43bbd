//! xlb's test harness, shared by the integration tests, `cargo xtask demo`
//! and the benchmarks.
//!
//! - [`packet`]: test frames with correct checksums, and a checksum verifier.
//! - [`testrun`]: one frame through an XDP program via `BPF_PROG_TEST_RUN`.
//! - [`agent`]: `xlb run` on the testbed's directors ([`agent::AgentTestbed`]), its API, and a
//!   steady client load.
//! - [`bench_object`]: the benchmarks' own XDP programs, which `xlb` does not carry.
//! - [`browser`]: headless Chromium in a lab namespace, driven over WebDriver.
//! - [`daemons`]: nginx over HTTPS (with a throwaway CA) and dnsmasq, for the health checks.
//! - [`keepalived`]: keepalived in the lab, as xlb's VRRP peer and yardstick.
//! - [`lab`]: a client, directors and backends in namespaces ([`lab::Testbed`]), and xlb loaded in
//!   this process balancing them for real ([`lab::InProcessTestbed`]).
//! - [`livegen`]: the UDP benchmark's load generator (XDP live frames) and backend counters.
//! - [`loadgen`]: short-connection TCP load with latency percentiles, and a fast server for it.
//! - [`netns`]: namespaces, veth links and processes that clean up after themselves.
//! - [`privileged`]: run-or-skip (or fail, under `XLB_REQUIRE_PRIVILEGED=1`).
//! - [`traffic`]: bounded UDP and TCP sources inside a namespace.
//! - [`servers`]: backends that answer with their name, and clients that tally who answered.

pub mod agent;
pub mod bench_object;
pub mod browser;
pub mod daemons;
pub mod keepalived;
pub mod lab;
pub mod livegen;
pub mod loadgen;
pub mod netns;
pub mod packet;
pub mod privileged;
pub mod servers;
pub mod testrun;
pub mod traffic;

use std::path::PathBuf;

/// The `xlb` binary under test: `$XLB_BIN` (set by `cargo xtask test`), else
/// the one in the target directory of this executable: a test's
/// (`target/<profile>/deps/<test>`) or a harness binary's (`target/<profile>/<bin>`).
pub fn xlb_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("XLB_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let candidate = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("xlb"))
        .find(|p| p.is_file());
    candidate.ok_or_else(|| {
        anyhow::anyhow!("no xlb binary found: run `cargo xtask test` or set XLB_BIN")
    })
}

/// Where tests leave what a person may want to look at (screenshots): `target/test-output/NAME`.
pub fn test_output_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir()?.join("test-output").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The target directory this test executable was built in.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("{} is not in a target directory", exe.display()))
}
