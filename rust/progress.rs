//! A tqdm-style progress line on stderr: percent of input bytes, text MB/s,
//! docs, tokens and tokens/s, with elapsed and remaining time. Redrawn in
//! place on a terminal, printed as plain lines every few seconds otherwise
//! (CI logs), silent when disabled.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Counters shown by the progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Raw (possibly compressed) input bytes consumed.
    pub raw_bytes: u64,
    /// UTF-8 text bytes of the documents kept.
    pub text_bytes: u64,
    pub docs: u64,
    pub tokens: u64,
}

/// Renders progress for one long-running job.
pub struct Progress {
    label: &'static str,
    enabled: bool,
    tty: bool,
    total_raw: u64,
    start: Instant,
    last: Option<Instant>,
    tokens: bool,
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

impl Progress {
    /// `total_raw` is the summed size of the input files (0 if unknown).
    pub fn new(label: &'static str, enabled: bool, total_raw: u64) -> Self {
        Progress {
            label,
            enabled,
            tty: std::io::stderr().is_terminal(),
            total_raw,
            start: Instant::now(),
            last: None,
            tokens: true,
        }
    }

    /// Leaves the token counters out (stages that do not tokenize).
    pub fn without_tokens(mut self) -> Self {
        self.tokens = false;
        self
    }

    /// Redraws if enough time has passed since the last draw.
    pub fn update(&mut self, c: Counts) {
        if !self.enabled {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        // The first line waits a period too: a job shorter than that shows
        // only its final line (outside a terminal, the same line twice).
        let now = Instant::now();
        if now - self.last.unwrap_or(self.start) < every {
            return;
        }
        self.last = Some(now);
        self.draw(c, false);
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self, c: Counts) {
        if self.enabled {
            self.draw(c, true);
        }
    }

    fn draw(&self, c: Counts, done: bool) {
        let elapsed = self.start.elapsed();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let frac = if self.total_raw > 0 {
            (c.raw_bytes as f64 / self.total_raw as f64).min(1.0)
        } else {
            0.0
        };
        let frac = if done { 1.0 } else { frac };
        const WIDTH: usize = 20;
        let filled = (frac * WIDTH as f64).round() as usize;
        let bar: String = "#".repeat(filled) + &".".repeat(WIDTH - filled);
        let eta = if frac > 0.0 && !done {
            clock(Duration::from_secs_f64(secs * (1.0 - frac) / frac))
        } else {
            "00:00".into()
        };
        let (tok, tok_rate) = if self.tokens {
            (
                format!(" {} tok", human(c.tokens as f64)),
                format!(" {} tok/s", human(c.tokens as f64 / secs)),
            )
        } else {
            (String::new(), String::new())
        };
        let line = format!(
            "{} {:3.0}%|{}| {}B/{}B {} docs{tok} | {}B/s{tok_rate} [{}<{}]",
            self.label,
            frac * 100.0,
            bar,
            human(c.raw_bytes as f64),
            human(self.total_raw as f64),
            human(c.docs as f64),
            human(c.text_bytes as f64 / secs),
            clock(elapsed),
            eta,
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K{}", if done { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}
