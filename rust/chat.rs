//! Chat records for SFT: parsing (OpenAI `messages`, ShareGPT/Belle
//! `conversations`, alpaca), rendering with the tokenizer's own
//! `chat_template` (minijinja, configured like transformers' jinja
//! environment), and the loss mask.
//!
//! Why masks by prefix rendering rather than `{% generation %}` markers:
//! almost no published template has the markers. Rendering `messages[:i]`
//! with the generation prompt and `messages[:i+1]` without it brackets the
//! tokens of assistant turn `i` in whatever template the tokenizer ships;
//! within that bracket the mask stops after the last end-of-turn token (EOS
//! or a known end-of-turn special such as `<|im_end|>`), so the newline a
//! template puts after it is not trained on. Rejected: rendering each message alone (templates
//! inject default system prompts and BOS per call) and character offsets
//! (the fast engine returns ids only, and normalisers move offsets).

use std::collections::BTreeSet;
use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TokenmillError};
use crate::tokenize::{self, Encoder, LoadedTokenizer};

/// ChatML, used when the tokenizer ships no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Record layout of SFT inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormat {
    /// Chosen per record from its keys.
    Auto,
    /// OpenAI: `{"messages": [{"role", "content"}]}`.
    Messages,
    /// ShareGPT / BelleGroup: `{"conversations": [{"from", "value"}]}`.
    Sharegpt,
    /// `{"instruction", "input", "output"[, "system", "history"]}`.
    Alpaca,
}

/// Which assistant turns are trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    /// Every assistant turn (the default).
    All,
    /// Only the last assistant turn.
    Last,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a record gave no conversation: a stable name and a detail.
pub type Skip = (&'static str, String);

fn skip<T>(reason: &'static str, detail: impl Into<String>) -> std::result::Result<T, Skip> {
    Err((reason, detail.into()))
}

fn get_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<Option<&'a str>, Skip> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => skip(
            "wrong_type",
            format!("'{key}' is {}, not a string", kind(other)),
        ),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn turns<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<&'a [Value], Skip> {
    match obj.get(key) {
        Some(Value::Array(a)) => Ok(a),
        Some(other) => skip(
            "wrong_type",
            format!("'{key}' is {}, not an array", kind(other)),
        ),
        None => skip("unknown_format", format!("no '{key}' field")),
    }
}

fn parse_messages(obj: &serde_json::Map<String, Value>) -> std::result::Result<Vec<Message>, Skip> {
    let mut out = Vec::new();
    for (i, m) in turns(obj, "messages")?.iter().enumerate() {
        let Value::Object(m) = m else {
            return skip("wrong_type", format!("messages[{i}] is {}", kind(m)));
        };
        let role =
            get_str(m, "role")?.ok_or(("wrong_type", format!("messages[{i}] has no role")))?;
        let content = get_str(m, "content")?.unwrap_or_default();
        match role {
            "system" | "user" | "assistant" => out.push(Message::new(role, content)),
            other => return skip("unknown_role", format!("messages[{i}] role {other:?}")),
        }
    }
    Ok(out)
}

fn parse_sharegpt(obj: &serde_json::Map<String, Value>) -> std::result::Result<Vec<Message>, Skip> {
    let mut out = Vec::new();
    if let Some(system) = get_str(obj, "system")?.filter(|s| !s.is_empty()) {
        out.push(Message::new("system", system));
    }
    for (i, m) in turns(obj, "conversations")?.iter().enumerate() {
        let Value::Object(m) = m else {
            return skip("wrong_type", format!("conversations[{i}] is {}", kind(m)));
        };
        let from = get_str(m, "from")?
            .ok_or(("wrong_type", format!("conversations[{i}] has no 'from'")))?;
        let value = get_str(m, "value")?.unwrap_or_default();
        let role = match from {
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "bot" => "assistant",
            "system" => "system",
            other => return skip("unknown_role", format!("conversations[{i}] from {other:?}")),
        };
        out.push(Message::new(role, value));
    }
    Ok(out)
}

