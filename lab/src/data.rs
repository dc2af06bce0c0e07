//! Classification datasets: MNIST-format IDX files, and a synthetic
//! teacher–student task that needs no file.
//!
//! Both are split by the project's protocol: sample `i` goes to training
//! when `i mod 5` is 0, 1 or 2, to validation when it is 3, to test when it
//! is 4. Interleaving keeps each split drawn from the whole file (the two
//! halves of the MNIST test set come from different writers).

use std::path::Path;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use prunus_core::Split;
use prunus_core::splits::Splits;

use crate::error::{Error, Result};
use crate::idx::read_idx;
use crate::synthetic::gaussian;

/// The samples of one split: inputs (`len x input_len`, sample-major) and
/// class labels below 256.
pub type SplitData = prunus_core::splits::SplitData<u8>;

/// A classification dataset split into training, validation and test.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `mnist` or `synthetic` (the name reports use).
    pub name: String,
    /// Input dims `(channels, height, width)`.
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// The training split (calibration data comes from here too).
    pub train: SplitData,
    /// The validation split (stopping rules, model selection).
    pub validation: SplitData,
    /// The held-out test split (reported accuracy).
    pub test: SplitData,
}

impl Dataset {
    /// Splits `inputs` (`labels.len()` samples of `input` dims) by the
    /// protocol `i mod 5`.
    pub fn from_samples(
        name: impl Into<String>,
        input: [usize; 3],
        classes: usize,
        inputs: &[f32],
        labels: &[u8],
    ) -> Result<Dataset> {
        let d: usize = input.iter().product();
        if d == 0 || classes == 0 || labels.len() < 5 {
            return Err(Error::InvalidSetting {
                name: "dataset",
                value: format!("{} samples of {input:?}, {classes} classes", labels.len()),
                expected: "at least 5 samples of a non-empty input and one class".into(),
            });
        }
        prunus_core::contract::check::same_len(
            "dataset input values",
            labels.len() * d,
            inputs.len(),
        )?;
        if let Some(&bad) = labels.iter().find(|&&y| usize::from(y) >= classes) {
            return Err(Error::InvalidSetting {
                name: "label",
                value: bad.to_string(),
                expected: format!("a class below {classes}"),
            });
        }
        let mut splits = [
            SplitData::default(),
            SplitData::default(),
            SplitData::default(),
        ];
        for (i, (&y, x)) in labels.iter().zip(inputs.chunks(d)).enumerate() {
            let s = match i % 5 {
                0..=2 => 0,
                3 => 1,
                _ => 2,
            };
            splits[s].inputs.extend_from_slice(x);
            splits[s].labels.push(y);
        }
        let [train, validation, test] = splits;
        Ok(Dataset {
            name: name.into(),
            input,
            classes,
            train,
            validation,
            test,
        })
    }

    /// The MNIST-format pair `t10k-images-idx3-ubyte.gz` and
    /// `t10k-labels-idx1-ubyte.gz` in `dir` (gzip optional: the names
    /// without `.gz` are tried too), pixels scaled to `[0, 1]`.
    pub fn mnist(dir: &Path) -> Result<Dataset> {
        let find = |stem: &str| {
            let gz = dir.join(format!("{stem}.gz"));
            if gz.exists() { gz } else { dir.join(stem) }
        };
        let images_path = find("t10k-images-idx3-ubyte");
        let labels_path = find("t10k-labels-idx1-ubyte");
        for p in [&images_path, &labels_path] {
            if !p.exists() {
                return Err(Error::Data {
                    path: p.clone(),
                    problem: "not found; --data needs a folder with the MNIST-format \
                              t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)"
                        .into(),
                });
            }
        }
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let [n, h, w] = images.dims[..] else {
            return Err(Error::Data {
                path: images_path,
                problem: format!("images need 3 dimensions, found {:?}", images.dims),
            });
        };
        if labels.dims != [n] {
            return Err(Error::Data {
                path: labels_path,
                problem: format!("{n} images need {n} labels, found dims {:?}", labels.dims),
            });
        }
        if let Some(&bad) = labels.data.iter().find(|&&y| y >= 10) {
            return Err(Error::Data {
                path: labels_path,
                problem: format!("label {bad} is not a digit class 0-9"),
            });
        }
        let x: Vec<f32> = images.data.iter().map(|&p| f32::from(p) / 255.0).collect();
        Dataset::from_samples("mnist", [1, h, w], 10, &x, &labels.data)
    }

