//! The progress shown while `cograft import` and `export` run: a bar over the file's bytes for
//! an import (the server reads the body as fast as it commits entries, so bytes sent follow
//! what is applied), a counter of lines for an export (its size is not known beforehand).
//! Drawn on stderr, and not at all when stderr is no terminal (scripts, CI, tests).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` bytes.
pub fn bytes(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)")
            .expect("a valid progress template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// A counter of lines.
pub fn lines(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg}: {human_pos} lines in {elapsed}")
        .expect("a valid progress template");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}
