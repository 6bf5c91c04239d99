//! Dishonest workers, as task kinds that wrap an honest one: the worker needs no fault hooks,
//! a test registers the cheating kind under the honest kind's name.

use std::path::Path;

use gleaner_kinds::{
    Checked, EMBED_TENSOR, EmbedKind, GenerateKind, Member, Outcome, Output, Result, SplitOptions,
    TaskBlob, TaskKind, TaskRef, Written,
};
use gleaner_protocol::blob::{
    Generation, decode_generations, decode_matrix, encode_generations, encode_matrix,
};
use gleaner_protocol::task::{JobManifest, KindId, ModelRef, TaskParams};

/// How a cheat turns the honest output of a task (its input at hand) into its lie.
pub(crate) type Tamper<K> =
    Box<dyn Fn(&K, &TaskRef<'_>, &[u8], Vec<u8>) -> Result<Vec<u8>> + Send + Sync>;

/// An honest kind whose outputs `tamper` changes after computing them honestly.
pub(crate) struct Cheat<K> {
    pub(crate) honest: K,
    pub(crate) tamper: Tamper<K>,
    /// Tasks it lied about (its output differed from the honest one).
    pub(crate) lies: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<K: 'static> Cheat<K> {
    /// `honest` with the plain output-to-output `tamper`.
    pub(crate) fn new(honest: K, tamper: fn(&K, Vec<u8>) -> Result<Vec<u8>>) -> Self {
        Self::with(honest, Box::new(move |k, _, _, out| tamper(k, out)))
    }

    /// `honest` with a `tamper` that sees the task and its input.
    pub(crate) fn with(honest: K, tamper: Tamper<K>) -> Self {
        Self {
            honest,
            tamper,
            lies: std::sync::Arc::default(),
        }
    }
}

impl<K: TaskKind> TaskKind for Cheat<K> {
    fn id(&self) -> KindId {
        self.honest.id()
    }
    fn model(&self) -> Result<ModelRef> {
        self.honest.model()
    }
    fn model_for(&self, input: &[u8]) -> Result<ModelRef> {
        self.honest.model_for(input)
    }
    fn validate(&self, m: &JobManifest) -> Result<()> {
        self.honest.validate(m)
    }
    fn split(&self, i: &[u8], p: &TaskParams, o: &SplitOptions) -> Result<Vec<TaskBlob>> {
        self.honest.split(i, p, o)
    }
    fn available(&self) -> bool {
        self.honest.available()
    }
    fn prepare(&self) -> Result<Option<f64>> {
        self.honest.prepare()
    }
    fn run(&self, task: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        let honest = self.honest.run(task, input)?;
        let out = (self.tamper)(&self.honest, task, input, honest.clone())?;
        if out != honest {
            self.lies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(out)
    }
    fn check(&self, t: &TaskRef<'_>, i: &[u8], o: &[u8]) -> Result<Checked> {
        self.honest.check(t, i, o)
    }
    fn check_part(
        &self,
        t: &TaskRef<'_>,
        i: &[u8],
        o: &Output,
        pick: u64,
    ) -> Result<Option<String>> {
        self.honest.check_part(t, i, o, pick)
    }
    fn agree(&self, a: &Output, b: &Output) -> bool {
        self.honest.agree(a, b)
    }
    fn accept(&self, m: &[Member<'_>]) -> Result<Vec<u8>> {
        self.honest.accept(m)
    }
    fn write_results(
        &self,
        job: alloy::primitives::U256,
        o: &[Outcome<'_>],
        out: &Path,
    ) -> Result<Written> {
        self.honest.write_results(job, o, out)
    }
}

/// Embeddings of reversed, negated rows: plausible-looking but wrong vectors.
pub(crate) fn corrupt_embeddings(_: &EmbedKind, out: Vec<u8>) -> Result<Vec<u8>> {
    let (data, rows, cols) = decode_matrix(EMBED_TENSOR, &out)?;
    let flipped: Vec<f32> = data
        .chunks_exact(cols)
        .rev()
        .flat_map(|r| r.iter().map(|x| -x))
        .collect();
    Ok(encode_matrix(EMBED_TENSOR, &flipped, rows, cols, &[])?)
}

/// The second token of every output replaced by another (ids and text stay consistent; only
/// the model's logits can tell).
pub(crate) fn substitute_tokens(kind: &GenerateKind, out: Vec<u8>) -> Result<Vec<u8>> {
    let generator = kind.generator()?;
    let vocab = generator.model().config().vocab as u32;
    let mut outputs = decode_generations(&out)?;
    for g in &mut outputs {
        if g.ids.len() > 1 {
            g.ids[1] = (g.ids[1] + vocab / 2) % vocab;
            *g = Generation {
                text: generator.text(&g.ids)?,
                ids: std::mem::take(&mut g.ids),
            };
        }
    }
    Ok(encode_generations(&outputs))
}
