//! A long conversation through `tern chat`: 300 scripted turns (about 60 000 tokens) with a
//! 4 + 508 cache, once with the system prompt pinned and once with `--no-pin`, the two runs
//! side by side (one thread each).
//!
//! The system prompt gives the model a name (Finn), an opening word (Ahoy) and a language
//! (English). Ten probe questions ("What is your name?", …) check it at turn 1 and at turn
//! 300, each asked of the same saved state (`/save`, then `/load` before every probe), so the
//! probes do not pile up in the conversation. In between, 298 ordinary turns; their replies'
//! distinct-2 ratio (distinct word bigrams / bigrams) is reported per block of 50 turns, and
//! the resident memory of the `tern chat` process (`VmRSS`) after every turn.
//!
//! `cargo build --release -p tern-cli && cargo run --release -p tern-benches --bin long-chat`
//! (`-- --turns N` for a shorter run) writes docs/long-chat.md and docs/long-chat.json.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const SYSTEM: &str = "Your name is Finn. You are a pirate. You always start your answer \
                      with the word Ahoy. You speak English only.";
const NAME: &str = "finn";
const OPENING: &str = "ahoy";
const PROBES: [&str; 10] = [
    "What is your name?",
    "What's your name?",
    "Who are you?",
    "Please introduce yourself.",
    "Tell me your name.",
    "May I know your name?",
    "What should I call you?",
    "Tell me your name and what you do.",
    "Who am I talking to?",
    "Introduce yourself in one sentence.",
];
const TOPICS: [&str; 40] = [
    "sailing ships",
    "the moon",
    "coffee",
    "old maps",
    "thunderstorms",
    "parrots",
    "lighthouses",
    "bread baking",
    "the northern lights",
    "chess",
    "volcanoes",
    "gardening",
    "whales",
    "the printing press",
    "bicycles",
    "tea ceremonies",
    "deserts",
    "rainforests",
    "clocks",
    "honeybees",
    "the Roman roads",
    "jazz music",
    "glaciers",
    "paper money",
    "kites",
    "coral reefs",
    "windmills",
    "the postal service",
    "telescopes",
    "mountain climbing",
    "cheese making",
    "hot air balloons",
    "penguins",
    "ancient libraries",
    "fireworks",
    "rivers",
    "submarines",
    "owls",
    "salt",
    "the compass",
];
/// Questions that ask for a few paragraphs, so that 300 turns make about 60 000 tokens.
const FORMS: [&str; 8] = [
    "Tell me about {} in a few paragraphs.",
    "What do you think of {}? Explain in detail.",
    "Give me some useful tips about {}, with reasons.",
    "Describe {} in detail.",
    "Why do {} matter to people? Give several reasons.",
    "Tell me a story about {}.",
    "What are the most surprising things about {}? Explain each one.",
    "How would you explain {} to a child? Take your time.",
];

/// A `tern chat` child process driven through stdin, one message per line.
struct Chat {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    err: Receiver<String>,
}

/// What one message got back.
struct Turn {
    reply: String,
    tokens_so_far: u64,
    rss_kib: u64,
}

