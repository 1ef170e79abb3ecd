//! The mock's deterministic text: what it says is a pure function of the last user message, so
//! tests can predict a reply exactly with [`reply_text`].
//!
//! Words are drawn from a fixed list by FNV-1a of the message, seeded per token index. Each
//! streamed chunk is one token: a word followed by a space, except the last word.

/// 64-bit FNV-1a offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Quoted tool output is cut to this many characters so a large file read does not turn into
/// thousands of streamed chunks.
pub const MAX_QUOTED_RESULT_CHARS: usize = 200;

macro_rules! word_list {
    ($($word:literal),* $(,)?) => {
        /// The vocabulary of generated replies.
        const WORDS: &[&str] = &[$($word),*];
        /// The same words with their trailing space, so streaming a token never allocates.
        const WORDS_WITH_SPACE: &[&str] = &[$(concat!($word, " ")),*];
    };
}

word_list!(
    "alpha", "amber", "anchor", "apple", "arrow", "aspen", "autumn", "beacon", "birch", "bright",
    "canyon", "cedar", "cinder", "clover", "cobalt", "comet", "coral", "crystal", "dawn", "delta",
    "drift", "ember", "falcon", "fern", "field", "flint", "forest", "garnet", "glacier", "harbor",
    "hazel", "horizon", "indigo", "island", "jade", "juniper", "lantern", "lark", "lumen", "maple",
    "meadow", "meteor", "mist", "nectar", "north", "oak", "ocean", "onyx", "orbit", "pebble",
    "pine", "prairie", "quartz", "rain", "raven", "ridge", "river", "sage", "shore", "silver",
    "spruce", "summit", "thistle", "willow",
);

/// FNV-1a of `bytes` (64-bit).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET_BASIS, bytes)
}

/// Continues an FNV-1a hash with more bytes.
pub fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The seed of a reply: the hash of the last user message's text.
pub fn reply_seed(last_user_message: &str) -> u64 {
    fnv1a(last_user_message.as_bytes())
}

/// The seed of the reasoning text, distinct from the reply's so the two differ.
pub fn reasoning_seed(last_user_message: &str) -> u64 {
    fnv1a_extend(reply_seed(last_user_message), b"/reasoning")
}

/// Token `index` of a `count`-token generated text: a word, plus a space unless it is the last.
pub fn generated_token(seed: u64, index: usize, count: usize) -> &'static str {
    let hash = fnv1a_extend(seed, &(index as u64).to_le_bytes());
    // FNV's low bits depend only on the low bits of its input; the high bits mix everything.
    let word = ((hash >> 40) % WORDS.len() as u64) as usize;
    let list = if index + 1 == count {
        WORDS
    } else {
        WORDS_WITH_SPACE
    };
    list.get(word).copied().unwrap_or("")
}

/// The exact reply (the concatenation of all streamed `delta.content` pieces) that the mock
/// gives to `last_user_message` when it answers with `tokens` tokens of text.
pub fn reply_text(last_user_message: &str, tokens: usize) -> String {
    let seed = reply_seed(last_user_message);
    (0..tokens)
        .map(|index| generated_token(seed, index, tokens))
        .collect()
}

/// The reasoning text streamed before the reply when `reasoning_tokens` is set.
pub fn reasoning_text(last_user_message: &str, tokens: usize) -> String {
    let seed = reasoning_seed(last_user_message);
    (0..tokens)
        .map(|index| generated_token(seed, index, tokens))
        .collect()
}

/// The signature of a thinking block (Anthropic `signature_delta`): `sig-<FNV-1a of the text>`,
/// so a client that sends the block back unchanged sends the same signature.
pub fn reasoning_signature(thinking: &str) -> String {
    format!("sig-{:016x}", fnv1a(thinking.as_bytes()))
}

/// The reply to a request that ends with tool results: `Tool results: <name>: <content>; …`,
/// each content cut to [`MAX_QUOTED_RESULT_CHARS`] characters (then ending in `…`).
pub fn tool_results_reply<'a>(results: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let quoted: Vec<String> = results
        .into_iter()
        .map(|(name, content)| {
            let content = match content.char_indices().nth(MAX_QUOTED_RESULT_CHARS) {
                Some((cut, _)) => format!("{}…", &content[..cut]),
                None => content.to_owned(),
            };
            format!("{name}: {content}")
        })
        .collect();
    format!("Tool results: {}", quoted.join("; "))
}

/// Byte offsets where each streamed piece of `text` ends: a piece is a run of non-whitespace
/// and the whitespace after it, so the pieces concatenate back to `text` exactly.
pub fn piece_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut previous_was_space = false;
    for (offset, character) in text.char_indices() {
        let is_space = character.is_whitespace();
        if previous_was_space && !is_space {
            ends.push(offset);
        }
        previous_was_space = is_space;
    }
    if !text.is_empty() {
        ends.push(text.len());
    }
    ends
}

/// Whitespace-separated words: the mock's notion of a prompt token.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn reply_is_deterministic_and_shaped_as_tokens() {
        let reply = reply_text("hello there", 12);
        assert_eq!(reply, reply_text("hello there", 12));
        assert_ne!(reply, reply_text("hello there!", 12));
        let words: Vec<&str> = reply.split(' ').collect();
        assert_eq!(words.len(), 12);
        assert!(words.iter().all(|word| WORDS.contains(word)));
        assert!(!reply.ends_with(' '));
        assert_eq!(reply_text("x", 0), "");
        assert_eq!(reply_text("x", 1).split(' ').count(), 1);
        // The words vary (a broken hash would repeat one word).
        let distinct: std::collections::HashSet<&str> = words.iter().copied().collect();
        assert!(distinct.len() > 4, "{reply}");
        assert_ne!(reasoning_text("hello there", 12), reply);
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        for text in [
            "",
            "one",
            "a b  c",
            " lead and trail ",
            "x\ny\t z",
            "Tool results: t: é ✓",
        ] {
            let ends = piece_ends(text);
            let mut start = 0;
            let mut rebuilt = String::new();
            for end in &ends {
                rebuilt.push_str(&text[start..*end]);
                start = *end;
            }
            assert_eq!(rebuilt, text);
        }
        assert_eq!(piece_ends("a b  c"), vec![2, 5, 6]);
    }

    #[test]
    fn tool_results_are_quoted_and_long_output_is_cut() {
        assert_eq!(
            tool_results_reply([("read", "hello"), ("sum", "{\"total\":3}")]),
            "Tool results: read: hello; sum: {\"total\":3}"
        );
        let long = "y".repeat(500);
        let reply = tool_results_reply([("big", long.as_str())]);
        assert_eq!(
            reply.chars().count(),
            "Tool results: big: ".len() + MAX_QUOTED_RESULT_CHARS + 1
        );
    }
}
