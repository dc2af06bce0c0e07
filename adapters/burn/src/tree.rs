//! A burn module's float parameters as prunus sees them: named by their
//! path in the module tree (`fc1.weight`, `blocks.0.attn.bias`), with their
//! stored dims and the axis that holds their layer's units.
//!
//! burn's [`Linear`](burn::nn::Linear) keeps its weight as `[in, out]`, so
//! its units are the columns ([`Units::Columns`]); every other tensor
//! (convolution kernels `[out, in, kh, kw]`, vectors) has them on the first
//! axis. [`Layouts`] says so for the usual modules and takes overrides for a
//! user's own.
//!
//! Parameters are read with a [`ModuleVisitor`] and written with a
//! [`ModuleMapper`]; both keep the parameter's id, device, dtype and
//! whether it requires gradients, so the optimizer's state still matches.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};
use prunus_adapters::framework::{Stored, Units};

use crate::error::{Error, Result};

/// Which axis of each tensor holds its layer's units: a weight named
/// `weight` directly inside a burn `Linear` (or a [`crate::TapLinear`]) has
/// them in its columns, every other tensor in its rows, unless overridden
/// by name.
///
/// ```
/// use prunus_burn::Layouts;
/// use prunus_adapters::framework::Units;
/// // A user's own layer that keeps its matrix as `[in, out]` too.
/// let layouts = Layouts::default().with("proj.kernel", Units::Columns);
/// assert_eq!(layouts.units("proj.kernel", "Struct:Proj", 2), Units::Columns);
/// assert_eq!(layouts.units("fc1.weight", "Struct:Linear", 2), Units::Columns);
/// assert_eq!(layouts.units("conv.weight", "Struct:Conv2d", 4), Units::Rows);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layouts {
    overrides: Vec<(String, Units)>,
}

impl Layouts {
    /// The same layouts with the tensor `name` read as `units`.
    pub fn with(mut self, name: impl Into<String>, units: Units) -> Self {
        let name = name.into();
        self.overrides.retain(|(n, _)| *n != name);
        self.overrides.push((name, units));
        self
    }

    /// The units of the tensor `name` of rank `rank`, whose parent module
    /// has burn's container type `container` (`Struct:Linear`, ...).
    pub fn units(&self, name: &str, container: &str, rank: usize) -> Units {
        if let Some((_, u)) = self.overrides.iter().find(|(n, _)| n == name) {
            return *u;
        }
        let field = name.rsplit('.').next().unwrap_or(name);
        let linear = matches!(container, "Struct:Linear" | "Struct:TapLinear");
        if rank == 2 && field == "weight" && linear {
            Units::Columns
        } else {
            Units::Rows
        }
    }

    /// The names overridden, to check them against a module.
    pub(crate) fn overridden(&self) -> impl Iterator<Item = &str> {
        self.overrides.iter().map(|(n, _)| n.as_str())
    }
}

/// The path of the module being visited: `(name, container type)` pairs.
#[derive(Default)]
struct Path(Vec<(String, String)>);

impl Path {
    fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }

    fn exit(&mut self) {
        self.0.pop();
    }

    fn name(&self) -> String {
        let parts: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        parts.join(".")
    }

    fn container(&self) -> &str {
        self.0.last().map_or("", |(_, c)| c.as_str())
    }
}

/// Every float parameter of `module`, in the module's visiting order
/// (field declaration order), with its stored dims and units.
pub fn stored<M: Module>(module: &M, layouts: &Layouts) -> Result<Vec<Stored>> {
    struct Lister<'a> {
        path: Path,
        layouts: &'a Layouts,
        out: Vec<Result<Stored>>,
    }
    impl ModuleVisitor for Lister<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let name = self.path.name();
            let dims = param.lazy_shape().to_vec();
            let units = self.layouts.units(&name, self.path.container(), dims.len());
            self.out
                .push(Stored::new(name, &dims, units).map_err(Error::from));
        }
    }
    let mut lister = Lister {
        path: Path::default(),
        layouts,
        out: Vec::new(),
    };
    module.visit(&mut lister);
    let stored: Vec<Stored> = lister.out.into_iter().collect::<Result<_>>()?;
    for name in layouts.overridden() {
        if !stored.iter().any(|s| s.name == name) {
            return Err(unknown(name, &stored));
        }
    }
    Ok(stored)
}

/// The error for a name `stored` lacks.
pub(crate) fn unknown(name: &str, stored: &[Stored]) -> Error {
    Error::UnknownParameter {
        name: name.to_string(),
        known: stored.iter().map(|s| s.name.clone()).collect(),
    }
}

fn values(name: &str, data: TensorData) -> Result<Vec<f32>> {
    data.try_into_vec_as::<f32>().map_err(|e| Error::Values {
        name: name.to_string(),
        message: format!("{e:?}"),
    })
}

