//! The data a host trains, measures and evaluates on: three splits of
//! labelled samples, sliced and shuffled one way for every host (the lab's
//! and the framework hosts), so two hosts given the same data see the same
//! batches in the same order.

use alloc::format;
use alloc::vec::Vec;

use crate::contract::error::{Error, Result};
use crate::contract::random::permutation;
use crate::host::{Samples, Split};

/// One split: inputs flattened sample-major, one label per sample (of type
/// `L`: [`Splits`] takes `u32`, the lab's datasets keep `u8`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitData<L = u32> {
    /// `samples x sample size` values.
    pub inputs: Vec<f32>,
    /// The class of each sample.
    pub labels: Vec<L>,
}

impl<L> SplitData<L> {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Training, validation and test splits of a classification task.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    sample_dims: Vec<usize>,
    classes: usize,
    train: SplitData,
    validation: SplitData,
    test: SplitData,
}

impl Splits {
    /// The splits of a task whose samples have dims `sample_dims` (e.g.
    /// `[784]` or `[1, 28, 28]`) and whose labels are below `classes`.
    /// Fails on inputs that do not fill whole samples, labels out of range,
    /// non-finite inputs and an empty training split.
    pub fn new(
        sample_dims: &[usize],
        classes: usize,
        train: SplitData,
        validation: SplitData,
        test: SplitData,
    ) -> Result<Splits> {
        let size: usize = sample_dims.iter().product();
        if sample_dims.is_empty() || size == 0 {
            return Err(Error::InvalidArgument {
                what: "sample dims",
                expected: "at least one dim, none of them zero",
            });
        }
        if classes < 2 {
            return Err(Error::InvalidArgument {
                what: "classes",
                expected: "at least 2",
            });
        }
        for (split, data) in [
            (Split::Train, &train),
            (Split::Validation, &validation),
            (Split::Test, &test),
        ] {
            crate::contract::check::same_len(
                "inputs of the split's samples",
                data.labels.len() * size,
                data.inputs.len(),
            )?;
            if let Some(l) = data.labels.iter().find(|&&l| l as usize >= classes) {
                return Err(Error::HostFailure {
                    message: format!(
                        "the {split} split has label {l}, but the task has {classes} classes"
                    ),
                });
            }
            if data.inputs.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite { what: "inputs" });
            }
        }
        if train.is_empty() {
            return Err(Error::EmptyTensor {
                layer: "training split".into(),
            });
        }
        Ok(Splits {
            sample_dims: sample_dims.to_vec(),
            classes,
            train,
            validation,
            test,
        })
    }

    /// The dims of one sample.
    pub fn sample_dims(&self) -> &[usize] {
        &self.sample_dims
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_dims.iter().product()
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// One split's data.
    pub fn split(&self, split: Split) -> &SplitData {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// The number of samples in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.split(split).len()
    }

    /// The inputs and labels of `samples`, a count running past the end
    /// clamped to the split. Fails when `samples` starts at or beyond the
    /// end or selects no sample.
    pub fn samples(&self, samples: &Samples) -> Result<(&[f32], &[u32])> {
        let data = self.split(samples.split);
        let n = data.len();
        let end = samples
            .count
            .map_or(n, |c| samples.first.saturating_add(c).min(n));
        if samples.first >= n || end == samples.first {
            return Err(Error::HostFailure {
                message: format!(
                    "no samples from {} of the {} split ({n} samples)",
                    samples.first, samples.split
                ),
            });
        }
        let d = self.sample_len();
        Ok((
            &data.inputs[samples.first * d..end * d],
            &data.labels[samples.first..end],
        ))
    }

    /// The training samples at `indices`, into `inputs` and `labels`
    /// (cleared first). Indices must be below the training split's length.
    pub fn gather_train(&self, indices: &[usize], inputs: &mut Vec<f32>, labels: &mut Vec<u32>) {
        let d = self.sample_len();
        inputs.clear();
        labels.clear();
        for &i in indices {
            inputs.extend_from_slice(&self.train.inputs[i * d..(i + 1) * d]);
            labels.push(self.train.labels[i]);
        }
    }
}

