//! Property tests of the protocol's codecs: job manifests, task input/output blobs, task specs and
//! their hashes, EIP-712 messages and the coordinator API's JSON bodies.
//!
//! Two kinds of property, per codec:
//! - **round trip**: `decode(encode(x)) == x` for every value the encoder accepts (and an encoder
//!   that refuses a value refuses it with an error, never by producing bytes its decoder refuses);
//! - **no panic**: every decoder returns `Ok` or `Err` on arbitrary bytes and on valid encodings
//!   that were truncated, bit-flipped or had bytes inserted or deleted. When a decoder accepts such
//!   bytes, what it returns encodes and decodes again to itself.
//!
//! Case counts are modest (256, 64 where a case signs) so the file runs in seconds.

use alloy::primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolStruct, SolValue};
use gleaner_protocol::api::{
    Capabilities, Decision, JobState, JobStatus, Lease, RegisterJob, SignIn, SubmitResult, Verdict,
};
use gleaner_protocol::blob::{
    Generation, decode_generations, decode_matrix, decode_prompts, decode_texts,
    encode_generations, encode_matrix, encode_prompts, encode_texts,
};
use gleaner_protocol::eip712::{
    self, JobRegistration, TaskResult, WorkerSignIn, check_expiry, domain,
};
use gleaner_protocol::task::{
    JobManifest, KindId, MANIFEST_VERSION, ModelRef, SamplingParams, TaskInput, TaskParams,
    TaskSpec,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Shared strategies and helpers.

fn b256() -> impl Strategy<Value = B256> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(B256::from),
        // A few repeated values, so that equal hashes inside one value (two tasks with the same
        // input) are common rather than never.
        (0u8..4).prop_map(B256::repeat_byte),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from)
}

fn u256() -> impl Strategy<Value = U256> {
    prop_oneof![
        any::<u64>().prop_map(U256::from),
        any::<[u8; 32]>().prop_map(U256::from_be_bytes),
        Just(U256::MAX),
    ]
}

/// Any string, control characters, quotes, backslashes, newlines and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..16).prop_map(String::from_iter)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn kind() -> impl Strategy<Value = KindId> {
    "[a-z][a-z0-9_-]{0,31}".prop_map(|s| s.parse().expect("the regex is KindId's grammar"))
}

/// Every f32 bit pattern is possible (all NaN payloads, infinities, subnormals, -0.0).
fn f32_bits() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        prop::sample::select(vec![
            0.0f32,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX,
        ]),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A damage done to an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

/// A byte that means something to one of the formats, or any byte.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b"\"\\{}[],:0123456789-.eE \n\rnulltrue\xff\x00".to_vec()),
        any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Insert(i, x) => {
                let at = i.index(b.len() + 1);
                b.insert(at, *x);
            }
            _ if b.is_empty() => {}
            Mutation::Flip(i, bit) => {
                let at = i.index(b.len());
                b[at] ^= 1 << bit;
            }
            Mutation::Set(i, x) => {
                let at = i.index(b.len());
                b[at] = *x;
            }
            Mutation::Delete(i) => {
                b.remove(i.index(b.len()));
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len())),
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Job manifests.

fn sampling(valid: bool) -> BoxedStrategy<SamplingParams> {
    if valid {
        (1u32.., 1u32..=1000, any::<u64>())
            .prop_map(|(t, p, seed)| SamplingParams {
                temperature_milli: t,
                top_p_milli: p,
                seed,
            })
            .boxed()
    } else {
        (any::<u32>(), any::<u32>(), any::<u64>())
            .prop_map(|(t, p, seed)| SamplingParams {
                temperature_milli: t,
                top_p_milli: p,
                seed,
            })
            .boxed()
    }
}

fn params(valid: bool) -> impl Strategy<Value = TaskParams> {
    let positive = if valid { 1u32.. } else { 0u32.. };
    (
        positive.clone(),
        positive,
        prop::option::of(sampling(valid)),
    )
        .prop_map(|(batch, max_tokens, sampling)| TaskParams {
            batch,
            max_tokens,
            sampling,
            train: None,
        })
}

/// A manifest that [`JobManifest::validate`] accepts.
fn valid_manifest() -> impl Strategy<Value = JobManifest> {
    (
        kind(),
        text().prop_filter("model id is non-empty", |s| !s.is_empty()),
        b256(),
        params(true),
        vec((b256(), 1u64..), 1..6),
    )
        .prop_map(|(kind, id, weights, params, tasks)| JobManifest {
            version: MANIFEST_VERSION,
            kind,
            model: ModelRef {
                id,
                weights_sha256: weights,
            },
            params,
            spot_checks: None,
            tasks: tasks
                .into_iter()
                .map(|(input_hash, cost)| TaskInput { input_hash, cost })
                .collect(),
        })
}