impl Chat {
    fn start(tern: &Path, pin: bool) -> Result<Chat> {
        let mut cmd = Command::new(tern);
        cmd.args([
            "chat", "-t", "1", "--sinks", "4", "--window", "508", "-n", "200",
        ])
        .args(["--system", SYSTEM]);
        if !pin {
            cmd.arg("--no-pin");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", tern.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut pending = Vec::new();
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                // Hand over whole UTF-8 only.
                let valid = match std::str::from_utf8(&pending) {
                    Ok(s) => s.len(),
                    Err(e) => e.valid_up_to(),
                };
                let text = String::from_utf8_lossy(&pending[..valid]).into_owned();
                sink.lock().unwrap().push_str(&text);
                pending.drain(..valid);
            }
        });
        let (tx, err) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Chat {
            child,
            stdin,
            out,
            err,
        })
    }

    /// Waits for a line on stderr that starts with `prefix`; an `error:` line fails.
    fn expect(&mut self, prefix: &str) -> Result<String> {
        loop {
            let line = self
                .err
                .recv_timeout(Duration::from_secs(900))
                .with_context(|| format!("waiting for `{prefix}` from tern chat"))?;
            if line.starts_with("error") {
                bail!("tern chat: {line}");
            }
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    fn command(&mut self, cmd: &str, answer: &str) -> Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.expect(answer).map(|_| ())
    }

    /// Sends a user message; `/stats` after it marks the end of the reply on stderr.
    fn ask(&mut self, message: &str) -> Result<Turn> {
        writeln!(self.stdin, "{message}\n/stats")?;
        self.stdin.flush()?;
        let stats = self.expect("tokens so far:")?;
        let tokens_so_far = stats
            .trim_start_matches("tokens so far:")
            .split('|')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        // The reply and its closing empty line were written before the stats line.
        let t0 = Instant::now();
        let reply = loop {
            {
                let mut out = self.out.lock().unwrap();
                if out.ends_with("\n\n") {
                    let reply = out.trim_end().to_string();
                    out.clear();
                    break reply;
                }
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("no reply on stdout after the stats line");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let rss_kib = tern_benches::rss_kib_of(&self.child.id().to_string()).unwrap_or(0);
        Ok(Turn {
            reply,
            tokens_so_far,
            rss_kib,
        })
    }

    /// The probes, each asked of the state saved in `file`.
    fn probe(&mut self, file: &Path) -> Result<Vec<Probe>> {
        let file = file.display().to_string();
        self.command(&format!("/save {file}"), "saved to")?;
        let mut probes = Vec::new();
        for q in PROBES {
            let t = self.ask(q)?;
            probes.push(Probe::check(q, &t.reply));
            self.command(&format!("/load {file}"), "loaded")?;
        }
        Ok(probes)
    }

    fn finish(mut self) -> Result<()> {
        writeln!(self.stdin, "/quit")?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "tern chat exited with {status}");
        Ok(())
    }
}

/// One probe's reply and the three checks on it.
#[derive(Clone, Debug)]
struct Probe {
    question: &'static str,
    reply: String,
    name: bool,
    opening: bool,
    english: bool,
}

impl Probe {
    fn check(question: &'static str, reply: &str) -> Probe {
        let lower = reply.to_lowercase();
        let first = lower.trim_start_matches(|c: char| !c.is_alphanumeric());
        Probe {
            question,
            reply: reply.to_string(),
            name: lower.contains(NAME),
            opening: first.starts_with(OPENING),
            english: is_english(reply),
        }
    }
}

/// English enough: at least 95 % of the letters are ASCII and a common English word appears.
fn is_english(text: &str) -> bool {
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.is_empty() {
        return false;
    }
    let ascii = letters.iter().filter(|c| c.is_ascii()).count();
    const COMMON: [&str; 12] = [
        "the", "a", "i", "you", "is", "my", "and", "to", "of", "me", "be", "i'm",
    ];
    let words: HashSet<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.to_lowercase())
        .collect();
    ascii * 100 >= letters.len() * 95 && COMMON.iter().any(|w| words.contains(*w))
}

/// Distinct word bigrams over all bigrams of the replies (within each reply).
fn distinct2(replies: &[String]) -> f64 {
    let mut all = 0usize;
    let mut seen = HashSet::new();
    for r in replies {
        let words: Vec<String> = r.split_whitespace().map(|w| w.to_lowercase()).collect();
        for pair in words.windows(2) {
            all += 1;
            seen.insert((pair[0].clone(), pair[1].clone()));
        }
    }
    seen.len() as f64 / all.max(1) as f64
}

/// The user message of ordinary turn `i`: a topic and a question form, in a scrambled order.
fn message(i: usize) -> String {
    let topic = TOPICS[(i * 7 + i / TOPICS.len()) % TOPICS.len()];
    let form = FORMS[(i * 3 + i / FORMS.len()) % FORMS.len()];
    form.replace("{}", topic)
}

/// One whole run: probes at turn 1, `turns - 2` ordinary turns, probes at turn `turns`.
struct Run {
    pinned: bool,
    first: Vec<Probe>,
    last: Vec<Probe>,
    /// (turn, tokens so far, RSS KiB, reply words)
    rows: Vec<(usize, u64, u64, usize)>,
    replies: Vec<String>,
    secs: f64,
}

fn run(tern: &Path, pin: bool, turns: usize, dir: &Path) -> Result<Run> {
    let t0 = Instant::now();
    let tag = if pin { "pinned" } else { "unpinned" };
    let mut chat = Chat::start(tern, pin)?;
    let first = chat.probe(&dir.join(format!("{tag}-turn1.tern")))?;
    let mut rows = Vec::new();
    let mut replies = Vec::new();
    for i in 1..turns.saturating_sub(1) {
        let t = chat.ask(&message(i))?;
        rows.push((
            i + 1,
            t.tokens_so_far,
            t.rss_kib,
            t.reply.split_whitespace().count(),
        ));
        if i % 25 == 0 {
            eprintln!(
                "[{tag}] turn {}: {} tokens, RSS {} KiB",
                i + 1,
                t.tokens_so_far,
                t.rss_kib
            );
        }
        replies.push(t.reply);
    }
    let last = chat.probe(&dir.join(format!("{tag}-turn{turns}.tern")))?;
    chat.finish()?;
    Ok(Run {
        pinned: pin,
        first,
        last,
        rows,
        replies,
        secs: t0.elapsed().as_secs_f64(),
    })
}

