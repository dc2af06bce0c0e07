//! Progress bars on stderr (indicatif): one bar per long phase, drawn only
//! on a terminal and never with `--quiet`, so pipes and logs stay clean.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prunus_adapters::safetensors::Progress;

/// The bars of one command: a new bar appears when a new phase starts, the
/// finished ones stay (full) until the command ends.
pub(crate) struct Bars {
    multi: MultiProgress,
    current: Option<(&'static str, ProgressBar)>,
    done: Vec<ProgressBar>,
}

impl Bars {
    /// Bars on stderr, hidden when `quiet` or when stderr is not a terminal.
    pub(crate) fn new(quiet: bool) -> Self {
        let shown = !quiet && std::io::stderr().is_terminal();
        Bars::to(if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        })
    }

    /// Bars drawn to `target`.
    fn to(target: ProgressDrawTarget) -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(target),
            current: None,
            done: Vec::new(),
        }
    }

    /// Whether the bars are drawn at all.
    pub(crate) fn is_hidden(&self) -> bool {
        self.multi.is_hidden()
    }

    /// Moves the bar of `p.stage` to `p.done` of `p.total` bytes, starting
    /// a new bar when the stage changes.
    pub(crate) fn bytes(&mut self, p: Progress) {
        let bar = self.bar(p.stage, p.total, BYTES);
        bar.set_position(p.done.min(p.total));
    }

    /// Moves the bar of `stage` to `done` of `total` steps, with `message`
    /// after it.
    pub(crate) fn steps(&mut self, stage: &'static str, done: u64, total: u64, message: String) {
        let bar = self.bar(stage, total, STEPS);
        bar.set_position(done.min(total));
        bar.set_message(message);
    }

    /// The bar of `stage`, new if the stage changed.
    fn bar(&mut self, stage: &'static str, total: u64, template: &str) -> &ProgressBar {
        if self.current.as_ref().is_some_and(|(s, _)| *s != stage)
            && let Some((_, old)) = self.current.take()
        {
            old.finish();
            self.done.push(old);
        }
        let multi = &self.multi;
        let (_, bar) = self.current.get_or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(total));
            // The templates are constants, checked by the tests.
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(stage);
            (stage, bar)
        });
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        bar
    }

    /// Prints `line` on stderr, above the bars when they are drawn.
    pub(crate) fn println(&self, line: &str) {
        if self.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Removes every bar from the terminal.
    pub(crate) fn clear(self) {
        for bar in self
            .done
            .iter()
            .chain(self.current.as_ref().map(|(_, b)| b))
        {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// A bar over bytes: stage, bar, bytes done of total, rate, time left.
const BYTES: &str =
    "{prefix:>5} [{bar:25}] {bytes:>10} / {total_bytes:<10} {binary_bytes_per_sec:>12}  eta {eta}";

/// A bar over steps: stage, bar, steps done of total, elapsed, message.
const STEPS: &str = "{prefix:>5} [{bar:25}] {pos:>3}/{len:<3} {elapsed:>4}  {msg}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [BYTES, STEPS] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn one_bar_per_stage() {
        let mut bars = Bars::to(ProgressDrawTarget::hidden());
        assert!(bars.is_hidden());
        for stage in ["scan", "scan", "write"] {
            bars.bytes(Progress {
                stage,
                done: 10,
                total: 20,
            });
        }
        assert_eq!(bars.done.len(), 1);
        assert!(bars.done[0].is_finished());
        let (stage, bar) = bars.current.as_ref().unwrap();
        assert_eq!(
            (*stage, bar.position(), bar.length()),
            ("write", 10, Some(20))
        );
        // A position past the total is clamped, a new total is taken.
        bars.bytes(Progress {
            stage: "write",
            done: 50,
            total: 40,
        });
        let (_, bar) = bars.current.as_ref().unwrap();
        assert_eq!((bar.position(), bar.length()), (40, Some(40)));
        bars.clear();
    }

    #[test]
    fn quiet_hides_the_bars() {
        assert!(Bars::new(true).is_hidden());
    }
}
