//! Chat records and templates, as `prepare-sft` meets them: record parsing,
//! rendering under the template limits, then tokenizing and masking.
//!
//! Input: one byte of options, then the template source, a 0xFF byte (never
//! in UTF-8), and the JSON record; without the 0xFF all of it is the record
//! and the built-in ChatML template renders it. Properties: nothing panics
//! or overflows the stack; a record gives either a conversation that ends
//! with a non-empty assistant turn or a known skip reason; ChatML renders
//! every conversation exactly as written by hand; any template's output
//! stays under `MAX_RENDERED_BYTES` and its run under `TEMPLATE_FUEL` (so
//! under libFuzzer's timeout); an encoded conversation has one mask byte (0
//! or 1) per id, ids inside the vocabulary, and fits `max_length` when one
//! is set.

#![no_main]

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use tokenmill::chat::{
    self, ChatEncoder, ChatFormat, ChatTemplate, Message, Overflow, TrainOn, CHATML_TEMPLATE,
    MAX_RENDERED_BYTES,
};
use tokenmill::tokenize::{self, Backend, Encoder, LoadedTokenizer};

/// Reasons `parse_record` may give.
const RECORD_SKIPS: [&str; 7] = [
    "malformed_json",
    "wrong_type",
    "unknown_format",
    "unknown_role",
    "empty_assistant",
    "no_final_assistant",
    "empty_conversation",
];
/// Reasons `encode_conversation` may give.
const ENCODE_SKIPS: [&str; 4] = [
    "template_error",
    "tokenizer_error",
    "too_long",
    "too_many_turns",
];
/// Conversations longer than this are rendered but not encoded: encoding
/// renders every prefix, and a slow template times that by turns.
const MAX_ENCODED_TURNS: usize = 8;
/// Renders longer than this are not encoded: the limits allow 256 MiB, which
/// takes seconds to tokenize here, and the loop over the turns is the same.
const MAX_ENCODED_BYTES: usize = 1 << 20;

thread_local! {
    /// The byte-level fixture (ChatML specials) and one encoder over it, for
    /// the whole run: as in `prepare-sft`, which builds them once, the
    /// encoder keeps the `tokenizers` object it parses on first use.
    static CHAT: (&'static LoadedTokenizer, RefCell<ChatEncoder>) = {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenizers/byte_level.json");
        let loaded: &'static LoadedTokenizer =
            Box::leak(Box::new(tokenize::load(&path).expect("the fixture loads")));
        let encoder = Encoder::new(loaded, None, None, true, Backend::Fast, 0.0)
            .expect("the fast engine takes the fixture");
        let template = ChatTemplate::from_source(CHATML_TEMPLATE, "", "<|endoftext|>")
            .expect("ChatML compiles");
        let chat = ChatEncoder::new(template, encoder, loaded, TrainOn::All, None, Overflow::Drop);
        (loaded, RefCell::new(chat))
    };
}

/// ChatML written out by hand.
fn chatml(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    }
    if add_generation_prompt {
        out += "<|im_start|>assistant\n";
    }
    out
}

fn check_record(record: &str, format: ChatFormat, system: Option<&str>) -> Option<Vec<Message>> {
    match chat::parse_record(record, format, system) {
        Ok(messages) => {
            let last = messages.last().expect("a conversation has turns");
            assert_eq!(last.role, "assistant", "ends with the assistant");
            for m in &messages {
                assert!(["system", "user", "assistant"].contains(&m.role.as_str()));
                assert!(m.role != "assistant" || !m.content.trim().is_empty());
            }
            if system.is_some() {
                assert!(messages.iter().any(|m| m.role == "system"));
            }
            Some(messages)
        }
        Err((reason, _)) => {
            assert!(RECORD_SKIPS.contains(&reason), "unknown reason {reason}");
            if serde_json::from_str::<serde_json::Value>(record).is_err() {
                assert_eq!(reason, "malformed_json");
            }
            None
        }
    }
}

/// Lets a panic inside minijinja unwind, so that `ChatTemplate::render`
/// can turn it into a template error (libfuzzer-sys's hook aborts on every
/// panic, caught or not). Any other panic still aborts; so does one in
/// minijinja that nothing catches, when it reaches libfuzzer-sys.
fn let_engine_panics_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        static SHOWN: AtomicUsize = AtomicUsize::new(0);
        let in_engine = info
            .location()
            .is_some_and(|l| l.file().contains("/minijinja-"));
        if !in_engine {
            abort(info);
        } else if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("panic in minijinja, to be caught by ChatTemplate::render: {info}");
        }
    }));
}

fuzz_target!(init: let_engine_panics_unwind(), |input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let format = [
        ChatFormat::Auto,
        ChatFormat::Messages,
        ChatFormat::Sharegpt,
        ChatFormat::Alpaca,
    ][usize::from(flags & 3)];
    let system = (flags & 4 != 0).then_some("You are a fuzzer.");
    let gen = flags & 8 != 0;
    let (source, record) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (Some(String::from_utf8_lossy(&data[..i])), &data[i + 1..]),
        None => (None, data),
    };
    let record = String::from_utf8_lossy(record);
    let parsed = check_record(&record, format, system);
    let messages = parsed.clone().unwrap_or_else(|| {
        vec![
            Message {
                role: "user".into(),
                content: record.to_string(),
            },
            Message {
                role: "assistant".into(),
                content: "ok".into(),
            },
        ]
    });

    let template = match &source {
        Some(s) => match ChatTemplate::from_source(s, "<s>", "<|endoftext|>") {
            Ok(t) => t,
            Err(_) => return, // does not compile: an error, as it should be
        },
        None => ChatTemplate::from_source(CHATML_TEMPLATE, "", "<|endoftext|>")
            .expect("ChatML compiles"),
    };
    let rendered = template.render(&messages, gen);
    match &rendered {
        Ok(text) => {
            assert!(text.len() <= MAX_RENDERED_BYTES);
            if source.is_none() {
                assert_eq!(text, &chatml(&messages, gen));
            }
        }
        Err(e) => assert!(source.is_some(), "ChatML fails on {messages:?}: {e}"),
    }

    // Encoding renders every prefix again: only for records that parse and
    // templates that render them, so that a slow template is paid for once.
    let Ok(text) = rendered else {
        return;
    };
    if parsed.is_none() || messages.len() > MAX_ENCODED_TURNS || text.len() > MAX_ENCODED_BYTES {
        return;
    }
    CHAT.with(|(loaded, chat)| {
        let mut chat = chat.borrow_mut();
        chat.template = template;
        chat.max_length = [None, Some(8), Some(64), Some(100_000)][usize::from(flags >> 4 & 3)];
        chat.overflow = if flags & 64 != 0 {
            Overflow::Truncate
        } else {
            Overflow::Drop
        };
        chat.train_on = if flags & 128 != 0 {
            TrainOn::Last
        } else {
            TrainOn::All
        };
        match chat.encode_conversation(&messages) {
            Ok(c) => {
                assert_eq!(c.ids.len(), c.mask.len());
                assert!(c.mask.iter().all(|&m| m <= 1));
                assert!(c.ids.iter().all(|&id| u64::from(id) < loaded.vocab_size));
                if let Some(max) = chat.max_length {
                    assert!(
                        c.ids.len() <= max,
                        "{} ids over max_length {max}",
                        c.ids.len()
                    );
                }
            }
            Err((reason, _)) => {
                assert!(ENCODE_SKIPS.contains(&reason), "unknown reason {reason}")
            }
        }
    });
});