/// The order training visits its samples in: epoch `e` is
/// [`permutation`]`(n, seed, e)` cut into batches, as in the lab's host.
/// [`Shuffle::epoch`] trains whole epochs, [`Shuffle::steps`] a few steps
/// that continue where the last call left off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shuffle {
    seed: u64,
    epoch: u64,
    cursor: usize,
}

impl Shuffle {
    /// The first epoch's shuffle of `seed`.
    pub fn new(seed: u64) -> Shuffle {
        Shuffle {
            seed,
            epoch: 0,
            cursor: 0,
        }
    }

    /// Epochs completed.
    pub fn epochs(&self) -> u64 {
        self.epoch
    }

    /// The batches of one whole epoch over `n` samples; an epoch left
    /// partial by [`Shuffle::steps`] is abandoned and the next one starts.
    pub fn epoch(&mut self, n: usize, batch: usize) -> Result<Vec<Vec<usize>>> {
        check(n, batch)?;
        if self.cursor > 0 {
            self.epoch += 1;
            self.cursor = 0;
        }
        let order = permutation(n, self.seed, self.epoch);
        self.epoch += 1;
        Ok(order.chunks(batch).map(<[usize]>::to_vec).collect())
    }

    /// The next `steps` batches over `n` samples, continuing the current
    /// epoch (a new epoch's shuffle starts when it runs out).
    pub fn steps(&mut self, n: usize, batch: usize, steps: usize) -> Result<Vec<Vec<usize>>> {
        check(n, batch)?;
        let mut order = permutation(n, self.seed, self.epoch);
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            if self.cursor >= n {
                self.epoch += 1;
                self.cursor = 0;
                order = permutation(n, self.seed, self.epoch);
            }
            let end = (self.cursor + batch).min(n);
            out.push(order[self.cursor..end].to_vec());
            self.cursor = end;
        }
        Ok(out)
    }
}

fn check(n: usize, batch: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::EmptyTensor {
            layer: "training split".into(),
        });
    }
    if batch == 0 {
        return Err(Error::InvalidArgument {
            what: "batch size",
            expected: "at least 1",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn data(n: usize) -> SplitData {
        SplitData {
            inputs: (0..2 * n).map(|i| i as f32).collect(),
            labels: (0..n as u32).map(|i| i % 3).collect(),
        }
    }

    #[test]
    fn samples_clamp_and_fail_past_the_end() {
        let s = Splits::new(&[2], 3, data(5), data(2), data(1)).unwrap();
        let (x, y) = s.samples(&Samples::first(Split::Train, 9)).unwrap();
        assert_eq!((x.len(), y.len()), (10, 5));
        let from3 = Samples {
            split: Split::Train,
            first: 3,
            count: Some(1),
        };
        assert_eq!(s.samples(&from3).unwrap().0, [6.0, 7.0]);
        let past = Samples { first: 5, ..from3 };
        assert!(s.samples(&past).is_err());
        assert!(s.samples(&Samples::first(Split::Test, 0)).is_err());
    }

    #[test]
    fn bad_splits_are_refused() {
        let mut short = data(3);
        short.inputs.pop();
        assert!(Splits::new(&[2], 3, short, data(1), data(1)).is_err());
        let mut label = data(3);
        label.labels[0] = 3;
        assert!(Splits::new(&[2], 3, label, data(1), data(1)).is_err());
        let mut nan = data(3);
        nan.inputs[1] = f32::NAN;
        assert!(Splits::new(&[2], 3, nan, data(1), data(1)).is_err());
        assert!(Splits::new(&[2], 3, data(0), data(1), data(1)).is_err());
        assert!(Splits::new(&[0], 3, data(0), data(0), data(0)).is_err());
    }

    #[test]
    fn steps_continue_the_epoch_and_epochs_cover_every_sample() {
        let mut a = Shuffle::new(4);
        let first = a.steps(10, 4, 2).unwrap();
        let rest = a.steps(10, 4, 2).unwrap();
        let whole = Shuffle::new(4).epoch(10, 4).unwrap();
        assert_eq!(first, whole[..2]);
        assert_eq!(rest[0], whole[2]);
        assert_eq!(rest[1], Shuffle::new(4).steps(10, 4, 4).unwrap()[3]);
        let mut seen: Vec<usize> = whole.concat();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(a.epoch(0, 4).is_err());
        assert!(a.epoch(3, 0).is_err());
    }
}