/// Any manifest the types can hold: version, empty model id, zero costs, zero batch, no tasks,
/// out-of-range sampling included.
fn any_manifest() -> impl Strategy<Value = JobManifest> {
    (
        prop_oneof![Just(MANIFEST_VERSION), any::<u32>()],
        kind(),
        text(),
        b256(),
        params(false),
        vec((b256(), prop_oneof![Just(0u64), any::<u64>()]), 0..5),
    )
        .prop_map(|(version, kind, id, weights, params, tasks)| JobManifest {
            version,
            kind,
            model: ModelRef {
                id,
                weights_sha256: weights,
            },
            params,
            spot_checks: None,
            tasks: tasks
                .into_iter()
                .map(|(input_hash, cost)| TaskInput { input_hash, cost })
                .collect(),
        })
}

/// One field of a manifest changed to a different value (the caller checks it differs).
#[derive(Debug, Clone)]
enum ManifestEdit {
    Kind(KindId),
    ModelId(String),
    Weights(B256),
    Batch(u32),
    MaxTokens(u32),
    Sampling(Option<SamplingParams>),
    Input(Index, B256),
    Cost(Index, u64),
    AddTask(B256, u64),
    DropTask(Index),
}

fn manifest_edit() -> impl Strategy<Value = ManifestEdit> {
    prop_oneof![
        kind().prop_map(ManifestEdit::Kind),
        text().prop_map(ManifestEdit::ModelId),
        b256().prop_map(ManifestEdit::Weights),
        any::<u32>().prop_map(ManifestEdit::Batch),
        any::<u32>().prop_map(ManifestEdit::MaxTokens),
        prop::option::of(sampling(true)).prop_map(ManifestEdit::Sampling),
        (any::<Index>(), b256()).prop_map(|(i, h)| ManifestEdit::Input(i, h)),
        (any::<Index>(), 1u64..).prop_map(|(i, c)| ManifestEdit::Cost(i, c)),
        (b256(), 1u64..).prop_map(|(h, c)| ManifestEdit::AddTask(h, c)),
        any::<Index>().prop_map(ManifestEdit::DropTask),
    ]
}

