//! candle-nn interop: candle-nn builds its layers through a `VarBuilder` and optimizes a list
//! of `Var`s; a [`ParamStore`] provides both.
//!
//! - [`Path::var_builder`] (and [`ParamStore::var_builder`] at the root) is a
//!   `candle_nn::VarBuilder` whose backend is the store: every tensor a candle-nn layer asks for
//!   is registered in the store, as a parameter with the path's [`Role`], its initial value drawn
//!   from the store's seeded RNG. Tensors asked for under a running-statistics name
//!   ([`BUFFER_NAMES`], as candle-nn's `batch_norm` does) become buffers instead.
//! - [`ParamStore::trainable_vars`] and [`ParamStore::to_var_map`] hand the trainable parameters,
//!   and nothing else, to a candle-nn optimizer.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use crate::store::Slot;
use crate::{Init, NnError, ParamStore, Path, Result, Role};

/// The last name segments of running statistics (PyTorch's buffer names, which candle-nn's
/// `batch_norm` also uses): a [`Path::var_builder`] registers a tensor asked for under one of
/// them as a buffer, so no optimizer over the trainable parameters ever sees it.
pub const BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

impl ParamStore {
    /// A candle-nn `VarBuilder` at the root of the store: candle-nn layers built on it register
    /// their parameters here with [`Role::Other`] (see [`Path::var_builder`]).
    pub fn var_builder(&self) -> VarBuilder<'static> {
        self.root().var_builder(Role::Other)
    }

    /// The trainable parameters in name order: what a candle-nn optimizer gets
    /// (`candle_nn::SGD::new(store.trainable_vars(), lr)`). Buffers and frozen parameters are
    /// never in it. The `Var`s share storage with the store.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params()
            .into_iter()
            .filter(|(_, p)| p.trainable)
            .map(|(_, p)| p.var)
            .collect()
    }

    /// The trainable parameters as a candle-nn `VarMap` under their names, for code that takes
    /// one. The `Var`s share storage with the store, so training through the map trains the
    /// store; buffers and frozen parameters are not in it, and parameters registered later are
    /// not added. Save and load through the store ([`ParamStore::save`]), which keeps the
    /// buffers too; the map's own iteration order is a `HashMap`'s.
    pub fn to_var_map(&self) -> VarMap {
        let map = VarMap::new();
        {
            let mut data = map.data().lock().unwrap_or_else(|e| e.into_inner());
            for (name, p) in self.params() {
                if p.trainable {
                    data.insert(name, p.var);
                }
            }
        }
        map
    }
}

impl Path {
    /// A candle-nn `VarBuilder` at this path, so that candle-nn layers can live in the store
    /// beside explr's: `candle_nn::linear(64, 10, path.push("fc").var_builder(Role::Head))`
    /// registers `fc.weight` and `fc.bias`.
    ///
    /// Every tensor a layer asks for becomes a trainable parameter with `role`, drawn from the
    /// store's seeded RNG by the layer's own `candle_nn::Init` (`Kaiming` with the same fan and
    /// gain as candle-nn), or a buffer when its name ends in one of [`BUFFER_NAMES`]. Asking
    /// again for a registered name returns that tensor (its shape must match), as a `VarMap`
    /// does. The builder hands out the store's dtype on the store's device only: a builder
    /// moved to another dtype or device (`set_dtype`, `set_device`) fails to build.
    pub fn var_builder(&self, role: Role) -> VarBuilder<'static> {
        let backend = StoreBackend {
            store: self.store().clone(),
            role,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), self.dtype(), self.device().clone());
        if self.prefix().is_empty() {
            vb
        } else {
            vb.pp(self.prefix())
        }
    }
}

/// The store as a candle-nn backend, registering new tensors with one role.
struct StoreBackend {
    store: ParamStore,
    role: Role,
}

impl StoreBackend {
    /// Only the store's own dtype and device: a converted copy would not be the store's `Var`,
    /// so training it would change nothing.
    fn check_target(&self, name: &str, dtype: DType, device: &Device) -> Result<()> {
        if dtype != self.store.dtype() || !device.same_device(self.store.device()) {
            return Err(NnError::InvalidConfig(format!(
                "`{name}` was asked for as {dtype:?} on {device:?}, but the store holds {:?} \
                 tensors on {:?}: build the layer with the VarBuilder as the store made it \
                 (no set_dtype/set_device/to_dtype) and convert the layer's input instead",
                self.store.dtype(),
                self.store.device()
            )));
        }
        Ok(())
    }
}

/// candle-nn's initialization as the store's [`Init`]: the same distribution, drawn from the
/// store's seeded RNG instead of candle's.
fn explr_init(init: candle_nn::Init, shape: &Shape) -> Init {
    match init {
        candle_nn::Init::Const(value) => Init::Constant(value),
        candle_nn::Init::Randn { mean, stdev } => Init::Normal { mean, std: stdev },
        candle_nn::Init::Uniform { lo, up } => Init::Uniform { lo, hi: up },
        candle_nn::Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            // candle-nn's `Init::var`: std = gain/√fan; uniform on ±√3·std.
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => Init::Normal { mean: 0.0, std },
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    Init::Uniform {
                        lo: -bound,
                        hi: bound,
                    }
                }
            }
        }
    }
}

impl SimpleBackend for StoreBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let get_or_register = || -> Result<Tensor> {
            self.check_target(name, dtype, device)?;
            if let Some(var) = self.store.get(name) {
                if var.shape() != &shape {
                    return Err(NnError::InvalidConfig(format!(
                        "`{name}` is registered with shape {:?} but asked for again with shape \
                         {:?}: two layers share the name; give one of them another path",
                        var.dims(),
                        shape.dims()
                    )));
                }
                return Ok(var.as_tensor().clone());
            }
            let last = name.rsplit('.').next().unwrap_or(name);
            let slot = if BUFFER_NAMES.contains(&last) {
                Slot::Buffer
            } else {
                Slot::Param(self.role)
            };
            let var =
                self.store
                    .register(name.to_string(), &shape, explr_init(init, &shape), slot)?;
            Ok(var.as_tensor().clone())
        };
        get_or_register().map_err(candle_core::Error::wrap)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.check_target(name, dtype, device)
            .map_err(candle_core::Error::wrap)?;
        match self.store.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => Err(candle_core::Error::wrap(NnError::InvalidConfig(format!(
                "`{name}` is not in the store: a VarBuilder without a shape can only read a \
                 registered tensor; ask for it with a shape (`get`, `get_with_hints`) to create it"
            )))),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.store.get(name).is_some()
    }
}
