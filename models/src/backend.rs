//! Choosing where a model runs: a wgpu GPU when there is one, a CPU backend otherwise.
//!
//! Workers prefer wgpu (Vulkan/Metal/DX12). Mesa's lavapipe is a wgpu adapter too, but a CPU one
//! and ~20x slower than a CPU backend here, so `auto` takes wgpu only for a real GPU adapter and
//! says which it chose. `--backend wgpu` still runs on lavapipe (that is how tests reach the
//! wgpu path on machines without a GPU).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use burn::prelude::*;
use burn::tensor::wgpu::wgpu;
use cubecl_runtime::config::CubeClRuntimeConfig;

use crate::{Error, Result};

/// What the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// wgpu on a real GPU adapter, else the CPU backend.
    #[default]
    Auto,
    /// wgpu on whatever adapter it finds (a GPU, or lavapipe).
    Wgpu,
    /// Gleaner's own CPU kernels where it has them (the MiniLM encoder, SmolLM2's quantized
    /// decoder), Burn's Flex backend for the rest ([`CpuKind::DEFAULT`]).
    Cpu,
    /// The Flex CPU backend explicitly.
    Flex,
    /// The NdArray CPU backend explicitly (deprecated by Burn 0.22).
    NdArray,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "cpu" => Ok(Self::Cpu),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::NdArray),
            other => Err(format!(
                "unknown backend {other:?}; expected auto, wgpu, cpu, flex or ndarray"
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
            Self::Flex => "flex",
            Self::NdArray => "ndarray",
        })
    }
}

/// The float type a Burn model's weights and activations use on a device (`--precision`).
///
/// `f16` halves the memory traffic of every weight read and of the activations between kernels,
/// what small-batch GPU inference is bound by. It is offered on wgpu only: CPU backends compute
/// in f32 (our CPU kernels have their own exact integer paths).
/// Normalisation statistics, pooling and the outputs stay in f32 (see [`crate::Bert::embed`]
/// and [`crate::Llama`]), so what a verifier compares loses only the f16 rounding of the
/// weights and of the activations between layers. Measured gaps, and the comparators' margins
/// above them, are in the docs of [`crate::EMBED_MIN_COSINE`] and [`crate::GENERATE_MARGIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere: the reference.
    #[default]
    F32,
    /// 16-bit IEEE floats for weights and activations (wgpu only).
    F16,
}

