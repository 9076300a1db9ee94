//! Side-by-side measurement of tokenizer engines against the `tokenizers`
//! crate, for docs/tokenizer-engines.md. Not part of tokenmill's build.
//!
//! Every engine encodes each document with no special tokens added and with
//! special-token strings in the text encoded as ordinary text (tokenmill's
//! default: `set_encode_special_tokens(true)` + `encode_fast(text, false)`).
//!
//! Usage:
//!   engines bench  ENGINE TOKENIZER_JSON THREADS REPS FILE...   MB/s, peak RSS
//!   engines check  ENGINE TOKENIZER_JSON FILE...                docs differing from `tokenizers`
//!   engines adv    ENGINE TOKENIZER_JSON                        adversarial strings: exactness + time
//!   engines long   ENGINE TOKENIZER_JSON FILE...                1/2/4 MB single documents: time + exactness
//!
//! ENGINE: hf | fastokens | fastokens-batch | tokie | tokie-batch | bpe
//! Run the 1-thread numbers under `taskset -c 0` so engines that spawn
//! their own threads (fastokens' fan-out, tokie's chunking) see one core.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::Value;

type Ids = Vec<u32>;

fn peak_rss_mib() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn cur_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn read_docs(files: &[String]) -> Vec<String> {
    let mut docs = Vec::new();
    for f in files {
        let data = std::fs::read_to_string(f).expect("read jsonl");
        for line in data.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).expect("json line");
            if let Some(t) = v["text"].as_str() {
                docs.push(t.to_string());
            }
        }
    }
    docs
}

// ---------------------------------------------------------------- engines

enum Engine {
    Hf(tokenizers::Tokenizer),
    Fastokens(fastokens::Tokenizer),
    Tokie(tokie::Tokenizer),
    Bpe(BpeEngine),
}

impl Engine {
    fn encode(&self, text: &str) -> Ids {
        match self {
            Engine::Hf(t) => t
                .encode_fast(text, false)
                .expect("hf encode")
                .get_ids()
                .to_vec(),
            Engine::Fastokens(t) => t
                .encode_with_policy(text, false, fastokens::AddedTokenPolicy::SkipSpecial)
                .expect("fastokens encode"),
            Engine::Tokie(t) => t.encode_ids(text, false),
            Engine::Bpe(b) => b.encode(text),
        }
    }
}

fn hf_ids(t: &tokenizers::Tokenizer, text: &str) -> Ids {
    t.encode_fast(text, false)
        .expect("hf encode")
        .get_ids()
        .to_vec()
}

fn hf_reference(path: &str) -> tokenizers::Tokenizer {
    let mut t = tokenizers::Tokenizer::from_file(path).expect("hf load");
    t.set_encode_special_tokens(true);
    t
}

/// tokenizer.json with the added tokens flagged `special` removed, so an
/// engine without a "specials as text" switch treats them as plain text.
fn json_without_special_added(path: &str) -> String {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    if let Some(arr) = v["added_tokens"].as_array_mut() {
        arr.retain(|t| t["special"] != true);
    }
    v.to_string()
}

/// Loads an engine, or prints `{prefix} error=...` (one result line) and gives `None`.
fn load_or_report(name: &str, path: &str, prefix: &str) -> Option<Engine> {
    load_engine(name, path)
        .map_err(|e| println!("{prefix} error={e:?}"))
        .ok()
}

fn load_engine(name: &str, path: &str) -> Result<Engine, String> {
    match name {
        "hf" => Ok(Engine::Hf(hf_reference(path))),
        "fastokens" | "fastokens-batch" => fastokens::Tokenizer::from_file(Path::new(path))
            .map(Engine::Fastokens)
            .map_err(|e| format!("fastokens load: {e}")),
        "tokie" | "tokie-batch" => tokie::hf::from_json_str(&json_without_special_added(path))
            .map(Engine::Tokie)
            .map_err(|e| format!("tokie load: {e}")),
        "tokie-specials" => tokie::hf::from_json(path)
            .map(Engine::Tokie)
            .map_err(|e| format!("tokie load: {e}")),
        "bpe" => {
            let p = path.to_string();
            std::panic::catch_unwind(move || BpeEngine::load(&p))
                .map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("bpe load panicked: {}", &msg[..msg.len().min(300)])
                })?
                .map(Engine::Bpe)
        }
        _ => Err(format!("unknown engine {name}")),
    }
}

