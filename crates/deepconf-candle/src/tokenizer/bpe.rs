//! Byte-level BPE: merges by rank over GPT-2's byte alphabet, with a cache of short words.

use super::*;

/// Words longer than this are not cached (long whitespace runs, base64 blobs).
pub(super) const MAX_CACHED_WORD_BYTES: usize = 64;
/// The word cache is cleared when it grows past this many entries.
pub(super) const MAX_CACHE_ENTRIES: usize = 100_000;

/// Byte-level BPE state.
#[derive(Debug)]
pub(super) struct Bpe {
    /// (left, right) -> (rank, merged id)
    pub(super) merges: HashMap<(u32, u32), (u32, u32)>,
    pub(super) byte_ids: [Option<u32>; 256],
    pub(super) char_to_byte: HashMap<char, u8>,
    pub(super) pre: PreTokenizer,
    pub(super) ignore_merges: bool,
    pub(super) cache: RwLock<HashMap<String, Vec<u32>>>,
}

impl Bpe {
    pub(super) fn new(
        token_ids: &HashMap<String, u32>,
        merge_pairs: &[(String, String)],
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Self {
        let alphabet = byte_level_alphabet();
        let mut byte_ids = [None; 256];
        let mut char_to_byte = HashMap::with_capacity(256);
        for (byte, &c) in alphabet.iter().enumerate() {
            byte_ids[byte] = token_ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
            char_to_byte.insert(c, byte as u8);
        }
        let mut merges = HashMap::with_capacity(merge_pairs.len());
        for (rank, (left, right)) in merge_pairs.iter().enumerate() {
            let (Some(&l), Some(&r), Some(&merged)) = (
                token_ids.get(left),
                token_ids.get(right),
                token_ids.get(&format!("{left}{right}")),
            ) else {
                continue;
            };
            merges.entry((l, r)).or_insert((rank as u32, merged));
        }
        Self {
            merges,
            byte_ids,
            char_to_byte,
            pre,
            ignore_merges,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub(super) fn encode_word(
        &self,
        word: &str,
        token_ids: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if word.is_empty() {
            return Ok(());
        }
        if self.ignore_merges
            && let Some(&id) = token_ids.get(word)
        {
            out.push(id);
            return Ok(());
        }
        let cacheable = word.len() <= MAX_CACHED_WORD_BYTES;
        if cacheable
            && let Ok(cache) = self.cache.read()
            && let Some(cached) = cache.get(word)
        {
            out.extend_from_slice(cached);
            return Ok(());
        }
        let mut symbols = Vec::with_capacity(word.len());
        for c in word.chars() {
            let id = self
                .char_to_byte
                .get(&c)
                .and_then(|&byte| self.byte_ids[byte as usize])
                .ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "the vocabulary has no token for byte-level character {c:?}"
                    ))
                })?;
            symbols.push(id);
        }
        self.merge(&mut symbols);
        out.extend_from_slice(&symbols);
        if cacheable && let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(word.to_string(), symbols);
        }
        Ok(())
    }

    /// Applies merges lowest rank first, leftmost first among equal ranks.
    pub(super) fn merge(&self, symbols: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for (index, pair) in symbols.windows(2).enumerate() {
                if let Some(&(rank, merged)) = self.merges.get(&(pair[0], pair[1]))
                    && best.is_none_or(|(best_rank, _, _)| rank < best_rank)
                {
                    best = Some((rank, index, merged));
                }
            }
            let Some((_, index, merged)) = best else {
                return;
            };
            symbols[index] = merged;
            symbols.remove(index + 1);
        }
    }
}