fn count(p: &[Probe], f: impl Fn(&Probe) -> bool) -> usize {
    p.iter().filter(|x| f(x)).count()
}

fn main() -> Result<()> {
    let turns = tern_benches::arg("--turns", 300).max(3);
    let tern: PathBuf = std::env::current_exe()?
        .parent()
        .context("the bench's directory")?
        .join("tern");
    anyhow::ensure!(
        tern.exists(),
        "{} is missing: cargo build --release -p tern",
        tern.display()
    );
    let dir = std::env::temp_dir().join(format!("tern-long-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runs: Vec<Result<Run>> = std::thread::scope(|s| {
        let handles: Vec<_> = [true, false]
            .map(|pin| {
                let (tern, dir) = (&tern, &dir);
                s.spawn(move || run(tern, pin, turns, dir))
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let runs: Vec<Run> = runs.into_iter().collect::<Result<_>>()?;
    write_outputs(&runs, turns)
}

fn write_outputs(runs: &[Run], turns: usize) -> Result<()> {
    let mut md = String::new();
    md.push_str(&format!(
        "SmolLM2-135M-Instruct Q4_1 through `tern chat` (scripted), {turns} turns, cache 4 + 508 \
         f16, temperature 0.6, repeat penalty 1.1, replies of at most 200 tokens, one thread per \
         conversation. Generated by `cargo run --release -p tern-benches --bin long-chat`.\n\n\
         System prompt: \"{SYSTEM}\"\n\n"
    ));
    md.push_str("**The system prompt at turn 1 and at the last turn** (10 probe questions each, asked of the same saved state; counts of replies that pass)\n\n");
    md.push_str("| run | turn | gives the name Finn | opens with \"Ahoy\" | English |\n|---|---|---|---|---|\n");
    for r in runs {
        let tag = if r.pinned {
            "pinned"
        } else {
            "not pinned (`--no-pin`)"
        };
        for (turn, p) in [(1, &r.first), (turns, &r.last)] {
            md.push_str(&format!(
                "| {tag} | {turn} | {}/10 | {}/10 | {}/10 |\n",
                count(p, |x| x.name),
                count(p, |x| x.opening),
                count(p, |x| x.english)
            ));
        }
    }
    md.push_str("\n**Replies and memory** (distinct-2 of the replies per block of 50 turns; `VmRSS` of the `tern chat` process)\n\n");
    md.push_str("| run | tokens in all | distinct-2 per 50 turns | RSS after turn 10 | max RSS after | wall time |\n|---|---|---|---|---|---|\n");
    for r in runs {
        let tag = if r.pinned { "pinned" } else { "not pinned" };
        let d2: Vec<String> = r
            .replies
            .chunks(50)
            .map(|c| format!("{:.3}", distinct2(c)))
            .collect();
        let warm = r.rows.iter().find(|x| x.0 >= 10).map_or(0, |x| x.2);
        let max = r
            .rows
            .iter()
            .filter(|x| x.0 >= 10)
            .map(|x| x.2)
            .max()
            .unwrap_or(0);
        let tokens = r.rows.last().map_or(0, |x| x.1);
        md.push_str(&format!(
            "| {tag} | {tokens} | {} | {warm} KiB | {max} KiB (+{} KiB) | {:.0} s |\n",
            d2.join(" · "),
            max.saturating_sub(warm),
            r.secs
        ));
    }
    md.push_str("\n**Probe replies at the last turn**\n\n");
    for r in runs {
        let tag = if r.pinned { "pinned" } else { "not pinned" };
        for p in r.last.iter().take(4) {
            let short: String = p.reply.chars().take(160).collect();
            md.push_str(&format!(
                "- {tag}, \"{}\": {}\n",
                p.question,
                short.replace('\n', " ")
            ));
        }
    }
    let json = serde_json::json!({
        "turns": turns,
        "system": SYSTEM,
        "runs": runs.iter().map(|r| serde_json::json!({
            "pinned": r.pinned,
            "seconds": r.secs,
            "probes_turn_1": r.first.iter().map(|p| serde_json::json!([p.question, p.reply, p.name, p.opening, p.english])).collect::<Vec<_>>(),
            "probes_last_turn": r.last.iter().map(|p| serde_json::json!([p.question, p.reply, p.name, p.opening, p.english])).collect::<Vec<_>>(),
            "distinct2_per_50_turns": r.replies.chunks(50).map(distinct2).collect::<Vec<_>>(),
            "rows (turn, tokens so far, RSS KiB, reply words)": r.rows,
        })).collect::<Vec<_>>(),
    });
    let dir = tern_benches::docs_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("long-chat.md"), &md)?;
    std::fs::write(
        dir.join("long-chat.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("{md}");
    Ok(())
}