/// Encode all docs with `threads` rayon threads (per-document parallelism),
/// or with the engine's own batch call for the `*-batch` variants.
fn encode_all(name: &str, engine: &Engine, docs: &[String]) -> Vec<Ids> {
    match (name, engine) {
        ("fastokens-batch", Engine::Fastokens(t)) => t
            .encode_batch_with_policy(docs, false, fastokens::AddedTokenPolicy::SkipSpecial)
            .expect("fastokens batch"),
        ("tokie-batch", Engine::Tokie(t)) => {
            let refs: Vec<&str> = docs.iter().map(|s| s.as_str()).collect();
            let (ids, lens) = t.encode_batch_flat(&refs, false);
            let mut out = Vec::with_capacity(lens.len());
            let mut at = 0usize;
            for l in lens {
                out.push(ids[at..at + l as usize].to_vec());
                at += l as usize;
            }
            out
        }
        _ => docs.par_iter().map(|d| engine.encode(d)).collect(),
    }
}

// ------------------------------------------------ bpe (GitHub rust-gems)

/// GitHub's `bpe` crate has no tokenizer.json loader: it takes a token
/// dictionary whose order is the merge rank (tiktoken style). We build that
/// from the HF vocab + merges, map its ids back to HF ids, and do the
/// normalizer / pre-tokenizer ourselves (`bpe-openai`'s regex pretokenizer
/// with its look-ahead emulation for byte-level families).
struct BpeEngine {
    tok: bpe_openai::Tokenizer,
    to_hf: Vec<u32>,
    norm: Norm,
    /// SentencePiece style: Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer.
    metaspace: bool,
}

#[derive(Clone, Copy)]
enum Norm {
    None,
    Nfc,
    Nfkc,
}

fn bytes_to_unicode() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(cs)
        .map(|(&b, c)| (char::from_u32(c).unwrap(), b as u8))
        .collect()
}

impl BpeEngine {
    fn load(path: &str) -> Result<BpeEngine, String> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let model = &v["model"];
        if model["type"] != "BPE" {
            return Err("not a BPE model".into());
        }
        let vocab: HashMap<String, u32> = model["vocab"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, id)| (k.clone(), id.as_u64().unwrap() as u32))
            .collect();
        let merges: Vec<(String, String)> = model["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                Value::String(s) => {
                    let (a, b) = s.split_once(' ').unwrap();
                    (a.to_string(), b.to_string())
                }
                Value::Array(a) => (a[0].as_str().unwrap().into(), a[1].as_str().unwrap().into()),
                _ => panic!("merge"),
            })
            .collect();
        let norm = match v["normalizer"]["type"].as_str() {
            Some("NFC") => Norm::Nfc,
            Some("NFKC") => Norm::Nfkc,
            _ => Norm::None,
        };
        let pre = &v["pre_tokenizer"];
        let byte_level = pre["type"] == "ByteLevel"
            || pre["pretokenizers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["type"] == "ByteLevel"));
        let metaspace = !byte_level && model["byte_fallback"] == true;
        if !byte_level && !metaspace {
            return Err("neither byte-level nor SentencePiece byte-fallback BPE".into());
        }
        // token string -> bytes
        let b2u = bytes_to_unicode();
        let tok_bytes = |s: &str| -> Vec<u8> {
            if byte_level {
                s.chars().map(|c| b2u[&c]).collect()
            } else {
                s.as_bytes().to_vec()
            }
        };
        // Dictionary in rank order: 256 single bytes, then (SentencePiece)
        // the multi-byte single-char alphabet, then merge results in merge order.
        let mut dict: Vec<Vec<u8>> = Vec::new();
        let mut to_hf: Vec<u32> = Vec::new();
        let mut seen: std::collections::HashSet<Vec<u8>> = Default::default();
        for b in 0..=255u8 {
            let id = if byte_level {
                let c = b2u.iter().find(|(_, &v)| v == b).unwrap().0;
                vocab.get(&c.to_string()).copied()
            } else {
                // the char token if the char is in the vocab, else <0xNN>
                let s = if b < 0x80 {
                    Some((b as char).to_string())
                } else {
                    None
                };
                s.and_then(|s| vocab.get(&s).copied())
                    .or_else(|| vocab.get(&format!("<0x{b:02X}>")).copied())
            };
            let Some(id) = id else {
                return Err(format!("no token for byte {b:#x}"));
            };
            dict.push(vec![b]);
            to_hf.push(id);
            seen.insert(vec![b]);
        }
        if metaspace {
            let mut alpha: Vec<(&String, u32)> = vocab
                .iter()
                .filter(|(k, _)| k.chars().count() == 1 && k.len() > 1)
                .map(|(k, &id)| (k, id))
                .collect();
            alpha.sort_by_key(|&(_, id)| id);
            for (k, id) in alpha {
                if seen.insert(k.as_bytes().to_vec()) {
                    dict.push(k.as_bytes().to_vec());
                    to_hf.push(id);
                }
            }
        }
        for (a, b) in &merges {
            let merged = format!("{a}{b}");
            let Some(&id) = vocab.get(&merged) else {
                continue;
            };
            let bytes = tok_bytes(&merged);
            if seen.insert(bytes.clone()) {
                dict.push(bytes);
                to_hf.push(id);
            }
        }
        let hash = bpe::byte_pair_encoding::find_hash_factor_for_dictionary(dict.clone());
        let bpe = bpe::byte_pair_encoding::BytePairEncoding::from_dictionary(dict, Some(hash));
        let tok = if metaspace {
            bpe_openai::Tokenizer::new(bpe, None, false).map_err(|e| e.to_string())?
        } else {
            // The HF split regex with `\s+(?!\S)` emulated as bpe-openai does:
            // `\s+\s` as a look-ahead pattern whose last char is dropped.
            let qwen = pre["pretokenizers"].as_array().is_some();
            let pat1 = if qwen {
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+$"
            } else {
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+$"
            };
            bpe_openai::Tokenizer::new_lookahead(
                bpe,
                &[(pat1, false), (r"\s+\s", true), (r"\s+", false)],
                false,
            )
            .map_err(|e| e.to_string())?
        };
        Ok(BpeEngine {
            tok,
            to_hf,
            norm,
            metaspace,
        })
    }

    fn encode(&self, text: &str) -> Ids {
        use unicode_normalization::UnicodeNormalization;
        let normed: String = match self.norm {
            Norm::None => text.to_string(),
            Norm::Nfc => text.nfc().collect(),
            Norm::Nfkc => text.nfkc().collect(),
        };
        let ids = if self.metaspace {
            if normed.is_empty() {
                return Vec::new();
            }
            let s = format!("▁{}", normed.replace(' ', "▁"));
            self.tok.bpe.encode_via_backtracking(s.as_bytes())
        } else {
            self.tok.encode(normed.as_str())
        };
        ids.into_iter().map(|i| self.to_hf[i as usize]).collect()
    }
}

