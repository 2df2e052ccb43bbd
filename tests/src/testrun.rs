//! One frame through a loaded XDP program with `BPF_PROG_TEST_RUN`, and
//! fixture tables of (input, description, expected action, expected output).

use std::fmt;

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions, Xdp};

/// The interface BPF_PROG_TEST_RUN frames arrive on: the loopback device of
/// the running thread's network namespace.
const TEST_RUN_IFINDEX: u32 = 1;

/// Makes `dataplane` balance test-run frames addressed to
/// [`crate::packet::DIRECTOR_MAC`], as it would on an interface with that MAC.
pub fn accept_test_frames(dataplane: &mut xlb::dataplane::Dataplane) -> anyhow::Result<()> {
    dataplane
        .set_interface(TEST_RUN_IFINDEX, crate::packet::DIRECTOR_MAC)
        .context("registering the test-run interface")
}

/// Room for the program to grow a frame (encapsulation) in the output.
const OUTPUT_HEADROOM: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
}

impl XdpAction {
    pub fn from_return(value: u32) -> anyhow::Result<Self> {
        Ok(match value {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => anyhow::bail!("XDP program returned {other}, not an XDP action"),
        })
    }
}

/// Runs `frame` through `program` once; returns its verdict and the frame
/// as the program left it.
pub fn run(program: &Xdp, frame: &[u8]) -> anyhow::Result<(XdpAction, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + OUTPUT_HEADROOM];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok((XdpAction::from_return(result.return_value)?, out))
}

/// A frame, what it is, and what the program must do with it.
pub struct Fixture {
    pub description: String,
    pub input: Vec<u8>,
    pub action: XdpAction,
    pub output: Vec<u8>,
}

impl Fixture {
    /// A frame the program must pass to the kernel untouched.
    pub fn pass_unchanged(description: impl Into<String>, input: Vec<u8>) -> Self {
        Fixture {
            description: description.into(),
            output: input.clone(),
            input,
            action: XdpAction::Pass,
        }
    }
}

/// Why a fixture failed.
pub struct Mismatch {
    pub description: String,
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.description, self.detail)
    }
}

/// Runs one fixture; `Err` says what differed.
pub fn check(program: &Xdp, fixture: &Fixture) -> anyhow::Result<Result<(), Mismatch>> {
    let (action, output) = run(program, &fixture.input)?;
    let mismatch = |detail: String| {
        Err(Mismatch {
            description: fixture.description.clone(),
            detail,
        })
    };
    if action != fixture.action {
        return Ok(mismatch(format!(
            "action {action:?}, expected {:?}",
            fixture.action
        )));
    }
    if output != fixture.output {
        return Ok(mismatch(format!(
            "output differs\n  got      {}\n  expected {}",
            hex(&output),
            hex(&fixture.output)
        )));
    }
    Ok(Ok(()))
}

/// Runs every fixture and panics listing all that failed.
pub fn assert_fixtures(program: &Xdp, fixtures: &[Fixture]) {
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|f| match check(program, f) {
            Ok(Ok(())) => None,
            Ok(Err(mismatch)) => Some(mismatch.to_string()),
            Err(e) => Some(format!("{}: {e:#}", f.description)),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