fn parse_alpaca(obj: &serde_json::Map<String, Value>) -> std::result::Result<Vec<Message>, Skip> {
    let instruction = get_str(obj, "instruction")?
        .ok_or(("unknown_format", "no 'instruction' field".to_string()))?;
    let input = get_str(obj, "input")?.unwrap_or_default();
    let output =
        get_str(obj, "output")?.ok_or(("unknown_format", "no 'output' field".to_string()))?;
    let mut out = Vec::new();
    if let Some(system) = get_str(obj, "system")?.filter(|s| !s.is_empty()) {
        out.push(Message::new("system", system));
    }
    match obj.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(h)) => {
            for (i, pair) in h.iter().enumerate() {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(q), Value::String(a)]) => {
                        out.push(Message::new("user", q));
                        out.push(Message::new("assistant", a));
                    }
                    _ => {
                        return skip(
                            "wrong_type",
                            format!("history[{i}] is not a [query, answer] pair"),
                        )
                    }
                }
            }
        }
        Some(other) => return skip("wrong_type", format!("'history' is {}", kind(other))),
    }
    let query = if input.is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n{input}")
    };
    out.push(Message::new("user", &query));
    out.push(Message::new("assistant", output));
    Ok(out)
}

/// What to change when most records were skipped for `reason` (a chat
/// record reason, else a reader skip reason).
pub fn record_hint(reason: &str) -> &'static str {
    match reason {
        "unknown_format" => {
            "each record needs a messages (OpenAI), conversations (ShareGPT) or instruction (alpaca) field"
        }
        "too_long" => "raise max_length or pass overflow='truncate'",
        "too_many_turns" => "split conversations with thousands of turns into shorter records",
        other => crate::input::skip_hint(other),
    }
}

