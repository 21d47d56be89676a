//! Prefix placeholders: rewriting the build machine's prefix in a file to the
//! environment's prefix, byte for byte the way conda does it on Linux
//! (`conda/core/portability.py`: `replace_prefix`, `binary_replace`,
//! `replace_long_shebang`).
//!
//! A package records, per file, the placeholder that file holds (old packages
//! `/opt/anaconda1anaconda2anaconda3`, newer ones a 255-byte
//! `…/_h_env_placehold_placehold_…` path) and how to replace it:
//! - **text**: every occurrence becomes the prefix. When the file's first line is a
//!   shebang that ends up longer than 127 bytes (the Linux kernel's limit; longer lines
//!   are cut and the script runs the wrong interpreter), or whose interpreter path has
//!   an escaped space, the line becomes `#!/usr/bin/env NAME` plus the original options.
//! - **binary**: compiled files hold the prefix in C strings whose offsets must not
//!   move. Each NUL-terminated string holding the placeholder gets it replaced and is
//!   padded with NULs so the file keeps its length. The prefix can therefore not be
//!   longer than the placeholder.

use std::fmt;

/// The placeholder conda-build used before it switched to long `_h_env` prefixes; also
/// the default for `info/has_prefix` lines that name only a path.
pub const LEGACY_PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";

/// Linux's limit on a shebang line (conda's `MAX_SHEBANG_LENGTH`), newline excluded.
pub const MAX_SHEBANG_LENGTH: usize = 127;

/// How a file's placeholder is replaced (`file_mode` in `info/paths.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileMode {
    Text,
    Binary,
}

impl FileMode {
    /// The mode as `paths.json` spells it (`text`, `binary`), or `None` for another word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "text" => Some(Self::Text),
            "binary" => Some(Self::Binary),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file's placeholder and how to replace it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placeholder {
    pub placeholder: String,
    pub mode: FileMode,
}

/// A binary file whose placeholder is shorter than the prefix: its strings cannot be
/// rewritten without moving every offset after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixTooLong {
    pub placeholder_len: usize,
    pub prefix_len: usize,
}

impl Placeholder {
    /// Rewrites `data` for `prefix` (see the module docs). Text mode never fails; binary
    /// mode fails only when a string holding the placeholder would have to grow.
    pub fn rewrite(&self, data: &[u8], prefix: &str) -> Result<Vec<u8>, PrefixTooLong> {
        match self.mode {
            FileMode::Text => Ok(rewrite_text(data, &self.placeholder, prefix)),
            FileMode::Binary => rewrite_binary(data, &self.placeholder, prefix),
        }
    }
}

/// Text mode: a shebang naming the placeholder gets the spaces of the prefix escaped
/// (so the long-shebang rule below turns it into `/usr/bin/env`), then every
/// occurrence of the placeholder becomes the prefix, then a first line that is a
/// shebang too long for the kernel is shortened.
pub fn rewrite_text(data: &[u8], placeholder: &str, prefix: &str) -> Vec<u8> {
    if placeholder.is_empty() {
        return data.to_vec();
    }
    let mut data = data.to_vec();
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        let bang = format!("#!{placeholder}");
        if find(&data[..newline], bang.as_bytes(), 0).is_some() {
            let escaped = format!("#!{}", prefix.replace(' ', "\\ "));
            let mut first = replace_all(&data[..newline], bang.as_bytes(), escaped.as_bytes());
            first.extend_from_slice(&data[newline..]);
            data = first;
        }
    }
    let data = replace_all(&data, placeholder.as_bytes(), prefix.as_bytes());
    shorten_long_shebang(data)
}

/// Replaces a first line `#!/path/to/NAME OPTIONS` by `#!/usr/bin/env NAME OPTIONS` when
/// it is longer than [`MAX_SHEBANG_LENGTH`] bytes or its interpreter's directory holds
/// an escaped space. Anything else is returned unchanged.
pub fn shorten_long_shebang(data: Vec<u8>) -> Vec<u8> {
    let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line = &data[..line_end];
    if !line.starts_with(b"#!") {
        return data;
    }
    // conda's SHEBANG_REGEX: `#!`, spaces, an absolute interpreter path made of
    // escaped spaces or non-blank bytes, then the options.
    let mut start = 2;
    while line.get(start) == Some(&b' ') {
        start += 1;
    }
    if line.get(start) != Some(&b'/') {
        return data;
    }
    let mut end = start;
    while end < line.len() {
        match line[end] {
            b'\\' if line.get(end + 1) == Some(&b' ') => end += 2,
            b' ' | b'\r' | b'\t' => break,
            _ => end += 1,
        }
    }
    let interpreter = &line[start..end];
    let slash = interpreter.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let (dir, name) = (&interpreter[..slash], &interpreter[slash + 1..]);
    if line.len() <= MAX_SHEBANG_LENGTH && find(dir, b"\\ ", 0).is_none() {
        return data;
    }
    let mut out = b"#!/usr/bin/env ".to_vec();
    out.extend_from_slice(name);
    out.extend_from_slice(&line[end..]);
    out.extend_from_slice(&data[line_end..]);
    out
}