impl Precision {
    /// The names [`FromStr`] accepts.
    pub const NAMES: [&'static str; 2] = ["f32", "f16"];

    /// Burn's float type for this precision.
    pub fn dtype(self) -> burn::tensor::FloatDType {
        match self {
            Self::F32 => burn::tensor::FloatDType::F32,
            Self::F16 => burn::tensor::FloatDType::F16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            other => Err(format!(
                "unknown precision {other:?}; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

/// `module` with every float parameter cast to `dtype` (parameters already in it are kept).
pub(crate) fn cast_params<M: burn::module::Module>(
    module: M,
    dtype: burn::tensor::FloatDType,
) -> M {
    struct Cast(burn::tensor::FloatDType);
    impl burn::module::ModuleMapper for Cast {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

/// The CPU backends: ours, and the two Burn 0.22 offers without native libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKind {
    /// Gleaner's kernels ([`crate::ecpu::CpuBert`], [`crate::qcpu::QuantLlama`]), with Flex as the
    /// Burn device for models that have no kernels of ours.
    Native,
    /// `burn-flex`, Burn's pure-Rust CPU backend.
    Flex,
    /// `burn-ndarray`.
    NdArray,
}

impl CpuKind {
    /// The CPU backend `cpu` and `auto` pick: the fastest measured by `gleaner bench embed`
    /// (see the numbers in [`crate::ecpu`]).
    pub const DEFAULT: CpuKind = CpuKind::Native;
}

/// A wgpu adapter as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA H200`, ...).
    pub name: String,
    /// Graphics API (`Vulkan`, `Metal`, ...).
    pub api: String,
    /// Device type as wgpu reports it (`DiscreteGpu`, `Cpu`, ...).
    pub device_type: String,
    /// Whether this is a real GPU rather than a software rasteriser.
    pub is_gpu: bool,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.api, self.device_type)
    }
}

/// A device chosen for a model, with a human description of the choice.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The Burn device.
    pub device: Device,
    /// Short backend name: `wgpu`, `cpu` (our kernels, Flex under them), `flex` or `ndarray`.
    pub backend: &'static str,
    /// The wgpu adapter, when the backend is wgpu.
    pub adapter: Option<AdapterSummary>,
    /// Why this backend was chosen.
    pub reason: String,
    /// The float type Burn models use on it ([`SelectedDevice::with_precision`]).
    pub precision: Precision,
    /// Where cubecl's kernel cache is, when this process's wgpu was initialised by
    /// [`select_device_caching`]; `None` otherwise (and on CPU backends).
    pub gpu_cache: Option<GpuCache>,
}

impl SelectedDevice {
    /// A CPU device of the given kind.
    pub fn cpu(kind: CpuKind, reason: impl Into<String>) -> Self {
        #[allow(deprecated)] // NdArray is deprecated in 0.22 but still measured against Flex.
        let (device, backend) = match kind {
            CpuKind::Native => (Device::flex(), "cpu"),
            CpuKind::Flex => (Device::flex(), "flex"),
            CpuKind::NdArray => (Device::ndarray(), "ndarray"),
        };
        Self {
            device,
            backend,
            adapter: None,
            reason: reason.into(),
            precision: Precision::F32,
            gpu_cache: None,
        }
    }

    /// The same device with models in `precision`. `f16` is refused on CPU backends (they
    /// compute in f32), with an error that says so, rather than silently ignored.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if precision != Precision::F32 && self.adapter.is_none() {
            return Err(Error::Backend {
                backend: self.backend,
                detail: format!(
                    "precision {precision} runs on wgpu only; CPU backends compute in f32 \
                     (use --backend wgpu, or --precision f32)"
                ),
            });
        }
        self.precision = precision;
        Ok(self)
    }

    /// Whether models with kernels of ours run on them ([`CpuKind::Native`]).
    pub fn native_cpu(&self) -> bool {
        self.backend == "cpu"
    }

    /// One line for logs: `backend=wgpu adapter=... precision=f16 (reason)`; the precision is
    /// named only when it is not f32.
    pub fn describe(&self) -> String {
        let precision = match self.precision {
            Precision::F32 => String::new(),
            p => format!(" precision={p}"),
        };
        match &self.adapter {
            Some(a) => format!(
                "backend={} adapter={a}{precision} ({})",
                self.backend, self.reason
            ),
            None => format!("backend={}{precision} ({})", self.backend, self.reason),
        }
    }
}

/// Lists the wgpu adapters this machine offers (without creating a device).
///
/// Only the primary APIs (Vulkan, Metal, DX12): compute shaders need them, and probing OpenGL
/// only prints EGL errors on headless machines.
pub fn probe_adapters() -> Vec<AdapterSummary> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    let instance = wgpu::Instance::new(desc);
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    adapters.iter().map(|a| summarize(&a.get_info())).collect()
}

fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
    let is_gpu = matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    );
    AdapterSummary {
        name: info.name.clone(),
        api: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        is_gpu,
    }
}

/// Where this process keeps what cubecl learns about a GPU: its autotune results and compiled
/// kernels, one database per GPU environment, reused by every later run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuCache {
    /// The directory Gleaner chose ([`select_device_caching`]).
    Dir(PathBuf),
    /// A `cubecl.toml` or `Burn.toml` seen from the working directory chose the place.
    Configured,
    /// Something else of this process had read cubecl's configuration first; its place stays.
    AlreadySet,
    /// The directory could not be created; cubecl's default place is used.
    Unusable(String),
}

impl fmt::Display for GpuCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(
                f,
                "GPU kernel cache: {} (autotune results and compiled kernels, kept across runs)",
                dir.display()
            ),
            Self::Configured => {
                f.write_str("GPU kernel cache: where cubecl.toml (or Burn.toml) says")
            }
            Self::AlreadySet => f.write_str("GPU kernel cache: as already configured"),
            Self::Unusable(why) => write!(f, "GPU kernel cache: cubecl's default place ({why})"),
        }
    }
}

