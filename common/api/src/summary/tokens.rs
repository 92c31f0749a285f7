//! Counting tokens as a model would: OpenAI's BPE encodings (tiktoken).

use std::fmt;
use std::sync::{Arc, OnceLock};

use tiktoken_rs::CoreBPE;

use super::SummaryError;

shoal_config::choice! {
    /// A tokenizer's encoding (`api.summary_encoding`).
    #[derive(Default)]
    pub enum Encoding {
        /// GPT-4o, GPT-4.1, o-series and later models (the default).
        #[default]
        O200kBase = "o200k_base",
        /// GPT-4, GPT-3.5 and most embeddings models.
        Cl100kBase = "cl100k_base",
    }
}

/// Counts tokens of one encoding. Cheap to clone; the encoding's tables are
/// loaded once per process.
#[derive(Clone)]
pub struct TokenCounter {
    encoding: Encoding,
    bpe: Arc<CoreBPE>,
}

impl fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCounter").field("encoding", &self.encoding).finish()
    }
}

impl TokenCounter {
    /// The counter of `encoding` (its tables are built on first use, about
    /// a second, then shared).
    pub fn new(encoding: Encoding) -> Result<Self, SummaryError> {
        static O200K: OnceLock<Result<Arc<CoreBPE>, String>> = OnceLock::new();
        static CL100K: OnceLock<Result<Arc<CoreBPE>, String>> = OnceLock::new();
        let (cell, build): (_, fn() -> anyhow::Result<CoreBPE>) = match encoding {
            Encoding::O200kBase => (&O200K, tiktoken_rs::o200k_base),
            Encoding::Cl100kBase => (&CL100K, tiktoken_rs::cl100k_base),
        };
        let bpe = cell.get_or_init(|| build().map(Arc::new).map_err(|e| e.to_string()));
        match bpe {
            Ok(bpe) => Ok(Self { encoding, bpe: bpe.clone() }),
            Err(e) => Err(SummaryError::Encoding(format!("cannot load {encoding}: {e}"))),
        }
    }

    /// The encoding counted.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Tokens of `text` (as plain text: special tokens are not recognised).
    pub fn count(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_tiktoken_does() {
        let o200k = TokenCounter::new(Encoding::O200kBase).unwrap();
        assert_eq!(o200k.count(""), 0);
        assert_eq!(o200k.count("hello world"), 2);
        let cl100k = TokenCounter::new(Encoding::Cl100kBase).unwrap();
        assert_eq!(cl100k.count("hello world"), 2);
        assert!(o200k.count("SIM-AAA 101.25 +1.3%") > 3);
    }

    #[test]
    fn encodings_parse_by_name() {
        assert_eq!("cl100k_base".parse::<Encoding>().unwrap(), Encoding::Cl100kBase);
        let err = "gpt2".parse::<Encoding>().unwrap_err().to_string();
        assert!(err.contains("o200k_base") && err.contains("cl100k_base"), "{err}");
    }
}
