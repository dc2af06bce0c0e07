//! Calibration and evaluation text: UTF-8, one sample per line, turned into
//! token sequences with the model folder's own tokenizer.
//!
//! - An encoder takes one sentence per sample, with its special tokens
//!   (`[CLS] … [SEP]`), cut to the model's length as sentence-transformers
//!   cuts it.
//! - A decoder takes sequences of `seq_len` tokens: the lines' tokens run
//!   one after another (a long line is cut across sequences, short ones are
//!   packed together), the first token of each sequence the tokenizer's
//!   beginning-of-sequence token where it has one.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// The usable lines of a text file: UTF-8, trimmed, blank lines dropped.
/// Fails with an [`Error::Text`] on a file that cannot be read, is not
/// UTF-8, or has no line with text.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path.display(), e))?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Text {
        path: path.display().to_string(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {}); give a UTF-8 file with one sample per line",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(Error::Text {
            path: path.display().to_string(),
            reason: "no line with text in it; give a UTF-8 file with one sample per line".into(),
        });
    }
    Ok(lines)
}

/// The folder's tokenizer as prunus uses it: no padding (a batch is one
/// sequence), no truncation of its own.
pub fn plain(tokenizer: &Tokenizer) -> Tokenizer {
    let mut t = tokenizer.clone();
    t.with_padding(None);
    // Removing truncation cannot fail.
    let _ = t.with_truncation(None);
    t
}

/// One token sequence per sentence, with the tokenizer's special tokens,
/// at most `max_len` tokens (cut as the tokenizer's own truncation cuts,
/// keeping the closing special token), for the first `samples` lines.
pub fn sentences(
    tokenizer: &Tokenizer,
    lines: &[String],
    samples: usize,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut t = plain(tokenizer);
    t.with_truncation(Some(TruncationParams {
        max_length: max_len,
        ..TruncationParams::default()
    }))
    .map_err(tokenizer_error)?;
    let mut out = Vec::with_capacity(samples.min(lines.len()));
    for line in lines.iter().take(samples) {
        let ids = t.encode(line.as_str(), true).map_err(tokenizer_error)?;
        if !ids.get_ids().is_empty() {
            out.push(ids.get_ids().to_vec());
        }
    }
    if out.is_empty() {
        return Err(Error::request("no line gave any token"));
    }
    Ok(out)
}

/// The tokens of the lines one after another (no special tokens), each
/// line followed by the tokens of a newline where the tokenizer has them.
pub fn stream(tokenizer: &Tokenizer, lines: &[String]) -> Result<Vec<u32>> {
    let t = plain(tokenizer);
    let mut ids = Vec::new();
    for line in lines {
        let e = t.encode(line.as_str(), false).map_err(tokenizer_error)?;
        ids.extend_from_slice(e.get_ids());
        let nl = t.encode("\n", false).map_err(tokenizer_error)?;
        ids.extend_from_slice(nl.get_ids());
    }
    Ok(ids)
}

/// Up to `samples` sequences of exactly `seq_len` tokens packed from the
/// lines (see the module docs), as many as the text fills; each begins
/// with `bos` when given. Fails when the text does not fill one sequence
/// of at least two tokens.
pub fn packed(
    tokenizer: &Tokenizer,
    lines: &[String],
    samples: usize,
    seq_len: usize,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>> {
    if seq_len < 2 {
        return Err(Error::request(format!(
            "a sequence length of {seq_len}: give at least 2 tokens"
        )));
    }
    let body = seq_len - usize::from(bos.is_some());
    let mut out: Vec<Vec<u32>> = Vec::with_capacity(samples);
    let mut current: Vec<u32> = Vec::with_capacity(seq_len);
    'lines: for line in lines {
        for &id in &stream(tokenizer, std::slice::from_ref(line))? {
            if current.len() == body {
                out.push(with_bos(bos, &current));
                current.clear();
                if out.len() == samples {
                    break 'lines;
                }
            }
            current.push(id);
        }
    }
    if out.len() < samples && current.len() == body {
        out.push(with_bos(bos, &current));
    }
    if out.is_empty() {
        return Err(Error::request(format!(
            "the text has {} tokens, not enough for one calibration sequence of {seq_len}; give more text or a smaller --seq-len",
            current.len()
        )));
    }
    Ok(out)
}

fn with_bos(bos: Option<u32>, body: &[u32]) -> Vec<u32> {
    bos.into_iter().chain(body.iter().copied()).collect()
}

/// The id of the tokenizer's beginning-of-sequence token, if it has one of
/// the usual names (`<s>`, `<|begin_of_text|>`, `<|endoftext|>` is not one).
pub fn bos_token(tokenizer: &Tokenizer) -> Option<u32> {
    ["<s>", "<|begin_of_text|>", "<bos>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
}

fn tokenizer_error(e: tokenizers::Error) -> Error {
    Error::request(format!("the tokenizer failed: {e}"))
}
