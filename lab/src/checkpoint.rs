//! Lab networks' weights as safetensors files: every parameter as an F32
//! tensor under its name, each mask in force as a `<name>.mask` U8 tensor of
//! packed bits (bit `i % 8` of byte `i / 8`), and metadata naming the
//! network and the prunus version.

use std::collections::HashMap;
use std::path::Path;

use prunus_core::Mask;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::network::Network;
use crate::report::{PRUNUS_VERSION, write_bytes_atomic};

/// Writes `network`'s parameters (and masks) to `path`, atomically.
pub fn save(network: &Network, path: &Path) -> Result<()> {
    let bytes = to_bytes(network).map_err(|problem| Error::Data {
        path: path.into(),
        problem,
    })?;
    write_bytes_atomic(path, &bytes)
}

fn to_bytes(network: &Network) -> std::result::Result<Vec<u8>, String> {
    let values: Vec<Vec<u8>> = network
        .values()
        .iter()
        .map(|p| p.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let masks: Vec<Option<Vec<u8>>> = network
        .masks()
        .iter()
        .map(|m| m.as_ref().map(Mask::to_bytes))
        .collect();
    let mut views = Vec::new();
    for ((p, v), m) in network.parameters().iter().zip(&values).zip(&masks) {
        let view = TensorView::new(Dtype::F32, p.shape.dims().to_vec(), v)
            .map_err(|e| format!("tensor '{}': {e}", p.name))?;
        views.push((p.name.clone(), view));
        if let Some(m) = m {
            let view = TensorView::new(Dtype::U8, vec![m.len()], m)
                .map_err(|e| format!("mask of '{}': {e}", p.name))?;
            views.push((format!("{}.mask", p.name), view));
        }
    }
    let metadata = HashMap::from([
        ("network".to_string(), network.name().to_string()),
        ("prunus_version".to_string(), PRUNUS_VERSION.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// Loads parameters (and masks) saved by [`save`] into `network`, which
/// must have the same architecture: every parameter present with its
/// shape, as F32 and finite, and no tensor the network does not have. On
/// any error the network is left unchanged.
pub fn load(network: &mut Network, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        action: "read weights",
        path: path.into(),
        source,
    })?;
    let bad = |problem: String| Error::Data {
        path: path.into(),
        problem,
    };
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let params = network.parameters().to_vec();
    let known = |name: &str| {
        params
            .iter()
            .any(|p| p.name == name || format!("{}.mask", p.name) == name)
    };
    if let Some(extra) = file.names().into_iter().find(|n| !known(n)) {
        return Err(bad(format!(
            "tensor '{extra}' is not a parameter of {}",
            network.name()
        )));
    }
    let mut values = Vec::with_capacity(params.len());
    let mut masks = Vec::with_capacity(params.len());
    for p in &params {
        let t = file.tensor(&p.name).map_err(|_| {
            bad(format!(
                "parameter '{}' of {} is missing",
                p.name,
                network.name()
            ))
        })?;
        if t.dtype() != Dtype::F32 || t.shape() != p.shape.dims() {
            return Err(bad(format!(
                "tensor '{}' is {:?} {:?}; the network needs F32 {:?}",
                p.name,
                t.dtype(),
                t.shape(),
                p.shape.dims()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "tensor '{}' has a non-finite value at index {i}",
                p.name
            )));
        }
        values.push(v);
        let mask_name = format!("{}.mask", p.name);
        masks.push(match file.tensor(&mask_name) {
            Ok(m) if m.dtype() == Dtype::U8 => Some(
                Mask::from_bytes(p.shape.clone(), m.data())
                    .map_err(|e| bad(format!("tensor '{mask_name}': {e}")))?,
            ),
            Ok(m) => {
                return Err(bad(format!(
                    "tensor '{mask_name}' is {:?}; masks are packed U8",
                    m.dtype()
                )));
            }
            Err(_) => None,
        });
    }
    let mut loaded = network.clone();
    for (i, v) in values.iter().enumerate() {
        loaded.set_param(i, v)?;
    }
    loaded.set_masks(&masks)?;
    *network = loaded;
    Ok(())
}