/// Keeps cubecl's on-disk cache (its autotune results and compiled kernels) in `dir`, so that
/// a GPU worker tunes and compiles each shape once per machine, not once per working
/// directory. cubecl's own default is `target/environment` beside the outermost `Cargo.toml`
/// above the working directory, else the user's cache: a miner started from a checkout, and
/// later from anywhere else, would pay every shape's tuning and compilation again.
///
/// Runs once, right before this process's wgpu device is created ([`init_wgpu`]). The place a
/// `cubecl.toml` or `Burn.toml` sets (other than cubecl's default `target`) is kept, as are the
/// rest of those files and cubecl's `CUBECL_*` variables.
fn keep_gpu_cache_in(dir: &Path) -> GpuCache {
    use cubecl_runtime::config::RuntimeConfig;

    // Read the way cubecl itself reads it at the first device.
    let loaded = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let Some(config) = gpu_cache_config(loaded, dir) else {
        return GpuCache::Configured;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return GpuCache::Unusable(format!("cannot create {}: {e}", dir.display()));
    }
    if CubeClRuntimeConfig::try_set(config) {
        GpuCache::Dir(dir.to_owned())
    } else {
        GpuCache::AlreadySet
    }
}

/// `config` with its cache in `dir`, unless it names a place other than cubecl's default.
fn gpu_cache_config(mut config: CubeClRuntimeConfig, dir: &Path) -> Option<CubeClRuntimeConfig> {
    use cubecl_runtime::config::cache::CacheConfig;
    matches!(config.environment.path, CacheConfig::Target).then(|| {
        config.environment.path = CacheConfig::Directory(dir.to_owned());
        config
    })
}

/// Picks a device for `choice`. wgpu is initialised once per process; later calls reuse it.
pub fn select_device(choice: BackendChoice) -> Result<SelectedDevice> {
    select(choice, None)
}

/// [`select_device`], keeping cubecl's kernel cache (autotune results and compiled kernels)
/// in `gpu_cache` when this call is the one that initialises the process's wgpu device: a
/// miner then tunes and compiles each shape once, from whatever directory it starts. Where
/// the cache is goes into the device's [`SelectedDevice::gpu_cache`]. Nothing is read or
/// created when the choice ends on a CPU backend.
pub fn select_device_caching(choice: BackendChoice, gpu_cache: &Path) -> Result<SelectedDevice> {
    select(choice, Some(gpu_cache))
}

fn select(choice: BackendChoice, gpu_cache: Option<&Path>) -> Result<SelectedDevice> {
    match choice {
        BackendChoice::Cpu => Ok(SelectedDevice::cpu(CpuKind::DEFAULT, "asked for cpu")),
        BackendChoice::Flex => Ok(SelectedDevice::cpu(CpuKind::Flex, "asked for flex")),
        BackendChoice::NdArray => Ok(SelectedDevice::cpu(CpuKind::NdArray, "asked for ndarray")),
        BackendChoice::Wgpu => init_wgpu("asked for wgpu", gpu_cache),
        BackendChoice::Auto => {
            let adapters = probe_adapters();
            match adapters.iter().find(|a| a.is_gpu) {
                Some(gpu) => init_wgpu(&format!("auto: GPU adapter {}", gpu.name), gpu_cache),
                None => {
                    let why = match adapters.first() {
                        Some(a) => format!(
                            "auto: only a CPU wgpu adapter ({}), slower than a CPU backend; \
                             pass --backend wgpu to use it anyway",
                            a.name
                        ),
                        None => "auto: no wgpu adapter found".to_owned(),
                    };
                    Ok(SelectedDevice::cpu(CpuKind::DEFAULT, why))
                }
            }
        }
    }
}

