//! A tokenizer.json read in one pass with its two big parts typed: the
//! model's vocabulary and merges (nearly all of a 150k-token file) become
//! vectors of strings borrowed from the text where they hold no escapes,
//! and everything else a small JSON tree. A `serde_json::Value` of the whole
//! file would put every token into a sorted map first.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A model's vocabulary as the file lists it: token, id.
pub type Vocabulary<'a> = [(Cow<'a, str>, u32)];

/// A parsed tokenizer.json.
pub struct TokenizerFile<'a> {
    /// The file without `model.vocab` and `model.merges`.
    pub raw: Value,
    /// `model.vocab` when it is an object (BPE, WordPiece, WordLevel), in
    /// file order.
    pub vocab: Option<Vec<(Cow<'a, str>, u32)>>,
    /// `model.merges` when present.
    pub merges: Option<Vec<MergeEntry<'a>>>,
}

/// One entry of `model.merges`: `"a b"` (the legacy form) or `["a", "b"]`.
#[derive(Debug, PartialEq, Eq)]
pub enum MergeEntry<'a> {
    Text(Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
}

impl<'a> TokenizerFile<'a> {
    pub fn parse(text: &'a str) -> serde_json::Result<TokenizerFile<'a>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let file = de.deserialize_map(FileVisitor)?;
        de.end()?;
        Ok(file)
    }

    /// `model`, without its vocabulary and merges.
    pub fn model(&self) -> &Value {
        &self.raw["model"]
    }

    /// The whole file as a JSON tree again (vocabulary and merges
    /// included), for the rare paths that rewrite it.
    pub fn to_value(&self) -> Value {
        let mut raw = self.raw.clone();
        if let Some(model) = raw.get_mut("model").and_then(Value::as_object_mut) {
            if let Some(vocab) = &self.vocab {
                let map = vocab
                    .iter()
                    .map(|(t, id)| (t.to_string(), Value::from(*id)))
                    .collect();
                model.insert("vocab".into(), Value::Object(map));
            }
            if let Some(merges) = &self.merges {
                let list = merges
                    .iter()
                    .map(|m| match m {
                        MergeEntry::Text(s) => Value::from(s.as_ref()),
                        MergeEntry::Pair(a, b) => Value::from(vec![a.as_ref(), b.as_ref()]),
                    })
                    .collect();
                model.insert("merges".into(), Value::Array(list));
            }
        }
        raw
    }
}

/// A JSON string, borrowed from the text where it holds no escapes (serde
/// gives a `Cow` only owned).
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(s.to_owned())))
    }
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = TokenizerFile<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tokenizer.json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = Map::new();
        let (mut vocab, mut merges) = (None, None);
        while let Some(Text(key)) = map.next_key()? {
            if key == "model" {
                let model = map.next_value_seed(ModelSeed {
                    vocab: &mut vocab,
                    merges: &mut merges,
                })?;
                raw.insert(key.into_owned(), model);
            } else {
                raw.insert(key.into_owned(), map.next_value()?);
            }
        }
        Ok(TokenizerFile {
            raw: Value::Object(raw),
            vocab,
            merges,
        })
    }
}

/// `model`: its vocabulary and merges typed (when an object and a list),
/// the rest a JSON tree.
struct ModelSeed<'s, 'de> {
    vocab: &'s mut Option<Vec<(Cow<'de, str>, u32)>>,
    merges: &'s mut Option<Vec<MergeEntry<'de>>>,
}

impl<'de> DeserializeSeed<'de> for ModelSeed<'_, 'de> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelSeed<'_, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a model object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut rest = Map::new();
        while let Some(Text(key)) = map.next_key()? {
            match key.as_ref() {
                "vocab" => match map.next_value::<VocabJson<'de>>()? {
                    VocabJson::Map(v) => *self.vocab = Some(v),
                    VocabJson::Other(v) => {
                        rest.insert(key.into_owned(), v);
                    }
                },
                "merges" => *self.merges = Some(map.next_value::<Vec<MergeEntry<'de>>>()?),
                _ => {
                    rest.insert(key.into_owned(), map.next_value()?);
                }
            }
        }
        Ok(Value::Object(rest))
    }
}

/// `model.vocab`: token -> id (kept typed), or anything else (Unigram's
/// list of pieces and scores) as a tree.
enum VocabJson<'a> {
    Map(Vec<(Cow<'a, str>, u32)>),
    Other(Value),
}

impl<'de> Deserialize<'de> for VocabJson<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(VocabVisitor)
    }
}

struct VocabVisitor;

impl<'de> Visitor<'de> for VocabVisitor {
    type Value = VocabJson<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a vocabulary")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((Text(token), id)) = map.next_entry::<Text<'de>, u32>()? {
            out.push((token, id));
        }
        Ok(VocabJson::Map(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(VocabJson::Other(Value::Array(out)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(VocabJson::Other(Value::Null))
    }
}

impl<'de> Deserialize<'de> for MergeEntry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MergeVisitor)
    }
}

struct MergeVisitor;

impl<'de> Visitor<'de> for MergeVisitor {
    type Value = MergeEntry<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a merge: "a b" or ["a", "b"]"#)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(MergeEntry::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(MergeEntry::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let a = seq.next_element::<Text<'de>>()?;
        let b = seq.next_element::<Text<'de>>()?;
        match (a, b, seq.next_element::<Value>()?) {
            (Some(Text(a)), Some(Text(b)), None) => Ok(MergeEntry::Pair(a, b)),
            _ => Err(A::Error::custom("a merge is not a pair of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_and_merges_are_typed_the_rest_kept() {
        let text = r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b\u0062": 1,
            "ab": 2}, "merges": ["a b", ["a", "bb"]], "unk_token": null}, "normalizer": null}"#;
        let file = TokenizerFile::parse(text).unwrap();
        let vocab = file.vocab.as_ref().unwrap();
        assert_eq!(vocab[1], (Cow::Owned("bb".into()), 1));
        assert!(matches!(vocab[0].0, Cow::Borrowed("a")));
        assert_eq!(
            file.merges.as_ref().unwrap()[1],
            MergeEntry::Pair("a".into(), "bb".into())
        );
        assert_eq!(file.model()["type"], "BPE");
        assert!(file.model().get("vocab").is_none());
        assert!(file.raw["normalizer"].is_null());
        let whole: Value = serde_json::from_str(text).unwrap();
        assert_eq!(file.to_value(), whole);
    }

    #[test]
    fn other_vocabularies_stay_trees_and_bad_merges_are_errors() {
        let unigram = r#"{"model": {"type": "Unigram", "vocab": [["a", -1.5], ["b", -2.0]]}}"#;
        let file = TokenizerFile::parse(unigram).unwrap();
        assert!(file.vocab.is_none());
        assert_eq!(file.model()["vocab"][1][0], "b");
        let bad = r#"{"model": {"type": "BPE", "vocab": {}, "merges": [["a", "b", "c"]]}}"#;
        assert!(TokenizerFile::parse(bad).is_err());
        assert!(TokenizerFile::parse(r#"{"model": {}} trailing"#).is_err());
    }
}
