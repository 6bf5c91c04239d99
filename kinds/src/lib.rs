//! Task kinds: everything that differs between `embed`, `generate` and the next kind, in one
//! [`TaskKind`] implementation per kind, looked up by name from a [`Registry`].
//!
//! A kind says, in one place:
//!
//! | who | method | what |
//! |---|---|---|
//! | requester | [`TaskKind::model`] / [`TaskKind::model_for`], [`TaskKind::split`], [`TaskKind::validate`] | the model a job pins, how an input file becomes task input blobs and their units of work, which parameters the kind accepts |
//! | worker | [`TaskKind::prepare`], [`TaskKind::run`] | load (and measure) once; compute one task's output blob from its input blob |
//! | verifier | [`TaskKind::check`], [`TaskKind::agree`], [`TaskKind::accept`] | whether a replica's output is well formed (and, where the kind can, correct); the comparator; the accepted output of an agreeing cluster |
//! | requester | [`TaskKind::write_results`] | the accepted outputs, assembled in input order |
//!
//! The coordinator knows kinds only by name ([`KindId`]); the worker, the verifier and the
//! requester find the implementation in their [`Registry`]. Adding a kind is one module with
//! one `impl TaskKind` plus one line in [`Registry::standard`] (or a `register` call where the
//! registry is built, as the end-to-end test's "reverse the bytes" kind does).
//!
//! ```no_run
//! use gleaner_kinds::{ModelSetup, Registry};
//! use gleaner_protocol::task::KindId;
//! let device = gleaner_models::select_device(gleaner_models::BackendChoice::Auto)?;
//! let paths = gleaner_models::ModelPaths::new(gleaner_models::default_home());
//! let kinds = Registry::standard(&ModelSetup::new(&paths), device);
//! assert!(kinds.get(&KindId::EMBED).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod embed;
mod error;
mod generate;
pub mod lines;
mod registry;
mod train;

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use alloy::primitives::{Address, U256};
use gleaner_protocol::formulas::ConfidenceBps;
use gleaner_protocol::task::{JobManifest, ModelRef, TaskParams};

pub use embed::{EMBED_TENSOR, EmbedKind, Matrix};
pub use error::{Error, Result};
pub use generate::GenerateKind;
pub use gleaner_protocol::task::KindId;
pub use registry::{ModelSetup, Registry};
pub use train::{
    Gradient, TRAIN_MAX_LOSS_DIFF, TRAIN_MAX_REL_L2, TRAIN_MODEL_ID, TrainInput, TrainKind,
    config_of, next_checkpoint, rel_l2, train_params,
};

/// One task as a kind sees it: where it belongs and the job's model and parameters.
#[derive(Debug, Clone, Copy)]
pub struct TaskRef<'a> {
    /// On-chain job id.
    pub job_id: U256,
    /// Task index in the job.
    pub index: u32,
    /// The model the job pins.
    pub model: &'a ModelRef,
    /// The job's parameters.
    pub params: &'a TaskParams,
}

/// A task input blob the requester uploads, with its cost in units of work (`cost_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskBlob {
    /// The blob.
    pub bytes: Vec<u8>,
    /// Units of work (deterministic, from the input alone).
    pub cost: u64,
}

/// What a requester asks of a kind besides the input file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitOptions {
    /// Wrap each prompt in the model's chat template (kinds without one refuse it).
    pub chat: bool,
}

/// One task's accepted outcome, for [`TaskKind::write_results`].
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// Task index.
    pub index: u32,
    /// The task's input blob (when the kind asks for inputs, see
    /// [`TaskKind::results_need_inputs`]; else empty).
    pub input: &'a [u8],
    /// The accepted output blob, `None` for a task that was not accepted.
    pub output: Option<&'a [u8]>,
}

/// What [`TaskKind::write_results`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Items written (rows, generations).
    pub items: usize,
    /// What an item is, for messages ("rows", "generations").
    pub unit: &'static str,
    /// Tasks without an accepted output (skipped).
    pub missing: Vec<u32>,
}

/// A well-formed output in its kind's decoded form: what [`TaskKind::agree`] compares and
/// [`TaskKind::accept`] combines. Only the kind that made it reads it.
#[derive(Clone)]
pub struct Output(Arc<dyn Any + Send + Sync>);

impl Output {
    /// Wraps a kind's decoded output.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// The decoded output, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output(..)")
    }
}

/// What checking one replica's output found.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Signed by its worker and well formed (and, for kinds the verifier can check, correct).
    Valid(Output),
    /// Signed by its worker but malformed or wrong (the reason): contradicts any accepted quorum.
    Malformed(String),
    /// Cannot be held against the named worker (bad signature, blob missing or not matching its
    /// hash): loses, changes nothing else.
    Unattributable(String),
}

