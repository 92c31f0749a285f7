//! `shoal-dlq show`: one dead letter, readably.

use std::io::Write;

use super::letter::time_text;
use super::log::Redriven;
use super::{Coordinates, DeadLetter, DlqError, Reader, RedriveLog};

/// What `show` looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The dead letter at these coordinates.
    At(Coordinates),
    /// Dead letters with this id (command id header, or `id`/`command_id`
    /// of a JSON body).
    Id(String),
}

impl Target {
    /// `topic/partition@offset`, `partition@offset` (on `dlq_topic`), or
    /// else an id.
    pub fn parse(text: &str, dlq_topic: &str) -> Self {
        if let Ok(at) = text.parse() {
            return Self::At(at);
        }
        if let Some((partition, offset)) = text.split_once('@')
            && let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>())
            && partition >= 0
            && offset >= 0
        {
            return Self::At(Coordinates { topic: dlq_topic.to_string(), partition, offset });
        }
        Self::Id(text.to_string())
    }
}

/// Finds the dead letters `target` names on `dlq_topic` and writes each,
/// with what the re-drive log says of it. An error when there is none.
pub fn show(
    reader: &Reader,
    dlq_topic: &str,
    log_topic: &str,
    target: &Target,
    out: &mut impl Write,
) -> Result<usize, DlqError> {
    let letters = match target {
        Target::At(at) => reader.fetch(&at.topic, at.partition, at.offset)?.into_iter().collect(),
        Target::Id(id) => {
            let mut found = Vec::new();
            reader.scan(dlq_topic, |message| {
                let letter = DeadLetter::from_message(message);
                if letter.has_id(id) {
                    found.push(letter);
                }
            })?;
            found
        }
    };
    if letters.is_empty() {
        let what = match target {
            Target::At(at) => format!("at {at} (its offset holds no committed record)"),
            Target::Id(id) => format!("with id {id} on {dlq_topic}"),
        };
        return Err(DlqError::NotFound(what));
    }
    let log = RedriveLog::load(reader, log_topic)?;
    for (i, letter) in letters.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        write_letter(letter, log.redriven(letter), out)?;
    }
    Ok(letters.len())
}

/// Writes one dead letter: where, why, the original key, headers and body.
pub fn write_letter(letter: &DeadLetter, redriven: Option<Redriven<'_>>, out: &mut impl Write) -> std::io::Result<()> {
    use shoal_protocol::headers::dead_letter as dlq;
    let text = |name| letter.header(name).unwrap_or("-");
    writeln!(out, "dead letter {}", letter.at)?;
    writeln!(out, "  written:  {}", time_text(letter.time))?;
    let origin = letter.origin().map_or_else(|| "- (no origin headers: cannot be re-driven)".into(), |o| o.to_string());
    writeln!(out, "  origin:   {origin}")?;
    writeln!(out, "  reason:   {}", text(dlq::REASON))?;
    writeln!(out, "  stage:    {}", text(dlq::STAGE))?;
    writeln!(out, "  attempts: {}", text(dlq::ATTEMPTS))?;
    writeln!(out, "  error:    {}", text(dlq::ERROR))?;
    let redriven = redriven.map_or_else(|| "no".to_string(), |r| format!("yes, {}", r.describe()));
    writeln!(out, "  redriven: {redriven}")?;
    writeln!(out, "  key:      {}", letter.key.as_deref().map_or_else(|| "(none)".to_string(), inline_bytes))?;
    writeln!(out, "  original headers:")?;
    let mut any = false;
    for (name, value) in letter.original_headers() {
        any = true;
        writeln!(out, "    {name}: {}", value.map_or_else(|| "(null)".to_string(), inline_bytes))?;
    }
    if !any {
        writeln!(out, "    (none)")?;
    }
    match letter.payload.as_deref() {
        None => writeln!(out, "  payload: (null)"),
        Some(body) => write_payload(body, out),
    }
}

/// Bytes on one line: the text when it is UTF-8 without control
/// characters, else `hex:` and the bytes in hex.
fn inline_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("hex:{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body: pretty JSON when it is JSON, the text when it is UTF-8, else
/// a hex dump with the printable bytes beside it.
fn write_payload(body: &[u8], out: &mut impl Write) -> std::io::Result<()> {
    let size = body.len();
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        writeln!(out, "  payload (JSON, {size} bytes):")?;
        let pretty = serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string());
        for line in pretty.lines() {
            writeln!(out, "    {line}")?;
        }
        return Ok(());
    }
    if let Ok(text) = std::str::from_utf8(body) {
        writeln!(out, "  payload (UTF-8 text, not JSON, {size} bytes):")?;
        for line in text.lines() {
            let shown: String = line
                .chars()
                .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
                .collect();
            writeln!(out, "    {shown}")?;
        }
        return Ok(());
    }
    writeln!(out, "  payload (binary, {size} bytes, hex):")?;
    for (i, chunk) in body.chunks(16).enumerate() {
        let printable: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }).collect();
        let bytes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "    {:08x}  {:<47}  |{printable}|", i * 16, bytes.join(" "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::letter::tests::letter;
    use super::*;

    fn shown(letter: &DeadLetter) -> String {
        let mut out = Vec::new();
        write_letter(letter, None, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn targets_are_coordinates_or_ids() {
        let at = |t: &str, p, o| Target::At(Coordinates { topic: t.into(), partition: p, offset: o });
        assert_eq!(Target::parse("x.dlq/2@9", "shoal.dlq"), at("x.dlq", 2, 9));
        assert_eq!(Target::parse("2@9", "shoal.dlq"), at("shoal.dlq", 2, 9));
        let id = "0195b7f4-3c1e-7a8b-9c0d-1e2f3a4b5c6d";
        assert_eq!(Target::parse(id, "shoal.dlq"), Target::Id(id.into()));
    }

    #[test]
    fn a_json_payload_is_pretty_printed_with_the_letter_s_headers() {
        let text = shown(&letter(7, "handler_failed", Some(("shoal.commands", 3, 41)), br#"{"kind":"probe"}"#));
        for line in [
            "dead letter shoal.dlq/0@7",
            "  origin:   shoal.commands/3@41",
            "  reason:   handler_failed",
            "  stage:    worker",
            "  error:    it broke",
            "  redriven: no",
            "  key:      k1",
            "    shoal-message-type: command",
            "  payload (JSON, 16 bytes):",
            "      \"kind\": \"probe\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("shoal-dlq-reason:"), "added headers are not original headers:\n{text}");
    }

    #[test]
    fn text_and_binary_payloads_are_readable() {
        let text = shown(&letter(1, "malformed", None, b"not json\tat all"));
        assert!(text.contains("  payload (UTF-8 text, not JSON, 15 bytes):\n    not json\\tat all\n"), "{text}");
        assert!(text.contains("  origin:   - (no origin headers: cannot be re-driven)"), "{text}");
        let binary = shown(&letter(1, "malformed", None, b"\x00\x01 definitely not json\xff"));
        assert!(binary.contains("  payload (binary, 23 bytes, hex):"), "{binary}");
        assert!(
            binary.contains("    00000000  00 01 20 64 65 66 69 6e 69 74 65 6c 79 20 6e 6f  |.. definitely no|"),
            "{binary}"
        );
        assert!(binary.contains("    00000010  74 20 6a 73 6f 6e ff"), "{binary}");
        assert_eq!(inline_bytes(b"k\x01"), "hex:6b01");
    }
}