/// The stored values of the parameters `names` of `module`, in that order.
pub(crate) fn read<M: Module>(module: &M, names: &[&str]) -> Result<Vec<Vec<f32>>> {
    struct Reader<'a> {
        path: Path,
        names: &'a [&'a str],
        out: Vec<Option<Result<Vec<f32>>>>,
    }
    impl ModuleVisitor for Reader<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let name = self.path.name();
            if let Some(i) = self.names.iter().position(|n| *n == name) {
                self.out[i] = Some(values(&name, param.val().into_data()));
            }
        }
    }
    let mut reader = Reader {
        path: Path::default(),
        names,
        out: vec![None; names.len()],
    };
    module.visit(&mut reader);
    reader
        .out
        .into_iter()
        .zip(names)
        .map(|(v, n)| v.unwrap_or_else(|| Err(unknown_in(n, module))))
        .collect()
}

fn unknown_in<M: Module>(name: &str, module: &M) -> Error {
    match stored(module, &Layouts::default()) {
        Ok(s) => unknown(name, &s),
        Err(e) => e,
    }
}

/// The gradients in `gradients` of the parameters `names` of `module`
/// (stored layout), zero for a parameter the loss does not reach.
pub(crate) fn gradients<M: Module>(
    module: &M,
    gradients: &Gradients,
    names: &[&str],
) -> Result<Vec<Vec<f32>>> {
    struct Grads<'a> {
        path: Path,
        names: &'a [&'a str],
        gradients: &'a Gradients,
        out: Vec<Option<Result<Vec<f32>>>>,
    }
    impl ModuleVisitor for Grads<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let name = self.path.name();
            if let Some(i) = self.names.iter().position(|n| *n == name) {
                let value = param.val();
                self.out[i] = Some(match value.grad(self.gradients) {
                    Some(g) => values(&name, g.into_data()),
                    None => Ok(vec![0.0; value.shape().num_elements()]),
                });
            }
        }
    }
    let mut grads = Grads {
        path: Path::default(),
        names,
        gradients,
        out: vec![None; names.len()],
    };
    module.visit(&mut grads);
    grads
        .out
        .into_iter()
        .zip(names)
        .map(|(v, n)| v.unwrap_or_else(|| Err(unknown_in(n, module))))
        .collect()
}

/// A new value for a parameter: the same device (autodiff and its
/// checkpointing included), dtype and gradient requirement as `old`.
fn rebuild<const D: usize>(old: Tensor<D>, values: Vec<f32>) -> Tensor<D> {
    let device = old.device();
    let data = TensorData::new(values, old.shape());
    let fresh = Tensor::<D>::from_data(data, (&device, old.dtype()));
    if old.is_require_grad() {
        fresh.require_grad()
    } else {
        fresh
    }
}

/// `module` with the parameters named in `values` replaced by those stored
/// values (the lengths are the caller's to check).
pub(crate) fn write<M: Module>(module: M, values: HashMap<String, Vec<f32>>) -> M {
    struct Writer {
        path: Path,
        values: HashMap<String, Vec<f32>>,
    }
    impl ModuleMapper for Writer {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.values.remove(&self.path.name()) {
                Some(v) => param.map(|t| rebuild(t, v)),
                None => param,
            }
        }
    }
    module.map(&mut Writer {
        path: Path::default(),
        values,
    })
}

/// `module` with each parameter named in `factors` multiplied elementwise
/// by its 0/1 factors (stored layout) on the parameter's own device: a
/// tensor operation, no copy through host memory.
pub(crate) fn multiply<M: Module>(module: M, factors: &HashMap<String, TensorData>) -> M {
    struct Multiplier<'a> {
        path: Path,
        factors: &'a HashMap<String, TensorData>,
    }
    impl ModuleMapper for Multiplier<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(f) = self.factors.get(&self.path.name()) else {
                return param;
            };
            param.map(|t| {
                // As burn's optimizers rebuild a parameter: off the tape,
                // then back on it with the same checkpointing and
                // gradient requirement.
                let strategy = t.gradient_checkpointing_strategy();
                let require_grad = t.is_require_grad();
                let plain = t.inner();
                let f = Tensor::<D>::from_data(f.clone(), (&plain.device(), plain.dtype()));
                let mut masked = plain.mul(f);
                if let Some(s) = strategy {
                    masked = masked.autodiff().with_gradient_checkpointing_strategy(s);
                }
                if require_grad {
                    masked = masked.require_grad();
                }
                masked
            })
        }
    }
    module.map(&mut Multiplier {
        path: Path::default(),
        factors,
    })
}

/// The usual choice of prunable tensors: those of rank 2 or more (linear
/// and convolution weights), never biases or normalisation vectors.
pub fn is_matrix(stored: &Stored) -> bool {
    stored.dims.len() >= 2
}