impl Checked {
    /// The output, when valid.
    pub fn output(&self) -> Option<&Output> {
        match self {
            Self::Valid(o) => Some(o),
            _ => None,
        }
    }

    /// The reason, when malformed.
    pub fn malformed(&self) -> Option<&str> {
        match self {
            Self::Malformed(r) => Some(r),
            _ => None,
        }
    }
}

/// A member of an agreeing cluster, for [`TaskKind::accept`].
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Its worker.
    pub worker: Address,
    /// The worker's confidence P_j at decision time.
    pub confidence: ConfidenceBps,
    /// Its checked output.
    pub output: &'a Output,
}

/// Everything that differs between task kinds (see the crate docs for who calls what).
///
/// Implementations are shared between threads; `prepare`, `run` and `check` may block for a
/// long time (model loading and inference) and are called off the async runtime.
pub trait TaskKind: Send + Sync + 'static {
    /// The kind's name in manifests, leases and capabilities.
    fn id(&self) -> KindId;

    /// The model a new job of this kind pins (id and weights hash).
    fn model(&self) -> Result<ModelRef>;

    /// The model a job over `input` (the requester's input file) pins: [`TaskKind::model`],
    /// except for kinds whose model travels with the job (`train`: the step's checkpoint).
    fn model_for(&self, input: &[u8]) -> Result<ModelRef> {
        let _ = input;
        self.model()
    }

    /// Kind-specific rules on a manifest beyond [`JobManifest::validate`] (e.g. whether
    /// sampling is allowed).
    fn validate(&self, manifest: &JobManifest) -> Result<()> {
        let _ = manifest;
        Ok(())
    }

    /// The parameters a job of this kind records, from what the requester asked
    /// (`batch` inputs per task, `max_tokens`, sampling); refuses what the kind cannot run.
    fn params(&self, asked: TaskParams) -> Result<TaskParams> {
        Ok(asked)
    }

    /// Splits a requester's input file into task input blobs of `params.batch` items each,
    /// with their units of work.
    fn split(
        &self,
        input: &[u8],
        params: &TaskParams,
        options: &SplitOptions,
    ) -> Result<Vec<TaskBlob>>;

    /// Whether this host can run the kind (its model files are present).
    fn available(&self) -> bool {
        true
    }

    /// Loads what the kind needs, before the first task; returns the measured throughput in
    /// GFLOP/s when the kind measures one (the worker's resource score R_i).
    fn prepare(&self) -> Result<Option<f64>> {
        Ok(None)
    }

    /// Computes the output blob of one task from its input blob.
    fn run(&self, task: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>>;

    /// Checks one replica's output blob (already attributed to its worker) against the task's
    /// input (empty when the coordinator could not serve it). `Ok(Malformed)` blames the worker;
    /// `Err` is the checker's own failure and says nothing about the worker.
    fn check(&self, task: &TaskRef<'_>, input: &[u8], output: &[u8]) -> Result<Checked>;

    /// A cheap check of a valid output without a second replica: recomputes the part of it that
    /// `pick` selects (embed: one row, `pick` modulo the rows) and compares it with the kind's
    /// comparator. The verifier draws `pick` at random after the output is in, so a worker cannot
    /// tell which part will be checked when it computes. `Ok(Some(reason))`: the part contradicts
    /// the model, and the output counts as malformed. `Ok(None)`: it agrees, or the kind has no
    /// such check (the default: it relies on replicas), or the input is unavailable.
    fn check_part(
        &self,
        task: &TaskRef<'_>,
        input: &[u8],
        output: &Output,
        pick: u64,
    ) -> Result<Option<String>> {
        let _ = (task, input, output, pick);
        Ok(None)
    }

    /// Whether two valid outputs of one task agree (the comparator).
    fn agree(&self, a: &Output, b: &Output) -> bool;

    /// The accepted output blob of an agreeing cluster (members in ascending worker order).
    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>>;

    /// Whether [`TaskKind::write_results`] needs each task's input blob.
    fn results_need_inputs(&self) -> bool {
        false
    }

    /// Writes the accepted outputs of job `job_id`, in task order, to `out` (the format may
    /// depend on its extension).
    fn write_results(&self, job_id: U256, outcomes: &[Outcome<'_>], out: &Path) -> Result<Written>;
}

/// Downcasts every member's output to the kind's type, or says which one is not.
pub(crate) fn outputs_as<'a, T: Any>(members: &[Member<'a>]) -> Result<Vec<&'a T>> {
    members
        .iter()
        .map(|m| {
            m.output.get::<T>().ok_or_else(|| {
                Error::Invalid(format!("the output of {} is of another kind", m.worker))
            })
        })
        .collect()
}

/// Creates `path` for writing, naming it in the error.
pub(crate) fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
}

/// An I/O error while writing `path`.
pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}
