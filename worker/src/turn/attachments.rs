//! Attachments at turn time: every `file` part of the prompt must have its bytes, fit the
//! provider's inline cap and be of a kind the model accepts — checked before any provider
//! call, so a turn that cannot send them ends with an `attachment` error naming the file
//! instead of a provider's rejection (or a silent drop).

use chatd_shared::domain::{ChatError, ContentPart, ProviderKind};

use crate::provider::PromptMessage;
use crate::turn::context::ModelChoice;

const MIB: usize = 1024 * 1024;

/// The largest attachment a provider takes inline, by kind: (images, other files).
fn inline_caps(kind: ProviderKind) -> (usize, usize) {
    match kind {
        // Anthropic: 5 MB per image, 32 MB per request for PDFs.
        ProviderKind::Anthropic => (5 * MIB, 32 * MIB),
        // OpenAI: 20 MB per image, 32 MB per file.
        _ => (20 * MIB, 32 * MIB),
    }
}

/// Bytes a base64 text decodes to.
pub fn decoded_len(data: &str) -> usize {
    let data = data.trim_end();
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

/// How an attachment is named in errors: its file name, else its file id, else `inline`.
pub fn label(part: &ContentPart) -> String {
    match part {
        ContentPart::File {
            name: Some(name), ..
        } if !name.is_empty() => format!("`{name}`"),
        ContentPart::File {
            file_id: Some(id), ..
        } => format!("file {id}"),
        _ => "an inline attachment".to_owned(),
    }
}

/// `Err` naming the first attachment the turn cannot send to `model`.
pub fn check(model: &ModelChoice, prompt: &[PromptMessage]) -> Result<(), ChatError> {
    let (image_cap, file_cap) = inline_caps(model.endpoint.kind);
    for part in prompt.iter().flat_map(|message| &message.content) {
        let ContentPart::File {
            media_type, data, ..
        } = part
        else {
            continue;
        };
        let label = label(part);
        let Some(data) = data else {
            return Err(ChatError::new(
                "attachment",
                format!("{label} is no longer available (deleted)"),
            ));
        };
        let image = chatd_shared::files::is_image(media_type);
        if image && !model.supports_images {
            return Err(ChatError::new(
                "attachment",
                format!(
                    "{label} is an image ({media_type}) and the model `{}` accepts no images",
                    model.model
                ),
            ));
        }
        let size = decoded_len(data);
        let cap = if image { image_cap } else { file_cap };
        if size > cap && !media_type.starts_with("text/") {
            return Err(ChatError::new(
                "attachment",
                format!(
                    "{label} ({media_type}, {size} bytes) is larger than {} accepts inline ({} MiB)",
                    model.endpoint.kind.as_str(),
                    cap / MIB
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_sizes() {
        assert_eq!(decoded_len("aGVsbG8="), 5);
        assert_eq!(decoded_len("aGVsbG8h"), 6);
        assert_eq!(decoded_len("aGk="), 2);
        assert_eq!(decoded_len(""), 0);
    }
}