/// The process's wgpu device, created by the first call (which also places cubecl's kernel
/// cache in `gpu_cache`, when given); later calls reuse it, and its cache.
fn init_wgpu(reason: &str, gpu_cache: Option<&Path>) -> Result<SelectedDevice> {
    type Wgpu = (Device, AdapterSummary, Option<GpuCache>);
    static WGPU: OnceLock<std::result::Result<Wgpu, String>> = OnceLock::new();
    let init = WGPU.get_or_init(|| {
        let cache = gpu_cache.map(keep_gpu_cache_in);
        let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| {
            format!(
                "{e}. No usable wgpu adapter: on a machine without a GPU install Mesa's lavapipe \
                 (`apt-get install mesa-vulkan-drivers`) or use --backend cpu"
            )
        })?;
        Ok((device, summarize(&setup.adapter.get_info()), cache))
    });
    match init {
        Ok((device, adapter, cache)) => Ok(SelectedDevice {
            device: device.clone(),
            backend: "wgpu",
            adapter: Some(adapter.clone()),
            reason: reason.to_owned(),
            precision: Precision::F32,
            gpu_cache: cache.clone(),
        }),
        Err(detail) => Err(Error::Backend {
            backend: "wgpu",
            detail: detail.clone(),
        }),
    }
}

/// Runs a future to completion on this thread. wgpu's native futures are ready at once or
/// after a driver call; no runtime is needed.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for c in [
            BackendChoice::Auto,
            BackendChoice::Wgpu,
            BackendChoice::Cpu,
            BackendChoice::Flex,
            BackendChoice::NdArray,
        ] {
            assert_eq!(c.to_string().parse::<BackendChoice>().unwrap(), c);
        }
        let err = "cuda".parse::<BackendChoice>().unwrap_err();
        assert!(err.contains("expected auto, wgpu, cpu"), "{err}");
        for p in [Precision::F32, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!(" FP16 ".parse::<Precision>().unwrap(), Precision::F16);
        let err = "bf16".parse::<Precision>().unwrap_err();
        assert!(err.contains("expected one of f32, f16"), "{err}");
    }

    #[test]
    fn f16_is_refused_on_cpu_backends_and_named_in_the_log_line() {
        for kind in [CpuKind::Native, CpuKind::Flex, CpuKind::NdArray] {
            let err = SelectedDevice::cpu(kind, "test")
                .with_precision(Precision::F16)
                .unwrap_err()
                .to_string();
            assert!(err.contains("wgpu only"), "{err}");
            let same = SelectedDevice::cpu(kind, "test")
                .with_precision(Precision::F32)
                .unwrap();
            assert_eq!(same.precision, Precision::F32);
            assert!(
                !same.describe().contains("precision"),
                "{}",
                same.describe()
            );
        }
    }

    /// cubecl's default place for its cache (`target/` of the working directory's project)
    /// becomes the directory given; a place a configuration file chose stays.
    #[test]
    fn gpu_cache_goes_to_the_directory_unless_configured() {
        use cubecl_runtime::config::cache::CacheConfig;
        let dir = Path::new("/somewhere/gpu-cache");
        let moved = gpu_cache_config(CubeClRuntimeConfig::default(), dir).unwrap();
        assert!(
            matches!(&moved.environment.path, CacheConfig::Directory(d) if d == dir),
            "{:?}",
            moved.environment.path
        );
        for chosen in [
            CacheConfig::Global,
            CacheConfig::Local,
            CacheConfig::Directory("/elsewhere".into()),
        ] {
            let mut config = CubeClRuntimeConfig::default();
            config.environment.path = chosen;
            assert!(gpu_cache_config(config, dir).is_none());
        }
    }

    /// Casting a module's parameters changes their float type and rounds their values as f16
    /// does, and casting back to f32 keeps what f16 kept.
    #[test]
    fn cast_params_rounds_every_parameter() {
        use burn::tensor::FloatDType;
        let device = Device::flex();
        let model = crate::LlamaConfig::tiny().init(&device);
        let before = model.forward_all(&[1, 2, 3]).unwrap();
        let half = model.into_precision(FloatDType::F16);
        assert_eq!(half.precision(), FloatDType::F16);
        let back = half.into_precision(FloatDType::F32);
        assert_eq!(back.precision(), FloatDType::F32);
        let after = back.forward_all(&[1, 2, 3]).unwrap();
        let d = before
            .iter()
            .zip(&after)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Random weights of σ 0.02 rounded to 11 significant bits move the logits a little,
        // and always somewhat.
        assert!(d > 0.0 && d < 1e-2, "{d}");
    }
}