fn apply_edit(m: &JobManifest, e: &ManifestEdit) -> JobManifest {
    let mut m = m.clone();
    let n = m.tasks.len();
    match e.clone() {
        ManifestEdit::Kind(k) => m.kind = k,
        ManifestEdit::ModelId(s) => m.model.id = s,
        ManifestEdit::Weights(h) => m.model.weights_sha256 = h,
        ManifestEdit::Batch(b) => m.params.batch = b,
        ManifestEdit::MaxTokens(t) => m.params.max_tokens = t,
        ManifestEdit::Sampling(s) => m.params.sampling = s,
        ManifestEdit::Input(i, h) => m.tasks[i.index(n)].input_hash = h,
        ManifestEdit::Cost(i, c) => m.tasks[i.index(n)].cost = c,
        ManifestEdit::AddTask(input_hash, cost) => m.tasks.push(TaskInput { input_hash, cost }),
        ManifestEdit::DropTask(i) => {
            m.tasks.remove(i.index(n));
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid manifest survives its canonical encoding, and encoding is deterministic and
    /// hashed as `specHash = keccak256(canonical)`.
    #[test]
    fn manifest_canonical_round_trip(m in valid_manifest()) {
        let bytes = m.canonical();
        prop_assert_eq!(&m.canonical(), &bytes);
        prop_assert_eq!(m.clone().canonical(), bytes.clone());
        prop_assert_eq!(m.spec_hash(), keccak256(&bytes));
        prop_assert_eq!(JobManifest::from_canonical(&bytes).unwrap(), m);
    }

    /// For any manifest the types can hold (invalid ones included, e.g. no tasks),
    /// `from_canonical(canonical(m))` gives back `m` exactly when `m` is valid, and otherwise
    /// an error, never a different manifest.
    #[test]
    fn manifest_canonical_accepts_exactly_the_valid(m in any_manifest()) {
        match JobManifest::from_canonical(&m.canonical()) {
            Ok(back) => {
                prop_assert!(m.validate().is_ok());
                prop_assert_eq!(back, m);
            }
            Err(_) => prop_assert!(m.validate().is_err()),
        }
    }

    /// Two manifests have the same spec hash iff they have the same canonical bytes iff they
    /// are equal; in particular any one-field change moves the hash.
    #[test]
    fn manifest_spec_hash_is_injective(
        a in valid_manifest(),
        b in valid_manifest(),
        edit in manifest_edit(),
        same in any::<bool>(),
    ) {
        let b = if same { a.clone() } else { b };
        prop_assert_eq!(a.spec_hash() == b.spec_hash(), a.canonical() == b.canonical());
        prop_assert_eq!(a.canonical() == b.canonical(), a == b);
        let edited = apply_edit(&a, &edit);
        prop_assert_eq!(edited == a, edited.spec_hash() == a.spec_hash(), "{:?}", edit);
    }

    /// `from_canonical` never panics on arbitrary bytes, and accepts only canonical, valid ones.
    #[test]
    fn manifest_decoder_never_panics_on_arbitrary_bytes(b in bytes(512)) {
        if let Ok(m) = JobManifest::from_canonical(&b) {
            prop_assert_eq!(m.canonical(), b);
            prop_assert!(m.validate().is_ok());
        }
    }

    /// `from_canonical` never panics on damaged canonical bytes; what it accepts re-encodes to
    /// exactly those bytes.
    #[test]
    fn manifest_decoder_never_panics_on_damaged_encodings(
        m in valid_manifest(),
        ms in mutations(),
    ) {
        let b = mutate(m.canonical(), &ms);
        if let Ok(back) = JobManifest::from_canonical(&b) {
            prop_assert_eq!(back.canonical(), b);
            prop_assert!(back.validate().is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blobs.

/// A text `encode_texts` must accept: one line, not blank.
fn line() -> impl Strategy<Value = String> {
    text()
        .prop_map(|s| s.replace('\n', ""))
        .prop_filter("not blank", |s| !s.trim().is_empty())
}

fn generation() -> impl Strategy<Value = Generation> {
    (vec(any::<u32>(), 0..8), text()).prop_map(|(ids, text)| Generation { ids, text })
}

/// A matrix: `(data, rows, cols)` with `data.len() == rows * cols`.
fn matrix() -> impl Strategy<Value = (Vec<f32>, usize, usize)> {
    (0usize..5, 0usize..5).prop_flat_map(|(r, c)| (vec(f32_bits(), r * c), Just(r), Just(c)))
}

fn metadata() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

fn tensor_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("embeddings".to_owned()),
        text(),
        // The key safetensors reserves for the metadata map.
        Just("__metadata__".to_owned()),
    ]
}

/// A safetensors-like file whose header has an arbitrary (often absurd) shape and data offsets
/// for tensor `embeddings`, reaching the decoder's size arithmetic rather than its JSON parser.
fn crafted_safetensors() -> impl Strategy<Value = Vec<u8>> {
    let dim = prop_oneof![
        0usize..4,
        any::<usize>(),
        Just(usize::MAX),
        Just(usize::MAX / 4),
        Just((usize::MAX / 4) + 1),
    ];
    let offset = prop_oneof![
        0usize..16,
        any::<usize>(),
        (0usize..16).prop_map(|k| usize::MAX - k),
    ];
    (
        prop::sample::select(vec!["F32", "F16", "I64"]),
        vec(dim, 0..4),
        offset,
        prop_oneof![Just(None), any::<usize>().prop_map(Some)],
        bytes(64),
        0usize..9,
    )
        .prop_map(|(dtype, shape, start, stop, data, pad)| {
            // Usually the size matches the shape (so the offsets are what is checked next).
            let want = shape
                .iter()
                .try_fold(4usize, |a, &d| a.checked_mul(d))
                .unwrap_or(0);
            let stop = stop.unwrap_or_else(|| start.wrapping_add(want));
            let header = serde_json::json!({
                "embeddings": { "dtype": dtype, "shape": shape, "data_offsets": [start, stop] },
            });
            let mut header = serde_json::to_vec(&header).unwrap();
            header.extend(std::iter::repeat_n(b' ', pad));
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend(header);
            out.extend(data);
            out
        })
}

/// What a successful `decode_matrix` returned encodes and decodes to itself.
fn matrix_redecodes(name: &str, got: &(Vec<f32>, usize, usize)) -> Result<(), TestCaseError> {
    let (data, rows, cols) = got;
    prop_assert_eq!(data.len(), rows * cols);
    let again = encode_matrix(name, data, *rows, *cols, &[]).unwrap();
    let (d2, r2, c2) = decode_matrix(name, &again).unwrap();
    prop_assert_eq!((bits(&d2), r2, c2), (bits(data), *rows, *cols));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `encode_texts` either refuses a list of texts (blank text, a newline inside one, no text
    /// at all) or `decode_texts` gives it back.
    #[test]
    fn texts_encode_refuses_or_round_trips(texts in vec(text(), 0..6)) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        if let Ok(b) = encode_texts(&refs) {
            prop_assert_eq!(decode_texts(&b).unwrap(), texts);
        }
    }

    /// One-line, non-blank texts are always accepted, and round-trip.
    #[test]
    fn texts_round_trip(texts in vec(line(), 1..6)) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let b = encode_texts(&refs).unwrap();
        prop_assert_eq!(encode_texts(&refs).unwrap(), b.clone());
        prop_assert_eq!(decode_texts(&b).unwrap(), texts);
    }

    /// `encode_prompts` either refuses (no prompt, a blank one) or `decode_prompts` gives the
    /// prompts back, newlines and quotes inside them included.
    #[test]
    fn prompts_encode_refuses_or_round_trips(prompts in vec(text(), 0..6)) {
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        match encode_prompts(&refs) {
            Ok(b) => prop_assert_eq!(decode_prompts(&b).unwrap(), prompts),
            Err(_) => prop_assert!(
                prompts.is_empty() || prompts.iter().any(|p| p.trim().is_empty())
            ),
        }
    }

    /// Generate outputs round-trip through their canonical JSON, which is deterministic.
    #[test]
    fn generations_round_trip(g in vec(generation(), 0..5)) {
        let b = encode_generations(&g);
        prop_assert_eq!(encode_generations(&g.clone()), b.clone());
        prop_assert_eq!(decode_generations(&b).unwrap(), g);
    }

    /// `encode_matrix` either refuses or `decode_matrix` returns the same shape and the same
    /// f32 bit patterns (NaN payloads, infinities and -0.0 included), whatever the metadata.
    #[test]
    fn matrix_encode_refuses_or_round_trips(
        name in tensor_name(),
        (data, rows, cols) in matrix(),
        meta in metadata(),
    ) {
        let meta: Vec<(&str, &str)> =
            meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Ok(b) = encode_matrix(&name, &data, rows, cols, &meta) {
            let header_and_length = b.len() - 4 * data.len();
            prop_assert_eq!(header_and_length % 8, 0, "the header is padded to 8 bytes");
            let (back, r, c) = decode_matrix(&name, &b).unwrap();
            prop_assert_eq!((bits(&back), r, c), (bits(&data), rows, cols));
        }
    }

    /// A matrix whose values do not fill `[rows, cols]` exactly is refused.
    #[test]
    fn matrix_encode_refuses_wrong_sizes(
        (data, rows, cols) in matrix(),
        extra in 1usize..3,
        drop in any::<bool>(),
    ) {
        let mut data = data;
        if drop && !data.is_empty() {
            data.pop();
        } else {
            data.extend(std::iter::repeat_n(1.0, extra));
        }
        prop_assert!(encode_matrix("embeddings", &data, rows, cols, &[]).is_err());
        prop_assert!(encode_matrix("embeddings", &[], usize::MAX, 2, &[]).is_err());
    }

    /// No blob decoder panics on arbitrary bytes; what one accepts re-encodes to something it
    /// decodes to the same value.
    #[test]
    fn blob_decoders_never_panic_on_arbitrary_bytes(b in bytes(512), name in tensor_name()) {
        if let Ok(texts) = decode_texts(&b) {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            prop_assert_eq!(decode_texts(&encode_texts(&refs).unwrap()).unwrap(), texts);
        }
        if let Ok(prompts) = decode_prompts(&b) {
            let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
            prop_assert_eq!(decode_prompts(&encode_prompts(&refs).unwrap()).unwrap(), prompts);
        }
        if let Ok(g) = decode_generations(&b) {
            prop_assert_eq!(encode_generations(&g), b.clone());
        }
        if let Ok(m) = decode_matrix(&name, &b) {
            matrix_redecodes("embeddings", &m)?;
        }
    }

    /// No blob decoder panics on a damaged valid encoding (truncated, bit-flipped, bytes set,
    /// inserted or deleted); what one accepts re-encodes consistently.
    #[test]
    fn blob_decoders_never_panic_on_damaged_encodings(
        texts in vec(line(), 1..4),
        g in vec(generation(), 0..3),
        (data, rows, cols) in matrix(),
        ms in mutations(),
    ) {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

        let b = mutate(encode_texts(&refs).unwrap(), &ms);
        if let Ok(t) = decode_texts(&b) {
            let r: Vec<&str> = t.iter().map(String::as_str).collect();
            prop_assert_eq!(decode_texts(&encode_texts(&r).unwrap()).unwrap(), t);
        }

        let b = mutate(encode_prompts(&refs).unwrap(), &ms);
        if let Ok(p) = decode_prompts(&b) {
            let r: Vec<&str> = p.iter().map(String::as_str).collect();
            prop_assert_eq!(decode_prompts(&encode_prompts(&r).unwrap()).unwrap(), p);
        }

        let b = mutate(encode_generations(&g), &ms);
        if let Ok(back) = decode_generations(&b) {
            prop_assert_eq!(encode_generations(&back), b);
        }

        let b = mutate(encode_matrix("embeddings", &data, rows, cols, &[("k", "v")]).unwrap(), &ms);
        if let Ok(m) = decode_matrix("embeddings", &b) {
            matrix_redecodes("embeddings", &m)?;
        }
    }

    /// `decode_matrix` never panics on a well-formed header with absurd shapes or data offsets
    /// (sizes and offsets near `usize::MAX`): its size arithmetic must not overflow.
    #[test]
    fn matrix_decoder_never_panics_on_crafted_headers(b in crafted_safetensors()) {
        if let Ok(m) = decode_matrix("embeddings", &b) {
            matrix_redecodes("embeddings", &m)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Task specs and task hashes.

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (u256(), any::<u32>(), b256(), b256(), b256()).prop_map(
        |(job_id, index, model_hash, input_hash, params_hash)| TaskSpec {
            job_id,
            index,
            model_hash,
            input_hash,
            params_hash,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A task spec's encoding is `abi.encode` of its five fields (it decodes back to them), is
    /// deterministic, and its hash is keccak256 of it.
    #[test]
    fn task_spec_encoding_round_trips(s in task_spec()) {
        let enc = s.encode();
        prop_assert_eq!(enc.len(), 5 * 32);
        prop_assert_eq!(s.encode(), enc.clone());
        prop_assert_eq!(s.hash(), keccak256(&enc));
        prop_assert_eq!(s.hash(), s.hash());
        let (job_id, index, model_hash, input_hash, params_hash) =
            <(U256, u32, B256, B256, B256)>::abi_decode(&enc).unwrap();
        prop_assert_eq!(
            TaskSpec { job_id, index, model_hash, input_hash, params_hash },
            s
        );
    }

    /// Changing any one field of a task spec changes its hash.
    #[test]
    fn task_hash_binds_every_field(s in task_spec(), o in task_spec()) {
        let variants = [
            TaskSpec { job_id: o.job_id, ..s },
            TaskSpec { index: o.index, ..s },
            TaskSpec { model_hash: o.model_hash, ..s },
            TaskSpec { input_hash: o.input_hash, ..s },
            TaskSpec { params_hash: o.params_hash, ..s },
        ];
        for v in variants {
            prop_assert_eq!(v == s, v.hash() == s.hash(), "{:?}", v);
        }
    }

    /// A manifest has one task hash per task, each that task's spec hash; they are pairwise
    /// distinct (the index is bound, even for equal inputs); no spec exists past the last task.
    #[test]
    fn manifest_task_hashes_match_specs(m in valid_manifest(), job in u256()) {
        let hashes = m.task_hashes(job);
        prop_assert_eq!(hashes.len(), m.tasks.len());
        prop_assert_eq!(m.task_hashes(job), hashes.clone());
        for (i, h) in hashes.iter().enumerate() {
            let spec = m.task_spec(job, i as u32).unwrap();
            prop_assert_eq!(spec.job_id, job);
            prop_assert_eq!(spec.index, i as u32);
            prop_assert_eq!(spec.model_hash, m.model.weights_sha256);
            prop_assert_eq!(spec.input_hash, m.tasks[i].input_hash);
            prop_assert_eq!(spec.params_hash, m.params_hash());
            prop_assert_eq!(*h, spec.hash());
        }
        let mut unique = hashes.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), hashes.len());
        prop_assert!(m.task_spec(job, m.tasks.len() as u32).is_none());
    }

    /// Another job id, model, or any change of the params changes every task hash; another
    /// input changes that task's hash and only it.
    #[test]
    fn manifest_task_hashes_bind_job_model_params_and_inputs(
        m in valid_manifest(),
        job in u256(),
        other_job in u256(),
        weights in b256(),
        p in params(false),
        at in any::<Index>(),
        input in b256(),
    ) {
        let base = m.task_hashes(job);
        let all_differ = |other: &[B256]| base.iter().zip(other).all(|(a, b)| a != b);

        if other_job != job {
            prop_assert!(all_differ(&m.task_hashes(other_job)));
        }
        let mut m2 = m.clone();
        m2.model.weights_sha256 = weights;
        if weights != m.model.weights_sha256 {
            prop_assert!(all_differ(&m2.task_hashes(job)));
        }
        let mut m3 = m.clone();
        m3.params = p;
        prop_assert_eq!(m3.params == m.params, m3.params_hash() == m.params_hash());
        if m3.params != m.params {
            prop_assert!(all_differ(&m3.task_hashes(job)));
        }
        let k = at.index(m.tasks.len());
        let mut m4 = m.clone();
        m4.tasks[k].input_hash = input;
        let changed = m4.task_hashes(job);
        for (i, (a, b)) in base.iter().zip(&changed).enumerate() {
            prop_assert_eq!(a == b, i != k || input == m.tasks[k].input_hash);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// EIP-712 messages.

fn signer() -> impl Strategy<Value = PrivateKeySigner> {
    any::<[u8; 32]>().prop_filter_map("not a secp256k1 scalar", |b| {
        PrivateKeySigner::from_bytes(&B256::from(b)).ok()
    })
}

/// Two different deployments: `(chain_id, market)` and another chain id and another market.
fn deployments() -> impl Strategy<Value = ((u64, Address), (u64, Address))> {
    ((any::<u64>(), address()), (any::<u64>(), address()))
        .prop_filter("another chain and market", |((c, m), (c2, m2))| {
            c != c2 && m != m2
        })
}

/// Signs `msg` with `key` in one deployment and checks that the signature verifies there (also
/// after its 65-byte wire form is parsed back), and fails in the other deployment, for another
/// signer, and for every message in `changed` (each differs from `msg` in one field).
fn check_signature_binding<T: SolStruct + PartialEq>(
    msg: &T,
    changed: &[T],
    key: &PrivateKeySigner,
    other: Address,
    ((chain, market), (chain2, market2)): ((u64, Address), (u64, Address)),
) -> Result<(), TestCaseError> {
    let d = domain(chain, market);
    let sig = key.sign_hash_sync(&eip712::digest(msg, &d)).unwrap();
    prop_assert!(eip712::verify(msg, &d, &sig, key.address()).is_ok());

    let wire = Signature::from_raw(&sig.as_bytes()).unwrap();
    prop_assert_eq!(wire, sig);
    prop_assert!(eip712::verify(msg, &d, &wire, key.address()).is_ok());

    prop_assert!(eip712::verify(msg, &domain(chain2, market), &sig, key.address()).is_err());
    prop_assert!(eip712::verify(msg, &domain(chain, market2), &sig, key.address()).is_err());
    if other != key.address() {
        prop_assert!(eip712::verify(msg, &d, &sig, other).is_err());
    }
    for c in changed {
        if c != msg {
            prop_assert!(eip712::verify(c, &d, &sig, key.address()).is_err());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A `WorkerSignIn` signature verifies in its deployment only, for its signer only, and
    /// binds every field.
    #[test]
    fn worker_sign_in_signature_binds(
        key in signer(),
        other in address(),
        deps in deployments(),
        (caps, nonce, expiry) in (b256(), any::<u64>(), any::<u64>()),
        (caps2, nonce2, expiry2, worker2) in (b256(), any::<u64>(), any::<u64>(), address()),
    ) {
        let msg = WorkerSignIn { worker: key.address(), capabilitiesHash: caps, nonce, expiry };
        let changed = [
            WorkerSignIn { worker: worker2, ..msg.clone() },
            WorkerSignIn { capabilitiesHash: caps2, ..msg.clone() },
            WorkerSignIn { nonce: nonce2, ..msg.clone() },
            WorkerSignIn { expiry: expiry2, ..msg.clone() },
            WorkerSignIn { nonce: nonce.wrapping_add(1), ..msg.clone() },
        ];
        check_signature_binding(&msg, &changed, &key, other, deps)?;
    }

    /// A `TaskResult` signature verifies in its deployment only, for its signer only, and binds
    /// every field.
    #[test]
    fn task_result_signature_binds(
        key in signer(),
        other in address(),
        deps in deployments(),
        (task, result) in (b256(), b256()),
        (task2, result2, worker2) in (b256(), b256(), address()),
    ) {
        let msg = TaskResult { taskHash: task, resultHash: result, worker: key.address() };
        let changed = [
            TaskResult { taskHash: task2, ..msg.clone() },
            TaskResult { resultHash: result2, ..msg.clone() },
            TaskResult { worker: worker2, ..msg.clone() },
        ];
        check_signature_binding(&msg, &changed, &key, other, deps)?;
    }

    /// A `JobRegistration` signature verifies in its deployment only, for its signer only, and
    /// binds every field.
    #[test]
    fn job_registration_signature_binds(
        key in signer(),
        other in address(),
        deps in deployments(),
        (job, spec, expiry) in (u256(), b256(), any::<u64>()),
        (job2, spec2, expiry2, requester2) in (u256(), b256(), any::<u64>(), address()),
    ) {
        let msg = JobRegistration { jobId: job, specHash: spec, requester: key.address(), expiry };
        let changed = [
            JobRegistration { jobId: job2, ..msg.clone() },
            JobRegistration { specHash: spec2, ..msg.clone() },
            JobRegistration { requester: requester2, ..msg.clone() },
            JobRegistration { expiry: expiry2, ..msg.clone() },
        ];
        check_signature_binding(&msg, &changed, &key, other, deps)?;
    }
}

/// Arbitrary signature bytes: mostly 65 long (so parsing gets to `r`, `s` and `v`), any length
/// up to 100 otherwise.
fn signature_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(100),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            prop_oneof![
                prop::sample::select(vec![0u8, 1, 27, 28, 35, 36]),
                any::<u8>()
            ],
        )
            .prop_map(|(r, s, v)| [&r[..], &s[..], &[v][..]].concat()),
        // r or s zero, or at the curve order and above.
        (
            prop::sample::select(vec![[0u8; 32], [0xff; 32]]),
            any::<[u8; 32]>(),
            any::<bool>()
        )
            .prop_map(|(fixed, x, r_fixed)| {
                let (r, s) = if r_fixed { (fixed, x) } else { (x, fixed) };
                [&r[..], &s[..], &[27u8][..]].concat()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Parsing arbitrary signature bytes as the coordinator does (`Signature::from_raw`) and
    /// verifying them never panics; only 65-byte input parses.
    #[test]
    fn signature_parsing_and_verification_never_panic(
        raw in signature_bytes(),
        digest_of in (b256(), b256(), address()),
        expected in address(),
        (chain, market) in (any::<u64>(), address()),
    ) {
        if let Ok(sig) = Signature::from_raw(&raw) {
            prop_assert_eq!(raw.len(), 65);
            let (task, result, worker) = digest_of;
            let msg = TaskResult { taskHash: task, resultHash: result, worker };
            let _ = eip712::verify(&msg, &domain(chain, market), &sig, expected);
        }
    }

    /// `check_expiry` never panics (the window end saturates) and accepts exactly
    /// `now <= expiry <= now + max_ahead`.
    #[test]
    fn check_expiry_never_panics(
        expiry in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
        now in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
        max_ahead in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
    ) {
        let ok = check_expiry(expiry, now, max_ahead).is_ok();
        let want = expiry >= now && u128::from(expiry) <= u128::from(now) + u128::from(max_ahead);
        prop_assert_eq!(ok, want);
    }
}

// ---------------------------------------------------------------------------------------------
// API JSON bodies.

fn capabilities() -> impl Strategy<Value = Capabilities> {
    (
        text(),
        text(),
        any::<u64>(),
        prop_oneof![
            any::<f64>().prop_filter("finite", |g| g.is_finite()),
            prop::sample::select(vec![
                0.0,
                -0.0,
                0.1 + 0.2,
                1e300,
                f64::MAX,
                f64::MIN_POSITIVE
            ]),
        ],
        vec(kind(), 0..4),
    )
        .prop_map(
            |(adapter, backend, memory_bytes, gflops, kinds)| Capabilities {
                adapter,
                backend,
                memory_bytes,
                gflops,
                kinds,
            },
        )
}

fn sig_bytes() -> impl Strategy<Value = Bytes> {
    bytes(80).prop_map(Bytes::from)
}

fn sign_in() -> impl Strategy<Value = SignIn> {
    (
        address(),
        capabilities(),
        any::<u64>(),
        any::<u64>(),
        sig_bytes(),
    )
        .prop_map(|(address, capabilities, nonce, expiry, signature)| SignIn {
            address,
            capabilities,
            nonce,
            expiry,
            signature,
        })
}

fn submit_result() -> impl Strategy<Value = SubmitResult> {
    (text(), b256(), b256(), sig_bytes()).prop_map(
        |(lease_id, task_hash, result_hash, signature)| SubmitResult {
            lease_id,
            task_hash,
            result_hash,
            signature,
        },
    )
}

fn lease() -> impl Strategy<Value = Lease> {
    (
        (text(), u256(), any::<u32>(), b256()),
        (kind(), text(), b256(), params(false)),
        (b256(), any::<u64>()),
    )
        .prop_map(
            |(
                (lease_id, job_id, index, task_hash),
                (kind, id, weights, params),
                (input_hash, expires_at),
            )| {
                Lease {
                    lease_id,
                    job_id,
                    index,
                    task_hash,
                    kind,
                    model: ModelRef {
                        id,
                        weights_sha256: weights,
                    },
                    params,
                    input_hash,
                    expires_at,
                }
            },
        )
}

fn register_job() -> impl Strategy<Value = RegisterJob> {
    (u256(), text(), address(), any::<u64>(), sig_bytes()).prop_map(
        |(job_id, manifest, requester, expiry, signature)| RegisterJob {
            job_id,
            manifest,
            requester,
            expiry,
            signature,
        },
    )
}

fn job_status() -> impl Strategy<Value = JobStatus> {
    (
        u256(),
        prop::sample::select(JobState::ALL.to_vec()),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        prop::option::of(b256()),
    )
        .prop_map(
            |(
                job_id,
                state,
                (tasks, redundancy, replicas_done, tasks_accepted, tasks_failed),
                report_hash,
            )| {
                JobStatus {
                    job_id,
                    state,
                    tasks,
                    redundancy,
                    replicas_done,
                    tasks_accepted,
                    tasks_failed,
                    report_hash,
                }
            },
        )
}

fn decision() -> impl Strategy<Value = Decision> {
    let verdict = prop_oneof![
        (b256(), vec(address(), 0..4))
            .prop_map(|(result, quorum)| Verdict::Accept { result, quorum }),
        any::<u16>().prop_map(|extra_replicas| Verdict::More { extra_replicas }),
        Just(Verdict::Fail),
    ];
    (u256(), any::<u32>(), verdict).prop_map(|(job_id, index, verdict)| Decision {
        job_id,
        index,
        verdict,
    })
}

/// `serde_json` round trip of one value.
fn json_round_trip<T>(x: &T) -> Result<T, TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let b = serde_json::to_vec(x).unwrap();
    serde_json::from_slice(&b)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&b))))
}

/// Parses `b` as each API body; none may panic.
fn parse_all(b: &[u8]) {
    let _ = serde_json::from_slice::<SignIn>(b);
    let _ = serde_json::from_slice::<SubmitResult>(b);
    let _ = serde_json::from_slice::<Lease>(b);
    let _ = serde_json::from_slice::<RegisterJob>(b);
    let _ = serde_json::from_slice::<JobStatus>(b);
    let _ = serde_json::from_slice::<Decision>(b);
    let _ = serde_json::from_slice::<Capabilities>(b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A sign-in body survives JSON. A worker sends rounded capabilities
    /// ([`Capabilities::round`]): those come back bit-exactly, so with the same hash (what the
    /// signature binds), whatever the measured `gflops`. Unrounded ones still parse.
    #[test]
    fn sign_in_json_round_trip(s in sign_in()) {
        let back = json_round_trip(&s)?;
        let without_gflops = |x: SignIn| SignIn {
            capabilities: Capabilities { gflops: 0.0, ..x.capabilities },
            ..x
        };
        prop_assert_eq!(without_gflops(back), without_gflops(s.clone()));
        let rounded = SignIn { capabilities: s.capabilities.clone().round(), ..s.clone() };
        prop_assert!(rounded.capabilities.gflops.is_finite());
        prop_assert_eq!(rounded.capabilities.clone().round(), rounded.capabilities.clone());
        let back = json_round_trip(&rounded)?;
        prop_assert_eq!(back.capabilities.hash(), rounded.capabilities.hash());
        prop_assert_eq!(back, rounded);
    }

    /// Result, lease, registration, status and decision bodies survive JSON exactly.
    #[test]
    fn api_bodies_json_round_trip(
        r in submit_result(),
        l in lease(),
        j in register_job(),
        st in job_status(),
        d in decision(),
    ) {
        prop_assert_eq!(json_round_trip(&r)?, r);
        prop_assert_eq!(json_round_trip(&l)?, l);
        prop_assert_eq!(json_round_trip(&j)?, j);
        prop_assert_eq!(json_round_trip(&st)?, st);
        prop_assert_eq!(json_round_trip(&d)?, d);
    }

    /// Parsing arbitrary bytes as any API body never panics.
    #[test]
    fn api_parsing_never_panics_on_arbitrary_bytes(b in bytes(256)) {
        parse_all(&b);
    }

    /// Parsing a damaged valid API body never panics.
    #[test]
    fn api_parsing_never_panics_on_damaged_bodies(
        s in sign_in(),
        l in lease(),
        d in decision(),
        st in job_status(),
        which in 0usize..4,
        ms in mutations(),
    ) {
        let b = match which {
            0 => serde_json::to_vec(&s),
            1 => serde_json::to_vec(&l),
            2 => serde_json::to_vec(&d),
            _ => serde_json::to_vec(&st),
        }
        .unwrap();
        parse_all(&mutate(b, &ms));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A read grant's token parses back to the same grant, its signature binds the job, the
    /// grantee, the expiry and the deployment, and no token text makes the parser panic.
    #[test]
    fn read_grant_token_round_trips_and_binds(
        job in any::<u64>(),
        grantee in any::<[u8; 20]>(),
        expiry in any::<u64>(),
        chain_id in 1u64..u64::MAX,
        junk in ".{0,120}",
    ) {
        use gleaner_protocol::api::ReadGrant;
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let market = alloy::primitives::Address::repeat_byte(7);
        let domain = gleaner_protocol::eip712::domain(chain_id, market);
        let grant = sign_grant(&signer, &domain, job, grantee.into(), expiry);
        let parsed = ReadGrant::parse(&grant.token()).unwrap();
        prop_assert_eq!(&parsed, &grant);
        let sig = alloy::primitives::Signature::from_raw(&parsed.signature).unwrap();
        prop_assert!(gleaner_protocol::eip712::verify(&parsed.message(), &domain, &sig, signer.address()).is_ok());
        let other = gleaner_protocol::eip712::domain(chain_id.wrapping_add(1).max(1), market);
        prop_assert!(gleaner_protocol::eip712::verify(&parsed.message(), &other, &sig, signer.address()).is_err());
        let mut later = parsed.clone();
        later.expiry = later.expiry.wrapping_add(1);
        prop_assert!(gleaner_protocol::eip712::verify(&later.message(), &domain, &sig, signer.address()).is_err());
        let _ = ReadGrant::parse(&junk);
    }
}

/// Signs a read grant without the client crate (the protocol crate's tests do not depend on it).
fn sign_grant(
    signer: &alloy::signers::local::PrivateKeySigner,
    domain: &alloy::sol_types::Eip712Domain,
    job: u64,
    grantee: alloy::primitives::Address,
    expiry: u64,
) -> gleaner_protocol::api::ReadGrant {
    use alloy::signers::SignerSync;
    let mut grant = gleaner_protocol::api::ReadGrant {
        job_id: alloy::primitives::U256::from(job),
        grantee,
        expiry,
        signature: alloy::primitives::Bytes::new(),
    };
    let digest = gleaner_protocol::eip712::digest(&grant.message(), domain);
    grant.signature = signer
        .sign_hash_sync(&digest)
        .unwrap()
        .as_bytes()
        .to_vec()
        .into();
    grant
}
