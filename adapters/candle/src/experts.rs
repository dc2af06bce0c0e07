//! Whole experts removed from a mixture-of-experts model folder: the same
//! number from every mixture, their projections dropped, the others
//! renumbered, the router's rows of the removed experts cut, and the
//! expert count in `config.json` lowered. The output is a smaller model of
//! the same family that transformers loads.
//!
//! Which experts go: with calibration text, those of least output energy,
//! `‖W_down X_eᵀ‖²_F` over the tokens the router sends to expert `e` (an
//! expert never reached has none), ties to fewer tokens, then to the lower
//! index; without text (magnitude), those of least `‖W‖²_F` over their
//! three projections. Removing an expert changes which experts the others'
//! tokens go to, so nothing is refit.

use prunus_core::methods::layerwise::reconstruction_error;
use prunus_core::{Dense, Matrix};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::folder::{FolderWriter, ModelFolder};
use crate::graph::{ExpertSpan, Graph, Part, Structure};
use crate::pruning::{Calibration, GroupReport, LayerReport, Report};
use crate::record::StatsPlace;

/// One expert's use on the calibration text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpertUsage {
    /// Tokens the router sent to it (0 without calibration).
    pub tokens: u64,
    /// Its score: the output energy `‖W_down X_eᵀ‖²_F` on those tokens,
    /// or, without calibration, `‖W‖²_F` over its three projections.
    pub score: f64,
}

/// Per block, the usage of each expert of its mixture (`None` for a block
/// without one): measured on the dense model over `samples` when given,
/// else the experts' weight norms.
pub fn expert_usage(
    dense: &dyn Dense,
    graph: &mut dyn Graph,
    weights: &dyn crate::graph::Weights,
    samples: Option<&[Vec<u32>]>,
) -> Result<Vec<Option<Vec<ExpertUsage>>>> {
    let blocks = graph.blocks();
    let spans: Vec<Option<ExpertSpan>> = (0..blocks).map(|i| graph.experts(i)).collect();
    if spans.iter().all(Option::is_none) {
        return Err(Error::request(
            "this model has no mixture of experts: experts=F removes experts from mixtral, \
             qwen2_moe and qwen3_moe models",
        ));
    }
    let mut usage: Vec<Option<Vec<ExpertUsage>>> = vec![None; blocks];
    let norm = |graph: &dyn Graph, i: usize, name: &str| -> Result<f64> {
        let layer = graph
            .linears(i)?
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| Error::request(format!("block {i} has no linear layer {name}")))?;
        let w: Vec<f32> = layer.weight().flatten_all()?.to_vec1()?;
        Ok(w.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
    };
    match samples {
        None => {
            for (i, span) in spans.iter().enumerate() {
                let Some(span) = span else { continue };
                graph.load(Part::Block(i), weights)?;
                let mut scores = Vec::with_capacity(span.layers.len());
                for layers in &span.layers {
                    let mut score = 0.0;
                    for name in layers {
                        score += norm(graph, i, name)?;
                    }
                    scores.push(ExpertUsage { tokens: 0, score });
                }
                usage[i] = Some(scores);
                graph.release(Part::Block(i));
            }
        }
        Some(samples) => {
            let downs: std::collections::HashSet<String> = spans
                .iter()
                .flatten()
                .flat_map(|s| s.layers.iter().map(|l| l[2].clone()))
                .collect();
            let wanted = move |name: &str| downs.contains(name);
            let calibration = Calibration {
                dense,
                gram: true,
                wanted: &wanted,
                stats: StatsPlace::Auto,
            };
            calibration.run(
                graph,
                weights,
                samples,
                &mut |_| {},
                &mut |graph, i, recorded, _report, _progress| {
                    let Some(span) = &spans[i] else {
                        return Ok(());
                    };
                    let mut scores = Vec::with_capacity(span.layers.len());
                    for layers in &span.layers {
                        let down = &layers[2];
                        let Some(stats) = recorded.stats(down) else {
                            scores.push(ExpertUsage {
                                tokens: 0,
                                score: 0.0,
                            });
                            continue;
                        };
                        let layer = graph
                            .linears(i)?
                            .into_iter()
                            .find(|l| l.name() == down)
                            .ok_or_else(|| Error::request(format!("no linear layer {down}")))?;
                        let (out, cols) = layer.weight().dims2()?;
                        let w: Vec<f32> = layer.weight().flatten_all()?.to_vec1()?;
                        let w = Matrix::from_f32(out, cols, &w)?;
                        let energy =
                            reconstruction_error(dense, &w, &Matrix::zeros(out, cols), stats)?;
                        scores.push(ExpertUsage {
                            tokens: stats.rows(),
                            score: energy,
                        });
                    }
                    usage[i] = Some(scores);
                    Ok(())
                },
            )?;
        }
    }
    Ok(usage)
}

/// The `remove` experts of least use, ascending: lowest score first, ties
/// to fewer tokens, then to the lower index.
pub fn least_used(usage: &[ExpertUsage], remove: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..usage.len()).collect();
    order.sort_by(|&a, &b| {
        usage[a]
            .score
            .total_cmp(&usage[b].score)
            .then(usage[a].tokens.cmp(&usage[b].tokens))
            .then(a.cmp(&b))
    });
    let mut removed = order[..remove].to_vec();
    removed.sort_unstable();
    removed
}

