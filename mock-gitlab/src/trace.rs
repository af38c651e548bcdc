//! Trace helpers: the checksum the runner reports, and a normaliser that turns
//! a raw runner trace into plain text for assertions.

use std::sync::LazyLock;

use regex::Regex;

/// `crc32:%08x`, CRC-32 (IEEE) of the bytes, as the runner formats it.
pub fn trace_checksum(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}

/// Per-line timestamp prefix added by `FF_USE_TIMESTAMPS` (default since 18.7):
/// `2026-04-16T10:00:00.123456Z 01O ` (stream id, O/E, ' ' new line or '+'
/// continuation).
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [0-9a-f]{2}[OE]([ +])")
        .expect("static regex")
});
/// `section_start:<unix>:<name>[<options>]\r\x1b[0K`.
static SECTION_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"section_start:\d+:([A-Za-z0-9_.\-]+)(?:\[[^\]\r\n]*\])?\r\x1b\[0K")
        .expect("static regex")
});
/// `section_end:<unix>:<name>\r\x1b[0K`.
static SECTION_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"section_end:\d+:[A-Za-z0-9_.\-]+\r\x1b\[0K").expect("static regex")
});
/// CSI escape sequences (colours, erase-line) and other two-byte escapes.
static ANSI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]").expect("static regex"));

/// Strip the runner's per-line timestamp prefixes (joining `+` continuation
/// lines back onto their line), section markers (a section start is kept as
/// `[name] `; section ends vanish) and ANSI escapes. Lines that consisted only
/// of markers are dropped; a trailing `\r` per line is removed.
pub fn normalize_trace(raw: &str) -> String {
    // Pass 1: timestamps and continuations.
    let mut lines: Vec<String> = Vec::new();
    let ends_with_newline = raw.ends_with('\n');
    let body = raw.strip_suffix('\n').unwrap_or(raw);
    if !raw.is_empty() {
        for line in body.split('\n') {
            match TIMESTAMP.captures(line) {
                Some(c) => {
                    let whole = c.get(0).map_or(0, |m| m.end());
                    let rest = &line[whole..];
                    let continuation = c.get(1).is_some_and(|m| m.as_str() == "+");
                    match (continuation, lines.last_mut()) {
                        (true, Some(prev)) => prev.push_str(rest),
                        _ => lines.push(rest.to_string()),
                    }
                }
                None => lines.push(line.to_string()),
            }
        }
    }
    // Pass 2: markers and escapes, per line.
    let mut out = String::with_capacity(raw.len());
    let mut first = true;
    for line in lines {
        let had_content = !line.is_empty();
        let l = SECTION_END.replace_all(&line, "");
        let l = SECTION_START.replace_all(&l, "[$1] ");
        let l = ANSI.replace_all(&l, "");
        let l = l.strip_suffix('\r').unwrap_or(&l);
        if had_content && l.trim().is_empty() {
            continue;
        }
        if !first {
            out.push('\n');
        }
        first = false;
        out.push_str(l.trim_end_matches(' ').trim_end_matches('\r'));
    }
    if ends_with_newline && !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_format() {
        assert_eq!(trace_checksum(b""), "crc32:00000000");
        assert_eq!(trace_checksum(b"hello"), "crc32:3610a686");
    }

    #[test]
    fn normalises_a_realistic_trace() {
        let raw = concat!(
            "2026-04-16T10:00:00.123456Z 00O Running with gitlab-runner 19.4.0 (abc)\n",
            "2026-04-16T10:00:00.123457Z 00O section_start:1700000000:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing the \"shell\" executor\x1b[0;m\n",
            "2026-04-16T10:00:00.123458Z 00O section_end:1700000000:prepare_executor\r\x1b[0K\n",
            "2026-04-16T10:00:00.123459Z 00O section_start:1700000001:step_script[collapsed=true]\r\x1b[0K\x1b[32;1m$ echo hi\x1b[0;m\n",
            "2026-04-16T10:00:00.123460Z 01O hi\n",
            "2026-04-16T10:00:00.123461Z 01O part\n",
            "2026-04-16T10:00:00.123462Z 01O+ial\n",
            "2026-04-16T10:00:00.123463Z 00O \x1b[32;1mJob succeeded\x1b[0;m\n",
        );
        let n = normalize_trace(raw);
        assert_eq!(
            n,
            "Running with gitlab-runner 19.4.0 (abc)\n[prepare_executor] Preparing the \"shell\" executor\n[step_script] $ echo hi\nhi\npartial\nJob succeeded\n"
        );
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(normalize_trace("a\n\nb"), "a\n\nb");
        assert_eq!(normalize_trace(""), "");
        assert_eq!(normalize_trace("x\r\n"), "x\n");
    }
}
