//! A progress bar for the engine's long passes (fsck's check, the scan of a mount after a
//! crash), on stderr when it is a terminal; nothing otherwise (a log, a pipe, a script).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

use crate::engine::progress::{Observer, set_observer};

/// Shows the engine's passes as a bar if stderr is a terminal.
pub fn show_on_terminal() {
    if std::io::stderr().is_terminal() {
        set_observer(Box::new(Bar(Mutex::new(None))));
    }
}

struct Bar(Mutex<Option<ProgressBar>>);

impl Observer for Bar {
    fn begin(&self, what: &'static str, total: u64) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg}: [{bar:40}] {pos}/{len} segments ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
        *self.0.lock() = Some(bar);
    }
    fn advance(&self, done: u64) {
        if let Some(bar) = self.0.lock().as_ref() {
            bar.set_position(done);
        }
    }
    fn end(&self) {
        if let Some(bar) = self.0.lock().take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar of bytes for one long step of the command itself (a restore from a bucket), drawn on
/// stderr when it is a terminal and hidden otherwise.
pub fn bytes_bar(what: &'static str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    let style = ProgressStyle::with_template("{msg}: [{bar:40}] {bytes}/{total_bytes} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}
