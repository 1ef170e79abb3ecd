//! The names MCP tools are offered under: `<server>__<tool>`, in the characters and length
//! providers accept (`^[a-zA-Z0-9_-]{1,64}$`).

use std::collections::HashSet;

/// Longest tool name providers accept.
pub const MAX_TOOL_NAME: usize = 64;

/// `<server>__<tool>` with characters providers refuse replaced by `_`; when that is longer
/// than [`MAX_TOOL_NAME`] or already `taken` (two tools that differ only in such characters),
/// it is cut and ends in `_` and 8 hex digits of a hash of the real names, so it stays unique
/// and the same from turn to turn.
pub fn offered_name(server: &str, tool: &str, taken: &mut HashSet<String>) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{server}__{clean}");
    if name.len() > MAX_TOOL_NAME || taken.contains(&name) {
        let hash = format!("{:08x}", fnv1a(&format!("{server}\0{tool}")));
        name.truncate(MAX_TOOL_NAME - 1 - hash.len());
        name = format!("{name}_{hash}");
    }
    taken.insert(name.clone());
    name
}

/// FNV-1a, 32 bits: a stable hash with no dependency (not for security).
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_cleaned_bounded_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(
            offered_name("everything", "get-sum", &mut taken),
            "everything__get-sum"
        );
        assert_eq!(offered_name("fs", "read.file", &mut taken), "fs__read_file");
        let clash = offered_name("fs", "read/file", &mut taken);
        assert!(
            clash.starts_with("fs__read_file_") && clash.len() == "fs__read_file_".len() + 8,
            "{clash}"
        );
        let long_tool = "t".repeat(100);
        let long = offered_name("server", &long_tool, &mut taken);
        assert_eq!(long.len(), MAX_TOOL_NAME);
        assert!(long.starts_with("server__ttt"));
        assert_eq!(
            long,
            offered_name("server", &long_tool, &mut HashSet::new()),
            "stable"
        );
        let regex_ok = |name: &str| {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        assert!(taken
            .iter()
            .all(|name| regex_ok(name) && name.len() <= MAX_TOOL_NAME));
    }
}