    /// The same data as a framework host's splits (candle, burn), samples
    /// of dims `[channels, height, width]`.
    pub fn splits(&self) -> Result<Splits> {
        let convert = |s: &SplitData| prunus_core::splits::SplitData {
            inputs: s.inputs.clone(),
            labels: s.labels.iter().map(|&l| u32::from(l)).collect(),
        };
        Ok(Splits::new(
            &self.input,
            self.classes,
            convert(&self.train),
            convert(&self.validation),
            convert(&self.test),
        )?)
    }

    /// A synthetic teacher–student task ([`TeacherStudent`]).
    pub fn teacher_student(spec: &TeacherStudent) -> Result<Dataset> {
        spec.generate()
    }

    /// The samples of `split`.
    pub fn split(&self, split: Split) -> &SplitData {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }

    /// Values per input sample.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }
}

/// What a [`TeacherStudent`] task's inputs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Inputs {
    /// Smooth random images in `[0, 1]`: uniform noise averaged over 3x3
    /// neighbourhoods, so convolutions have structure to find.
    #[default]
    SmoothImages,
    /// Independent standard normal values: the two-layer teacher–student
    /// setting of the theory papers, which small MLPs learn well.
    Gaussian,
}

/// A classification task labelled by a random teacher network: inputs as
/// [`Inputs`] says; the label is the argmax of a random two-layer ReLU
/// teacher whose logits are centred per class, so classes come out roughly
/// balanced.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TeacherStudent {
    /// Samples in all (split 3:1:1 as every dataset).
    pub samples: usize,
    /// Input dims `(channels, height, width)`.
    pub input: [usize; 3],
    /// The teacher's hidden width.
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
    /// The seed of inputs and teacher.
    pub seed: u64,
    /// The kind of inputs.
    pub inputs: Inputs,
}

impl Default for TeacherStudent {
    /// 10,000 samples of 1x28x28, hidden width 32, 10 classes: MNIST's
    /// sizes, so every protocol runs on it unchanged.
    fn default() -> Self {
        TeacherStudent {
            samples: 10_000,
            input: [1, 28, 28],
            hidden: 32,
            classes: 10,
            seed: 0,
            inputs: Inputs::SmoothImages,
        }
    }
}

impl TeacherStudent {
    /// The same task with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same task with inputs of `input` dims.
    pub fn input(mut self, input: [usize; 3]) -> Self {
        self.input = input;
        self
    }

    /// The same task with `samples` samples.
    pub fn samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    /// The same task with a teacher of `hidden` units.
    pub fn hidden(mut self, hidden: usize) -> Self {
        self.hidden = hidden;
        self
    }

    /// The same task with `classes` classes.
    pub fn classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// The same task with inputs of kind `inputs`.
    pub fn inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    /// The two-layer teacher–student task of `lab forward`: 32 Gaussian
    /// inputs, a teacher of 32 hidden units, 4 classes, 50,000 samples
    /// (enough that a wide student beats narrow ones trained alike).
    ///
    /// ```
    /// use prunus_lab::data::{Dataset, TeacherStudent};
    /// let data = Dataset::teacher_student(&TeacherStudent::two_layer())?;
    /// assert_eq!((data.input_len(), data.classes, data.train.len()), (32, 4, 30_000));
    /// # Ok::<(), prunus_lab::Error>(())
    /// ```
    pub fn two_layer() -> Self {
        TeacherStudent::default()
            .input([32, 1, 1])
            .hidden(32)
            .classes(4)
            .samples(50_000)
            .inputs(Inputs::Gaussian)
    }