/// Removes `round(fraction · experts)` experts from every mixture of the
/// model in `folder` (its `graph`) into `writer`, chosen by
/// [`expert_usage`] on `samples` (or by weight norm without), and gives
/// the writer the config with the new expert count. Every mixture keeps at
/// least `num_experts_per_tok` experts. The report has one entry per
/// mixture, named after its router, with the experts removed.
pub fn prune_experts(
    dense: &dyn Dense,
    folder: &ModelFolder,
    graph: &mut dyn Graph,
    samples: Option<&[Vec<u32>]>,
    fraction: f64,
    writer: &mut FolderWriter<'_>,
) -> Result<Report> {
    if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
        return Err(Error::request(format!(
            "experts={fraction}: give a fraction of the experts in (0, 1)"
        )));
    }
    // Check every mixture before any work.
    let spans: Vec<Option<ExpertSpan>> = (0..graph.blocks()).map(|i| graph.experts(i)).collect();
    let mut counts = None;
    for span in spans.iter().flatten() {
        let experts = span.layers.len();
        let remove = (fraction * experts as f64).round() as usize;
        if remove == 0 || experts - remove.min(experts) < span.top_k {
            return Err(Error::request(format!(
                "experts={fraction} removes {remove} of {experts} experts: a mixture must lose \
                 at least one and keep at least num_experts_per_tok = {}",
                span.top_k
            )));
        }
        if counts.is_some_and(|c| c != (experts, remove)) {
            return Err(Error::request(
                "the mixtures differ in their expert counts: experts=F keeps them uniform",
            ));
        }
        counts = Some((experts, remove));
    }
    let Some((experts, remove)) = counts else {
        return Err(Error::request(
            "this model has no mixture of experts: experts=F removes experts from mixtral, \
             qwen2_moe and qwen3_moe models",
        ));
    };
    let clock = std::time::Instant::now();
    let usage = expert_usage(dense, graph, folder, samples)?;
    let removed: Vec<Option<Vec<usize>>> = usage
        .iter()
        .map(|u| u.as_ref().map(|u| least_used(u, remove)))
        .collect();

    // Tensors: the removed experts' dropped, the rest renumbered.
    writer.restructure(|name| {
        for (span, gone) in spans.iter().zip(&removed) {
            let (Some(span), Some(gone)) = (span, gone) else {
                continue;
            };
            let Some(rest) = name.strip_prefix(&span.prefix) else {
                continue;
            };
            let (index, tail) = rest.split_once('.')?;
            let e: usize = index.parse().ok()?;
            if gone.contains(&e) {
                return None;
            }
            let new = e - gone.iter().filter(|&&g| g < e).count();
            return Some(format!("{}{new}.{tail}", span.prefix));
        }
        Some(name.to_string())
    })?;
    let mut report = Report {
        samples: samples.map_or(0, <[Vec<u32>]>::len),
        tokens: samples.map_or(0, |s| s.iter().map(Vec::len).sum()),
        ..Report::default()
    };
    for (i, (span, gone)) in spans.iter().zip(&removed).enumerate() {
        let (Some(span), Some(gone)) = (span, gone) else {
            continue;
        };
        let router = folder.values(&span.router)?;
        let hidden = router.len() / experts;
        let kept: Vec<f32> = (0..experts)
            .filter(|e| !gone.contains(e))
            .flat_map(|e| router[e * hidden..(e + 1) * hidden].iter().copied())
            .collect();
        writer.replace_reshaped(&span.router, &[experts - remove, hidden], &kept)?;
        let per_expert: u64 = span.layers[0]
            .iter()
            .map(|l| folder.info(&format!("{l}.weight")).map_or(0, |t| t.numel()))
            .sum();
        let tokens: u64 = usage[i]
            .as_ref()
            .map_or(0, |u| gone.iter().map(|&e| u[e].tokens).sum());
        report.layers.push(LayerReport {
            name: span.router.trim_end_matches(".weight").to_string(),
            block: i,
            shape: [experts, hidden],
            pruned: remove as u64 * (per_expert + hidden as u64),
            error: None,
            relative_error: None,
            seconds: 0.0,
            groups: Some(GroupReport {
                structure: Structure::Experts,
                before: experts,
                removed: gone.clone(),
            }),
            inputs: samples.map(|_| tokens),
        });
    }
    report.solve_seconds = clock.elapsed().as_secs_f64();
    writer.set_config(config_with_experts(folder.config(), experts - remove)?);
    Ok(report)
}

/// `config` with its expert count (`num_local_experts` and/or
/// `num_experts`, whichever it states) set to `experts`.
pub fn config_with_experts(config: &Value, experts: usize) -> Result<Value> {
    let mut config = config.clone();
    let object = config
        .as_object_mut()
        .ok_or_else(|| Error::request("config.json is not a JSON object"))?;
    let mut found = false;
    for key in ["num_local_experts", "num_experts"] {
        if object.get(key).is_some_and(|v| !v.is_null()) {
            object.insert(key.into(), experts.into());
            found = true;
        }
    }
    if !found {
        return Err(Error::request(
            "config.json states no num_local_experts or num_experts",
        ));
    }
    Ok(config)
}
