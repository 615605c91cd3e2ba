//! What a file is called: the caller's filename (checked, kept only as metadata), the
//! generated name it is stored under (the only name that ever reaches the disk or a
//! URL), and how it may be served.
//!
//! Nothing here touches the disk; these are the rules the disk code and the serving
//! route both rely on.

use crate::error::ApiError;

/// Longest filename accepted, in bytes (what most file systems allow for one name).
pub const MAX_FILENAME_BYTES: usize = 255;

/// Longest extension kept from a filename; a longer one is dropped.
const MAX_EXTENSION: usize = 10;

/// Hex digits of the random part of a stored name (128 bits).
const RANDOM_HEX: usize = 32;

/// The caller's filename, or a 400 naming what is wrong with it. It is never used as
/// a path, but a name that looks like one is refused rather than quietly rewritten, so
/// the caller's later `remove` by the same name means what they think.
pub fn check_filename(name: &str) -> Result<(), ApiError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_FILENAME_BYTES {
        "is longer than 255 bytes"
    } else if name.contains('\0') {
        "contains a NUL character"
    } else if name.contains('/') || name.contains('\\') {
        "contains a slash (a filename, not a path)"
    } else if name.contains("..") {
        "contains `..`"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(ApiError::bad(format!("`filename` {problem}")))
}

/// The extension a stored name keeps: the filename's last one, lowercased, when it is
/// short and plain ASCII letters and digits; none otherwise.
pub fn safe_extension(filename: &str) -> Option<String> {
    let (_, ext) = filename.rsplit_once('.')?;
    let plain = !ext.is_empty()
        && ext.len() <= MAX_EXTENSION
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    plain.then(|| ext.to_ascii_lowercase())
}

/// A fresh stored name: 128 random bits in hex, then the safe extension if any.
pub fn new_stored_name(filename: &str) -> String {
    let random = format!("{:032x}", rand::random::<u128>());
    match safe_extension(filename) {
        Some(ext) => format!("{random}.{ext}"),
        None => random,
    }
}

/// Whether `name` has exactly the generated form. Anything else (a path, an encoded
/// `../`, upper case) is no stored file's name, so it is never looked up or opened.
pub fn is_stored_name(name: &str) -> bool {
    let (random, ext) = match name.split_once('.') {
        Some((random, ext)) => (random, Some(ext)),
        None => (name, None),
    };
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    random.len() == RANDOM_HEX
        && random.bytes().all(lower_hex)
        && ext.is_none_or(|e| {
            !e.is_empty()
                && e.len() <= MAX_EXTENSION
                && e.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

/// How a stored file is served: a content type a browser may show inline, or `None`
/// for a download (`application/octet-stream`, `Content-Disposition: attachment`).
/// Only types that cannot run script are inline: HTML, SVG, XML and everything unknown
/// would otherwise execute on the API's own origin.
pub fn inline_type(stored_name: &str) -> Option<&'static str> {
    let (_, ext) = stored_name.rsplit_once('.')?;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "bmp" => "image/bmp",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// The content type recorded with a file (and sent when it is served).
pub fn content_type(stored_name: &str) -> &'static str {
    inline_type(stored_name).unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_that_look_like_paths_are_refused_by_name() {
        let refused = [
            ("", "empty"),
            ("../x", "slash"),
            ("..", "`..`"),
            ("a..b", "`..`"),
            ("a/b", "slash"),
            ("a\\b", "slash"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("a\u{7f}b", "control"),
        ];
        for (name, why) in refused {
            let err = check_filename(name).expect_err(name).to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = "x".repeat(256);
        assert!(check_filename(&long).is_err());
        for fine in [
            "photo.png",
            "résumé 2026.PDF",
            ".hidden",
            "x".repeat(255).as_str(),
        ] {
            assert!(check_filename(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn stored_names_have_only_the_generated_form() {
        let made = new_stored_name("Holiday Photo.JPG");
        assert!(made.ends_with(".jpg"), "{made}");
        assert!(is_stored_name(&made), "{made}");
        assert!(is_stored_name(&new_stored_name("no extension")));
        assert!(is_stored_name(&new_stored_name("weird.ex-t")));
        assert_ne!(new_stored_name("a"), new_stored_name("a"));
        let hex = "0123456789abcdef0123456789abcdef";
        for bad in [
            "",
            "../../etc/passwd",
            "..%2f..%2fetc%2fpasswd",
            &format!("{hex}/x"),
            &format!("{hex}."),
            &format!("{hex}.png.html"),
            &format!("{hex}.PNG"),
            &hex.to_uppercase(),
            &hex[1..],
            &format!("{hex}0"),
        ] {
            assert!(!is_stored_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_types_that_cannot_run_script_are_inline() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(inline_type(&format!("{hex}.png")), Some("image/png"));
        for download in ["html", "htm", "svg", "xml", "js", "xhtml"] {
            assert_eq!(
                inline_type(&format!("{hex}.{download}")),
                None,
                "{download}"
            );
        }
        assert_eq!(inline_type(hex), None);
        assert_eq!(
            content_type(&format!("{hex}.svg")),
            "application/octet-stream"
        );
    }
}
