//! The parameter store: named parameters with roles, buffers, seeded init, safetensors IO.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::{NnError, Result};

/// What a parameter is to the theory (THEORY.md §1): the optimizer and the exponential-LR
/// transforms treat each group on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Weights whose scaling leaves the loss unchanged (convs feeding a normalization).
    ScaleInvariant,
    /// The final classifier.
    Head,
    /// γ and β of normalization layers.
    NormAffine,
    /// Anything else (biases of layers not followed by a norm, …).
    Other,
}

impl Role {
    /// Every role, in the order groups are reported.
    pub const ALL: [Role; 4] = [
        Role::ScaleInvariant,
        Role::Head,
        Role::NormAffine,
        Role::Other,
    ];

    /// The snake_case name used in manifests and result files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ScaleInvariant => "scale_invariant",
            Role::Head => "head",
            Role::NormAffine => "norm_affine",
            Role::Other => "other",
        }
    }
}

/// One registered parameter.
#[derive(Clone, Debug)]
pub struct Param {
    /// The value; cloning a `Var` shares its storage.
    pub var: Var,
    /// Its group.
    pub role: Role,
    /// False when frozen: no optimizer sees it, but it is saved and loaded.
    pub trainable: bool,
}

/// How a parameter's initial value is drawn. Every random draw comes from the store's
/// seeded ChaCha8 generator, in f64, then converted to the store's dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element equal to the value.
    Constant(f64),
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// PyTorch's `kaiming_normal_(mode='fan_out', nonlinearity='relu')`: N(0, 2/fan_out),
    /// `fan_out = dims[0] · Π dims[2..]`.
    KaimingNormalFanOut,
    /// PyTorch's `kaiming_normal_(mode='fan_in', nonlinearity='relu')`: N(0, 2/fan_in),
    /// `fan_in = Π dims[1..]`.
    KaimingNormalFanIn,
    /// PyTorch's default `nn.Linear`/`nn.Conv2d` weight init (`kaiming_uniform_(a=√5)`):
    /// U(−1/√fan_in, 1/√fan_in).
    TorchDefault,
    /// PyTorch's default bias init for a layer with this fan-in: U(−1/√fan_in, 1/√fan_in).
    TorchDefaultBias {
        /// Fan-in of the layer the bias belongs to.
        fan_in: usize,
    },
}

impl Init {
    fn values(self, dims: &[usize], rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let n: usize = dims.iter().product();
        let receptive: usize = dims.iter().skip(2).product();
        let fan_in = dims.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = dims.first().copied().unwrap_or(1) * receptive;
        let normal = |mean: f64, std: f64, rng: &mut ChaCha8Rng| -> Result<Vec<f64>> {
            let d = Normal::new(mean, std)
                .map_err(|e| NnError::InvalidConfig(format!("normal({mean}, {std}): {e}")))?;
            Ok((0..n).map(|_| d.sample(rng)).collect())
        };
        let uniform = |lo: f64, hi: f64, rng: &mut ChaCha8Rng| -> Result<Vec<f64>> {
            let d = Uniform::new(lo, hi)
                .map_err(|e| NnError::InvalidConfig(format!("uniform({lo}, {hi}): {e}")))?;
            Ok((0..n).map(|_| d.sample(rng)).collect())
        };
        match self {
            Init::Zeros => Ok(vec![0.0; n]),
            Init::Ones => Ok(vec![1.0; n]),
            Init::Constant(v) => Ok(vec![v; n]),
            Init::Normal { mean, std } => normal(mean, std, rng),
            Init::Uniform { lo, hi } => uniform(lo, hi, rng),
            Init::KaimingNormalFanOut => normal(0.0, (2.0 / fan_out.max(1) as f64).sqrt(), rng),
            Init::KaimingNormalFanIn => normal(0.0, (2.0 / fan_in.max(1) as f64).sqrt(), rng),
            Init::TorchDefault => {
                let b = 1.0 / (fan_in.max(1) as f64).sqrt();
                uniform(-b, b, rng)
            }
            Init::TorchDefaultBias { fan_in } => {
                let b = 1.0 / (fan_in.max(1) as f64).sqrt();
                uniform(-b, b, rng)
            }
        }
    }
}