// ------------------------------------------------------------ reporting

fn first_diff(a: &[u32], b: &[u32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fn describe_diff(hf: &tokenizers::Tokenizer, text: &str, want: &[u32], got: &[u32]) -> String {
    let i = first_diff(want, got);
    let enc = hf.encode(text, false).expect("hf encode");
    let off = enc.get_offsets().get(i).map(|o| o.0).unwrap_or(text.len());
    let mut lo = off.saturating_sub(30);
    while !text.is_char_boundary(lo) {
        lo -= 1;
    }
    let mut hi = (off + 30).min(text.len());
    while !text.is_char_boundary(hi) {
        hi += 1;
    }
    let show = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&id| format!("{id}:{:?}", hf.id_to_token(id).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let s = i.saturating_sub(2);
    format!(
        "first diff at token {i} (byte {off}) of {}/{} tokens; text {:?}\n      tokenizers: {}\n      engine:     {}",
        want.len(),
        got.len(),
        &text[lo..hi],
        show(&want[s..(i + 4).min(want.len())]),
        show(&got[s.min(got.len())..(i + 4).min(got.len())]),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args[1].as_str();
    let name = args[2].as_str();
    let tok_path = args[3].as_str();
    match cmd {
        "bench" => {
            let threads: usize = args[4].parse().unwrap();
            let reps: usize = args[5].parse().unwrap();
            let docs = read_docs(&args[6..]);
            let bytes: usize = docs.iter().map(|d| d.len()).sum();
            let rss0 = cur_rss_mib();
            let t0 = Instant::now();
            let Some(engine) = load_or_report(
                name,
                tok_path,
                &format!("RESULT engine={name} threads={threads}"),
            ) else {
                return;
            };
            let load_s = t0.elapsed().as_secs_f64();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut rates = Vec::new();
            let mut ntok = 0usize;
            for _ in 0..reps {
                let t = Instant::now();
                let out = pool.install(|| encode_all(name, &engine, &docs));
                let s = t.elapsed().as_secs_f64();
                ntok = out.iter().map(|v| v.len()).sum();
                rates.push(bytes as f64 / 1e6 / s);
                drop(out);
            }
            let mut sorted = rates.clone();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "RESULT engine={name} threads={threads} docs={} text_mb={:.2} tokens={ntok} load_s={load_s:.2} mbps_median={:.2} mbps_all={:?} rss_before_load_mib={rss0:.0} peak_rss_mib={:.0}",
                docs.len(),
                bytes as f64 / 1e6,
                sorted[sorted.len() / 2],
                rates.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
                peak_rss_mib()
            );
        }
        "check" => {
            let docs = read_docs(&args[4..]);
            let hf = hf_reference(tok_path);
            let Some(engine) = load_or_report(name, tok_path, &format!("CHECK engine={name}"))
            else {
                return;
            };
            let want: Vec<Ids> = docs.par_iter().map(|d| hf_ids(&hf, d)).collect();
            let got = encode_all(name, &engine, &docs);
            let bad: Vec<usize> = (0..docs.len()).filter(|&i| want[i] != got[i]).collect();
            println!(
                "CHECK engine={name} docs={} differing={}",
                docs.len(),
                bad.len()
            );
            if let Some(&i) = bad.first() {
                println!(
                    "  example doc #{i}: {}",
                    describe_diff(&hf, &docs[i], &want[i], &got[i])
                );
            }
        }
        "adv" => {
            let hf = hf_reference(tok_path);
            let Some(engine) = load_or_report(name, tok_path, &format!("ADV engine={name}")) else {
                return;
            };
            let mb = 1 << 20;
            let cases: Vec<(&str, String)> = vec![
                ("1MB 'a' run", "a".repeat(mb)),
                ("1MB word (cycled letters, no spaces)", {
                    let alpha = "abcdefghijklmnopqrstuvwxyz中文字符";
                    alpha
                        .chars()
                        .cycle()
                        .scan(0usize, |n, c| {
                            if *n >= mb {
                                None
                            } else {
                                *n += c.len_utf8();
                                Some(c)
                            }
                        })
                        .collect()
                }),
                ("1MB base64-like word", {
                    let mut x: u64 = 1;
                    let al = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    (0..mb)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            al[(x % 64) as usize] as char
                        })
                        .collect()
                }),
                ("1MB '中' run", "中".repeat(mb / 3)),
                ("1MB spaces", " ".repeat(mb)),
                (
                    "whitespace mix",
                    " \t\n\r\u{a0}\u{3000}  x  \n\n\t y \u{2028}z   ".repeat(2000),
                ),
                (
                    "combining marks",
                    "e\u{301}a\u{308}\u{323}o\u{302}\u{303} \u{fb01} \u{ff21}\u{2460} Å Å ﬀ ㎏ "
                        .repeat(2000),
                ),
                ("emoji + ZWJ", "👩‍👩‍👧‍👦 🏳️‍🌈 😀😀😀 👍🏽 ".repeat(2000)),
                (
                    "specials in text",
                    "hi <|im_start|>user\nyo<|im_end|> </s><s><unk> <|endoftext|>".repeat(200),
                ),
                ("lone '<|im_start|>'", "<|im_start|>".to_string()),
                ("empty", String::new()),
                ("single space", " ".to_string()),
                ("digits", "0123456789".repeat(10000)),
                (
                    "control + invalid-ish",
                    "\u{0}\u{1}\u{7f}\u{feff}\u{200b}\u{fffd}\u{10ffff}".repeat(1000),
                ),
            ];
            for (label, text) in &cases {
                let want = hf_ids(&hf, text);
                let t = Instant::now();
                let got =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.encode(text)));
                let s = t.elapsed().as_secs_f64();
                match got {
                    Ok(got) => {
                        let ok = got == want;
                        println!(
                            "ADV engine={name} case={label:?} bytes={} equal={ok} time_s={s:.3}",
                            text.len()
                        );
                        if !ok {
                            println!("  {}", describe_diff(&hf, text, &want, &got));
                        }
                    }
                    Err(_) => println!("ADV engine={name} case={label:?} PANIC time_s={s:.3}"),
                }
            }
            // How the engine treats special-token strings when it does parse them.
            if name == "tokie" || name == "fastokens" {
                let t = "<|im_start|>";
                let specials = match name {
                    "tokie" => load_engine("tokie-specials", tok_path)
                        .ok()
                        .map(|e| e.encode(t)),
                    _ => match &engine {
                        Engine::Fastokens(f) => f.encode_with_special_tokens(t, false).ok(),
                        _ => None,
                    },
                };
                println!("ADV engine={name} default-API encode of {t:?} = {specials:?}");
            }
        }
        "long" => {
            let docs = read_docs(&args[4..]);
            let hf = hf_reference(tok_path);
            let Some(engine) = load_or_report(name, tok_path, &format!("LONG engine={name}"))
            else {
                return;
            };
            let mut big = String::new();
            for d in &docs {
                if big.len() >= 4 << 20 {
                    break;
                }
                big.push_str(d);
                big.push_str("\n\n");
            }
            for mb in [1usize, 2, 4] {
                let mut end = (mb << 20).min(big.len());
                while !big.is_char_boundary(end) {
                    end -= 1;
                }
                let text = &big[..end];
                let t = Instant::now();
                let got = engine.encode(text);
                let s = t.elapsed().as_secs_f64();
                let want = hf_ids(&hf, text);
                println!(
                    "LONG engine={name} mb={mb} time_s={s:.3} mbps={:.1} equal={}",
                    text.len() as f64 / 1e6 / s,
                    got == want
                );
            }
            println!("LONG engine={name} peak_rss_mib={:.0}", peak_rss_mib());
        }
        _ => panic!("unknown command"),
    }
}
