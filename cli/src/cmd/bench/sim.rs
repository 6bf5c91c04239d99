//! The simulated task kind of `gleaner bench coordinator`: a task's output is the sha256 of its
//! input, so workers answer at once and the verifier checks an output by hashing, and what is
//! measured is the coordinator, not a model.

use std::io::Write;
use std::path::Path;

use alloy::primitives::{B256, U256};
use gleaner_kinds::{
    Checked, Error, Member, Outcome, Output, Result, SplitOptions, TaskBlob, TaskKind, TaskRef,
    Written,
};
use gleaner_protocol::task::{KindId, ModelRef, TaskParams};
use sha2::{Digest, Sha256};

/// The kind's name in manifests, leases and capabilities.
pub(crate) const SIM: &str = "sim";

/// "sim": one task per input line; the output is the line's sha256 (32 bytes).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SimKind;

/// The output of the task whose input is `input`.
pub(crate) fn output(input: &[u8]) -> Vec<u8> {
    Sha256::digest(input).to_vec()
}

/// `tasks` distinct input lines (`sim task 0 of 2000\n`, ...): one task each.
pub(crate) fn input_file(tasks: u32) -> Vec<u8> {
    (0..tasks)
        .flat_map(|i| format!("sim task {i} of {tasks}\n").into_bytes())
        .collect()
}

impl TaskKind for SimKind {
    fn id(&self) -> KindId {
        KindId::from_static(SIM)
    }

    fn model(&self) -> Result<ModelRef> {
        Ok(ModelRef {
            id: "sim-sha256".into(),
            weights_sha256: B256::repeat_byte(0x53),
        })
    }

    fn split(&self, input: &[u8], _: &TaskParams, _: &SplitOptions) -> Result<Vec<TaskBlob>> {
        Ok(input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| TaskBlob {
                bytes: l.to_vec(),
                cost: 1,
            })
            .collect())
    }

    fn prepare(&self) -> Result<Option<f64>> {
        Ok(Some(1.0))
    }

    fn run(&self, _: &TaskRef<'_>, input: &[u8]) -> Result<Vec<u8>> {
        Ok(output(input))
    }

    fn check(&self, _: &TaskRef<'_>, input: &[u8], out: &[u8]) -> Result<Checked> {
        Ok(if out == output(input).as_slice() {
            Checked::Valid(Output::new(out.to_vec()))
        } else {
            Checked::Malformed("not the sha256 of the input".into())
        })
    }

    fn agree(&self, a: &Output, b: &Output) -> bool {
        a.get::<Vec<u8>>() == b.get::<Vec<u8>>()
    }

    fn accept(&self, members: &[Member<'_>]) -> Result<Vec<u8>> {
        members
            .first()
            .and_then(|m| m.output.get::<Vec<u8>>())
            .cloned()
            .ok_or_else(|| Error::Invalid("nothing to accept".into()))
    }

    fn write_results(&self, _: U256, outcomes: &[Outcome<'_>], out: &Path) -> Result<Written> {
        let io = |source| Error::Io {
            path: out.to_owned(),
            source,
        };
        let mut f = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
        let mut w = Written {
            unit: "hashes",
            ..Written::default()
        };
        for o in outcomes {
            match o.output {
                Some(b) => {
                    writeln!(f, "{}", hex::encode(b)).map_err(io)?;
                    w.items += 1;
                }
                None => w.missing.push(o.index),
            }
        }
        f.flush().map_err(io)?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_check_and_wrong_ones_do_not() {
        let kind = SimKind;
        let params = TaskParams {
            batch: 1,
            max_tokens: 1,
            sampling: None,
            train: None,
        };
        let tasks = kind
            .split(&input_file(3), &params, &SplitOptions::default())
            .unwrap();
        assert_eq!(tasks.len(), 3);
        let model = kind.model().unwrap();
        let task = TaskRef {
            job_id: U256::from(1),
            index: 0,
            model: &model,
            params: &params,
        };
        let input = &tasks[0].bytes;
        let out = kind.run(&task, input).unwrap();
        let ok = kind.check(&task, input, &out).unwrap();
        let other = kind.check(&task, &tasks[1].bytes, &out).unwrap();
        assert!(ok.output().is_some());
        assert!(other.malformed().is_some());
        let again = kind.check(&task, input, &out).unwrap();
        assert!(kind.agree(ok.output().unwrap(), again.output().unwrap()));
    }
}