struct Inner {
    params: BTreeMap<String, Param>,
    buffers: BTreeMap<String, Var>,
    rng: ChaCha8Rng,
}

/// Named parameters (with a [`Role`] and a trainable flag) and buffers, in sorted order.
///
/// Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("ParamStore")
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .field("params", &g.params.keys().collect::<Vec<_>>())
            .field("buffers", &g.buffers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ParamStore {
    /// An empty store whose initial values are drawn from a ChaCha8 RNG seeded with `seed`.
    pub fn new(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                params: BTreeMap::new(),
                buffers: BTreeMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
            device: device.clone(),
            dtype,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-registration; the maps are
        // still consistent (each insert is a single operation).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The root path; layers push their own names onto it.
    pub fn root(&self) -> Path {
        Path {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    /// The device of every tensor in the store.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The floating dtype of every parameter.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every parameter, sorted by name.
    pub fn params(&self) -> Vec<(String, Param)> {
        self.lock()
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every buffer (running statistics and other non-trainable state), sorted by name.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.lock()
            .buffers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The trainable parameters, grouped by role, each group sorted by name. Roles with no
    /// trainable parameter are absent.
    pub fn trainable_groups(&self) -> BTreeMap<Role, Vec<(String, Var)>> {
        let mut out: BTreeMap<Role, Vec<(String, Var)>> = BTreeMap::new();
        for (name, p) in self.lock().params.iter() {
            if p.trainable {
                out.entry(p.role)
                    .or_default()
                    .push((name.clone(), p.var.clone()));
            }
        }
        out
    }

    /// All parameters of one role (trainable or not), sorted by name.
    pub fn role(&self, role: Role) -> Vec<(String, Var)> {
        self.lock()
            .params
            .iter()
            .filter(|(_, p)| p.role == role)
            .map(|(k, p)| (k.clone(), p.var.clone()))
            .collect()
    }

    /// Freezes (or unfreezes) every parameter of `role`.
    pub fn set_trainable(&self, role: Role, trainable: bool) {
        for p in self.lock().params.values_mut() {
            if p.role == role {
                p.trainable = trainable;
            }
        }
    }

    /// Number of scalar elements in all parameters (buffers excluded), like
    /// `sum(p.numel() for p in model.parameters())`.
    pub fn num_params(&self) -> usize {
        self.lock()
            .params
            .values()
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// Number of scalar elements in the trainable parameters.
    pub fn num_trainable(&self) -> usize {
        self.lock()
            .params
            .values()
            .filter(|p| p.trainable)
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// Parameters and buffers as one sorted state dict (PyTorch's `model.state_dict()`).
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let g = self.lock();
        g.params
            .iter()
            .map(|(k, p)| (k.clone(), p.var.as_tensor().clone()))
            .chain(
                g.buffers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_tensor().clone())),
            )
            .collect()
    }

    /// Overwrites every parameter and buffer from `tensors` (converted to each slot's dtype and
    /// device). Every slot must be present with the right shape and nothing may be left over,
    /// like PyTorch's `load_state_dict(strict=True)`.
    pub fn load_state_dict(
        &self,
        tensors: &HashMap<String, Tensor>,
        source_desc: &str,
    ) -> Result<()> {
        let g = self.lock();
        let slots = g
            .params
            .iter()
            .map(|(k, p)| (k, &p.var))
            .chain(g.buffers.iter());
        let mut used = 0usize;
        for (name, var) in slots {
            let t = tensors.get(name).ok_or_else(|| NnError::MissingTensor {
                name: name.clone(),
                source_desc: source_desc.to_string(),
            })?;
            if t.dims() != var.dims() {
                return Err(NnError::ShapeMismatch {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            used += 1;
        }
        if used != tensors.len() {
            let known: std::collections::BTreeSet<&String> =
                g.params.keys().chain(g.buffers.keys()).collect();
            let mut extra: Vec<&String> = tensors.keys().filter(|k| !known.contains(k)).collect();
            extra.sort();
            if let Some(name) = extra.first() {
                return Err(NnError::UnexpectedTensor {
                    name: (*name).clone(),
                    source_desc: source_desc.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The parameter or buffer registered as `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<Var> {
        let g = self.lock();
        g.params
            .get(name)
            .map(|p| p.var.clone())
            .or_else(|| g.buffers.get(name).cloned())
    }

    /// Registers `name` in `slot` with a value of `shape` drawn from `init` by the store's RNG,
    /// in the store's dtype and on its device.
    pub(crate) fn register(
        &self,
        name: String,
        shape: &Shape,
        init: Init,
        slot: Slot,
    ) -> Result<Var> {
        let mut g = self.lock();
        check_free(&g, &name)?;
        let values = init.values(shape.dims(), &mut g.rng)?;
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?;
        let var = Var::from_tensor(&t)?;
        match slot {
            Slot::Param(role) => {
                g.params.insert(
                    name,
                    Param {
                        var: var.clone(),
                        role,
                        trainable: true,
                    },
                );
            }
            Slot::Buffer => {
                g.buffers.insert(name, var.clone());
            }
        }
        Ok(var)
    }

    /// Writes the state dict as safetensors, atomically ([`explr_io::write_atomic`]), so a
    /// killed process never leaves a half-written file.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let sd = self.state_dict();
        let bytes =
            safetensors::serialize(sd.iter().map(|(k, v)| (k.as_str(), v)), None).map_err(|e| {
                NnError::NotSafetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        Ok(explr_io::write_atomic(path, &bytes)?)
    }

    /// Loads a safetensors file written by [`ParamStore::save`] or by PyTorch
    /// (`safetensors.torch.save_file(model.state_dict(), …)`); a file that is not safetensors
    /// (truncated, another format) is an error naming it.
    pub fn load(&self, path: &std::path::Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(explr_io::err("reading", path))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &self.device).map_err(|e| {
            NnError::NotSafetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        self.load_state_dict(&tensors, &path.display().to_string())
    }
}

/// Where [`ParamStore::register`] puts a new tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// A trainable parameter of this role.
    Param(Role),
    /// A buffer.
    Buffer,
}

fn check_free(g: &Inner, name: &str) -> Result<()> {
    if g.params.contains_key(name) || g.buffers.contains_key(name) {
        return Err(NnError::DuplicateName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A position in the store's name hierarchy, handed to layer constructors.
#[derive(Clone, Debug)]
pub struct Path {
    store: ParamStore,
    prefix: String,
}

impl Path {
    /// The sub-path `self.name` (PyTorch's dotted state-dict names).
    pub fn push(&self, name: impl std::fmt::Display) -> Path {
        Path {
            store: self.store.clone(),
            prefix: self.full(&name.to_string()),
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The store this path belongs to.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The dotted prefix of this path ("" at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store's device.
    pub fn device(&self) -> &Device {
        &self.store.device
    }

    /// The store's parameter dtype.
    pub fn dtype(&self) -> DType {
        self.store.dtype
    }

    /// Registers a trainable parameter `prefix.name` drawn from `init`.
    pub fn param(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: Init,
        role: Role,
    ) -> Result<Var> {
        self.store
            .register(self.full(name), &shape.into(), init, Slot::Param(role))
    }

    /// Registers a buffer `prefix.name` (state that is saved but never optimized) holding
    /// `value`, which keeps its own dtype (PyTorch's `num_batches_tracked` is an integer).
    pub fn buffer(&self, name: &str, value: Tensor) -> Result<Var> {
        let full = self.full(name);
        let mut g = self.store.lock();
        check_free(&g, &full)?;
        let var = Var::from_tensor(&value.to_device(&self.store.device)?)?;
        g.buffers.insert(full, var.clone());
        Ok(var)
    }

    /// Marks the already-registered parameter `prefix.name` as frozen (or trainable).
    pub fn set_trainable(&self, name: &str, trainable: bool) {
        if let Some(p) = self.store.lock().params.get_mut(&self.full(name)) {
            p.trainable = trainable;
        }
    }
}