/// Parses one JSON line into a conversation: the messages in order, with
/// `system` prepended when the record has no system message. Checks that
/// the conversation ends with a non-empty assistant turn and that no
/// assistant turn is empty.
pub fn parse_record(
    line: &str,
    format: ChatFormat,
    system: Option<&str>,
) -> std::result::Result<Vec<Message>, Skip> {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return skip("malformed_json", e.to_string()),
    };
    let Value::Object(obj) = value else {
        return skip(
            "wrong_type",
            format!("record is {}, not an object", kind(&value)),
        );
    };
    let format = match format {
        ChatFormat::Auto if obj.contains_key("messages") => ChatFormat::Messages,
        ChatFormat::Auto if obj.contains_key("conversations") => ChatFormat::Sharegpt,
        ChatFormat::Auto if obj.contains_key("instruction") => ChatFormat::Alpaca,
        ChatFormat::Auto => {
            return skip(
                "unknown_format",
                "no 'messages', 'conversations' or 'instruction' field",
            )
        }
        f => f,
    };
    let mut messages = match format {
        ChatFormat::Messages => parse_messages(&obj)?,
        ChatFormat::Sharegpt => parse_sharegpt(&obj)?,
        ChatFormat::Alpaca | ChatFormat::Auto => parse_alpaca(&obj)?,
    };
    if let Some(i) = messages
        .iter()
        .position(|m| m.role == "assistant" && m.content.trim().is_empty())
    {
        return skip("empty_assistant", format!("assistant turn {i} is empty"));
    }
    match messages.last() {
        None => return skip("empty_conversation", "no messages"),
        Some(m) if m.role != "assistant" => {
            return skip("no_final_assistant", format!("last turn is {}", m.role))
        }
        _ => {}
    }
    if let Some(system) = system {
        if !messages.iter().any(|m| m.role == "system") {
            messages.insert(0, Message::new("system", system));
        }
    }
    Ok(messages)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False)`,
/// i.e. `", "` and `": "` separators and no HTML escaping.
fn tojson(value: minijinja::Value) -> std::result::Result<String, JinjaError> {
    let v: Value = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_py_json(&v, &mut out);
    Ok(out)
}

fn write_py_json(v: &Value, out: &mut String) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py_json(x, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `strftime_now(format)` as transformers defines it: the local time now,
/// formatted by `datetime.now().strftime(format)` (LLaMA 3.1+ templates put
/// "Today Date: 22 Nov 2026" in the system turn). An unknown directive is a
/// template error, not a panic.
fn strftime_now(format: String) -> std::result::Result<String, JinjaError> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write;
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    let bad = || {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now({format:?})"),
        )
    };
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(bad());
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| bad())?;
    Ok(out)
}

/// A tokenizer's chat template, ready to render.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Whether the template came from the tokenizer (false: built-in ChatML).
    pub from_tokenizer: bool,
}

/// The chat template a tokenizer ships: `chat_template` in
/// tokenizer_config.json (a string, or a list of named templates of which
/// `default` is taken), else a `chat_template.jinja` file beside it.
fn find_template(tokenizer: &Path) -> Result<Option<String>> {
    let (json, config) = tokenize::resolve_paths(tokenizer)?;
    if let Some(config) = config {
        let text = std::fs::read_to_string(&config).map_err(|e| TokenmillError::io(&config, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| TokenmillError::Tokenizer {
            path: config.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        match &v["chat_template"] {
            Value::String(s) => return Ok(Some(s.clone())),
            Value::Array(named) => {
                let default = named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str());
                if let Some(t) = default {
                    return Ok(Some(t.to_string()));
                }
            }
            _ => {}
        }
    }
    let jinja = json.with_file_name("chat_template.jinja");
    if jinja.is_file() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| TokenmillError::io(&jinja, e))?;
        return Ok(Some(t));
    }
    Ok(None)
}

impl ChatTemplate {
    /// The template of the tokenizer at `path` (ChatML when it has none).
    pub fn load(path: &Path, loaded: &LoadedTokenizer) -> Result<ChatTemplate> {
        let found = find_template(path)?;
        let from_tokenizer = found.is_some();
        let source = found.unwrap_or_else(|| CHATML_TEMPLATE.to_string());
        let token = |t: &Option<tokenize::SpecialToken>| {
            t.as_ref().map(|t| t.token.clone()).unwrap_or_default()
        };
        let mut template =
            ChatTemplate::from_source(&source, &token(&loaded.bos), &token(&loaded.eos)).map_err(
                |e| TokenmillError::Tokenizer {
                    path: loaded.json_path.clone(),
                    message: e.to_string(),
                },
            )?;
        template.from_tokenizer = from_tokenizer;
        Ok(template)
    }

    /// Renders `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        let mut out = CappedOutput::default();
        let context = minijinja::context! {
            messages => minijinja::value::Serde(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        // minijinja itself has panicked on some templates (2.24 on
        // `''[::-1]`); that is one bad template for one record (counted as
        // template_error), not the end of the run.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tmpl.render_captured_to(context, &mut out).map(|_| ())
        }))
        .map_err(|payload| {
            format!(
                "the template engine failed on this template: {}",
                crate::error::panic_message(&*payload)
            )
        })?;
        match rendered {
            Ok(()) => String::from_utf8(out.bytes).map_err(|e| e.to_string()),
            Err(_) if out.overflowed => Err(format!(
                "chat template output exceeds {} MiB",
                MAX_RENDERED_BYTES >> 20
            )),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(format!(
                "chat template ran out of fuel ({TEMPLATE_FUEL} per render: one per instruction and per 64 bytes created)"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A template from its source, with `bos_token` and `eos_token` as the
    /// template sees them ([`ChatTemplate::load`] passes the tokenizer's;
    /// the `chat_render` fuzz target its own).
    pub fn from_source(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // A template comes with a downloaded tokenizer_config.json: bounded
        // in time and memory by fuel (instructions and the data they create)
        // as well as in output (`ChatTemplate::render`).
        env.set_fuel(Some(TEMPLATE_FUEL));
        // transformers renders with trim_blocks and lstrip_blocks on.
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TokenmillError::Invalid(format!("chat template syntax: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_filter("tojson", tojson);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| TokenmillError::Invalid(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            from_tokenizer: true,
        })
    }
}

/// Fuel one render may burn. minijinja charges one unit per instruction and
/// about one per 64 bytes of data the template creates (strings built by
/// `~` and `+`, filter results, output), so a render executes at most 10^7
/// instructions and allocates at most about 640 MB. The templates of real
/// models use tens of instructions per message: this passes conversations
/// of 10^5 turns or of 64 MiB, and stops a hostile `range(10**5)` nested in
/// another, or a string doubled in a loop, within about a second.
pub const TEMPLATE_FUEL: u64 = 10_000_000;
/// Bytes one render may write: far above any record the reader accepts
/// (64 MiB lines by default), far below what exhausts memory.
pub const MAX_RENDERED_BYTES: usize = 256 << 20;

/// Bytes the prefix renders of one conversation may total. Masks come
/// from rendering and tokenizing the prefix before and through each
/// assistant turn, so the work grows with turns x length: 128 MiB (a few
/// seconds) passes 100 assistant turns in a 600 KB conversation or 1000 in
/// a 60 KB one, and skips a 10^4-turn record (`too_many_turns`) at once.
pub const MAX_PREFIX_RENDER_BYTES: u64 = 128 << 20;

/// A render's output, refusing to grow past `MAX_RENDERED_BYTES`.
#[derive(Default)]
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A rendered, tokenized conversation with its loss mask.
#[derive(Debug)]
pub struct Conversation {
    pub ids: Vec<u32>,
    /// One byte per id: 1 on assistant content and its end-of-turn token.
    pub mask: Vec<u8>,
    /// Whether trailing turns were cut to fit `max_length`.
    pub truncated: bool,
    /// Assistant turns whose prefix renders were not token prefixes of the
    /// whole conversation (a template that renders history differently from
    /// the generation prompt); their mask starts where the ids first differ.
    pub inexact_turns: u64,
}

/// What happens to a conversation longer than `max_length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Keep the turns up to the last assistant turn that fits.
    Truncate,
    /// Skip the conversation (reason `too_long`).
    Drop,
}

/// Special tokens that end a turn in common templates (besides the tokenizer's EOS).
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

/// Everything the renderer needs, shared by all worker threads.
pub struct ChatEncoder {
    pub template: ChatTemplate,
    pub encoder: Encoder,
    /// End-of-turn ids: the mask of an assistant turn ends after the last one in it.
    end_of_turn: BTreeSet<u32>,
    pub train_on: TrainOn,
    pub max_length: Option<usize>,
    pub overflow: Overflow,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl ChatEncoder {
    /// Builds the renderer; `encoder` must parse special tokens.
    pub fn new(
        template: ChatTemplate,
        encoder: Encoder,
        loaded: &LoadedTokenizer,
        train_on: TrainOn,
        max_length: Option<usize>,
        overflow: Overflow,
    ) -> ChatEncoder {
        let end_of_turn = loaded
            .added
            .iter()
            .filter(|(_, t)| t.special && END_OF_TURN.contains(&t.content.as_str()))
            .map(|(&id, _)| id)
            .chain(loaded.eos.as_ref().map(|t| t.id))
            .collect();
        ChatEncoder {
            template,
            encoder,
            end_of_turn,
            train_on,
            max_length,
            overflow,
        }
    }

    fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, Skip> {
        let mut ids = Vec::new();
        for r in self.encoder.pieces(text) {
            let first = r.start == 0;
            ids.extend(
                self.encoder
                    .encode_piece(&text[r], first)
                    .map_err(|e| ("tokenizer_error", e.to_string()))?,
            );
        }
        Ok(ids)
    }

    fn render(&self, messages: &[Message], gen: bool) -> std::result::Result<String, Skip> {
        self.template
            .render(messages, gen)
            .map_err(|e| ("template_error", e))
    }

    /// Renders, tokenizes and masks one conversation.
    pub fn encode_conversation(
        &self,
        messages: &[Message],
    ) -> std::result::Result<Conversation, Skip> {
        let full = self.encode(&self.render(messages, false)?)?;
        if self.max_length.is_some_and(|m| full.len() > m) && self.overflow == Overflow::Drop {
            return skip("too_long", format!("{} tokens", full.len()));
        }
        // The prefix renders hold at least the messages' text: a record whose
        // turns would need more than the budget is skipped before any work.
        let mut content = 0u64;
        let mut least_work = 0u64;
        for m in messages {
            content += m.content.len() as u64;
            if m.role == "assistant" {
                least_work = least_work.saturating_add(2 * content);
            }
        }
        let over_budget = |work: u64| {
            let turns = messages.iter().filter(|m| m.role == "assistant").count();
            skip::<Conversation>(
                "too_many_turns",
                format!(
                    "{turns} assistant turns in {content} bytes of text need over {work} bytes \
                     of prefix renders, the limit is {MAX_PREFIX_RENDER_BYTES}"
                ),
            )
        };
        if least_work > MAX_PREFIX_RENDER_BYTES {
            return over_budget(least_work);
        }
        // (start, end of mask, end of turn) of each assistant turn, in tokens.
        let mut spans = Vec::new();
        let mut inexact_turns = 0;
        let mut work = 0u64;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render(&messages[..i], true)?;
            let through = self.render(&messages[..=i], false)?;
            // Templates add markup to the text: the real total is checked too.
            work += (before.len() + through.len()) as u64;
            if work > MAX_PREFIX_RENDER_BYTES {
                return over_budget(work);
            }
            let before = self.encode(&before)?;
            let through = self.encode(&through)?;
            let start = common_prefix(&before, &full);
            let stop = common_prefix(&through, &full);
            let exact = stop == through.len();
            inexact_turns += u64::from(!exact || start != before.len());
            let mask_end = (start..stop)
                .rev()
                .find(|&p| self.end_of_turn.contains(&full[p]))
                .map_or(stop, |p| p + 1);
            spans.push((start, mask_end.max(start), stop, exact));
        }
        let mut len = full.len();
        let mut truncated = false;
        if let Some(max) = self.max_length.filter(|&m| full.len() > m) {
            let fits = spans
                .iter()
                .rposition(|&(_, _, stop, exact)| exact && stop <= max);
            match fits {
                Some(k) => {
                    spans.truncate(k + 1);
                    len = spans[k].2;
                    truncated = true;
                }
                None => {
                    return skip(
                        "too_long",
                        format!("{} tokens, no whole turn fits", full.len()),
                    )
                }
            }
        }
        let mut ids = full;
        ids.truncate(len);
        let mut mask = vec![0u8; len];
        let kept = match self.train_on {
            TrainOn::All => &spans[..],
            TrainOn::Last => &spans[spans.len().saturating_sub(1)..],
        };
        for &(start, end, _, _) in kept {
            mask[start.min(len)..end.min(len)].fill(1);
        }
        Ok(Conversation {
            ids,
            mask,
            truncated,
            inexact_turns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let m = parse_record(
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
            ChatFormat::Auto,
            Some("sys"),
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], Message::new("system", "sys"));
        let m = parse_record(
            r#"{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
            ChatFormat::Auto,
            Some("other"),
        )
        .unwrap();
        assert_eq!(m[0], Message::new("system", "s"));
        assert_eq!(m.len(), 3);
        let m = parse_record(
            r#"{"instruction": "do", "input": "this", "output": "done", "history": [["a", "b"]]}"#,
            ChatFormat::Auto,
            None,
        )
        .unwrap();
        assert_eq!(
            m,
            vec![
                Message::new("user", "a"),
                Message::new("assistant", "b"),
                Message::new("user", "do\nthis"),
                Message::new("assistant", "done"),
            ]
        );
    }

    #[test]
    fn bad_records() {
        let reason = |line: &str| parse_record(line, ChatFormat::Auto, None).unwrap_err().0;
        assert_eq!(reason("{"), "malformed_json");
        assert_eq!(reason("[1]"), "wrong_type");
        assert_eq!(reason(r#"{"text": "x"}"#), "unknown_format");
        assert_eq!(
            reason(r#"{"messages": [{"role": "robot", "content": "x"}]}"#),
            "unknown_role"
        );
        assert_eq!(
            reason(r#"{"messages": [{"role": "user", "content": 3}]}"#),
            "wrong_type"
        );
        assert_eq!(
            reason(
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}"#
            ),
            "empty_assistant"
        );
        assert_eq!(
            reason(r#"{"messages": [{"role": "user", "content": "q"}]}"#),
            "no_final_assistant"
        );
        assert_eq!(reason(r#"{"messages": []}"#), "empty_conversation");
    }

    #[test]
    fn strftime_now_formats_and_rejects_bad_directives() {
        let year = strftime_now("%Y".into()).unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.starts_with("20"));
        let date = strftime_now("%d %b %Y".into()).unwrap();
        assert!(date.ends_with(&year) && date.len() == 11, "{date}");
        assert!(strftime_now("%Q %".into()).is_err());
    }

    #[test]
    fn a_template_that_doubles_a_string_runs_out_of_fuel() {
        // Each doubling is one instruction; since minijinja 3 fuel also pays
        // for the data a template creates, so these stop at about
        // TEMPLATE_FUEL * 64 bytes. (Doubling a list is still not charged:
        // docs/fuzzing.md, findings.)
        let messages = [Message::new("user", "hi")];
        for body in [
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('x', 64) }}",
        ] {
            let template = ChatTemplate::from_source(body, "", "").unwrap();
            let err = template.render(&messages, false).unwrap_err();
            assert!(err.contains("ran out of fuel"), "{body}: {err}");
        }
    }

    #[test]
    fn a_panic_in_the_template_engine_is_an_error_of_the_record() {
        let mut template = ChatTemplate::from_source("{{ boom() }}", "", "").unwrap();
        template
            .env
            .add_function("boom", || -> String { panic!("engine bug") });
        let err = template
            .render(&[Message::new("user", "hi")], false)
            .unwrap_err();
        assert!(
            err.contains("the template engine failed on this template: engine bug"),
            "{err}"
        );
    }

    #[test]
    fn loop_controls_work_as_in_transformers() {
        // transformers compiles templates with jinja2.ext.loopcontrols.
        let body = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
                    {% if loop.index > 3 %}{% break %}{% endif %}{{ m.content }};{% endfor %}";
        let template = ChatTemplate::from_source(body, "", "").unwrap();
        let messages = ["system", "user", "assistant", "user"].map(|role| Message::new(role, role));
        assert_eq!(
            template.render(&messages, false).unwrap(),
            "user;assistant;"
        );
    }

    #[test]
    fn python_json() {
        let v = minijinja::Value::from(minijinja::value::Serde(
            serde_json::json!({"a": [1, "<b>"], "c": null}),
        ));
        assert_eq!(tojson(v).unwrap(), r#"{"a": [1, "<b>"], "c": null}"#);
    }
}