/// Binary mode: in each NUL-terminated string from an occurrence of the placeholder to
/// the next NUL, every occurrence becomes the prefix and the string is padded with
/// NULs so the data keeps its length. An occurrence with no NUL after it is left alone
/// (conda's regex does not match it either).
pub fn rewrite_binary(
    data: &[u8],
    placeholder: &str,
    prefix: &str,
) -> Result<Vec<u8>, PrefixTooLong> {
    let (search, replacement) = (placeholder.as_bytes(), prefix.as_bytes());
    if search.is_empty() {
        return Ok(data.to_vec());
    }
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    while let Some(start) = find(data, search, pos) {
        let Some(nul) = data[start + search.len()..].iter().position(|&b| b == 0) else {
            break;
        };
        let end = start + search.len() + nul; // the terminating NUL
        let string = &data[start..end];
        if replacement.len() > search.len() {
            return Err(PrefixTooLong {
                placeholder_len: search.len(),
                prefix_len: replacement.len(),
            });
        }
        let rewritten = replace_all(string, search, replacement);
        out.extend_from_slice(&data[pos..start]);
        out.extend_from_slice(&rewritten);
        out.resize(out.len() + (string.len() - rewritten.len()), 0);
        pos = end;
    }
    out.extend_from_slice(&data[pos..]);
    debug_assert_eq!(out.len(), data.len());
    Ok(out)
}

/// The first index at or after `from` where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| haystack[i..].starts_with(needle))
}

/// Every non-overlapping occurrence of `from`, left to right, replaced by `to`.
fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    while let Some(at) = find(data, from, pos) {
        out.extend_from_slice(&data[pos..at]);
        out.extend_from_slice(to);
        pos = at + from.len();
    }
    out.extend_from_slice(&data[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/opt/anaconda1anaconda2anaconda3";

    #[test]
    fn text_replaces_every_occurrence() {
        let data = format!("#!{P}/bin/sh\nA={P}/lib:{P}/share\n");
        let out = rewrite_text(data.as_bytes(), P, "/opt/conda");
        assert_eq!(
            out,
            b"#!/opt/conda/bin/sh\nA=/opt/conda/lib:/opt/conda/share\n"
        );
    }

    #[test]
    fn a_long_shebang_becomes_env_with_its_options() {
        let prefix = format!("/{}", "p".repeat(130));
        let data = format!("#!{P}/bin/python3.11 -E -s\nprint('{P}')\n");
        let out = String::from_utf8(rewrite_text(data.as_bytes(), P, &prefix)).unwrap();
        assert_eq!(
            out,
            format!("#!/usr/bin/env python3.11 -E -s\nprint('{prefix}')\n")
        );
    }

    #[test]
    fn a_shebang_of_exactly_127_bytes_stays() {
        let prefix = format!("/{}", "p".repeat(127 - "#!/".len() - "/bin/sh".len()));
        let out = rewrite_text(format!("#!{P}/bin/sh\n").as_bytes(), P, &prefix);
        assert_eq!(out.len(), 128);
        assert!(out.starts_with(format!("#!{prefix}/bin/sh").as_bytes()));
        let longer = format!("{prefix}x");
        let out = rewrite_text(format!("#!{P}/bin/sh\n").as_bytes(), P, &longer);
        assert_eq!(out, b"#!/usr/bin/env sh\n");
    }

    #[test]
    fn a_prefix_with_a_space_gets_env_in_the_shebang_only() {
        let out = rewrite_text(format!("#!{P}/bin/perl\n# {P}\n").as_bytes(), P, "/my env");
        assert_eq!(out, b"#!/usr/bin/env perl\n# /my env\n");
    }

    #[test]
    fn binary_pads_each_string_with_nuls() {
        let mut data = b"\x7fELF\0".to_vec();
        data.extend_from_slice(format!("x:{P}/lib:{P}/share\0").as_bytes());
        data.extend_from_slice(b"tail\0");
        data.extend_from_slice(format!("{P}/etc\0\x01\x02").as_bytes());
        let out = rewrite_binary(&data, P, "/opt/conda").unwrap();
        assert_eq!(out.len(), data.len());
        let pad = P.len() - "/opt/conda".len();
        let mut expected = b"\x7fELF\0x:/opt/conda/lib:/opt/conda/share\0".to_vec();
        expected.extend(std::iter::repeat_n(0u8, 2 * pad));
        expected.extend_from_slice(b"tail\0/opt/conda/etc\0");
        expected.extend(std::iter::repeat_n(0u8, pad));
        expected.extend_from_slice(b"\x01\x02");
        assert_eq!(out, expected);
    }

    #[test]
    fn binary_refuses_a_longer_prefix_and_skips_unterminated_strings() {
        let data = format!("{P}/lib\0");
        let long = format!("/{}", "x".repeat(P.len()));
        let err = rewrite_binary(data.as_bytes(), P, &long).unwrap_err();
        assert_eq!(
            (err.placeholder_len, err.prefix_len),
            (P.len(), P.len() + 1)
        );
        let open = format!("abc{P}/lib");
        assert_eq!(
            rewrite_binary(open.as_bytes(), P, "/o").unwrap(),
            open.as_bytes()
        );
    }
}