    fn generate(&self) -> Result<Dataset> {
        let [c, h, w] = self.input;
        let d = c * h * w;
        if d == 0 || self.hidden == 0 || self.classes < 2 || self.classes > 256 {
            return Err(Error::InvalidSetting {
                name: "teacher-student",
                value: format!("{self:?}"),
                expected: "non-empty inputs, a hidden width, and 2 to 256 classes".into(),
            });
        }
        let n = self.samples;
        let mut x = vec![0.0f32; n * d];
        if self.inputs == Inputs::Gaussian {
            for (j, v) in x.iter_mut().enumerate() {
                *v = gaussian(self.seed, 0, j as u64);
            }
        }
        for (s, image) in x
            .chunks_mut(d)
            .enumerate()
            .filter(|_| self.inputs == Inputs::SmoothImages)
        {
            let noise: Vec<f32> = (0..d as u64)
                .map(|j| {
                    prunus_core::contract::random::uniform(self.seed, 0, s as u64 * d as u64 + j)
                })
                .collect();
            for ch in 0..c {
                for i in 0..h {
                    for j in 0..w {
                        let (mut sum, mut count) = (0.0, 0.0);
                        for di in i.saturating_sub(1)..(i + 2).min(h) {
                            for dj in j.saturating_sub(1)..(j + 2).min(w) {
                                sum += noise[ch * h * w + di * w + dj];
                                count += 1.0;
                            }
                        }
                        image[ch * h * w + i * w + j] = sum / count;
                    }
                }
            }
        }
        let gauss = |stream: u32, len: usize, std: f32| -> Vec<f32> {
            (0..len as u64)
                .map(|j| gaussian(self.seed, stream, j) * std)
                .collect()
        };
        let w1 = gauss(1, self.hidden * d, (2.0 / d as f32).sqrt());
        let w2 = gauss(
            2,
            self.classes * self.hidden,
            (2.0 / self.hidden as f32).sqrt(),
        );
        // Centre the inputs so the teacher's features are not all driven by
        // the mean brightness.
        let centre = match self.inputs {
            Inputs::SmoothImages => 0.5,
            Inputs::Gaussian => 0.0,
        };
        let xc: Vec<f32> = x.iter().map(|v| v - centre).collect();
        let mut hidden = vec![0.0f32; n * self.hidden];
        matmul_t(&xc, &w1, &mut hidden, n, d, self.hidden);
        for v in &mut hidden {
            *v = v.max(0.0);
        }
        let mut logits = vec![0.0f32; n * self.classes];
        matmul_t(&hidden, &w2, &mut logits, n, self.hidden, self.classes);
        let k = self.classes;
        let mut mean = vec![0.0f64; k];
        for row in logits.chunks(k) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v) / n.max(1) as f64;
            }
        }
        let labels: Vec<u8> = logits
            .chunks(k)
            .map(|row| {
                let centred = row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m);
                let (best, _) = centred
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |b, (j, v)| if v > b.1 { (j, v) } else { b },
                    );
                best as u8
            })
            .collect();
        Dataset::from_samples("synthetic", self.input, self.classes, &x, &labels)
    }
}

/// `out = a bᵀ` for `a` of `n x k`, `b` of `m x k`.
fn matmul_t(a: &[f32], b: &[f32], out: &mut [f32], n: usize, k: usize, m: usize) {
    let a = ArrayView2::from_shape((n, k), a).expect("sizes computed above");
    let b = ArrayView2::from_shape((m, k), b).expect("sizes computed above");
    let mut c = ArrayViewMut2::from_shape((n, m), out).expect("sizes computed above");
    general_mat_mul(1.0, &a, &b.t(), 0.0, &mut c);
}
