//! [`Registry`]: the kinds a process knows, by name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use gleaner_models::{DecoderChoice, MiniLmFiles, ModelPaths, SelectedDevice};
use gleaner_protocol::task::KindId;

use crate::{EmbedKind, Error, GenerateKind, Result, TaskKind, TrainKind};

/// Where the built-in kinds find their models, and how they run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSetup {
    /// all-MiniLM-L6-v2's files (`embed`).
    pub minilm: MiniLmFiles,
    /// SmolLM2's GGUF (`generate`).
    pub smollm: PathBuf,
    /// What generates tokens (checks run the quantized CPU decoder on a `cpu` device, the Burn
    /// model on any other).
    pub decoder: DecoderChoice,
}

impl ModelSetup {
    /// The models `scripts/setup` put under a Gleaner home, generated with the default decoder.
    pub fn new(paths: &ModelPaths) -> Self {
        Self {
            minilm: paths.minilm(),
            smollm: paths.smollm_gguf(),
            decoder: DecoderChoice::Auto,
        }
    }
}

/// The task kinds this process can handle, by name; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<KindId, Arc<dyn TaskKind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in kinds, their models as `setup` says, run on `device`. A new built-in kind
    /// is one more `.with(..)` line here.
    pub fn standard(setup: &ModelSetup, device: SelectedDevice) -> Self {
        Self::new()
            .with(EmbedKind::new(setup.minilm.clone(), device.clone()))
            .with(GenerateKind::new(
                setup.smollm.clone(),
                device.clone(),
                setup.decoder,
            ))
            .with(TrainKind::new(device))
    }

    /// The built-in kinds on a CPU device: enough to prepare jobs and write results (no model
    /// loads until a task runs or an output is checked).
    pub fn standard_cpu(setup: &ModelSetup) -> Self {
        let cpu = SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "no model runs here");
        Self::standard(setup, cpu)
    }

    /// Adds `kind` (replacing a kind of the same name).
    pub fn with(mut self, kind: impl TaskKind) -> Self {
        self.register(Arc::new(kind));
        self
    }

    /// Adds `kind` (replacing a kind of the same name).
    pub fn register(&mut self, kind: Arc<dyn TaskKind>) {
        self.kinds.insert(kind.id(), kind);
    }

    /// The kind named `id`, or an error that lists the known ones.
    pub fn get(&self, id: &KindId) -> Result<&Arc<dyn TaskKind>> {
        self.kinds.get(id).ok_or_else(|| Error::Unknown {
            kind: id.clone(),
            known: self.names(),
        })
    }

    /// The registered names, comma-separated (for messages and `--help`).
    pub fn names(&self) -> String {
        self.kinds
            .keys()
            .map(KindId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every registered kind, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn TaskKind>> {
        self.kinds.values()
    }

    /// The kinds this host can run now (their model files are present), in name order.
    pub fn available(&self) -> Vec<KindId> {
        self.kinds
            .iter()
            .filter(|(_, k)| k.available())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_kinds_are_found_by_name_and_unknown_ones_are_named() {
        let device = SelectedDevice::cpu(gleaner_models::CpuKind::Flex, "test");
        let r = Registry::standard(&ModelSetup::new(&ModelPaths::new("/nonexistent")), device);
        assert_eq!(r.names(), "embed, generate, train");
        assert_eq!(r.get(&KindId::GENERATE).unwrap().id(), KindId::GENERATE);
        let Err(err) = r.get(&"translate".parse().unwrap()) else {
            panic!("translate is not registered");
        };
        assert_eq!(
            err.to_string(),
            "task kind translate is not known here (this build knows: embed, generate, train)"
        );
        // Nothing under /nonexistent: only train (no model files) can run here.
        assert_eq!(r.available(), vec![KindId::TRAIN]);
    }
}
