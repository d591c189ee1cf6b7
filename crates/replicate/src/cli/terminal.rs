//! The terminal: progress as indicatif bars on a TTY, plain lines elsewhere, and the commands'
//! lines for the user on stderr.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use explr_replicate::commands::replicate::Console;
use explr_replicate::context::Progress;

/// Progress bars on a terminal (plain lines elsewhere), and lines on stderr.
pub struct Terminal {
    bars: Option<indicatif::MultiProgress>,
    active: Mutex<std::collections::BTreeMap<String, (indicatif::ProgressBar, Instant)>>,
}

impl Terminal {
    /// Bars when stderr is a terminal.
    pub fn new() -> Self {
        Self {
            bars: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
            active: Mutex::new(Default::default()),
        }
    }
}

impl Console for Terminal {
    fn note(&self, line: &str) {
        match &self.bars {
            // Above the bars, which redraw below it.
            Some(m) => {
                if m.println(line).is_err() {
                    eprintln!("{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Terminal {
    fn start(&self, key: &str, total: u64) {
        let bar = match &self.bars {
            Some(m) => {
                let b = m.add(indicatif::ProgressBar::new(total));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>28} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(key.to_string());
                b
            }
            None => indicatif::ProgressBar::hidden(),
        };
        if let Ok(mut a) = self.active.lock() {
            a.insert(key.to_string(), (bar, Instant::now()));
        }
    }

    fn update(&self, key: &str, done: u64, message: &str) {
        if let Ok(a) = self.active.lock() {
            if let Some((bar, started)) = a.get(key) {
                bar.set_position(done);
                bar.set_message(message.to_string());
                if self.bars.is_none() {
                    eprintln!(
                        "  {key}: {done} {message} ({:.0}s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    fn finish(&self, key: &str, message: &str) {
        if let Ok(mut a) = self.active.lock() {
            if let Some((bar, started)) = a.remove(key) {
                bar.finish_and_clear();
                eprintln!(
                    "  {key}: {message} ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}
